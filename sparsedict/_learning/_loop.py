"""The host loop between compiled chunks: progress, checkpoints, certified stopping.

A learner provides `chunk(state) -> (state, infos)` (a jitted `lax.scan` of fixed length) and
`certify(state) -> (done, message)`. The loop saves `state` and the history after every chunk, so
an interrupted run resumes from its last finished chunk and ends with the same result.
"""

import os
import time

import jax
import numpy as np

from .._progress import logger, report, verbosity
from ._metrics import StepInfo


def _save(path, state, history, steps):
    leaves = jax.tree_util.tree_leaves(state)
    arrays = {f"state_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays.update(
        {f"history_{name}": np.asarray(getattr(history, name)) for name in StepInfo._fields}
    )
    arrays["steps"] = np.asarray(steps)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written checkpoint


def _load(path, like_state):
    with np.load(path) as data:
        treedef = jax.tree_util.tree_structure(like_state)
        n_leaves = treedef.num_leaves
        leaves = [data[f"state_{i}"] for i in range(n_leaves)]
        like = jax.tree_util.tree_leaves(like_state)
        leaves = [jax.numpy.asarray(v, dtype=x.dtype) for v, x in zip(leaves, like, strict=False)]
        history = StepInfo(*(data[f"history_{name}"] for name in StepInfo._fields))
        return jax.tree_util.tree_unflatten(treedef, leaves), history, int(data["steps"])


def _concat(history, infos):
    infos = StepInfo(*(np.asarray(v) for v in infos))  # host arrays
    if history is None:
        return infos
    return StepInfo(*(np.concatenate([h, i]) for h, i in zip(history, infos, strict=False)))


def run_chunks(
    chunk,
    certify,
    state,
    *,
    max_steps,
    chunk_size,
    checkpoint=None,
    verbose=True,
    progress=None,
    name="train",
    place=None,
    fetch=None,
    save=True,
):
    """Run `chunk` until `certify` says done or `max_steps` steps; returns (state, history, done).

    After each chunk, `sparsedict._progress.report`s the step (to the `"sparsedict"` logger at
    DEBUG, and to `progress` if given); `verbose` shows those records on stderr.

    Sharded states: `place` puts a loaded state on the devices, `fetch` brings one to the host;
    with several hosts every host resumes from `checkpoint` and only the one with `save` writes it.
    """
    with verbosity(verbose):
        args = (max_steps, chunk_size, checkpoint, progress, name, place, fetch, save)
        return _run(chunk, certify, state, *args)


def _run(
    chunk, certify, state, max_steps, chunk_size, checkpoint, progress, name, place, fetch, save
):
    history, steps = None, 0
    if checkpoint is not None and os.path.exists(checkpoint):
        state, history, steps = _load(checkpoint, state)
        state = state if place is None else place(state)
        logger.info(f"[{name}] resumed from {checkpoint} at step {steps}")
    done, message = (False, "")
    if steps > 0:
        done, message = certify(state)
    start = time.perf_counter()
    while not done and steps < max_steps:
        state, infos = chunk(state)
        steps += chunk_size
        history = _concat(history, infos if fetch is None else fetch(infos))
        if checkpoint is not None:
            host_state = (fetch or jax.device_get)(state)  # on every host: may be a collective
            if save:
                _save(checkpoint, host_state, history, steps)
        done, message = certify(state)
        elapsed = time.perf_counter() - start
        # Batched runs (sweeps) have a members axis: show the mean over members.
        last = StepInfo(*(float(np.mean(v[-1])) for v in history))
        worst_grad = float(np.max(history.grad_norm[-1]))
        eta = elapsed / steps * (max_steps - steps)
        report(
            progress,
            name,
            steps,
            max_steps,
            f"F={last.objective:.6g}  L0={last.l0:.2f}  dead={last.dead:.3g}  "
            f"worst |grad|={worst_grad:.2e}  {message}  ({elapsed:.1f} s, <= {eta:.0f} s left)",
            **last._asdict(),
        )
    if history is None:
        history = StepInfo(*(np.zeros((0,)) for _ in StepInfo._fields))
    return state, history, done
