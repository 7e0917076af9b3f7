r"""The compiled programs of one width bucket, compiled ahead of time with their memory predicted.

A bucket runs `m` members (width $w \le W$, seed, $\lambda$) of one learner, vmapped and padded
to the bucket width $W$ with an atom mask. Its two programs (initialisation, and a training chunk
that starts with the members' stopping test and also gives the final summary) are lowered from
shapes alone and compiled once; the compiler's memory analysis (arguments + outputs + temporaries
- donated buffers, per device) predicts the peak before anything runs, and the same executables
then run every group of members of the bucket.
"""

import collections
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Bool, Float

from .._coding._codes import solve_codes
from .._learning._chunks import scan_minibatches
from ..optimality._residuals import report as optimality_report
from ..optimality._second_order import block_ratio
from ._layout import Layout

# Traces of the training-chunk programs (a test checks: one per bucket, never one per member).
TRACES: collections.Counter = collections.Counter()
MAX_CODE_STEPS = 5000


def _init_member(learner, X, D0, width):
    return learner.init(X, D0, jnp.arange(D0.shape[0]) < width)


def init_bucket(learner, X, D0s, widths):
    """Every member's state from its initial atoms `D0s` (m, W, d) (zero rows beyond its width,
    drawn on the host by `_learning/_data.py` as for a learner run alone)."""
    return jax.vmap(_init_member, in_axes=(None, None, 0, 0))(learner, X, D0s, widths)


def _steps_first(infos):
    return jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), infos)  # (steps, members)


def over_members(fn, member_batch, *xs):
    """`fn` on every member of `xs` (leading axis: members of this device).

    `member_batch` members are vmapped together and the batches run one after another
    (`lax.map`), so a CPU can train members one at a time (the working set of one member, as a
    loop over widths would) while an accelerator trains all of them at once. One at a time, `fn`
    is not vmapped (a `lax.map` batch of one is), so a `lax.cond` in it skips the untaken branch.
    """
    if member_batch == 1:
        return jax.lax.map(lambda y: fn(*y), xs)
    return jax.lax.map(lambda y: fn(*y), xs, batch_size=member_batch)


def _missing(shape):
    """NaN (or -1 for integer fields, False for flags): what a member that did not run reports."""
    if jnp.issubdtype(shape.dtype, jnp.floating):
        return jnp.full(shape.shape, jnp.nan, shape.dtype)
    if shape.dtype == jnp.bool_:
        return jnp.zeros(shape.shape, shape.dtype)
    return jnp.full(shape.shape, -1, shape.dtype)


def _missing_like(fn, *args):
    return jax.tree_util.tree_map(_missing, jax.eval_shape(fn, *args))


def _block_ratios(X, lam, state, codes):
    """The block test's ratio of every atom (THEORY 4.1; 0 on masked and unused atoms)."""
    R = X - codes @ state.D
    weights = jnp.ones(X.shape[0], X.dtype)
    scale = jnp.max(jnp.linalg.norm(X, axis=-1))
    ratio = jax.vmap(block_ratio, in_axes=(0, 1, None, None, None, None))(
        state.D, codes, R, lam, weights, scale
    )
    return jnp.max(jnp.where(state.atom_mask, ratio, 0.0))


def member_row(X, lam, state, coded, second_order):
    """A member's results from `coded`, the exact codes of `X` for its dictionary: objective and
    certified residuals; `second_order` (a traced bool) adds the block test (NaN without)."""
    A = coded.codes
    weights = jnp.ones(X.shape[0], X.dtype)
    report = optimality_report(X, state.D, A, lam, weights, state.atom_mask, False)
    R = X - A @ state.D
    centred = X - jnp.mean(X, axis=0, keepdims=True)
    no_test = jnp.full((), jnp.nan, X.dtype)
    return dict(
        objective=report.objective,
        mean_l0=jnp.mean(jnp.sum(A > 0, axis=-1).astype(X.dtype)),
        dead_atoms=jnp.sum(report.atoms.dead),
        explained_variance=1.0 - jnp.sum(R * R) / jnp.sum(centred * centred),
        max_relative_constraint=jnp.max(report.atoms.relative_constraint),
        max_block_ratio=jax.lax.cond(
            second_order, lambda: _block_ratios(X, lam, state, A), lambda: no_test
        ),
        free_atom_ratio=report.free_atom.ratio,
        max_relative_gap=jnp.max(coded.relative_gap),
        stationarity=report.stationary_residual,
        atom_relative_constraint=jnp.where(
            report.atoms.masked, jnp.nan, report.atoms.relative_constraint
        ),
    )


def member_summary(X, lam, tol, state):
    """A member's row with the block test, from its own code solve (for a loop over widths, the
    baseline of `benchmarks/sweep.py`)."""
    return member_row(X, lam, state, _eval_codes(X, lam, tol, state), jnp.bool_(True))


def _stops(state, row, train, stop_tol):
    """A member stops before training when only its row is asked (`train` False), or when its
    dictionary, trained at least one step, is certified (stationarity at most `stop_tol` > 0)."""
    certified = (stop_tol > 0) & (state.step > 0) & (row["stationarity"] <= stop_tol)
    return ~train | certified


class Controls(NamedTuple):
    """A chunk's run-time switches (arrays: changing them never recompiles)."""

    frozen: Bool[Array, " m"]  # members certified earlier: nothing runs for them
    train: Bool[Array, ""]  # False: only the members' rows (the final summary)
    second_order: Bool[Array, ""]  # the rows include the block test
    stop_tol: Float[Array, ""]  # stationarity at which a member stops (0: never)


def _full_data_member(learner, X, tol, length, controls):
    """One member's chunk of a full-data learner whose step starts with the exact codes of `X`
    (`step_from_codes`): those of the chunk's first step are also its stopping test and row, so
    the program holds one code solve. Returns (state, infos, row, stopped)."""

    def run(lam, state, frozen):
        @jax.jit  # one trace, shared by `idle`'s shapes and the branch
        def work(i, state):
            coded = learner.solve_codes(X, state.D, lam, tol, state.atom_mask, init=state.codes)
            first = i == 0

            def row():
                return member_row(X, lam, state, coded, controls.second_order)

            row = jax.lax.cond(first, row, lambda: _missing_like(row))
            stop = first & _stops(state, row, controls.train, controls.stop_tol)
            A = jax.lax.stop_gradient(coded.codes)

            def advance(state):
                return learner.step_from_codes(X, lam, state, A)

            def keep(state):
                return state, _missing_like(advance, state)[1]

            state, info = jax.lax.cond(stop, keep, advance, state)
            return (state, stop), (info, row)

        def body(carry, i):
            state, stopped = carry

            def idle(i, state):
                return (state, stopped), _missing_like(work, i, state)[1]

            return jax.lax.cond(stopped, idle, work, i, state)

        (state, stopped), (infos, rows) = jax.lax.scan(body, (state, frozen), jnp.arange(length))
        return state, infos, jax.tree_util.tree_map(lambda a: a[0], rows), stopped

    return run


def _minibatch_member(learner, X_eval, tol, batches, controls):
    """One member's chunk of a minibatch learner: its row on `X_eval` (exact codes), then the
    minibatch steps unless it stops. Returns (state, infos, row, stopped)."""

    def run(lam, state, frozen):
        @jax.jit  # (one trace each, shared by the shapes of the missing outputs and the branch)
        def row(state):
            coded = _eval_codes(X_eval, lam, tol, state)
            return member_row(X_eval, lam, state, coded, controls.second_order)

        @jax.jit
        def train(state):
            return scan_minibatches(learner, lam, tol, state, batches)

        def no_row(state):
            return _missing_like(row, state)

        def keep(state):
            return state, _missing_like(train, state)[1]

        # no test when nothing would use it (frozen, or training with no early stop asked)
        skip = frozen | (controls.train & ~(controls.stop_tol > 0))
        row = jax.lax.cond(skip, no_row, row, state)
        stop = frozen | _stops(state, row, controls.train, controls.stop_tol)
        state, infos = jax.lax.cond(stop, keep, train, state)
        return state, infos, row, stop

    return run


def full_data_chunk(learner, X, lams, tol, states, controls, length, member_batch):
    TRACES["chunk", states.D.shape[1]] += 1
    run = _full_data_member(learner, X, tol, length, controls)
    return _over_bucket(run, member_batch, lams, states, controls)


def minibatch_chunk(learner, X_eval, lams, tol, states, controls, batches, member_batch):
    TRACES["chunk", states.D.shape[1]] += 1
    run = _minibatch_member(learner, X_eval, tol, batches, controls)
    return _over_bucket(run, member_batch, lams, states, controls)


def _over_bucket(run, member_batch, lams, states, controls):
    states, infos, rows, stopped = over_members(run, member_batch, lams, states, controls.frozen)
    return states, _steps_first(infos), rows, stopped


def _eval_codes(X, lam, tol, state):
    return solve_codes(
        X, state.D, lam, atom_mask=state.atom_mask, tol=tol, max_steps=MAX_CODE_STEPS
    )


def _bytes(compiled) -> int:
    """Predicted peak bytes per device: arguments + outputs + temporaries - donated (aliased)."""
    stats = compiled.memory_analysis()
    if stats is None:  # a backend without memory analysis
        return 0
    return int(
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )


class BucketPrograms(NamedTuple):
    """Compiled programs of one bucket for `members` members per group, and their peak bytes.

    `chunk(X_eval, lams, tol, states, controls[, batches])` returns `(states, infos, rows,
    stopped)`: each member not frozen is tested first (its row, from the exact codes of its
    dictionary), stops there if certified (or if `controls.train` is False: the final summary),
    and otherwise trains `chunk_size` steps.
    """

    init: object
    chunk: object
    peak_bytes: dict
    members: int


def _per_device(layout: Layout):
    """With members split over devices, every device runs its own members (`shard_map`).

    Each device's solver loops then stop on its own members' certificates, with no collective per
    iteration (under GSPMD a vmapped loop's stopping test would be all-reduced across devices at
    every step). With the signals split (`layout="data"`) the programs stay global and the
    compiler inserts the reductions.
    """
    if layout.kind != "members" or layout.member_devices == 1:
        return lambda fn, in_specs, out_specs: fn
    return lambda fn, in_specs, out_specs: jax.shard_map(
        fn, mesh=layout.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
    )


def _state_shardings(states, layout: Layout):
    """Members split over "members"; the alternating codes (m, n, W) also over "data"."""
    fields = type(states)._fields
    return type(states)(
        *(
            layout.sharding("members", "data") if f == "codes" else layout.sharding("members")
            for f in fields
        )
    )


def compile_bucket(
    learner,
    layout: Layout,
    *,
    members,
    padded_width,
    X_eval,
    batch_shape,
    chunk_size,
    dtype,
    member_batch,
) -> BucketPrograms:
    """Lower and compile every program of a bucket from shapes; nothing is run.

    The data were validated on the host; the programs call the internal kernels, which check
    nothing (a check's single-device error branch would gather split arrays).

    `X_eval` is the shape struct (or array) of the evaluation data (the training data itself for
    the alternating learner; it also sizes the alternating codes); `batch_shape` is (steps, b, d)
    for the online learner, None for the alternating one.
    """

    def spec(shape, dt, *axes):
        return jax.ShapeDtypeStruct(shape, dt, sharding=layout.sharding(*axes))

    m = members
    widths = spec((m,), jnp.int32, "members")
    D0s = spec((m, padded_width, X_eval.shape[1]), dtype, "members")
    lams, tol = spec((m,), dtype, "members"), spec((), dtype)
    frozen = spec((m,), jnp.bool_, "members")
    x_eval = spec(X_eval.shape, dtype, "data")

    member_batch = max(1, min(member_batch, m // layout.member_devices))
    local = _per_device(layout)
    states_shape = jax.eval_shape(
        lambda X, D0, w: init_bucket(learner, X, D0, w), x_eval, D0s, widths
    )
    state_sh = _state_shardings(states_shape, layout)
    states = jax.tree_util.tree_map(
        lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), states_shape, state_sh
    )
    by_member = layout.sharding("members")
    steps_by_member = layout.sharding(None, "members")

    init = jax.jit(lambda X, D0, w: init_bucket(learner, X, D0, w), out_shardings=state_sh)
    init = init.lower(x_eval, D0s, widths).compile()
    switch = spec((), jnp.bool_)
    controls = Controls(frozen=frozen, train=switch, second_order=switch, stop_tol=tol)
    controls_specs = Controls(P("members"), P(), P(), P())
    if batch_shape is None:

        def run(X, lams, tol, states, controls):
            return full_data_chunk(
                learner, X, lams, tol, states, controls, chunk_size, member_batch
            )

        args = (x_eval, lams, tol, states, controls)
        in_specs = (P(), P("members"), P(), P("members"), controls_specs)
    else:
        batches = spec(batch_shape, dtype, None, "data")

        def run(X, lams, tol, states, controls, batches):
            return minibatch_chunk(learner, X, lams, tol, states, controls, batches, member_batch)

        args = (x_eval, lams, tol, states, controls, batches)
        in_specs = (P(), P("members"), P(), P("members"), controls_specs, P())
    # members' arrays split over the devices, the data and tol replicated; the states donated
    out_specs = (P("members"), P(None, "members"), P("members"), P("members"))
    chunk = jax.jit(
        local(run, in_specs, out_specs),
        out_shardings=(state_sh, steps_by_member, by_member, by_member),
        donate_argnums=3,
    )
    chunk = chunk.lower(*args).compile()
    peak = {"init": _bytes(init), "chunk": _bytes(chunk)}
    return BucketPrograms(init, chunk, peak, m)
