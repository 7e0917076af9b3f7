r"""The sweep engine: every member of a width bucket trained by one vmapped, compiled program.

A member (width $w$, seed, $\lambda$) is the alternating learner written for one dictionary,
padded to the bucket's width $W \ge w$ with an atom mask: padded atoms are zero rows, get zero
codes, never enter a dual check and are never updated or revived, so a padded member follows the
same trajectory as the unpadded one. Members are sharded over all devices JAX sees (mesh axis
`"members"`), the data replicated; the same code runs on one CPU, one GPU or many devices.
"""

import collections
import math
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .._coding._driver import default_tol, sparse_code
from .._learning._alternating import Alternating
from .._learning._atoms import init_dictionary
from .._learning._chunks import scan_full_data
from .._learning._loop import run_chunks
from ..optimality import residuals
from ..wide_limit import bound as wide_limit_bound
from ._store import ResultStore

# Traces of the bucket programs (a test checks: one per bucket, never one per member).
TRACES = collections.Counter()


def _init_member(learner, X, width, seed, padded_width):
    D = init_dictionary(X, padded_width, jax.random.PRNGKey(seed))
    return learner.init(X, D, jnp.arange(padded_width) < width)


@eqx.filter_jit
def _init_bucket(learner, X, widths, seeds, padded_width):
    return jax.vmap(_init_member, in_axes=(None, None, 0, 0, None))(learner, X, widths, seeds, padded_width)


@eqx.filter_jit
def _bucket_chunk(learner, X, lams, tol, states, length):
    TRACES["chunk", states.D.shape[1]] += 1
    states, infos = jax.vmap(scan_full_data, in_axes=(None, None, 0, None, 0, None))(
        learner, X, lams, tol, states, length
    )
    return states, jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), infos)  # (steps, members)


def _member_summary(X, lam, tol, state, max_steps):
    coded = sparse_code(X, state.D, lam, init=state.codes, atom_mask=state.atom_mask, tol=tol, max_steps=max_steps)
    A = coded.codes
    report = residuals(X, state.D, A, lam, atom_mask=state.atom_mask)
    R = X - A @ state.D
    centred = X - jnp.mean(X, axis=0)
    block = report.atoms.block_ratio
    return dict(
        objective=report.objective,
        mean_l0=jnp.mean(jnp.sum(A > 0, axis=-1).astype(X.dtype)),
        dead_atoms=jnp.sum(report.atoms.dead),
        explained_variance=1.0 - jnp.sum(R * R) / jnp.sum(centred * centred),
        max_relative_constraint=jnp.max(report.atoms.relative_constraint),
        max_block_ratio=jnp.max(jnp.where(report.atoms.masked, 0.0, block)),
        free_atom_ratio=report.free_atom.ratio,
        max_relative_gap=jnp.max(coded.relative_gap),
        stationarity=report.stationary_residual,
        atom_relative_constraint=jnp.where(report.atoms.masked, jnp.nan, report.atoms.relative_constraint),
    )


def _member_stationarity(X, lam, tol, state, max_steps):
    """The first-order certified residual alone (cheap: the per-chunk stopping test)."""
    coded = sparse_code(X, state.D, lam, init=state.codes, atom_mask=state.atom_mask, tol=tol, max_steps=max_steps)
    return residuals(X, state.D, coded.codes, lam, atom_mask=state.atom_mask, second_order=False).stationary_residual


@eqx.filter_jit
def _bucket_stationarity(X, lams, tol, states, max_steps):
    return jax.vmap(_member_stationarity, in_axes=(None, 0, None, 0, None))(X, lams, tol, states, max_steps)


@eqx.filter_jit
def _bucket_summary(X, lams, tol, states, max_steps):
    return jax.vmap(_member_summary, in_axes=(None, 0, None, 0, None))(X, lams, tol, states, max_steps)


def _mesh():
    return Mesh(np.array(jax.devices()), ("members",))


def run_bucket(X, members, padded_width, spec, *, checkpoint=None, verbose=True, label=""):
    """Train the members of one bucket together; returns (rows, dictionaries (m, W, d))."""
    mesh = _mesh()
    n_dev = mesh.devices.size
    m = len(members)
    padded_m = math.ceil(m / n_dev) * n_dev  # members padded to a multiple of the device count
    order = list(range(m)) + [m - 1] * (padded_m - m)
    by_member = NamedSharding(mesh, PartitionSpec("members"))
    replicated = NamedSharding(mesh, PartitionSpec())
    widths = jax.device_put(np.array([members[i][0] for i in order], np.int32), by_member)
    seeds = jax.device_put(np.array([members[i][1] for i in order], np.int32), by_member)
    lams = jax.device_put(np.array([members[i][2] for i in order], X.dtype), by_member)
    X = jax.device_put(X, replicated)
    tol = jnp.asarray(default_tol(X.dtype) if spec.code_tol is None else spec.code_tol, X.dtype)
    learner = Alternating(solver=spec.solver)
    states = _init_bucket(learner, X, widths, seeds, padded_width)
    max_code_steps = 5000

    def chunk(states):
        return _bucket_chunk(learner, X, lams, tol, states, spec.chunk_size)

    def certify(states):
        if spec.stationarity_tol <= 0:  # no early stop asked: skip the per-chunk certificate
            return False, label
        worst = float(jnp.max(_bucket_stationarity(X, lams, tol, states, max_code_steps)[:m]))
        return worst <= spec.stationarity_tol, f"{label} worst stationarity={worst:.2e}"

    states, history, _ = run_chunks(
        chunk, certify, states, max_steps=spec.steps, chunk_size=spec.chunk_size,
        checkpoint=checkpoint, verbose=verbose, name=f"sweep W={padded_width}",
    )
    summary = jax.device_get(_bucket_summary(X, lams, tol, states, max_code_steps))
    D = np.asarray(jax.device_get(states.D))
    per_atom = np.asarray(summary.pop("atom_relative_constraint"))[:m]
    rows = []
    for i, (width, seed, lam) in enumerate(members):
        bound = float(wide_limit_bound(np.asarray(X), lam))
        row = dict(width=width, seed=seed, lam=lam, bound=bound, steps=int(states.step[i]))
        row.update({key: float(np.asarray(v)[i]) for key, v in summary.items() if key != "stationarity"})
        row["gap_to_bound"] = row["objective"] - bound
        rows.append(row)
    return rows, D[:m], per_atom


def run_sweep(X, spec, out=None, *, verbose=True):
    """Run every bucket of `spec` on data `X` (n, d); results are saved in `out` as they finish.

    Returns the list of result rows (one dict per member, see `sparsedict._sweep._store.COLUMNS`).
    With `out` set, an interrupted sweep resumes: finished buckets are skipped and the bucket in
    progress restarts from its last chunk.
    """
    X = jnp.asarray(X)
    store = ResultStore(out, spec) if out is not None else None
    groups = spec.grouped()
    rows = [] if store is None else store.rows()
    start = time.perf_counter()
    for b, (padded_width, members) in enumerate(groups.items()):
        label = f"bucket {b + 1}/{len(groups)} (W={padded_width}, {len(members)} members)"
        if store is not None and store.finished(padded_width):
            if verbose:
                print(f"[sweep] {label}: already finished, skipped", file=sys.stderr)
            continue
        checkpoint = None if store is None else store.state_path(padded_width)
        bucket_rows, dictionaries, per_atom = run_bucket(
            X, members, padded_width, spec, checkpoint=checkpoint, verbose=verbose, label=label
        )
        if store is not None:
            store.save_bucket(padded_width, bucket_rows, dictionaries, per_atom)
        rows.extend(bucket_rows)
        if verbose:
            done = sum(len(g) for w, g in groups.items() if w <= padded_width)
            elapsed = time.perf_counter() - start
            print(f"[sweep] {label} done: {done}/{len(spec.members())} members, {elapsed:.1f} s", file=sys.stderr)
    return sorted(rows, key=lambda r: (r["lam"], r["width"], r["seed"]))
