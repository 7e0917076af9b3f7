"""Batched coding throughput on an accelerator, float32 and bfloat16 storage, against measured
matmul peak.

How to run it on a GPU: install JAX for your CUDA (`pip install -U "jax[cuda12]"`) and sparsedict
(`pip install -e .`), check that `python -c "import jax; print(jax.devices())"` lists the GPU, then

    python benchmarks/gpu_coding.py            # full: d = 512, k = 256 .. 16384, 16384 signals
    python benchmarks/gpu_coding.py --quick    # tiny sizes on any device, seconds, prints only

A full run should take a few minutes on an H100 (estimated from the FLOP counts below; the
script was developed on a CPU-only machine and its full sizes have not been run yet). It writes
`benchmarks/results/gpu_coding_<device kind>.md` and `.json`. It refuses to start the full sizes
on a CPU (pass `--allow-cpu` to insist).

What it measures, for each width k and setting (float32; float32 inputs with
`matmul_dtype=jnp.bfloat16`), with FISTA (the accelerator solver) and the active set
(`ActiveSet(max_support=64)`, a support buffer that fits the batch):

- **signals/s**: signals that reached relative duality gap `--tol` (1e-6) per second of a solve,
  compilation excluded (one warm-up call, then the median of `--repeats` timed calls, each ended
  by `block_until_ready`). 1e-6 is at the float32 rounding floor of the certificate: a signal
  that cannot certify keeps the whole batch stepping to `--max-steps` (the `converged` and
  `steps median / L` columns show it);
- **matmul fraction**: the time the solve's dense products would take at the device's MEASURED
  matmul throughput (a large jitted square matmul per dtype, timed in this script), divided by
  the measured solve time: 1.0 means the solve runs at matmul peak.

Counting the solve's dense-product FLOPs (read off `sparsedict/_coding`): a batched `vmap`ped
`while_loop` runs every signal until the slowest is done, so with `L` = max steps over the batch
and `n` signals, per signal and step,

- a correlation product from the Gram matrix costs `G = 2 k^2` (working dtype, float32);
- from the dictionary, `a D` then `r D^T`, costs `P = 4 k d p`, in the storage dtype, with
  `p = 1` (float32) or `p = 3` (bfloat16 storage: the float32 vector is split exactly into 3
  bfloat16 pieces, so the products are float32-accurate for the rounded dictionary);
- the Gram form is used when `k <= 2 d` or the solver needs it (active set);
- setup: `c = X D^T`, `2 n k d p`; the Gram matrix `2 k^2 d` when used; the Lipschitz
  constant's `2 min(k, d)^2 max(k, d)`.

FISTA (certificate every 10 steps): `n (L + L/10 + 1) C` with `C = G` if `k <= 2d` else `P`.
Active set (50 warm-start FISTA steps, a certificate from the Gram matrix every step): `n (50 C +
L (C + G) + G)`; its Cholesky solves and gathers are not counted, so its fraction understates
its work. Float32 FLOPs are timed against the float32 peak and bfloat16 FLOPs against the
bfloat16 peak.

Precision: JAX runs float32 matmuls on recent NVIDIA GPUs as TF32 by default, which is not
accurate enough for float32 certificates at 1e-6; this script sets
`jax_default_matmul_precision` to `--matmul-precision` (default "highest": true float32, for
the float32 solve and the float32 peak alike). With a `matmul_dtype`, sparsedict pins its float32
products to full precision itself. Run with `--matmul-precision default` to see TF32.
"""

import argparse
import math
import os
import platform
import re
import time

import numpy as np
from _results import write_results

SETTINGS = {"float32": None, "bfloat16 storage": "bfloat16"}
PIECES = {None: 1, "bfloat16": 3}
FISTA_CHECK_EVERY = 10
WARM_START_STEPS = 50
MAX_SUPPORT = 64


def make_problem(rng, n, d, k, active=8, noise=0.05):
    """Unit-norm random atoms, `active` nonnegative codes per signal, Gaussian noise (float32)."""
    D = rng.standard_normal((k, d), dtype=np.float32)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    X = noise * rng.standard_normal((n, d), dtype=np.float32)
    for _ in range(active):  # one random atom at a time: no (n, k) code matrix on the host
        X += rng.uniform(0.5, 2.0, (n, 1)).astype(np.float32) * D[rng.integers(0, k, n)]
    sample = X[: min(n, 2048)]
    lam = 0.1 * float(np.median(np.max(sample @ D.T, axis=1)))
    return X, D, lam


def matmul_flops(solver, n, k, d, pieces, loop_steps):
    """(float32 FLOPs, storage-dtype FLOPs) of the solve's dense products (module docstring)."""
    counts = {"f32": 0.0, "low": 0.0}

    def with_dictionary(flops):  # products with the stored dictionary run in its dtype
        counts["low" if pieces > 1 else "f32"] += flops

    with_dictionary(2 * n * k * d * pieces)  # c = X D^T
    with_dictionary(2 * min(k, d) ** 2 * max(k, d))  # Lipschitz constant (exact operands: 1 pass)
    if solver == "active_set" or k <= 2 * d:
        with_dictionary(2 * k * k * d)  # Gram matrix
    L = loop_steps
    if solver == "fista":
        correlations = n * (L + math.ceil(L / FISTA_CHECK_EVERY) + 1)
    else:
        correlations = n * (WARM_START_STEPS + L)
        counts["f32"] += n * (L + 1) * 2 * k * k  # the certificate from the Gram matrix
    if k <= 2 * d:
        counts["f32"] += correlations * 2 * k * k
    else:
        with_dictionary(correlations * 4 * k * d * pieces)
    return counts["f32"], counts["low"]


def timed(fn, repeats):
    import jax

    jax.block_until_ready(fn())  # compile and warm up
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def matmul_peak(dtype, size, repeats):
    """Measured FLOP/s of a jitted (size, size) @ (size, size) product, float32 accumulation."""
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(0)
    a = jax.random.normal(key, (size, size), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.fold_in(key, 1), (size, size), jnp.float32).astype(dtype)
    product = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
    seconds, _ = timed(lambda: product(a, b), repeats)
    return 2 * size**3 / seconds


def run_one(X, D, lam, solver, low, tol, max_steps, repeats):
    import jax
    import jax.numpy as jnp

    import sparsedict as sd

    instance = sd.FISTA() if solver == "fista" else sd.ActiveSet(max_support=MAX_SUPPORT)
    dtype = None if low is None else jnp.dtype(low)

    @jax.jit
    def solve(X, D, lam):
        res = sd.sparse_code(
            X, D, lam, solver=instance, tol=tol, max_steps=max_steps, matmul_dtype=dtype
        )
        return res.codes, res.relative_gap, res.converged, res.steps

    seconds, (_codes, rel, converged, steps) = timed(lambda: solve(X, D, lam), repeats)
    return seconds, np.asarray(rel), np.asarray(converged), np.asarray(steps)


def slug(text):
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def markdown(meta, rows):
    lines = [
        "# Batched sparse coding throughput",
        "",
        (
            f"Device: {meta['device']} ({meta['platform']}), jax {meta['jax']}, {meta['date']}, "
            f"jax_default_matmul_precision={meta['matmul_precision']}. d = {meta['d']}, target "
            f"relative gap {meta['tol']:g}, max_steps {meta['max_steps']}. Measured matmul peak: "
            f"float32 {meta['peak_float32'] / 1e12:.2f} TFLOP/s, bfloat16 (float32 accumulation) "
            f"{meta['peak_bfloat16'] / 1e12:.2f} TFLOP/s ({meta['peak_size']}^3 products)."
        ),
        "",
        (
            "Signals/s counts the signals that reached the target; matmul fraction = (float32 "
            "FLOPs / "
            "float32 peak + bfloat16 FLOPs / bfloat16 peak) / solve time, FLOPs counted as in the "
            "docstring of `benchmarks/gpu_coding.py` (L = max steps over the batch)."
        ),
        "",
        (
            "| k | n | setting | solver | signals/s | converged | steps median / L | solve (s) "
            "| f32 GFLOP | bf16 GFLOP | matmul fraction |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['k']} | {r['n']} | {r['setting']} | {r['solver']} | {r['signals_per_s']:.3g} "
            f"| {100 * r['converged']:.1f}% | {r['steps_median']:.0f} / {r['loop_steps']} "
            f"| {r['seconds']:.3g} | {r['flops_f32'] / 1e9:.4g} | {r['flops_bf16'] / 1e9:.4g} "
            f"| {r['matmul_fraction']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, any device, prints only")
    parser.add_argument("--allow-cpu", action="store_true", help="run the full sizes on a CPU")
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    parser.add_argument("--signals", type=int, default=16384)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--active-set-max-k", type=int, default=4096, help="widest k for the active set"
    )
    parser.add_argument("--matmul-precision", default="highest", choices=["highest", "default"])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp

    jax.config.update("jax_default_matmul_precision", args.matmul_precision)
    device = jax.devices()[0]
    if args.quick:
        args.d, args.widths, args.signals, args.repeats, peak_size = 32, [48, 128], 256, 1, 512
        args.active_set_max_k = 48
    else:
        peak_size = 8192
        if device.platform == "cpu" and not args.allow_cpu:
            raise SystemExit("full sizes are meant for an accelerator: use --quick, or --allow-cpu")

    peaks = {
        "float32": matmul_peak(jnp.float32, peak_size, args.repeats),
        "bfloat16": matmul_peak(jnp.bfloat16, peak_size, args.repeats),
    }
    print(
        f"{device.device_kind}: matmul peak float32 {peaks['float32'] / 1e12:.3f} TFLOP/s, "
        f"bfloat16 {peaks['bfloat16'] / 1e12:.3f} TFLOP/s",
        flush=True,
    )

    rng = np.random.default_rng(0)
    rows = []
    for k in args.widths:
        # one (n, k) float32 code array at most 1 GiB: the solver keeps a few of them
        n = min(args.signals, max(1024, 2**28 // k))
        X, D, lam = make_problem(rng, n, args.d, k)
        X, D = jax.device_put(X), jax.device_put(D)
        solvers = ["fista", "active_set"] if k <= args.active_set_max_k else ["fista"]
        for setting, low in SETTINGS.items():
            for solver in solvers:
                seconds, rel, converged, steps = run_one(
                    X, D, lam, solver, low, args.tol, args.max_steps, args.repeats
                )
                loop_steps = int(steps.max())
                f32, bf16 = matmul_flops(solver, n, k, args.d, PIECES[low], loop_steps)
                bound = f32 / peaks["float32"] + bf16 / peaks["bfloat16"]
                row = {
                    "k": k,
                    "n": n,
                    "setting": setting,
                    "solver": solver,
                    "seconds": seconds,
                    "signals_per_s": float(converged.sum()) / seconds,
                    "converged": float(converged.mean()),
                    "rel_gap_median": float(np.median(rel)),
                    "rel_gap_max": float(rel.max()),
                    "steps_median": float(np.median(steps)),
                    "loop_steps": loop_steps,
                    "flops_f32": f32,
                    "flops_bf16": bf16,
                    "matmul_fraction": bound / seconds,
                }
                rows.append(row)
                print(
                    f"k={k:6d} n={n:6d} {setting:17s} {solver:10s} {row['signals_per_s']:10.4g} "
                    f"signals/s "
                    f"converged {100 * row['converged']:5.1f}%  steps "
                    f"{row['steps_median']:.0f}/{loop_steps}"
                    f"  {seconds:.3g} s  matmul fraction {row['matmul_fraction']:.3f}",
                    flush=True,
                )
    meta = {
        "device": device.device_kind,
        "platform": device.platform,
        "jax": jax.__version__,
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "d": args.d,
        "tol": args.tol,
        "max_steps": args.max_steps,
        "matmul_precision": args.matmul_precision,
        "peak_float32": peaks["float32"],
        "peak_bfloat16": peaks["bfloat16"],
        "peak_size": peak_size,
    }
    if args.quick:
        return
    write_results(args.out, f"gpu_coding_{slug(device.device_kind)}", meta, rows, markdown)


if __name__ == "__main__":
    main()
