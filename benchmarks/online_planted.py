"""Online learning against SPAMS' trainDL on a planted dictionary (issue 16).

Problem (the issue's): 12 unit atoms in d = 20 (Gaussian, normalised); 3000 signals, each code
active with probability 0.15 with value uniform in [0.5, 1.5]; Gaussian noise 0.005; lam = 0.02.
Seeds 0, 1, 2 (data and planted atoms from ``numpy.random.default_rng(seed)``).

Learners, each from its own default initial atoms (random training signals):

- ``sd_online``: ``sparsedict.learn_dictionary(X, 12, 0.02, method="online")``, every default.
- ``sd_online_pre16``: the same with the online learner of before issue 16 (no cap on the age
  of the statistics, one atom sweep per step), for the record.
- ``sd_alternating``: ``learn_dictionary(X, 12, 0.02)`` (method="alternating"), every default.
- ``spams``: ``spams.trainDL(mode=2, lambda1=0.02, lambda2=0, posAlpha=True, K=12,
  batchsize=256, iter=1000)`` (1000 minibatches, as many as needed for it to recover every seed
  here: 200 recovered only one seed of three).

sparsedict is timed after a warm-up call with the same shapes (compilation excluded and reported
separately). Every dictionary is scored the same way: F = mean 1/2||x - aD||^2 + lam ||a||_1 with
codes from ``sparsedict.sparse_code(..., tol=1e-9)`` in float64 on all 3000 signals; an atom is
recovered when some learned atom has cosine > 0.99 with it. Training precision float32.

Run ``python benchmarks/online_planted.py`` (about a minute of compute) or ``--quick`` (one seed).
Results: ``<out>/online_planted.md`` and ``.json``.
"""

import argparse
import json
import os
import platform
import time

import numpy as np

K, D_DIM, N, DENSITY, NOISE, LAM = 12, 20, 3000, 0.15, 0.005, 0.02


def planted(seed):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((K, D_DIM))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    A = (rng.random((N, K)) < DENSITY) * rng.uniform(0.5, 1.5, (N, K))
    return A @ D + NOISE * rng.standard_normal((N, D_DIM)), D


def score(X, D_learned, D_true):
    import sparsedict

    D = np.asarray(D_learned, np.float64)
    D = D / np.linalg.norm(D, axis=1, keepdims=True)
    codes = np.asarray(sparsedict.sparse_code(X, D, LAM, tol=1e-9, max_steps=20_000).codes)
    R = X - codes @ D
    F = float(np.mean(0.5 * np.sum(R * R, axis=1) + LAM * codes.sum(axis=1)))
    best = (D @ D_true.T).max(axis=0)
    return dict(objective=F, recovered=int(np.sum(best > 0.99)), worst_cosine=float(best.min()))


def run_sparsedict(name, X, dtype):
    import sparsedict
    from sparsedict._testing import learning_hooks

    X = np.asarray(X, dtype)
    method = "alternating" if name == "sd_alternating" else "online"
    original = learning_hooks.Online
    if name == "sd_online_pre16":

        def pre16(**kw):
            return original(**{**kw, "memory": None, "atom_sweeps": 1})

        learning_hooks.Online = pre16
    try:
        t0 = time.perf_counter()  # warm-up: compiles every program of the timed call
        sparsedict.learn_dictionary(X, K, LAM, method=method, max_steps=10)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = sparsedict.learn_dictionary(X, K, LAM, method=method)
        seconds = time.perf_counter() - t0
    finally:
        learning_hooks.Online = original
    return result.dictionary, dict(
        seconds=seconds, compile_s=compile_s, steps=int(result.steps), converged=result.converged
    )


def run_spams(X, dtype, iters):
    import spams

    t0 = time.perf_counter()
    D = spams.trainDL(
        np.asfortranarray(np.asarray(X, dtype).T),
        K=K,
        lambda1=LAM,
        lambda2=0.0,
        mode=2,
        posAlpha=True,
        batchsize=256,
        iter=iters,
        verbose=False,
    )
    return np.asarray(D).T, dict(seconds=time.perf_counter() - t0, steps=iters)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="seed 0 only")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--spams-iter", type=int, default=1000)
    args = parser.parse_args()

    import jax

    jax.config.update("jax_enable_x64", True)
    dtype = np.float32
    seeds = (0,) if args.quick else (0, 1, 2)
    names = ("sd_online", "sd_online_pre16", "sd_alternating", "spams")
    rows = []
    for seed in seeds:
        X, D_true = planted(seed)
        for name in names:
            if name == "spams":
                D, extra = run_spams(X, dtype, args.spams_iter)
            else:
                D, extra = run_sparsedict(name, X, dtype)
            row = dict(seed=seed, learner=name, **score(X, D, D_true), **extra)
            rows.append(row)
            print(row, flush=True)
    for seed in seeds:
        same = [r for r in rows if r["seed"] == seed]
        ref = next(r["objective"] for r in same if r["learner"] == "sd_alternating")
        for row in same:
            row["F_over_alternating"] = row["objective"] / ref
    machine = dict(
        cpu_count=os.cpu_count(),
        jax=jax.__version__,
        platform=platform.platform(),
        load_average=os.getloadavg(),
    )
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, "online_planted")
    with open(base + ".json", "w") as f:
        json.dump(dict(machine=machine, rows=rows), f, indent=1, default=str)
    lines = [
        "# Online learning against SPAMS trainDL on a planted dictionary (issue 16)",
        "",
        "Machine: " + ", ".join(f"{k}={v}" for k, v in machine.items()),
        "",
        f"12 unit atoms in d=20, n=3000, density 0.15, codes U[0.5, 1.5], noise 0.005, lam=0.02; "
        f"float32 training, F scored in float64 on all signals. spams: iter={args.spams_iter}, "
        "batchsize=256. sparsedict times exclude compilation (warm-up call).",
        "",
        "| seed | learner | F | F / alternating | atoms recovered (cos > 0.99) | worst cos | "
        "steps | time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['seed']} | {row['learner']} | {row['objective']:.6f} | "
            f"{row['F_over_alternating']:.4f} | {row['recovered']}/12 | "
            f"{row['worst_cosine']:.4f} | {row['steps']} | {row['seconds']:.2f} |"
        )
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {base}.md/.json")


if __name__ == "__main__":
    main()
