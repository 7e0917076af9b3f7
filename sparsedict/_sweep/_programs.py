r"""The compiled programs of one width bucket, compiled ahead of time with their memory predicted.

A bucket runs `m` members (width $w \le W$, seed, $\lambda$) of one learner, vmapped and padded
to the bucket width $W$ with an atom mask. Its three programs (initialisation, a training chunk,
and the summary, which is also the per-chunk stopping test) are lowered from shapes alone and
compiled once; the compiler's memory analysis (arguments + outputs + temporaries - donated
buffers, per device) predicts the peak before anything runs, and the same executables then run
every group of members of the bucket.
"""

import collections
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from .._coding._codes import solve_codes
from .._learning._alternating import AlternatingState
from .._learning._chunks import scan_full_data, scan_minibatches
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
    """NaN (or -1 for integer fields): the infos of a member that did not train."""
    fill = jnp.nan if jnp.issubdtype(shape.dtype, jnp.floating) else -1
    return jnp.full(shape.shape, fill, shape.dtype)


def _unless_frozen(train):
    """`train(lam, state)` for a member that is not `frozen`; a frozen (certified) member keeps
    its state and reports missing infos (`_missing`). Members run one at a time
    (`member_batch=1`, CPUs) skip the work; vmapped members compute both branches and keep the
    frozen state."""

    train = jax.jit(train)  # one trace, shared by `keep`'s shapes and the branch

    def step(lam, state, frozen):
        def keep(lam, state):
            shapes = jax.eval_shape(train, lam, state)[1]
            return state, jax.tree_util.tree_map(_missing, shapes)

        return jax.lax.cond(frozen, keep, train, lam, state)

    return step


def _unless_skipped(fn):
    """`fn(lam, state)`, or its outputs missing (`_missing`) for a member in `skip` (as
    `_unless_frozen`: skipped one at a time, computed and dropped when vmapped)."""
    fn = jax.jit(fn)

    def run(lam, state, skip):
        def missing(lam, state):
            return jax.tree_util.tree_map(_missing, jax.eval_shape(fn, lam, state))

        return jax.lax.cond(skip, missing, fn, lam, state)

    return run


def full_data_chunk(learner, X, lams, tol, states, frozen, length, member_batch):
    TRACES["chunk", states.D.shape[1]] += 1

    def train(lam, state):
        return scan_full_data(learner, X, lam, tol, state, length)

    states, infos = over_members(_unless_frozen(train), member_batch, lams, states, frozen)
    return states, _steps_first(infos)


def minibatch_chunk(learner, lams, tol, states, frozen, batches, member_batch):
    TRACES["chunk", states.D.shape[1]] += 1

    def train(lam, state):
        return scan_minibatches(learner, lam, tol, state, batches)

    states, infos = over_members(_unless_frozen(train), member_batch, lams, states, frozen)
    return states, _steps_first(infos)


def _exact_codes(X, lam, tol, state):
    warm = isinstance(state, AlternatingState) and state.codes.shape[0] == X.shape[0]
    return solve_codes(
        X,
        state.D,
        lam,
        init=state.codes if warm else None,
        atom_mask=state.atom_mask,
        tol=tol,
        max_steps=MAX_CODE_STEPS,
    )


def _block_ratios(X, lam, state, codes):
    """The block test's ratio of every atom (THEORY 4.1; 0 on masked and unused atoms)."""
    R = X - codes @ state.D
    weights = jnp.ones(X.shape[0], X.dtype)
    scale = jnp.max(jnp.linalg.norm(X, axis=-1))
    ratio = jax.vmap(block_ratio, in_axes=(0, 1, None, None, None, None))(
        state.D, codes, R, lam, weights, scale
    )
    return jnp.max(jnp.where(state.atom_mask, ratio, 0.0))


def member_summary(X, lam, tol, state, second_order):
    """A member's row: exact codes of its dictionary, its objective and certified residuals.

    The per-chunk stopping test and the final summary are this one program (one compiled copy
    of the code solve); `second_order` (a traced bool) adds the block test, NaN without it.
    """
    coded = _exact_codes(X, lam, tol, state)
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


def bucket_summary(X, lams, tol, states, skip, second_order, member_batch):
    """Every member's `member_summary`; members in `skip` (certified, frozen) get missing rows."""

    def summarise(lam, state):
        return member_summary(X, lam, tol, state, second_order)

    summarise = _unless_skipped(summarise)
    return over_members(summarise, member_batch, lams, states, skip)


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

    `summary(X, lams, tol, states, skip, second_order)` is both the per-chunk stopping test
    (`second_order=False`, certified members skipped) and the final summary.
    """

    init: object
    chunk: object
    summary: object
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
    if batch_shape is None:

        def run(X, lams, tol, states, frozen):
            return full_data_chunk(learner, X, lams, tol, states, frozen, chunk_size, member_batch)

        args, states_at = (x_eval, lams, tol, states, frozen), 3
        in_specs = (P(), P("members"), P(), P("members"), P("members"))
    else:
        batches = spec(batch_shape, dtype, None, "data")

        def run(lams, tol, states, frozen, batches):
            return minibatch_chunk(learner, lams, tol, states, frozen, batches, member_batch)

        args, states_at = (lams, tol, states, frozen, batches), 2
        in_specs = (P("members"), P(), P("members"), P("members"), P())
    # members' arrays split over the devices, the data and tol replicated; the states donated
    chunk = jax.jit(
        local(run, in_specs, (P("members"), P(None, "members"))),
        out_shardings=(state_sh, steps_by_member),
        donate_argnums=states_at,
    )
    chunk = chunk.lower(*args).compile()
    specs = ((P(), P("members"), P(), P("members"), P("members"), P()), P("members"))

    def summarise(X, lams, tol, states, skip, second_order):
        return bucket_summary(X, lams, tol, states, skip, second_order, member_batch)

    summary = jax.jit(local(summarise, *specs), out_shardings=by_member)
    summary = summary.lower(x_eval, lams, tol, states, frozen, spec((), jnp.bool_)).compile()
    peak = {"init": _bytes(init), "chunk": _bytes(chunk), "summary": _bytes(summary)}
    return BucketPrograms(init, chunk, summary, peak, m)
