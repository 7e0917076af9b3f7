"""The `sparsedict` command line."""

import argparse
import sys
import time


def _demo(args) -> int:
    import jax

    if args.float64:
        jax.config.update("jax_enable_x64", True)
    import numpy as np

    import sparsedict as sd
    from sparsedict.datasets import sparse_synthetic

    dtype = np.float64 if args.float64 else np.float32
    X, D, _ = sparse_synthetic(args.n, args.d, args.k, args.density, seed=args.seed, dtype=dtype)
    lam = args.lam
    print(
        f"sparsedict demo: {args.n} signals, d={args.d}, k={args.k} atoms, lam={lam}, "
        f"solver={args.solver}, {np.dtype(dtype).name}, device={jax.devices()[0].platform}"
    )
    start = time.perf_counter()
    result = sd.sparse_code(X, D, lam, solver=args.solver, tol=args.tol, max_steps=args.max_steps)
    result.codes.block_until_ready()
    elapsed = time.perf_counter() - start
    print(f"solved in {elapsed:.2f} s (including compilation)\n")
    print("per-signal certificates (first 8 signals):")
    print(f"{'signal':>6} {'L0':>4} {'primal':>10} {'gap':>10} {'rel. gap':>10} {'KKT':>10} {'conv.':>6}")
    for i in range(min(8, args.n)):
        print(
            f"{i:>6} {int((result.codes[i] > 0).sum()):>4} {float(result.primal[i]):>10.4f} "
            f"{float(result.gap[i]):>10.2e} {float(result.relative_gap[i]):>10.2e} "
            f"{float(result.kkt[i]):>10.2e} {str(bool(result.converged[i])):>6}"
        )
    print("\nsummary:")
    print(result.summary())
    return 0 if bool(result.converged.all()) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="sparsedict",
        description="Nonnegative L1 sparse coding and dictionary learning with certificates.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="solve a built-in sparse coding problem and print its duality-gap certificates",
        description="Generate signals from a random unit-norm dictionary with sparse nonnegative "
        "codes, solve the nonnegative lasso for every signal, and print the per-signal "
        "certificates (duality gap, KKT residual, converged flag).",
    )
    demo.add_argument("--n", type=int, default=2048, help="number of signals (default 2048)")
    demo.add_argument("--d", type=int, default=64, help="signal dimension (default 64)")
    demo.add_argument("--k", type=int, default=256, help="number of atoms (default 256)")
    demo.add_argument("--density", type=float, default=0.07, help="fraction of active codes")
    demo.add_argument("--lam", type=float, default=0.2, help="L1 penalty (default 0.2)")
    demo.add_argument("--solver", default="active_set", choices=["active_set", "fista", "cd"])
    demo.add_argument("--tol", type=float, default=None, help="relative duality-gap tolerance")
    demo.add_argument("--max-steps", type=int, default=1000, help="cap on solver steps")
    demo.add_argument("--float64", action="store_true", help="solve in float64")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
