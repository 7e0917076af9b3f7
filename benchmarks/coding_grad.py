"""Derivative benchmark (issue 14): `jax.grad` of a loss of the codes against the forward solve.

Problem: S1 of `benchmarks/coding.py` (SAE-like, d = 128, k = 1024, n = 4096, about 50 active
atoms per signal, float32) or any other problem of that script. The loss is
``L(X, D) = sum_i ||a_i(X, D)||^2 / 2 + sum(a_i . w)`` with a fixed random weight ``w`` (so every
code and its support matter), where ``a = sparse_code(X, D, lam).codes``; its gradient with
respect to D and X goes through the implicit rule on the support (``sparsedict/_coding/
_implicit.py``). Reported, in one process:

- ``forward_s``: steady time of ``sparse_code`` alone (median of repeats after a compiled call);
- ``grad_s``: steady time of ``jax.grad`` of the loss w.r.t. (X, D) (forward solve included);
- ``ratio`` = grad_s / forward_s (target: at most 3);
- the peak memory of each compiled program (XLA's memory analysis: temporaries + outputs), and
  ``n s_max^2`` numbers (the support systems of the batch) and ``n k^2`` for scale;
- a finite-difference check of one directional derivative in float64 on a few signals, so the
  timed gradient is known to be the right one.

Run ``python benchmarks/coding_grad.py`` (S1) or ``--problem P1``; ``--out`` for the report.
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import coding  # noqa: E402  (the problems of the coding benchmark)


def _program_mb(fn, *args):
    import jax

    mem = jax.jit(fn).lower(*args).compile().memory_analysis()
    if mem is None:
        return float("nan")
    return (mem.temp_size_in_bytes + mem.output_size_in_bytes) / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="S1")
    parser.add_argument("--float", default="float32", choices=("float32", "float64"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="folder for coding_grad_<problem>.md/.json")
    args = parser.parse_args()

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import sparsedict as sd

    rng = np.random.default_rng(0)
    p = coding.make_problems(False, rng, names=(args.problem,))[args.problem]
    dt = args.float
    X, D, lam = jnp.asarray(p["X"], dt), jnp.asarray(p["D"], dt), float(p["lam"])
    n, k = X.shape[0], D.shape[0]
    w = jnp.asarray(np.random.default_rng(1).standard_normal(k), dt)

    def codes(X, D):
        return sd.sparse_code(X, D, lam).codes

    def loss(X, D):
        a = codes(X, D)
        return 0.5 * jnp.sum(a * a) + jnp.sum(a @ w)

    forward = jax.jit(codes)
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))

    t = time.perf_counter()
    a = jax.block_until_ready(forward(X, D))
    forward_first = time.perf_counter() - t
    t = time.perf_counter()
    jax.block_until_ready(grad(X, D))
    grad_first = time.perf_counter() - t
    forward_s, _ = coding._median_time(lambda: jax.block_until_ready(forward(X, D)), args.repeats)
    grad_s, _ = coding._median_time(lambda: jax.block_until_ready(grad(X, D)), args.repeats)
    s_max = int(np.max(np.sum(np.asarray(a) > 0, axis=1)))
    s_mean = float(np.mean(np.sum(np.asarray(a) > 0, axis=1)))
    forward_mb = _program_mb(codes, X, D)
    grad_mb = _program_mb(jax.grad(loss, argnums=(0, 1)), X, D)
    itemsize = np.dtype(dt).itemsize

    # finite differences of the loss along a random direction of D, float64, 8 signals
    X8, D8 = jnp.asarray(X[:8], jnp.float64), jnp.asarray(D, jnp.float64)
    dD = jnp.asarray(np.random.default_rng(2).standard_normal(D.shape), jnp.float64) * 1e-3

    def loss64(D):
        a = sd.sparse_code(X8, D, lam, tol=1e-14).codes
        return 0.5 * jnp.sum(a * a) + jnp.sum(a @ w.astype(jnp.float64))

    g64 = jax.grad(loss64)(D8)
    h = 1e-4
    fd = (loss64(D8 + h * dD) - loss64(D8 - h * dD)) / (2 * h)
    analytic = float(jnp.sum(g64 * dD))
    fd_rel = abs(float(fd) - analytic) / max(abs(analytic), 1e-300)

    row = dict(
        problem=args.problem,
        dtype=dt,
        n=n,
        k=k,
        d=int(X.shape[1]),
        forward_s=forward_s,
        grad_s=grad_s,
        ratio=grad_s / forward_s,
        forward_first_s=forward_first,
        grad_first_s=grad_first,
        forward_program_mb=forward_mb,
        grad_program_mb=grad_mb,
        support_max=s_max,
        support_mean=s_mean,
        n_smax2_mb=n * s_max**2 * itemsize / 2**20,
        n_k2_mb=n * k**2 * itemsize / 2**20,
        fd_directional_rel_error=fd_rel,
        load_average=os.getloadavg(),
        machine=platform.platform(),
        jax=jax.__version__,
    )
    lines = [
        f"# jax.grad through sparse_code: {args.problem}, {dt}",
        "",
        f"n={n}, d={X.shape[1]}, k={k}; support mean {s_mean:.1f}, max {s_max}; "
        f"load average {row['load_average']}",
        "",
        "| | steady (s) | first call (s) | program peak (MB) |",
        "|---|---|---|---|",
        f"| forward `sparse_code` | {forward_s:.3f} | {forward_first:.1f} | {forward_mb:.0f} |",
        f"| `jax.grad` (X, D) | {grad_s:.3f} | {grad_first:.1f} | {grad_mb:.0f} |",
        "",
        f"grad / forward = **{row['ratio']:.2f}** (target <= 3). For scale: n s_max^2 = "
        f"{row['n_smax2_mb']:.0f} MB, n k^2 = {row['n_k2_mb']:.0f} MB. Finite-difference check "
        f"(float64, 8 signals, one direction of D): relative error {fd_rel:.1e}.",
    ]
    print("\n".join(lines))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        stem = os.path.join(args.out, f"coding_grad_{args.problem}_{dt}")
        with open(stem + ".md", "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(stem + ".json", "w") as f:
            json.dump(row, f, indent=1)


if __name__ == "__main__":
    main()
