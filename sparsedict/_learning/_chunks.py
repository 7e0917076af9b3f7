"""Fixed-length compiled training chunks (`lax.scan`) shared by the learners and the sweeps."""

import jax


def scan_full_data(learner, X, lam, tol, state, length: int):
    """`length` steps of a full-data learner; returns (state, per-step infos)."""
    return jax.lax.scan(lambda s, _: learner.step(X, lam, tol, s), state, None, length=length)


def scan_minibatches(learner, lam, tol, state, batches):
    """One step per minibatch of `batches` (steps, batch, d)."""
    return jax.lax.scan(lambda s, b: learner.step(b, lam, tol, s), state, batches)
