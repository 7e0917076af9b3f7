r"""The sweep engine: every member of a width bucket trained by one compiled program.

A member (width $w$, seed, $\lambda$) is a learner written for one dictionary, padded to the
bucket's width $W \ge w$ with an atom mask: padded atoms are zero rows, get zero codes, never enter
a dual check and are never updated or revived, so a padded member follows the same trajectory as
the unpadded one. The bucket's programs are compiled once, ahead of time, from shapes; their
predicted peak memory decides how many members run at once (`_memory.py`). Devices are laid out
by `spec.layout` (`_layout.py`).
"""

import collections
import dataclasses
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validation as check
from .._coding._driver import default_tol
from .._learning import _data
from .._learning._alternating import Alternating
from .._learning._loop import run_chunks
from .._learning._online import Online
from .._progress import logger, report, verbosity
from ..streaming import Prefetcher
from ..wide_limit import bound as wide_limit_bound
from . import _programs
from ._layout import check_divisible, global_array, make_layout, to_host
from ._memory import device_budget, gib, peak, plan_bucket
from ._spec import SweepSpec
from ._store import ResultStore


class SweepData:
    """The sweep's view of the signals, opened as every learner opens them (`_learning/_data.py`:
    dtype policy, power-of-two scale, fingerprint): device arrays for the summary (and all
    signals for the alternating learner), streamed minibatches for the online learner.

    The online learner reads only its minibatches (deterministic order, see
    `sparsedict.streaming`), the initial atoms' rows and the first `eval_size` rows, so `X` may
    be a file or a source larger than memory.
    """

    def __init__(self, X, spec, layout):
        self.spec, self.layout = spec, layout
        self.opened = _data.TrainingData(X)
        self.source = self.opened.source  # scaled, in the training dtype
        n, self.d = self.source.shape
        self.n = n
        self.dtype = jnp.dtype(self.opened.dtype)
        self.exponent = self.opened.exponent
        if spec.learner == "alternating":
            check_divisible(n, layout, "the number of signals n")
            self.eval_rows = n
        else:
            check_divisible(spec.batch_size, layout, "batch_size")
            self.eval_rows = _round_down(min(spec.eval_size, n), layout.data_devices)
            self.stream = _data.minibatches(
                self.source, spec.batch_size, spec.shuffle_seed, None, self.dtype
            )
            self._prefetch = None
        self._device = {}

    @property
    def fingerprint(self) -> dict:
        return self.opened.fingerprint

    def host_rows(self, count):
        """The first `count` signals as the learner sees them (scaled), checked finite."""
        return self.opened.rows(count)

    def rows(self, count):
        """The first `count` signals as a global array split over the "data" axis (cached)."""
        if count not in self._device:
            self._device[count] = global_array(self.host_rows(count), self.layout.sharding("data"))
        return self._device[count]

    def initial_atoms(self, members, padded_width):
        """(members, W, d) initial atoms: member (w, seed, lam) gets the `w` atoms a learner run
        with this seed starts from, then zero padding."""
        out = np.zeros((len(members), padded_width, self.d), self.dtype)
        for i, (width, seed, _) in enumerate(members):
            out[i, :width] = _data.initial_atoms(self.source, width, seed, self.dtype)
        return out

    def batches(self, step, count):
        """(count, batch, d) minibatches for steps `step..step+count-1`: the same on every run.

        With one host the next chunks are read and put on the devices in a background thread
        while the current chunk trains; with several, every host reads its own slices.
        """
        sharding = self.layout.sharding(None, "data")
        if jax.process_count() > 1:
            return global_array(self.stream.batches(step, count), sharding)
        if self._prefetch is None:
            self._prefetch = Prefetcher(
                self.stream, count, device=sharding, stop=self.spec.max_steps
            )
        return self._prefetch(step)

    def close(self):
        if getattr(self, "_prefetch", None) is not None:
            self._prefetch.close()


def _round_down(count, multiple):
    return max(multiple, count - count % multiple)


def learner_for(spec, n):
    """The learner of a sweep member, as `learn_dictionary` builds it for `n` signals (the online
    statistics' age capped at half an epoch)."""
    if spec.learner == "online":
        return Online(solver=spec.solver, memory=n / 2)
    return Alternating(solver=spec.solver)


# Recent bucket programs: a rerun or a run after a dry run reuses them.
_COMPILED: collections.OrderedDict = collections.OrderedDict()


def clear_compiled():
    """Forget the cached bucket programs (the next sweep compiles again)."""
    _COMPILED.clear()


def compile_programs(data, spec, padded_width, members, member_batch):
    layout = data.layout
    key = (
        spec.learner,
        spec.solver,
        spec.chunk_size,
        spec.batch_size,
        data.d,
        str(data.dtype),
        data.eval_rows,
        data.n,  # the online learner's memory
        layout.kind,
        tuple(layout.mesh.devices.flat),
        padded_width,
        members,
        member_batch,
    )
    if key not in _COMPILED:
        _COMPILED[key] = _compile_programs(data, spec, padded_width, members, member_batch)
        while len(_COMPILED) > 32:
            _COMPILED.popitem(last=False)
    _COMPILED.move_to_end(key)
    return _COMPILED[key]


def _compile_programs(data, spec, padded_width, members, member_batch):
    batch_shape = (
        None if spec.learner == "alternating" else (spec.chunk_size, spec.batch_size, data.d)
    )

    def shape(rows):
        return jax.ShapeDtypeStruct((rows, data.d), data.dtype)

    return _programs.compile_bucket(
        learner_for(spec, data.n),
        data.layout,
        members=members,
        padded_width=padded_width,
        X_eval=shape(data.eval_rows),
        batch_shape=batch_shape,
        chunk_size=spec.chunk_size,
        dtype=data.dtype,
        member_batch=member_batch,
    )


def certification_target(spec) -> float:
    """The stationarity a member must reach to count as certified: `spec.stationarity_tol`, or
    1e-3 when no early stop is asked."""
    return spec.stationarity_tol if spec.stationarity_tol > 0 else CERTIFIED


# Relative stationarity (THEORY 2.2, divided by lam) below which a member counts as certified.
CERTIFIED = 1e-3


def _status(stationarity, steps, spec) -> str:
    """`certified`, or why not: the step budget ran out, or the residual is not finite."""
    if not np.isfinite(stationarity):
        return "failed: non-finite stationarity residual"
    if stationarity <= certification_target(spec):
        return "certified"
    return f"not certified: max_steps={spec.max_steps} reached above {certification_target(spec):g}"


def run_group(
    data,
    group,
    padded_width,
    spec,
    programs,
    *,
    checkpoint=None,
    verbose=True,
    label="",
    progress=None,
    run=None,
):
    """Train one group of members of a bucket with its compiled programs; returns (rows, D,
    per-atom)."""
    m = len(group)
    order = list(range(m)) + [m - 1] * (programs.members - m)  # pad with copies of the last member
    by_member = data.layout.sharding("members")

    def column(j, dt):
        return global_array(np.array([group[i][j] for i in order], dt), by_member)

    widths = column(0, np.int32)
    lams = global_array(  # the scaled problem: lam 2^-e (see `_learning/_data.py`)
        np.ldexp(np.array([group[i][2] for i in order], data.dtype), -data.exponent), by_member
    )
    tol = jnp.asarray(
        default_tol(data.dtype) if spec.code_tol is None else spec.code_tol, data.dtype
    )
    D0 = global_array(data.initial_atoms([group[i] for i in order], padded_width), by_member)
    X_eval = data.rows(data.eval_rows)
    states = programs.init(X_eval, D0, widths)

    # The chunk program tests every member before training it (the exact codes of its dictionary,
    # which the alternating learner's first step then uses): a certified member stops there and
    # stays frozen, keeping its state and step count, so it stops where it would stop trained
    # alone while the others train on; its stationarity is not tested again.
    certified = np.zeros(programs.members, bool)
    residuals = np.full(programs.members, np.nan)
    stop_tol = jnp.asarray(max(spec.stationarity_tol, 0.0), data.dtype)

    def controls(frozen, train, second_order):
        return _programs.Controls(
            frozen=global_array(frozen, by_member),
            train=np.bool_(train),
            second_order=np.bool_(second_order),
            stop_tol=stop_tol,
        )

    if spec.learner == "alternating":

        def run_chunk(states, ctl):
            return programs.chunk(X_eval, lams, tol, states, ctl)
    else:

        def run_chunk(states, ctl):
            shape = (spec.chunk_size, spec.batch_size, data.d)
            if ctl.train:
                step = int(np.max(to_host(states.step)))  # the members still training
                batches = data.batches(step, spec.chunk_size)
            else:  # (rows only: no minibatch is read)
                batches = global_array(
                    np.zeros(shape, data.dtype), data.layout.sharding(None, "data")
                )
            return programs.chunk(X_eval, lams, tol, states, ctl, batches)

    def chunk(states):
        states, infos, rows, stopped = run_chunk(states, controls(certified, True, False))
        tested = to_host(rows["stationarity"])
        residuals[:] = np.where(certified, residuals, tested)
        certified[:] = to_host(stopped)
        return states, infos

    def certify(states):
        del states  # tested by the chunk program, at the start of each chunk
        worst = float(np.max(residuals[:m]))
        done = bool(np.all(certified[:m]))
        return done, f"{label} worst stationarity at the chunk's start={worst:.2e}"

    shardings = jax.tree_util.tree_map(lambda a: a.sharding, states)

    def place(loaded):
        return jax.tree_util.tree_map(
            lambda a, sh: global_array(np.asarray(a), sh), loaded, shardings
        )

    states, _, _ = run_chunks(
        chunk,
        certify,
        states,
        max_steps=spec.max_steps,
        chunk_size=spec.chunk_size,
        checkpoint=checkpoint,
        verbose=verbose,
        progress=progress,
        name=f"sweep W={padded_width}",
        place=place,
        fetch=to_host,
        save=jax.process_index() == 0,
        run=run,
        scale=data.exponent,
    )
    states, _, summary, _ = run_chunk(states, controls(np.zeros_like(certified), False, True))
    summary = to_host(summary)
    D, steps = to_host((states.D, states.step))
    per_atom = np.asarray(summary.pop("atom_relative_constraint"))[:m]
    # back at the data's scale (exact): the objective scales as 4^e, the rest is scale-free
    X_host = np.ldexp(np.asarray(data.host_rows(data.eval_rows), np.float64), data.exponent)
    summary["objective"] = np.ldexp(np.asarray(summary["objective"], np.float64), 2 * data.exponent)
    rows = []
    for i, (width, seed, lam) in enumerate(group):
        bound = float(wide_limit_bound(X_host, lam))
        row = dict(width=int(width), seed=int(seed), lam=float(lam), bound=bound)
        row.update({key: float(np.asarray(v)[i]) for key, v in summary.items()})
        row["gap_to_bound"] = row["objective"] - bound
        row["steps"] = int(steps[i])
        row["status"] = _status(row["stationarity"], row["steps"], spec)
        rows.append(row)
    return rows, D[:m], per_atom


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """The memory plan of a sweep (what [`plan_sweep`][sparsedict.plan_sweep] returns).

    Attributes:
        budget: bytes per device the sweep may use.
        buckets: `{padded width: (members, programs)}`; `programs.members` members run at once
            (the bucket runs in groups of that many) and `programs.peak_bytes` is the predicted
            peak per device of each compiled program.
    """

    budget: int
    buckets: dict

    def __str__(self) -> str:
        lines = [f"memory budget per device: {gib(self.budget)}"]
        for W, (members, programs) in self.buckets.items():
            groups = -(-len(members) // programs.members)
            parts = ", ".join(f"{k} {gib(v)}" for k, v in programs.peak_bytes.items())
            lines.append(
                f"bucket W={W}: {len(members)} members in {groups} group(s) of "
                f"{programs.members}; predicted peak {gib(peak(programs))} per device ({parts})"
            )
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What [`run_sweep`][sparsedict.run_sweep] returns.

    Attributes:
        spec: the [`SweepSpec`][sparsedict.SweepSpec] that was run.
        rows: one dict per member, sorted by (lam, width, seed), with the columns of
            `sparsedict._sweep._store.COLUMNS` (objective, bound, gap to the bound, L0, dead
            atoms, explained variance, stationarity residuals, steps).
        out: the results folder (None: results kept in memory only).
    """

    spec: SweepSpec
    rows: list
    out: str | None = None


def _plan(X, spec, devices, member_batch, memory_budget):
    """Compile every bucket's programs (nothing runs) and predict its peak device memory.

    Returns `(data, SweepPlan)`; a bucket that would not fit in the budget is split into groups
    of `programs.members` members; one that cannot fit even with one member per device raises
    `SweepDoesNotFit` with what to change.
    """
    if member_batch is not None:
        check.int_at_least(member_batch, "member_batch (an int or None)")
    if memory_budget is not None and not memory_budget > 0:
        raise ValueError(
            f"memory_budget must be a positive number of bytes or None, got {memory_budget!r}"
        )
    if devices is not None and len(devices) == 0:
        raise ValueError(
            "devices must hold at least one device (or be None for all of jax.devices())"
        )
    layout = make_layout(spec.layout, devices)
    data = SweepData(X, spec, layout)
    budget = device_budget(layout, memory_budget)
    if member_batch is None:  # accelerators train a group's members at once, CPUs one at a time
        member_batch = 1 if layout.mesh.devices.flat[0].platform == "cpu" else 1 << 30
    buckets = {}
    for padded_width, members in spec.grouped().items():
        label = f"bucket W={padded_width} ({len(members)} members)"

        def compile_for(count, W=padded_width):
            return compile_programs(data, spec, W, count, member_batch)

        programs = plan_bucket(compile_for, len(members), layout, budget, label)
        buckets[padded_width] = (members, programs)
    return data, SweepPlan(budget, buckets)


def _host_signals(X, spec):
    """The signals as given (opened by `SweepData` as every learner opens them)."""
    del spec
    return X


def plan_sweep(
    X, spec: SweepSpec, *, devices=None, member_batch=None, memory_budget=None
) -> SweepPlan:
    """Compile every program of `spec` on data `X` and predict its peak memory; train nothing.

    Arguments as in [`run_sweep`][sparsedict.run_sweep]. `str(plan)` describes it (what
    `sparsedict sweep --dry-run` prints). Raises `SweepDoesNotFit` (a `MemoryError`) when a
    bucket cannot fit even with one member per device. The programs stay cached, so a
    `run_sweep` with the same arguments does not compile again.
    """
    data, plan = _plan(_host_signals(X, spec), spec, devices, member_batch, memory_budget)
    data.close()
    return plan


def run_sweep(
    X,
    spec: SweepSpec,
    *,
    out=None,
    verbose=True,
    progress=None,
    devices=None,
    member_batch=None,
    memory_budget=None,
) -> SweepResult:
    """Run every bucket of `spec` on data `X` (n, d); results are saved in `out` as they finish.

    Arguments:
        X: signals (n, d): an array, or (online learner: only minibatches are read) a memory map,
            a `.npy` path, `.npz`/`.safetensors` shards or a `sparsedict.streaming` source.
        spec: a [`SweepSpec`][sparsedict.SweepSpec].
        out: results folder (see `sparsedict._sweep._store`); None keeps results in memory only.
        devices: devices to lay the sweep out on (default: all of `jax.devices()`, every host's
            after `jax.distributed.initialize()`).
        member_batch: members trained at once (vmapped) per device; the rest of a bucket run one
            after another inside the same program. Default: all on accelerators, 1 on CPU (a
            vmapped batch's working set outgrows the caches and every signal of every member waits
            for the slowest solve, so one at a time is faster there).
        memory_budget: bytes per device the sweep may use (default: detected, see `_memory.py`).
        verbose: show progress on stderr (a line per bucket and per chunk).
        progress: called with a [`Progress`][sparsedict.Progress] record after each chunk
            (task `"sweep W=..."`) and each bucket (task `"sweep"`, members done of all).
            Progress also goes to the `"sparsedict"` logger (buckets at INFO, chunks at DEBUG).

    Returns a [`SweepResult`][sparsedict.SweepResult] (rows, one per member). With `out` set, an
    interrupted sweep resumes: finished buckets are skipped and the bucket in progress restarts
    from its last chunk. [`plan_sweep`][sparsedict.plan_sweep] compiles and plans without
    training; a bucket that cannot fit raises `SweepDoesNotFit` before anything runs.
    """
    data, plan = _plan(_host_signals(X, spec), spec, devices, member_batch, memory_budget)
    verbose = verbose and jax.process_index() == 0
    # Every host trains and resumes from `out` (a shared filesystem); the first one writes.
    store = None
    if out is not None:
        grouping = {W: programs.members for W, (_, programs) in plan.buckets.items()}
        store = ResultStore(
            out, spec, write=jax.process_index() == 0, data=data.fingerprint, grouping=grouping
        )
    rows: list = []
    try:
        with verbosity(verbose):
            _run_buckets(data, spec, plan.buckets, store, rows, progress)
    finally:
        data.close()
    rows = sorted(rows, key=lambda r: (r["lam"], r["width"], r["seed"]))
    return SweepResult(spec=spec, rows=rows, out=out)


def _run_buckets(data, spec, plans, store, rows, progress):
    start = time.perf_counter()
    for b, (padded_width, (members, programs)) in enumerate(plans.items()):
        label = f"bucket {b + 1}/{len(plans)} (W={padded_width}, {len(members)} members)"
        finished = None if store is None else store.load_bucket(padded_width, members)
        if finished is not None:
            rows.extend(finished[0])
            logger.info(f"[sweep] {label}: already finished, skipped")
            continue
        bucket = run_bucket(
            data,
            members,
            padded_width,
            spec,
            programs,
            store=store,
            verbose=False,
            label=label,
            progress=progress,
        )
        if store is not None:
            store.save_bucket(padded_width, *bucket)
        rows.extend(bucket[0])
        done = sum(len(m) for w, (m, _) in plans.items() if w <= padded_width)
        elapsed = f"{label} done, {time.perf_counter() - start:.1f} s"
        report(progress, "sweep", done, len(spec.members()), elapsed, level=logging.INFO)


def _group_run(store, padded_width, group) -> dict:
    """What defines a group's checkpoint: the sweep, the data, the bucket and its members."""
    manifest = store.manifest
    return dict(spec=manifest["spec"], data=manifest["data"], bucket=padded_width, members=group)


def run_bucket(
    data,
    members,
    padded_width,
    spec,
    programs,
    *,
    store=None,
    verbose=True,
    label="",
    progress=None,
):
    """All members of one bucket, in groups of `programs.members`; returns (rows, D, per-atom)."""
    size = programs.members
    groups = [members[i : i + size] for i in range(0, len(members), size)]
    parts = []
    for j, group in enumerate(groups):
        finished = None if store is None else store.load_group(padded_width, j, group)
        if finished is not None:  # resumed: this group finished before the interruption
            parts.append(finished)
            continue
        checkpoint = None if store is None else store.state_path(padded_width, j)
        name = label if len(groups) == 1 else f"{label} group {j + 1}/{len(groups)}"
        parts.append(
            run_group(
                data,
                group,
                padded_width,
                spec,
                programs,
                checkpoint=checkpoint,
                verbose=verbose,
                label=name,
                progress=progress,
                run=None if store is None else _group_run(store, padded_width, group),
            )
        )
        if store is not None and len(groups) > 1:
            store.save_group(padded_width, j, *parts[-1])
    rows = [r for p in parts for r in p[0]]
    return rows, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])
