"""The `sparsedict` command line."""

import argparse
import contextlib
import dataclasses
import logging
import sys
import time

from ._progress import logger, to_stderr

# Output: results on stdout; what is being done (banners, stages, per-chunk progress) through the
# "sparsedict" logger on stderr, at the level --quiet / --verbose choose; errors always.
_note = logger.info


@contextlib.contextmanager
def _key_flag(flag):
    """A file that holds several arrays names the flag that picks one (not the API's `key=`)."""
    from .streaming._formats import SeveralArrays

    try:
        yield
    except SeveralArrays as e:
        raise SeveralArrays(e.path, e.names, flag) from None


def _float_dtype(args):
    """Enable float64 in JAX when asked (before any array is made); the numpy dtype to use."""
    import jax
    import numpy as np

    if args.float64:
        jax.config.update("jax_enable_x64", True)
    return np.float64 if args.float64 else np.float32


def _demo(args) -> int:
    dtype = _float_dtype(args)
    import jax
    import numpy as np

    import sparsedict as sd
    from sparsedict.datasets import sparse_synthetic

    X, D, _ = sparse_synthetic(
        args.n, args.d, args.k, density=args.density, seed=args.seed, dtype=dtype
    )
    lam = args.lam
    _note(
        f"sparsedict demo: {args.n} signals, d={args.d}, k={args.k} atoms, lam={lam}, "
        f"solver={args.solver}, {np.dtype(dtype).name}, device={jax.devices()[0].platform}"
    )
    start = time.perf_counter()
    result = sd.sparse_code(X, D, lam, solver=args.solver, tol=args.tol, max_steps=args.max_steps)
    result.codes.block_until_ready()
    elapsed = time.perf_counter() - start
    _note(f"solved in {elapsed:.2f} s (including compilation)")
    steps, l0 = np.asarray(result.steps), np.asarray((result.codes > 0).sum(axis=1))
    logger.debug(
        f"solver steps per signal: min {steps.min()}, median {np.median(steps):g}, max "
        f"{steps.max()}; L0 per signal: mean {l0.mean():.2f}, max {l0.max()}"
    )
    if args.quiet:
        print(result.summary())
        return 0 if bool(result.converged.all()) else 1
    print("per-signal certificates (first 8 signals):")
    print(
        f"{'signal':>6} {'L0':>4} {'primal':>10} {'gap':>10} {'rel. gap':>10} {'KKT':>10} "
        f"{'conv.':>6}"
    )
    for i in range(min(8, args.n)):
        print(
            f"{i:>6} {int((result.codes[i] > 0).sum()):>4} {float(result.primal[i]):>10.4f} "
            f"{float(result.gap[i]):>10.2e} {float(result.relative_gap[i]):>10.2e} "
            f"{float(result.kkt[i]):>10.2e} {str(bool(result.converged[i])):>6}"
        )
    print("\nsummary:")
    print(result.summary())
    return 0 if bool(result.converged.all()) else 1


def _parsed(kind, parse):
    """An argparse type: `parse(text)`, with argparse's one-line error naming the flag."""

    def convert(text):
        try:
            return parse(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None

    convert.__name__ = kind
    return convert


def _positive(text):
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _bytes_value(text):
    """'4GB', '512MiB', '1e9' -> bytes."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    scale = units.get(text[-1:], 1)
    value = float(text[:-1] if text[-1:] in units else text) * scale
    if not value > 0:
        raise ValueError(text)
    return int(value)


_ints = _parsed("comma-separated integers", lambda t: tuple(int(v) for v in t.split(",")))
_floats = _parsed("comma-separated numbers", lambda t: tuple(float(v) for v in t.split(",")))
_bytes = _parsed("a size such as 12GB, 512MiB or 1e9", _bytes_value)
_count = _parsed("a positive integer", _positive)


def _sweep(args) -> int:
    try:
        code = _sweep_on_this_host(args)
    except MemoryError as error:
        from sparsedict import SweepDoesNotFit  # (imported late: --float64 comes first)

        if not isinstance(error, SweepDoesNotFit):
            raise
        raise SystemExit(f"sparsedict sweep: {error}") from None  # the plan's refusal, no traceback
    if args.distributed:  # leave together: a host that exits early fails the others' shutdown
        import jax
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("sparsedict sweep finished")
        jax.distributed.shutdown()
    return code


def _sweep_on_this_host(args) -> int:
    if args.distributed:  # before any device is touched: the standard JAX multi-host runtime
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts (GPUs use NCCL)
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    dtype = _float_dtype(args)
    import jax
    import numpy as np

    import sparsedict as sd
    from sparsedict import datasets
    from sparsedict._sweep._engine import certification_target
    from sparsedict._sweep._plots import write_plots
    from sparsedict._sweep._spec import auto_buckets
    from sparsedict._sweep._store import ResultStore

    if args.data and args.learner == "online":
        with _key_flag("--data-key"):  # only minibatches are read
            X = sd.streaming.open_signals(args.data, key=args.data_key)
        source = f"{args.data} (streamed, {np.dtype(X.dtype).name})"
    elif args.data:
        with _key_flag("--data-key"):
            X = np.asarray(sd.streaming.load_array(args.data, key=args.data_key), dtype)
        source = args.data
    elif args.dataset == "patches":
        X, source = datasets.image_patches(args.n, dtype=dtype), "8x8 natural-image patches"
    else:
        X, source = datasets.feature_mixture(args.n, args.d, seed=0, dtype=dtype), "feature mixture"
    # every option named like a SweepSpec field sets it (--max-steps -> max_steps, ...)
    fields = [f.name for f in dataclasses.fields(sd.SweepSpec) if f.name in vars(args)]
    options = {name: getattr(args, name) for name in fields}
    if options["buckets"] == "auto":
        options["buckets"] = auto_buckets(X.shape[0], X.shape[1], args.widths)
    spec = sd.SweepSpec(**options)
    budget = args.memory_budget
    if args.dry_run:
        print(sd.plan_sweep(X, spec, memory_budget=budget, member_batch=args.member_batch))
        return 0
    if jax.process_index() != 0:
        logger.setLevel(logging.ERROR)  # the first host reports progress
    _note(
        f"sparsedict sweep: {source}, n={X.shape[0]}, d={X.shape[1]}; widths {spec.widths}, "
        f"seeds {spec.seeds}, lams {spec.lams}; {len(spec.members())} members in "
        f"{len(spec.grouped())} buckets on {len(jax.devices())} {jax.devices()[0].platform} "
        f"device(s); "
        f"results in {args.out}"
    )
    start = time.perf_counter()
    rows = sd.run_sweep(
        X,
        spec,
        out=args.out,
        verbose=False,  # progress goes to the logger, shown as --quiet/--verbose say
        memory_budget=budget,
        member_batch=args.member_batch,
    ).rows
    if jax.process_index() != 0:
        return 0  # the first host prints and plots
    _note(f"swept in {time.perf_counter() - start:.1f} s")
    print("mean over seeds per width:")
    header = (
        f"{'lam':>6} {'width':>6} {'objective':>10} {'bound':>9} {'F-bound':>9} {'L0':>6} "
        f"{'dead':>5} {'expl.var':>8} {'stationarity':>12} {'certified':>9}"
    )
    print(header)
    for lam in spec.lams:
        for width in sorted(set(spec.widths)):
            sel = [r for r in rows if r["lam"] == lam and r["width"] == width]

            def mean(key, sel=sel):
                return float(np.mean([r[key] for r in sel]))

            certified = sum(r["status"] == "certified" for r in sel)
            print(
                f"{lam:>6g} {width:>6d} {mean('objective'):>10.5f} {mean('bound'):>9.5f} "
                f"{mean('gap_to_bound'):>9.5f} {mean('mean_l0'):>6.2f} {mean('dead_atoms'):>5.1f} "
                f"{mean('explained_variance'):>8.4f} "
                f"{max(r['stationarity'] for r in sel):>12.2e} {certified:>5d}/{len(sel):<3d}"
            )
    target = certification_target(spec)
    print(
        "(stationarity: largest certified first-order residual over seeds, per-atom "
        "|s_k/m_k - lam d_k| / lam and KKT / lam; 0 at a stationary point. certified: members "
        f"at or below {target:g})"
    )
    failed = [r for r in rows if r["status"] != "certified"]
    for r in failed:
        print(
            f"  width {r['width']} seed {r['seed']} lam {r['lam']:g}: {r['status']} "
            f"(stationarity {r['stationarity']:.2e} after {r['steps']} steps)"
        )
    paths = write_plots(rows, ResultStore(args.out, spec).per_atom(), args.out)
    if paths:
        print("plots: " + ", ".join(paths))
    else:
        print('plots skipped: matplotlib is not installed (pip install "sparsedict[plot]")')
    return 0


def _certify(args) -> int:
    if args.sae is not None:
        return _certify_sae(args)
    if args.dictionary is None or args.lam is None:
        raise UsageError("certify needs --dictionary and --lam (or --sae for an SAE checkpoint)")
    dtype = _float_dtype(args)
    import numpy as np

    import sparsedict as sd

    with _key_flag("--dictionary-key"):
        D = np.asarray(sd.streaming.load_array(args.dictionary, key=args.dictionary_key), dtype)
    with _key_flag("--data-key"):
        X = np.asarray(sd.streaming.load_array(args.data, key=args.data_key), dtype)
    if args.transpose:
        D = D.T
    d = X.shape[-1]
    if D.ndim != 2 or D.shape[1] != d:
        hint = (
            "; it looks transposed (atoms as columns): rerun with --transpose"
            if D.ndim == 2 and D.shape[0] == d
            else ""
        )
        raise UsageError(
            f"--dictionary {args.dictionary} has shape {D.shape}, but --data {args.data} has "
            f"d = {d} features: the dictionary must be (k, {d}) with atoms as rows{hint}"
        )
    norms = np.linalg.norm(D, axis=1)
    if args.normalize:
        D = D / np.where(norms > 0, norms, 1.0)[:, None]
    elif np.any(np.abs(norms - 1) > 1e-4):
        raise UsageError(
            f"--dictionary {args.dictionary}: the atoms (rows) are not unit norm (norms from "
            f"{norms.min():.3g} to {norms.max():.3g}); rerun with --normalize to normalise them "
            "(the objective of THEORY assumes unit-norm atoms)"
        )
    start = time.perf_counter()
    report = sd.optimality.certify(X, D, args.lam)
    # after the work: a refused input leaves its one-line error alone on stderr
    _note(f"certify: dictionary {D.shape} (atoms as rows), data {X.shape}, lam={args.lam}")
    logger.debug(f"codes re-solved and residuals computed in {time.perf_counter() - start:.2f} s")
    print(report)
    bound = float(sd.wide_limit.bound(X, args.lam))
    print(
        f"wide-limit bound {bound:.6g}; objective - bound = {float(report.objective) - bound:.4g}"
    )
    if args.npz is not None:
        from .sae_checkpoints._command import report_payload, write_npz

        payload = report_payload(report)
        payload["summary"]["wide_limit_bound"] = bound
        write_npz(args.npz, payload)
        _note(f"wrote {args.npz}")
    return 0


def _certify_sae(args) -> int:
    _float_dtype(args)
    from .sae_checkpoints import run_certify_sae

    return run_certify_sae(
        args.sae,
        args.data,
        lam=args.lam,
        target_l0=args.target_l0,
        json_path=args.json,
        plot_path=args.plot,
        npz_path=args.npz,
        fail_above=args.fail_above,
        chunk_size=args.chunk_size,
        second_order=not args.first_order_only,
        max_support=args.max_support,
        scaling_factor=args.scaling_factor,
        note=_note,
    )


class UsageError(Exception):
    """A user error the command line reports as one line, without a traceback."""


def _one_line(error: BaseException) -> str:
    """The message of a user error, without the equinox/JAX traceback advice."""
    text = str(error).strip() or type(error).__name__
    if "EquinoxRuntimeError: " in text:  # a value check inside compiled code: keep its message
        text = text.rsplit("EquinoxRuntimeError: ", 1)[1]
    for marker in ("\n\n-------", "\n-------", "\nEquinoxRuntimeError", "\nThis error"):
        text = text.split(marker)[0]
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _command(sub, name, run, *, help, description):
    """A subcommand running `run(args)`; every one can compute in float64 and talk more or less."""
    parser = sub.add_parser(name, help=help, description=description)
    parser.add_argument("--float64", action="store_true", help="compute in float64")
    talk = parser.add_mutually_exclusive_group()
    talk.add_argument(
        "-q", "--quiet", action="store_true", help="print only errors and the final result"
    )
    talk.add_argument(
        "-v", "--verbose", action="store_true", help="also show progress after every chunk"
    )
    parser.set_defaults(run=run)
    return parser


def _choice(parser, flag, choices, help):
    """An option taking one of `choices`, the first by default."""
    parser.add_argument(flag, default=choices[0], choices=choices, help=help)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="sparsedict",
        description="Nonnegative L1 sparse coding and dictionary learning with certificates.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = _command(
        sub,
        "demo",
        _demo,
        help="solve a built-in sparse coding problem and print its duality-gap certificates",
        description="Generate signals from a random unit-norm dictionary with sparse nonnegative "
        "codes, solve the nonnegative lasso for every signal, and print the per-signal "
        "certificates (duality gap, KKT residual, converged flag).",
    )
    demo.add_argument("--n", type=_count, default=2048, help="number of signals (default 2048)")
    demo.add_argument("--d", type=_count, default=64, help="signal dimension (default 64)")
    demo.add_argument("--k", type=_count, default=256, help="number of atoms (default 256)")
    demo.add_argument("--density", type=float, default=0.07, help="fraction of active codes")
    demo.add_argument("--lam", type=float, default=0.2, help="L1 penalty (default 0.2)")
    demo.add_argument("--solver", default="active_set", choices=["active_set", "fista", "cd"])
    demo.add_argument("--tol", type=float, default=None, help="relative duality-gap tolerance")
    demo.add_argument("--max-steps", type=_count, default=1000, help="cap on solver steps")
    demo.add_argument("--seed", type=int, default=0)

    sweep = _command(
        sub,
        "sweep",
        _sweep,
        help="train dictionaries of many widths x seeds x lams in one compiled program per bucket",
        description="Width sweep: alternating-minimisation dictionaries for every (width, seed, "
        "lam), trained together (vmap over members, padded width buckets, sharded over all "
        "devices). Prints a table per width (objective, wide-limit bound, L0, dead atoms, "
        "explained variance, stationarity) and writes results.csv, bucket_<W>.npz (dictionaries), "
        "manifest.json and plots to --out. Rerunning with the same --out resumes an interrupted "
        "sweep.",
    )
    sweep.add_argument("--data", help="your activations: .npy, .npz or .safetensors, shape (n, d)")
    sweep.add_argument(
        "--data-key",
        "--key",  # the earlier name, still accepted
        dest="data_key",
        help="array name inside an .npz/.safetensors --data file",
    )
    sweep.add_argument(
        "--dataset",
        default="features",
        choices=["features", "patches"],
        help="built-in data when --data is absent: a mixture of independent, "
        "hierarchical and dense antipodal features (default), or 8x8 natural-image "
        "patches (needs scikit-learn)",
    )
    sweep.add_argument("--n", type=_count, default=1024, help="built-in data: number of signals")
    sweep.add_argument("--d", type=_count, default=32, help="built-in feature mixture: dimension")
    sweep.add_argument(
        "--widths", type=_ints, default=(4, 8, 16, 32, 64), help="comma-separated widths"
    )
    sweep.add_argument("--seeds", type=_ints, default=(0, 1), help="comma-separated seeds")
    sweep.add_argument("--lams", type=_floats, default=(0.1,), help="comma-separated L1 penalties")
    sweep.add_argument(
        "--max-steps",
        type=_count,
        default=400,
        help="cap on training steps per member (default 400; a bucket stops earlier once every "
        "member is certified, see --stationarity-tol)",
    )
    sweep.add_argument("--chunk-size", type=_count, default=10, help="steps per compiled chunk")
    _choice(
        sweep,
        "--buckets",
        ["auto", "pow2", "single"],
        "pad widths to powers of two, or all to the largest (one compile); auto (default): one "
        "bucket when n * max width * d <= 2^24, where compiling more buckets costs more than the "
        "padding",
    )
    sweep.add_argument(
        "--stationarity-tol",
        type=float,
        default=1e-3,
        help="stop a bucket once every member's certified relative stationarity residual is at "
        "most this (default 1e-3; 0: always run --max-steps); the table says which members did "
        "not get there",
    )
    _choice(
        sweep,
        "--learner",
        ["alternating", "online"],
        "alternating: exact codes of all data each step (data on the device); "
        "online: minibatches streamed from --data (.npy, or shards: a glob of "
        ".npz/.safetensors files) without loading it",
    )
    sweep.add_argument("--batch-size", type=_count, default=1024, help="online minibatch size")
    sweep.add_argument(
        "--eval-size",
        type=int,
        default=4096,
        help="online: signals of the final summary (the first ones of the data)",
    )
    _choice(
        sweep,
        "--solver",
        ["active_set", "fista", "cd"],
        "coding solver (fista is the accelerator workhorse)",
    )
    _choice(
        sweep,
        "--layout",
        ["members", "data"],
        "split members over the devices (default) or the signals/minibatches",
    )
    sweep.add_argument(
        "--member-batch",
        type=int,
        default=None,
        help="members trained at once per device (default: 1 on CPU, all on accelerators)",
    )
    sweep.add_argument(
        "--memory-budget",
        type=_bytes,
        default=None,
        help="device memory the sweep may use per device, e.g. 12GB (default: detected)",
    )
    sweep.add_argument(
        "--dry-run",
        action="store_true",
        help="compile every bucket, print the predicted peak device memory, train nothing",
    )
    sweep.add_argument(
        "--distributed",
        action="store_true",
        help="multi-host: call jax.distributed.initialize() first (arguments below, or "
        "detected from the cluster environment: SLURM, Open MPI, Cloud TPU)",
    )
    sweep.add_argument(
        "--coordinator", default=None, help="with --distributed: host:port of process 0"
    )
    sweep.add_argument("--num-processes", type=_count, default=None, help="with --distributed")
    sweep.add_argument("--process-id", type=int, default=None, help="with --distributed")
    sweep.add_argument(
        "--out", default="sweep_results", help="results folder (default sweep_results)"
    )

    cert = _command(
        sub,
        "certify",
        _certify,
        help="optimality report of a dictionary you bring (e.g. an SAE decoder)",
        description="Re-solve exact codes of --data for the dictionary and print the optimality "
        "report of THEORY sections 1-4: per-atom stationarity residuals (worst first), KKT, gaps, "
        "the free-atom test, and the gap to the wide-limit bound.",
    )
    cert.add_argument("--dictionary", help=".npy/.npz/.safetensors, atoms as rows (k, d)")
    cert.add_argument(
        "--sae",
        help="an SAE checkpoint folder (SAELens, sparsify or dictionary_learning) instead of "
        "--dictionary: decoder, b_dec and the lam implied by its training loss",
    )
    cert.add_argument("--dictionary-key", help="array name inside the dictionary file")
    cert.add_argument("--data", required=True, help=".npy/.npz/.safetensors signals (n, d)")
    cert.add_argument("--data-key", help="array name inside the data file")
    cert.add_argument(
        "--lam", type=float, help="the L1 penalty (with --sae: overrides the implied lam)"
    )

    def sae_option(flag, help, **options):  # an option of the SAE certificate only
        cert.add_argument(flag, help=f"with --sae: {help}", **options)

    sae_option(
        "--target-l0", "use the lam whose exact codes have this mean L0 (TopK SAEs)", type=float
    )
    sae_option("--json", "write every summary and per-atom array here")
    cert.add_argument(
        "--npz",
        help="write every summary, per-atom and per-signal array (split directions too) to one "
        "np.savez file, keys like per_atom/split_strength",
    )
    sae_option("--plot", "per-atom stationarity against usage (PNG)")
    sae_option(
        "--fail-above", "exit 1 when the worst relative stationarity exceeds this", type=float
    )
    sae_option("--chunk-size", "signals per chunk", type=_count, default=1024)
    sae_option("--first-order-only", "skip the block and splitting tests", action="store_true")
    sae_option("--max-support", "cap on the active-set support buffer", type=_count)
    sae_option(
        "--scaling-factor", "SAELens activation scaling s used in training (default 1)", type=float
    )
    cert.add_argument(
        "--transpose", action="store_true", help="the file holds atoms as columns (d, k)"
    )
    cert.add_argument("--normalize", action="store_true", help="normalise atoms to unit norm first")
    args = parser.parse_args(argv)
    level = logging.ERROR if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    try:
        with to_stderr(level):
            return args.run(args)
    except KeyboardInterrupt:
        print(f"sparsedict {args.command}: interrupted", file=sys.stderr)
        return 130
    except (UsageError, ValueError, TypeError, OSError, KeyError, MemoryError, RuntimeError) as e:
        # user errors (bad files, shapes, values): one line naming the flag or file
        print(f"sparsedict {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
