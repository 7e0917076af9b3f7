"""Certify benchmark: an SAE-scale decoder, first and second order, time and peak memory.

A synthetic SAE problem: `k` planted unit atoms in `d` dimensions, signals that are sparse
nonnegative combinations of `l0` of them plus noise and an offset `b_dec`; the decoder to
certify is the planted one, slightly perturbed (as a trained SAE's would be). Reported:

- ``first_order_s``: chunked exact coding and the first-order certificate (all atoms);
- ``second_order_s``: the matrix-free block test on every atom (subspace iteration);
- ``*_cpu_s``: the process's CPU seconds for each part (the wall time depends on how many
  cores the run had to itself);
- ``max_relative_gap``: the worst relative duality gap of the exact codes (the certificate's
  own error bar);
- ``peak_rss_gib``: the process's peak resident memory (CPU), or the device's peak bytes;
- ``planned_gib``: the memory plan of the chunked certify, and, as the peer, the plan of the
  in-memory `sparsedict.optimality.certify` (its second-order tests vmap an (n, d) array and a
  (d, d) matrix per atom: about ``8 k (n d + d^2)`` bytes in float64).

Settings: ``cpu`` (d = 256, k = 4096, n = 16384, float64) and ``accelerator`` (d = 768,
k = 16384, n = 65536, float32). ``--dry-run`` prints the plans only; ``--quick`` runs a small
problem (CI smoke test, < 60 s).
"""

import argparse
import os
import platform
import resource
import sys
import time

import numpy as np

SETTINGS = {
    "quick": dict(d=32, k=256, n=2048, l0=6, chunk=512, dtype="float64"),
    "cpu": dict(d=256, k=4096, n=16384, l0=16, chunk=1024, dtype="float64"),
    "accelerator": dict(d=768, k=16384, n=65536, l0=32, chunk=2048, dtype="float32"),
}


def problem(d, k, n, l0, dtype, seed=0):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((k, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    idx = (
        np.argsort(rng.random((n, k)), axis=1)[:, :l0] if k <= 4096 else rng.integers(0, k, (n, l0))
    )
    vals = rng.exponential(1.0, (n, l0)) + 0.5
    X = np.zeros((n, d))
    for j in range(l0):
        X += vals[:, j : j + 1] * D[idx[:, j]]
    X += 0.05 * rng.standard_normal((n, d))
    b_dec = 0.3 * rng.standard_normal(d)
    decoder = D + 0.02 * rng.standard_normal((k, d))
    decoder /= np.linalg.norm(decoder, axis=1, keepdims=True)
    return (X + b_dec).astype(dtype), decoder.astype(dtype), b_dec.astype(dtype)


def cpu_seconds():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setting", choices=sorted(SETTINGS), default="cpu")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--max-support", type=int, default=None, help="default 4 l0")
    p.add_argument("--n", type=int, default=None, help="override the setting's n (a timing sample)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = p.parse_args()
    name = "quick" if args.quick else args.setting
    s = dict(SETTINGS[name])
    if args.n is not None:
        s["n"] = args.n
        name = f"{name}_n{args.n}"
    if s["dtype"] == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
    import jax

    from sparsedict.optimality._chunked import (
        block_ratio_matrix_free,
        certify_chunked,
        plan_certify,
        splitting_matrix_free,
    )

    itemsize = np.dtype(s["dtype"]).itemsize
    plan = plan_certify(s["n"], s["d"], s["k"], chunk_size=s["chunk"], itemsize=itemsize,
                        mean_l0=2 * s["l0"])  # fmt: skip
    in_memory = 8 * s["k"] * (s["n"] * s["d"] + s["d"] ** 2) / 2**30
    print(f"setting {name}: d={s['d']} k={s['k']} n={s['n']} {s['dtype']}")
    print(f"chunked certify: {plan}")
    print(f"peer, in-memory certify (second order vmapped over atoms): about {in_memory:.1f} GiB")
    support = args.max_support or 4 * s["l0"]
    meta = dict(setting=name, **s, lam=args.lam, max_support=support,
                machine=platform.processor() or platform.machine(),
                cpus=os.cpu_count(), backend=jax.default_backend(),
                planned_gib=plan.total / 2**30, in_memory_planned_gib=in_memory)  # fmt: skip
    if args.dry_run:
        return 0
    from sparsedict import ActiveSet

    solver = ActiveSet(max_support=support)
    X, D, b_dec = problem(s["d"], s["k"], s["n"], s["l0"], s["dtype"])
    t0, c0 = time.perf_counter(), cpu_seconds()

    def coded(p):
        print(f"  coded {p.done}/{p.total}", flush=True)

    cert = certify_chunked(X, D, args.lam, center=b_dec, chunk_size=s["chunk"],
                           keep_residuals=True, solver=solver, progress=coded)  # fmt: skip
    first, first_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    r = cert.report
    worst = float(np.max(r.atoms.relative_constraint))
    print(
        f"first order: {first:.1f} s; F = {float(r.objective):.5g}, mean L0 "
        f"{cert.l0.mean():.1f}, worst rel. constraint {worst:.3e}, "
        f"max gap {float(np.max(r.signals.gap)):.2e}, peak RSS {peak_rss_gib():.2f} GiB"
    )
    t0, c0 = time.perf_counter(), cpu_seconds()
    ratio, _ = block_ratio_matrix_free(cert, D, args.lam, iterations=args.iterations)
    second, second_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    print(f"second order (block test): {second:.1f} s; saddles {int(np.sum(ratio > 1))}, max "
          f"block ratio {np.max(ratio):.3f}, peak RSS {peak_rss_gib():.2f} GiB")  # fmt: skip
    t0, c0 = time.perf_counter(), cpu_seconds()
    strength, _ = splitting_matrix_free(cert, D, iterations=args.iterations)
    split, split_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    print(f"second order (splitting test): {split:.1f} s; max split strength "
          f"{np.max(strength):.4g}, peak RSS {peak_rss_gib():.2f} GiB")  # fmt: skip
    row = dict(first_order_s=first, second_order_s=second, first_order_cpu_s=first_cpu,
               second_order_cpu_s=second_cpu, splitting_s=split, splitting_cpu_s=split_cpu,
               max_relative_gap=float(np.max(r.signals.relative_gap)), peak_rss_gib=peak_rss_gib(),
               mean_l0=float(cert.l0.mean()), saddles=int(np.sum(ratio > 1)),
               worst_relative_constraint=float(np.max(r.atoms.relative_constraint)))  # fmt: skip
    if jax.default_backend() != "cpu":
        stats = jax.devices()[0].memory_stats() or {}
        row["device_peak_gib"] = stats.get("peak_bytes_in_use", 0) / 2**30
    sys.path.insert(0, os.path.dirname(__file__))
    from _results import write_results

    def markdown(meta, rows):
        head = "| setting | first order (s) | second order (s) | peak RSS (GiB) | planned (GiB) |"
        lines = [head, "|---|---|---|---|---|"]
        for row in rows:
            lines.append(f"| {meta['setting']} | {row['first_order_s']:.1f} | "
                         f"{row['second_order_s']:.1f} | {row['peak_rss_gib']:.2f} | "
                         f"{meta['planned_gib']:.2f} |")  # fmt: skip
        return "\n".join(lines) + "\n"

    write_results(args.out, f"certify_{name}", meta, [row], markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
