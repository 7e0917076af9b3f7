"""Accuracy of mixed-precision sparse coding: certified gaps and gaps on the original problem.

For each width k and precision setting, `sparse_code` (active set) codes the same float64 problem
(X, D, lam) and we report, over all signals:

- the relative gap `gap / primal` certified by the solver itself (for a `matmul_dtype` setting,
  the certificate of the rounded problem (X, D.astype(matmul_dtype)));
- the relative gap of the returned codes on the ORIGINAL float64 problem, recomputed in float64
  with `sparsedict.duality_gap` (a float32 setting first rounds X and D to float32, as a user
  converting their data would);
- for a stored dictionary, the first-order worst-case bound `2 u |a|_1 (||r|| + |a|_1) / primal`
  on that original gap (`u` the unit roundoff of the matmul dtype, `r` the residual; the full
  bound, with its second-order terms, is checked in `tests/test_precision.py`).

Settings: float64; float64 inputs with float32 storage; float32; float32 inputs with float16 and
with bfloat16 storage. Tolerances are the defaults (1e-10 for float64 inputs, 1e-6 for float32).

Run `python benchmarks/precision.py` (full: d = 128; k = 256 and 1024 with n = 1024 signals, k =
4096
with n = 256, since the float64 active set costs seconds per step there; five to seven minutes on a
2-core CPU) or `--quick` (tiny, seconds, CI smoke test; prints only). Full runs write
`<out>/precision_<platform>.md` and `.json`.
"""

import argparse
import os
import platform
import time

import numpy as np
from _results import write_results

# name: (input dtype, matmul_dtype)
SETTINGS = {
    "float64": ("float64", None),
    "float64 in, float32 storage": ("float64", "float32"),
    "float32": ("float32", None),
    "float32 in, float16 storage": ("float32", "float16"),
    "float32 in, bfloat16 storage": ("float32", "bfloat16"),
}
UNIT_ROUNDOFF = {"float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}


def make_problem(rng, n, d, k, active=8, noise=0.05):
    """Unit-norm random atoms, `active` nonnegative codes per signal, Gaussian noise."""
    D = rng.standard_normal((k, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    A = np.zeros((n, k))
    rows = np.repeat(np.arange(n), active)
    cols = np.concatenate([rng.choice(k, active, replace=False) for _ in range(n)])
    A[rows, cols] = rng.uniform(0.5, 2.0, n * active)
    X = A @ D + noise * rng.standard_normal((n, d))
    lam = 0.1 * float(np.median(np.max(X @ D.T, axis=1)))
    return X, D, lam


def measure(X, D, lam, setting):
    import jax.numpy as jnp

    import sparsedict as sd

    dtype, low = SETTINGS[setting]
    Xi, Di = X.astype(dtype), D.astype(dtype)
    t0 = time.perf_counter()
    res = sd.sparse_code(Xi, Di, lam, matmul_dtype=low, max_steps=1000)
    codes = np.asarray(res.codes, np.float64)
    seconds = time.perf_counter() - t0
    gap = np.asarray(sd.duality_gap(X, D, codes, lam))  # the original float64 problem
    R = X - codes @ D
    primal = 0.5 * np.sum(R * R, 1) + lam * codes.sum(1)
    certified = np.asarray(res.relative_gap, np.float64)
    original = gap / primal
    row = {
        "setting": setting,
        "certified_median": float(np.median(certified)),
        "certified_max": float(certified.max()),
        "original_median": float(np.median(original)),
        "original_max": float(original.max()),
        "converged": float(np.mean(np.asarray(res.converged))),
        "status": status_name(res.result),
        "active_mean": float(np.mean((codes > 0).sum(1))),
        "steps_median": float(np.median(np.asarray(res.steps))),
        "steps_max": int(np.max(np.asarray(res.steps))),
        "seconds_with_compile": seconds,
    }
    if low is not None:
        l1 = codes.sum(1)
        R_low = X - codes @ np.asarray(jnp.asarray(Di).astype(low).astype(jnp.float64))
        bound = 2 * UNIT_ROUNDOFF[low] * l1 * (np.linalg.norm(R_low, axis=1) + l1) / primal
        row["bound_median"] = float(np.median(bound))
    return row


def status_name(result):
    import sparsedict as sd

    names = ("successful", "max_steps_reached", "precision_limit", "nonfinite")
    return next(name for name in names if bool(result == getattr(sd.RESULTS, name)))


def markdown(meta, rows):
    lines = [
        "# Mixed-precision sparse coding: measured accuracy",
        "",
        (
            f"Device: {meta['device']} ({meta['platform']}, cpu_count={meta['cpu_count']}), "
            f"jax {meta['jax']}, {meta['date']}. Problem: d = {meta['d']}, n signals "
            f"(8 active unit-norm atoms each, noise 0.05), lam = 0.1 median lam_max, solver "
            f"{meta['solver']}, default tol (1e-10 float64 inputs, 1e-6 float32). Relative gap = "
            "gap / primal. *Certified*: reported by the solver (for a storage setting, the "
            "certificate "
            "of the rounded problem). *Original*: the returned codes on the float64 problem, "
            "recomputed "
            "in float64. *Bound*: first-order worst-case rounding bound 2 u |a|_1 (||r|| + |a|_1) "
            "/ primal."
        ),
        "",
        (
            "| k | n | setting | certified median | certified max | original median | original max "
            "| bound median | converged | active atoms | steps median / max |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        est = f"{r['bound_median']:.1e}" if "bound_median" in r else ""
        lines.append(
            f"| {r['k']} | {r['n']} | {r['setting']} | {r['certified_median']:.1e} | "
            f"{r['certified_max']:.1e} "
            f"| {r['original_median']:.1e} | {r['original_max']:.1e} | {est} "
            f"| {100 * r['converged']:.1f}% | {r['active_mean']:.1f} "
            f"| {r['steps_median']:.0f} / {r['steps_max']} |"
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, print only (CI smoke test)"
    )
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()

    import jax

    jax.config.update("jax_enable_x64", True)  # float64 settings and the float64 recomputation

    d, sizes = (16, [(32, 64)]) if args.quick else (128, [(256, 1024), (1024, 1024), (4096, 256)])
    rng = np.random.default_rng(0)
    rows = []
    for k, n in sizes:
        X, D, lam = make_problem(rng, n, d, k)
        for setting in SETTINGS:
            row = {"k": k, "n": n, **measure(X, D, lam, setting)}
            rows.append(row)
            print(
                f"k={k:5d} {setting:30s} certified "
                f"{row['certified_median']:.1e}/{row['certified_max']:.1e}"
                f"  original {row['original_median']:.1e}/{row['original_max']:.1e}"
                f"  {row['status']}  ({row['seconds_with_compile']:.1f} s)",
                flush=True,
            )
    device = jax.devices()[0]
    meta = {
        "device": getattr(device, "device_kind", str(device)),
        "platform": device.platform,
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "d": d,
        "solver": "active_set",
    }
    if args.quick:
        return
    write_results(args.out, f"precision_{device.platform}", meta, rows, markdown)


if __name__ == "__main__":
    main()
