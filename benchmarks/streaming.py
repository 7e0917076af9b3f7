"""Streaming benchmark (issue 8): online dictionary learning from a `.npy` file twice the memory
budget.

Data. A float32 `.npy` file of shape (n, 512) with n chosen so the file is 2 x `--budget-gb`
GiB (or `--path`, an existing file). Rows are planted sparse signals
`x = a D* + 0.02 noise`: 128 random unit atoms (as many as the learner's), each active with
probability 1/16 (8 on average) with magnitude uniform in [0.5, 2]. The file is written by a child
process in 16,384-row pieces (so writing
never counts in the measured process), under a temporary directory in /tmp removed afterwards
unless `--keep`.

Readers. Before training, child processes read the whole file once in 1,024-row slices three
ways and report their peak resident memory: explicit reads (`sparsedict.streaming`, `os.preadv`),
`np.memmap` slices, and `np.memmap` slices followed by `madvise(MADV_DONTNEED)`. Pages of a memory
map count in the process's RSS (RssFile) until the kernel needs them back; explicit reads do not.

Learner. `sparsedict.learn_dictionary(path, k, lam, method="online")` streams the file: k = 128
atoms, batch 1024, `chunk_size` 16, steps = one pass over the file (`--epochs` passes), float32,
`solver=ActiveSet(max_support=64)` (the default buffer min(k, d + 1) slots would allocate a
(1024, k, k) support system per step), `code_tol` 1e-4, prefetch
depth 2, `eval_size` 256 (the stopping test runs after every chunk on the first 256 rows and
reports the certified stationarity residual; `stationarity_tol=0` so the run does all its
steps). Memory scales with `chunk_size` (each chunk read ahead is chunk_size x 1024 x 512 float32,
32 MiB here; up to prefetch + 2 chunks are alive) and with `eval_size` (the final report's
second-order tests are vmapped over the atoms and hold k x eval_size x d arrays: with
eval_size 1024 and chunk_size 32 a first run peaked at 911 MiB while streaming and 1364 MiB in
the final report). k = 128 rather than 256: on this shared 2-core machine a step took 0.2 s with k
= 128 and
0.6 to 1.4 s with k = 256 (so one pass over a 2 GiB file, 1024 steps, 10 to 24 minutes), and the
final report's second-order tests hold (k, d, d) arrays. `lam = --lam-frac x` the median over
those rows of `max_k d_k . x` for k normalised random
rows (`lam_max` of a random-row dictionary, the learner's own initialisation).

Measured in the training process: peak RSS from `resource.getrusage` (ru_maxrss) and
/proc/self/status (VmHWM; VmRSS, RssAnon and RssFile sampled every 0.2 s), signals per second
(all steps, and after the first chunk, which includes compilation), the per-chunk objective and
stationarity residual, and the device. The machine's 2 CPU cores are shared with other jobs: the
load average is recorded; timings are what this shared machine gave.

Run: `python benchmarks/streaming.py` (full, budget 1 GiB) or `--quick` (budget 1/32 GiB, a CI
smoke test). Results: `<out>/streaming_cpu.md` and `.json` (`streaming_cpu_quick.*` for --quick).
"""

import argparse
import contextlib
import io
import json
import mmap
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

GIB = 1 << 30
D_FEATURES = 512
PLANTED = 128


def status():
    """Memory fields of /proc/self/status, in MiB."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                fields[name] = int(value.split()[0]) / 1024
    return fields


def max_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class Sampler:
    """Peaks of VmRSS, RssAnon and RssFile, sampled every `period` seconds in a thread."""

    def __init__(self, period=0.2):
        self.period, self.samples, self._halt = period, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._halt.wait(self.period):
            self.sample()

    def sample(self):
        self.samples.append((time.perf_counter(), status()))

    def last(self, at):
        """The last sample taken at or before `at`."""
        return [s for t, s in self.samples if t <= at][-1]

    def peaks(self, start=-np.inf, stop=np.inf):
        """Peak of each field over the samples taken in [start, stop]."""
        inside = [s for t, s in self.samples if start <= t <= stop]
        return {name: max(s[name] for s in inside) for name in inside[0]} if inside else {}

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._halt.set()
        self._thread.join()
        self.sample()


def write_file(path, n, seed=0, piece=16384):
    """Planted sparse float32 signals (n, 512), written piece by piece after the .npy header."""
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((PLANTED, D_FEATURES)).astype(np.float32)
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (n, D_FEATURES)}
        )
        for start in range(0, n, piece):
            m = min(piece, n - start)
            active = rng.random((m, PLANTED), np.float32) < 1 / 16
            codes = active * rng.uniform(0.5, 2.0, (m, PLANTED)).astype(np.float32)
            X = codes @ atoms + 0.02 * rng.standard_normal((m, D_FEATURES), np.float32)
            f.write(X.astype(np.float32).tobytes())


def read_pass(path, how, rows=1024):
    """Read the whole file once in `rows`-row host copies; returns speed and memory (child process).

    Every reader imports sparsedict (so JAX) first, so the baselines agree; `rss_import_MiB` is
    the resident memory before reading.
    """
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from sparsedict.streaming import open_signals

    baseline = status()["VmRSS"]
    start = time.perf_counter()
    total = 0.0
    if how == "pread":
        source = open_signals(path)
        n = source.n
        for lo in range(0, n, rows):
            total += float(source.read(lo, min(lo + rows, n))[:, 0].sum())
    else:
        X = np.load(path, mmap_mode="r")
        n = X.shape[0]
        row_bytes = X.shape[1] * X.itemsize
        for lo in range(0, n, rows):
            total += float(np.array(X[lo : lo + rows])[:, 0].sum())
            if how == "memmap_madvise":  # drop the pages read from this process's mapping
                begin = X.offset + lo * row_bytes
                aligned = begin - begin % mmap.PAGESIZE
                end = X.offset + min(lo + rows, n) * row_bytes
                X._mmap.madvise(mmap.MADV_DONTNEED, aligned, end - aligned)
    seconds = time.perf_counter() - start
    return dict(
        reader=how,
        seconds=seconds,
        GiB_per_s=n * D_FEATURES * 4 / GIB / seconds,
        rss_import_MiB=baseline,
        ru_maxrss_MiB=max_rss_mib(),
        **status(),
    )


def child(args):
    """Run this script's `--child` mode in a fresh process; returns its JSON answer."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


LINE = re.compile(
    r"step (\d+)/\d+\s+F=(\S+)\s+L0=(\S+)\s+dead=(\S+).*stationarity=(\S+)\s+\((\S+) s"
)


class Tee(io.TextIOBase):
    """Copies writes to the real stderr and keeps them."""

    def __init__(self, stream):
        self.stream, self.parts = stream, []

    def write(self, text):
        self.parts.append((time.perf_counter(), text))
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()


def train(path, args):
    import jax

    import sparsedict as sd

    source = sd.streaming.open_signals(path)
    n = source.n
    steps = int(np.ceil(args.epochs * n / args.batch / args.chunk)) * args.chunk
    rng = np.random.default_rng(args.seed)
    probe = source.take(np.sort(rng.choice(n, args.k, replace=False)))
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    lam = float(args.lam_frac * np.median(np.max(source.read(0, args.eval_size) @ probe.T, axis=1)))
    solver = sd.ActiveSet(max_support=args.max_support)
    config = {
        "k": args.k,
        "lam": lam,
        "lam_frac": args.lam_frac,
        "batch_size": args.batch,
        "chunk_size": args.chunk,
        "steps": steps,
        "epochs": steps * args.batch / n,
        "solver": f"ActiveSet(max_support={args.max_support})",
        "code_tol": args.code_tol,
        "eval_size": args.eval_size,
        "prefetch": args.prefetch,
        "dtype": "float32",
    }
    print(f"training: {config}", file=sys.stderr)
    tee = Tee(sys.stderr)
    before = status()
    with Sampler() as sampler, contextlib.redirect_stderr(tee):
        start = time.perf_counter()
        fit = sd.learn_dictionary(
            path,
            args.k,
            lam,
            method="online",
            batch_size=args.batch,
            chunk_size=args.chunk,
            max_steps=steps,
            solver=solver,
            code_tol=args.code_tol,
            eval_size=args.eval_size,
            stationarity_tol=0.0,
            prefetch=args.prefetch,
            seed=args.seed,
            verbose=True,
        )
        fit.dictionary.block_until_ready()
        seconds = time.perf_counter() - start
    chunks, trained_at = [], start
    for at, text in tee.parts:
        for m in LINE.finditer(text):
            chunks.append(
                {
                    "rss_MiB": sampler.last(at)["VmRSS"],
                    "step": int(m[1]),
                    "objective": float(m[2]),
                    "l0": float(m[3]),
                    "dead": float(m[4]),
                    "stationarity": float(m[5]),
                    "elapsed_s": float(m[6]),
                }
            )
            trained_at = at
    history = np.asarray(fit.history.objective)
    for chunk in chunks:  # the mean minibatch objective of each chunk (less noisy than its last)
        chunk["objective_chunk_mean"] = float(
            history[chunk["step"] - args.chunk : chunk["step"]].mean()
        )
    rows = steps * args.batch
    after_first = (
        (rows - args.chunk * args.batch) / (chunks[-1]["elapsed_s"] - chunks[0]["elapsed_s"])
        if len(chunks) > 1
        else None
    )
    device = jax.devices()[0]
    return {
        "config": config,
        "n": n,
        "d": source.d,
        "file_GiB": os.path.getsize(path) / GIB,
        "seconds": seconds,
        "signals_per_s": rows / seconds,
        "signals_per_s_after_first_chunk": after_first,
        "rss_before_MiB": before,
        "rss_end_MiB": status(),
        "ru_maxrss_MiB": max_rss_mib(),
        # sampled peaks: while streaming (up to the last chunk's progress line) and after (final
        # codes and report)
        "rss_peak_training_MiB": sampler.peaks(stop=trained_at),
        "rss_peak_final_report_MiB": sampler.peaks(start=trained_at),
        "final_report_s": start + seconds - trained_at,
        "first_step_objective": float(history[0]),
        "final": {
            "objective_eval": float(fit.objective),
            "stationarity": float(fit.report.stationary_residual),
            "steps": fit.steps,
            "dead": int(np.sum(np.asarray(fit.report.atoms.dead))),
        },
        "chunks": chunks,
        "device": f"{device.platform}: {device.device_kind}",
        "jax": jax.__version__,
    }


def report(result, budget_gib):
    t = result["training"]
    c = t["config"]
    mib = budget_gib * 1024
    peak = max(t["ru_maxrss_MiB"], t["rss_end_MiB"]["VmHWM"])
    tr, fr, nan = t["rss_peak_training_MiB"], t["rss_peak_final_report_MiB"], float("nan")
    rate = t["signals_per_s_after_first_chunk"] or t["signals_per_s"]
    lines = [
        "# Streaming benchmark (CPU)",
        "",
        (
            f"Device: {t['device']} ({result['cpu']}, {os.cpu_count()} cores shared with other "
            f"jobs; "
            f"load average {result['load_before'][0]:.1f} before, {result['load_after'][0]:.1f} "
            f"after). jax {t['jax']}."
        ),
        f"Date: {result['date']}. Command: `{result['command']}`.",
        "",
        (
            f"File: float32 `.npy`, n = {t['n']:,} rows x d = {t['d']} = {t['file_GiB']:.3f} GiB; "
            f"memory budget {budget_gib:g} GiB ({mib:.0f} MiB): the file is "
            f"{t['file_GiB'] / budget_gib:.2f} x the budget."
        ),
        "",
        (
            f'Learner: `learn_dictionary(path, k={c["k"]}, lam={c["lam"]:.4g}, method="online", '
            f"batch_size={c['batch_size']}, "
            f"chunk_size={c['chunk_size']}, max_steps={c['steps']}, solver={c['solver']}, "
            f"code_tol={c['code_tol']:g}, "
            f"eval_size={c['eval_size']}, prefetch={c['prefetch']}, stationarity_tol=0)`; lam = "
            f"{c['lam_frac']:g} x median "
            f"lam_max of a random-row dictionary; {c['epochs']:.2f} passes over the file."
        ),
        "",
        "## Memory of the training process",
        "",
        "| measure | VmRSS MiB | RssAnon MiB | RssFile MiB |",
        "|---|---|---|---|",
        f"| before the call (JAX and sparsedict imported) | {t['rss_before_MiB']['VmRSS']:.0f} | "
        f"{t['rss_before_MiB']['RssAnon']:.0f} | {t['rss_before_MiB']['RssFile']:.0f} |",
        f"| peak while streaming (all chunks and stopping tests) | {tr['VmRSS']:.0f} | "
        f"{tr['RssAnon']:.0f} | {tr['RssFile']:.0f} |",
        f"| peak in the final codes and report ({t['final_report_s']:.0f} s) | "
        f"{fr.get('VmRSS', nan):.0f} | {fr.get('RssAnon', nan):.0f} | "
        f"{fr.get('RssFile', nan):.0f} |",
        "",
        (
            f"Peaks sampled from /proc/self/status every 0.2 s. Whole call: peak RSS "
            f"{t['ru_maxrss_MiB']:.0f} MiB "
            f"(getrusage ru_maxrss), {t['rss_end_MiB']['VmHWM']:.0f} MiB (VmHWM). Budget "
            f"{mib:.0f} MiB, file {t['file_GiB'] * 1024:.0f} MiB."
        ),
        "",
        (
            f"**Streaming peak {tr['VmRSS']:.0f} MiB: {'under' if tr['VmRSS'] < mib else 'OVER'} "
            f"the budget "
            f"({tr['VmRSS'] / mib:.0%} of it, {tr['VmRSS'] / (t['file_GiB'] * 1024):.0%} of the "
            f"file).** "
            f"Whole call: {'under' if peak < mib else 'OVER'} the budget ({peak / mib:.0%})."
        ),
        "",
        "## Throughput",
        "",
        (
            f"{c['steps']} steps x {c['batch_size']} signals in {t['seconds']:.1f} s "
            f"(compilation, stopping tests after every "
            f"chunk and the final report included): **{t['signals_per_s']:.0f} signals/s**; after "
            f"the first chunk "
            f"(which compiles): {t['signals_per_s_after_first_chunk'] or float('nan'):.0f} "
            f"signals/s."
        ),
        "",
        "## Learning trend (stopping test on the first eval_size rows after every chunk)",
        "",
        f"Minibatch objective of step 1: {t['first_step_objective']:.5g}.",
        "",
        "| step | mean minibatch objective of the chunk | last minibatch objective | L0 | dead | "
        "certified stationarity | elapsed s | RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    chunks = t["chunks"]
    shown = (
        chunks
        if len(chunks) <= 12
        else [
            chunks[i]
            for i in sorted({*range(0, len(chunks), max(len(chunks) // 10, 1)), len(chunks) - 1})
        ]
    )
    lines += [
        f"| {r['step']} | {r['objective_chunk_mean']:.5g} | {r['objective']:.5g} | {r['l0']:.2f} "
        f"| {r['dead']:.0f} | {r['stationarity']:.3g} | {r['elapsed_s']:.1f} | "
        f"{r.get('rss_MiB', nan):.0f} |"
        for r in shown
    ]
    f = t["final"]
    lines += [
        "",
        (
            f"Final: objective on the eval rows {f['objective_eval']:.5g}, certified stationarity "
            f"residual "
            f"{f['stationarity']:.3g} (full report, second order included), {f['dead']} dead atoms."
        ),
        "",
        "## Readers: one pass over the file in 1,024-row slices (each in a fresh process)",
        "",
        "| reader | GiB/s | RSS after import MiB | peak RSS (VmHWM) MiB | RssFile at end MiB |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['reader']} | {r['GiB_per_s']:.2f} | {r['rss_import_MiB']:.0f} | {r['VmHWM']:.0f} | "
        f"{r['RssFile']:.0f} |"
        for r in result["readers"]
    ]
    lines += [
        "",
        (
            "`pread` is `sparsedict.streaming` (explicit reads at the header offset); `memmap` is "
            '`np.load(mmap_mode="r")` slices, whose pages stay resident in the process (RssFile) '
            "until the "
            "kernel reclaims them; `memmap_madvise` drops each slice with "
            "`madvise(MADV_DONTNEED)` after use. "
            "The file is in the page cache after it is written (the machine has 24 GiB), so these "
            "are cached-read speeds."
        ),
        "",
        "## Notes",
        "",
        (
            f"- The learner consumes {rate:.0f} signals/s = {rate * t['d'] * 4 / 2**20:.0f} "
            f"MiB/s; explicit reads deliver "
            f"{result['readers'][0]['GiB_per_s']:.1f} GiB/s from the page cache, so on this CPU "
            f"the coding, not the "
            "reading, sets the pace and the prefetch thread hides the reads entirely. Reads from "
            "a cold disk were not measured."
        ),
        (
            f"- Data held while streaming: at most prefetch + 2 = {c['prefetch'] + 2} chunks of "
            f"{c['chunk_size'] * c['batch_size'] * t['d'] * 4 / 2**20:.0f} MiB (twice that while "
            f"one is copied to the "
            f"device) and the {c['eval_size']} evaluation rows; the rest of the growth above the "
            f"{t['rss_before_MiB']['VmRSS']:.0f} MiB after import is JAX and XLA (compiled "
            f"programs, compilation, allocator "
            "arenas). The RSS column of the trend table (VmRSS at each progress line) stays "
            "within a band over the "
            "pass: it does not grow with the rows read. Peaks vary between runs by ~100 MiB (an "
            "earlier identical run "
            "peaked at 898 MiB while streaming, 1009 MiB in all)."
        ),
        "- Timings are from a CPU shared with other jobs (see the load average), so they are "
        "indicative only.",
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budget-gb", type=float, default=1.0, help="memory budget in GiB; the file is twice that"
    )
    parser.add_argument("--path", help="an existing float32 (n, d) .npy file (default: write one)")
    parser.add_argument("--keep", action="store_true", help="keep the written file")
    parser.add_argument("--quick", action="store_true", help="budget 1/32 GiB, a smoke test")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--k", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--lam-frac", type=float, default=0.2)
    parser.add_argument("--max-support", type=int, default=64)
    parser.add_argument("--code-tol", type=float, default=1e-4)
    parser.add_argument("--eval-size", type=int, default=256)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child[0] == "write":
            write_file(args.child[1], int(args.child[2]), int(args.child[3]))
            print(json.dumps({}))
        else:
            print(json.dumps(read_pass(args.child[1], args.child[0])))
        return
    if args.quick:
        args.budget_gb = 1 / 32
    tmp, path = None, args.path
    if path is None:
        tmp = tempfile.mkdtemp(prefix="sparsedict-streaming-", dir="/tmp")
        path = os.path.join(tmp, "signals.npy")
        n = int(2 * args.budget_gb * GIB) // (D_FEATURES * 4)
        print(
            f"writing {path}: ({n}, {D_FEATURES}) float32 = {n * D_FEATURES * 4 / GIB:.3f} GiB",
            file=sys.stderr,
        )
        child(["write", path, str(n), str(args.seed)])
    try:
        result = {
            "command": " ".join(["python benchmarks/streaming.py", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "cpu": _cpu_model(),
            "load_before": os.getloadavg(),
        }
        result["readers"] = [child([how, path]) for how in ("pread", "memmap", "memmap_madvise")]
        result["training"] = train(path, args)
        result["load_after"] = os.getloadavg()
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "streaming_cpu" + ("_quick" if args.quick else ""))
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    text = report(result, args.budget_gb)
    with open(stem + ".md", "w") as f:
        f.write(text)
    print(text)


def _cpu_model():
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
