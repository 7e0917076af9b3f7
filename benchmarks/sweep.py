"""Width-sweep benchmark (issue 6): one vmapped program per bucket against a loop over widths.

Both sides run the same learner (alternating minimisation, `--steps` steps, same seeds, same data)
and must produce the same dictionaries; the baseline compiles one program per width and runs the
seeds one after another, as a user looping over widths would. Reports total wall time including
compilation, the compile counts, and the padding overhead (padded atom-steps / useful atom-steps).

    python benchmarks/sweep.py            # widths 16..1024 (7) x 2 seeds
    python benchmarks/sweep.py --quick    # a smoke run for CI
"""

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import sparsedict as sd
from sparsedict._coding._driver import default_tol
from sparsedict._learning._alternating import Alternating
from sparsedict._learning._atoms import init_dictionary
from sparsedict._learning._chunks import scan_full_data
from sparsedict._sweep import _engine


def loop_over_widths(X, widths, seeds, lam, steps):
    """The baseline: a separate jit per width, seeds run one after another."""
    tol = jnp.asarray(default_tol(X.dtype), X.dtype)
    learner = Alternating()
    compiles = 0
    out = {}
    for width in widths:
        @jax.jit  # a fresh function per width: one compile each, as a user's loop would have
        def train(X, lam, seed, width=width):
            state = learner.init(X, init_dictionary(X, width, jax.random.PRNGKey(seed)))
            state = scan_full_data(learner, X, lam, tol, state, steps)[0]
            return state.D, _engine._member_summary(X, lam, tol, state, 5000)  # same results

        compiles += 1
        for seed in seeds:
            D, summary = train(X, jnp.asarray(lam, X.dtype), seed)
            out[width, seed] = np.asarray(D), jax.device_get(summary)
    return out, compiles


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--buckets", default="pow2", choices=["pow2", "single"])
    parser.add_argument("--widths", default="16,32,64,128,256,512,1024", help="comma-separated widths")
    parser.add_argument("--loop-first", action="store_true",
                        help="run the baseline first (run both orders on a busy machine)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    widths = (4, 8, 16) if args.quick else tuple(int(w) for w in args.widths.split(","))
    n, d, steps = (256, 16, 4) if args.quick else (args.n, args.d, args.steps)
    seeds, lam = (0, 1), 0.1
    X = sd.datasets.feature_mixture(n, d, seed=0)

    spec = sd.SweepSpec(widths=widths, seeds=seeds, lams=(lam,), steps=steps, chunk_size=steps, buckets=args.buckets)
    def run_sweep():
        before = sum(_engine.TRACES.values())
        start = time.perf_counter()
        rows = sd.run_sweep(X, spec, out=None, verbose=False)
        return rows, time.perf_counter() - start, sum(_engine.TRACES.values()) - before

    def run_loop():
        start = time.perf_counter()
        looped, compiles = loop_over_widths(jnp.asarray(X), widths, seeds, lam, steps)
        return looped, time.perf_counter() - start, compiles

    if args.loop_first:
        looped, loop_time, loop_compiles = run_loop()
        rows, sweep_time, sweep_compiles = run_sweep()
    else:
        rows, sweep_time, sweep_compiles = run_sweep()
        looped, loop_time, loop_compiles = run_loop()
    agree = max(abs(r["objective"] - float(looped[r["width"], r["seed"]][1]["objective"])) for r in rows)

    useful = sum(widths) * len(seeds)
    padded = sum(spec.bucket_width(w) for w in widths) * len(seeds)
    result = {
        "device": str(jax.devices()[0]), "cpu_count": os.cpu_count(), "jax": jax.__version__,
        "python": platform.python_version(), "n": n, "d": d, "steps": steps, "widths": widths,
        "seeds": seeds, "buckets": args.buckets, "loop_first": args.loop_first, "sweep_seconds": sweep_time,
        "loop_seconds": loop_time, "speedup": loop_time / sweep_time, "sweep_compiles": sweep_compiles,
        "loop_compiles": loop_compiles, "padding_overhead": padded / useful,
        "max_objective_difference": agree,
    }
    lines = [
        f"# Width sweep vs loop over widths ({'quick' if args.quick else 'full'})", "",
        f"device {result['device']} ({result['cpu_count']} cores), jax {jax.__version__}; n={n}, d={d}, "
        f"{steps} alternating steps, widths {widths}, seeds {seeds}, buckets={args.buckets}, "
        f"{'baseline' if args.loop_first else 'sweep'} run first", "",
        "| | wall time incl. compile (s) | compiles |", "| --- | --- | --- |",
        f"| vmapped sweep | {sweep_time:.1f} | {sweep_compiles} |",
        f"| loop, one jit per width | {loop_time:.1f} | {loop_compiles} |", "",
        f"speedup {result['speedup']:.2f}x; padding overhead {result['padding_overhead']:.2f}x atom-steps; "
        f"largest objective difference between the two {agree:.1e}",
        "(sweep compiles: one training program per bucket; each side also compiles its initialisation "
        "and final-report programs)",
    ]
    print("\n".join(lines))
    if not args.quick:
        os.makedirs(args.out, exist_ok=True)
        name = f"sweep_{args.buckets}_{len(widths)}w_{'loopfirst' if args.loop_first else 'sweepfirst'}"
        with open(os.path.join(args.out, name + ".json"), "w") as f:
            json.dump(result, f, indent=2)
        with open(os.path.join(args.out, name + ".md"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()
