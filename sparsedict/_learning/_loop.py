"""The host loop between compiled chunks: progress, checkpoints, certified stopping.

A learner provides `chunk(state) -> (state, infos)` (a jitted `lax.scan` of fixed length) and
`certify(state) -> (done, message)`. The loop saves `state` and the history after every chunk, so
an interrupted run resumes from its last finished chunk and ends with the same result.
"""

import time

import jax
import numpy as np

from .._progress import logger, report, verbosity
from . import _checkpoint
from ._metrics import StepInfo


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
    run=None,
    scale=0,
):
    """Run `chunk` until `certify` says done or `max_steps` steps; returns (state, history, done).

    After each chunk, `sparsedict._progress.report`s the step (to the `"sparsedict"` logger at
    DEBUG, and to `progress` if given); `verbose` shows those records on stderr.

    `run` (a JSON-able dict) says what defines the run: a checkpoint of another run is refused
    (`RunMismatch`), a damaged one is ignored with a warning (see `_checkpoint.py`). `scale`: the
    learner trains on the data times `2^-scale` (`_data.py`); progress shows the data's scale.
    Sharded states: `place` puts a loaded state on the devices, `fetch` brings one to the host;
    with several hosts every host resumes from `checkpoint` and only the one with `save` writes it.
    """
    with verbosity(verbose):
        args = (max_steps, chunk_size, checkpoint, progress, name, place, fetch, save, run, scale)
        return _run(chunk, certify, state, *args)


def _run(
    chunk,
    certify,
    state,
    max_steps,
    chunk_size,
    checkpoint,
    progress,
    name,
    place,
    fetch,
    save,
    run,
    scale,
):
    history, steps = None, 0
    run = {} if run is None else run
    loaded = None if checkpoint is None else _checkpoint.load(checkpoint, state, run)
    if loaded is not None:
        state, history, steps = loaded
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
                _checkpoint.save(checkpoint, host_state, history, steps, run)
        done, message = certify(state)
        elapsed = time.perf_counter() - start
        # Batched runs (sweeps) have a members axis: show the mean over members, at the data's
        # scale (the learner trains on the data times 2^-scale).
        # (over the members still training: those a sweep froze report a NaN objective)
        latest = StepInfo(*(np.asarray(v[-1]) for v in history))
        training = ~np.isnan(latest.objective)
        if not np.any(training):  # a sweep's last chunk may only test its (certified) members
            training = np.ones_like(training)
        last = StepInfo(*(float(np.mean(v[training])) for v in latest))
        last = last._replace(objective=float(np.ldexp(last.objective, 2 * scale)))
        worst_grad = float(np.ldexp(np.max(latest.grad_norm[training]), 2 * scale))
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
