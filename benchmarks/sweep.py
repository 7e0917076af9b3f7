"""Width-sweep benchmark (issue 6): one vmapped program per bucket against a loop over widths.

Both sides run the same learner (alternating minimisation, `--max-steps` steps, same seeds, same
data) and must produce the same dictionaries; the baseline compiles one program per width and runs
the seeds one after another, as a user looping over widths would. Reports total wall time including
compilation, the compile counts, and the padding overhead (padded atom-steps / useful atom-steps).

    python benchmarks/sweep.py            # widths 16..1024 (7) x 2 seeds
    python benchmarks/sweep.py --quick    # a smoke run for CI

On a GPU (issue 8: 8 widths up to 16384 atoms, 1M synthetic activations of dimension 512, the
online learner streaming minibatches; the baseline is the same learner in a loop over widths):

    python benchmarks/sweep.py --learner online --n 1000000 --d 512 --max-steps 200 \
        --chunk-size 50 --batch-size 4096 --widths 128,256,512,1024,2048,4096,8192,16384 \
        --solver fista
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
from sparsedict._testing import (
    TRACES,
    SweepData,
    default_tol,
    learner_for,
    make_layout,
    member_summary,
    scan_full_data,
    scan_minibatches,
)


def loop_over_widths(X, spec):
    """The baseline: the same learner, a separate jit per width, seeds one after another."""
    data = SweepData(X, spec, make_layout("members", jax.devices()[:1]))
    learner = learner_for(spec, data.n)
    dtype = data.dtype
    tol = jnp.asarray(default_tol(dtype), dtype)
    lam = jnp.ldexp(jnp.asarray(spec.lams[0], dtype), -data.exponent)  # the scaled problem
    compiles, out = 0, {}
    for width in sorted(spec.widths):
        X_eval = data.rows(data.eval_rows)

        # fresh functions per width: one compile each, as a user's loop would have
        @jax.jit
        def init(X, D0):
            return learner.init(X, D0)

        @jax.jit
        def chunk(state, batches, X_eval=X_eval):
            if spec.learner == "alternating":
                return scan_full_data(learner, X_eval, lam, tol, state, spec.chunk_size)[0]
            return scan_minibatches(learner, lam, tol, state, batches)[0]

        summary = jax.jit(lambda state, X_eval=X_eval: member_summary(X_eval, lam, tol, state))
        compiles += 1
        for seed in spec.seeds:
            state = init(X_eval, data.initial_atoms([(width, seed, None)], width)[0])
            for step in range(0, spec.max_steps, spec.chunk_size):
                batches = (
                    None if spec.learner == "alternating" else data.batches(step, spec.chunk_size)
                )
                state = chunk(state, batches)
            stats = jax.device_get(summary(state))
            stats["objective"] = np.ldexp(stats["objective"], 2 * data.exponent)  # data's scale
            out[width, seed] = np.asarray(state.D), stats
    data.close()
    return out, compiles


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--buckets", default="pow2", choices=["pow2", "single"])
    parser.add_argument("--learner", default="alternating", choices=["alternating", "online"])
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="steps per chunk (default: all)"
    )
    parser.add_argument("--solver", default="active_set")
    parser.add_argument(
        "--member-batch",
        type=int,
        default=None,
        help="members vmapped at once (default: 1 on CPU, all on accelerators)",
    )
    parser.add_argument(
        "--widths", default="16,32,64,128,256,512,1024", help="comma-separated widths"
    )
    parser.add_argument(
        "--loop-first",
        action="store_true",
        help="run the baseline first (run both orders on a busy machine)",
    )
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    widths = (4, 8, 16) if args.quick else tuple(int(w) for w in args.widths.split(","))
    n, d, steps = (256, 16, 4) if args.quick else (args.n, args.d, args.max_steps)
    seeds, lam = (0, 1), 0.1
    X = sd.datasets.feature_mixture(n, d, seed=0, dtype=np.float32)

    spec = sd.SweepSpec(
        widths=widths,
        seeds=seeds,
        lams=(lam,),
        max_steps=steps,
        chunk_size=args.chunk_size or steps,
        buckets=args.buckets,
        learner=args.learner,
        batch_size=args.batch_size,
        solver=args.solver,
    )

    def run_sweep():
        before = sum(TRACES.values())
        start = time.perf_counter()
        rows = sd.run_sweep(X, spec, out=None, verbose=False, member_batch=args.member_batch).rows
        return rows, time.perf_counter() - start, sum(TRACES.values()) - before

    def run_loop():
        start = time.perf_counter()
        looped, compiles = loop_over_widths(X, spec)
        return looped, time.perf_counter() - start, compiles

    if args.loop_first:
        looped, loop_time, loop_compiles = run_loop()
        rows, sweep_time, sweep_compiles = run_sweep()
    else:
        rows, sweep_time, sweep_compiles = run_sweep()
        looped, loop_time, loop_compiles = run_loop()
    agree = max(
        abs(r["objective"] - float(looped[r["width"], r["seed"]][1]["objective"])) for r in rows
    )

    useful = sum(widths) * len(seeds)
    padded = sum(spec.bucket_width(w) for w in widths) * len(seeds)
    result = {
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "n": n,
        "d": d,
        "steps": steps,
        "widths": widths,
        "seeds": seeds,
        "buckets": args.buckets,
        "learner": args.learner,
        "solver": args.solver,
        "batch_size": args.batch_size,
        "member_batch": args.member_batch,
        "loop_first": args.loop_first,
        "sweep_seconds": sweep_time,
        "loop_seconds": loop_time,
        "speedup": loop_time / sweep_time,
        "sweep_compiles": sweep_compiles,
        "loop_compiles": loop_compiles,
        "padding_overhead": padded / useful,
        "max_objective_difference": agree,
    }
    lines = [
        f"# Width sweep vs loop over widths ({'quick' if args.quick else 'full'})",
        "",
        f"device {result['device']} ({result['cpu_count']} cores), jax {jax.__version__}; n={n}, "
        f"d={d}, "
        f"{steps} {args.learner} steps ({args.solver}), widths {widths}, seeds {seeds}, "
        f"buckets={args.buckets}, "
        f"member_batch={args.member_batch or 'default'}, "
        f"{'baseline' if args.loop_first else 'sweep'} run first",
        "",
        "| | wall time incl. compile (s) | compiles |",
        "| --- | --- | --- |",
        f"| vmapped sweep | {sweep_time:.1f} | {sweep_compiles} |",
        f"| loop, one jit per width | {loop_time:.1f} | {loop_compiles} |",
        "",
        f"speedup {result['speedup']:.2f}x; padding overhead {result['padding_overhead']:.2f}x "
        f"atom-steps; "
        f"largest objective difference between the two {agree:.1e}",
        "(compiles: the sweep's training program per bucket, which also gives its final report,"
        " and the loop's training program per width; each side also compiles its initialisation,"
        " and the loop its final-report programs)",
    ]
    print("\n".join(lines))
    if not args.quick:
        os.makedirs(args.out, exist_ok=True)
        device = jax.devices()[0].platform
        order = "loopfirst" if args.loop_first else "sweepfirst"
        name = f"sweep_{device}_{args.learner}_{args.buckets}_{len(widths)}w_{order}"
        with open(os.path.join(args.out, name + ".json"), "w") as f:
            json.dump(result, f, indent=2)
        with open(os.path.join(args.out, name + ".md"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()
