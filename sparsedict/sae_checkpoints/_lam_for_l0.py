r"""The $\lambda$ at which exact codes reach a target mean L0 (for TopK SAEs and matched sparsity).

The mean number of active atoms of the exact codes falls (piecewise constantly) as $\lambda$
grows, from the full support near 0 to none at $\lambda_{\max} = \max_i \max_k d_k \cdot x_i$.
Bisection on $\log\lambda$ between a bracket, each step warm-started from the codes of the
bracket end closest to it.
"""

import jax.numpy as jnp
import numpy as np

from .._coding._driver import sparse_code
from .._objective import lam_max


def _mean_l0(X, D, lam, init, solver, tol, max_steps):
    result = sparse_code(X, D, lam, solver=solver, tol=tol, max_steps=max_steps, init=init)
    codes = result.codes
    return float(jnp.mean(jnp.sum(codes > 0, axis=-1))), codes


def lam_for_l0(
    X,
    D,
    target_l0: float,
    *,
    rtol: float = 0.01,
    max_iter: int = 40,
    solver: str = "active_set",
    tol: float | None = None,
    max_steps: int = 1000,
) -> tuple[float, float]:
    """`(lam, mean L0)`: bisection on log lam until the exact codes' mean L0 is within `rtol`
    (relative) of `target_l0`, or the bracket stops shrinking (L0 is piecewise constant in lam).

    Arguments:
        X: signals (n, d), already centred (an SAE's `X - b_dec`). D: unit-norm atoms (k, d).
        target_l0: the mean number of active atoms wanted, in (0, min(k, d)].
    """
    X = jnp.asarray(X)
    D = jnp.asarray(D, X.dtype)
    if not 0 < target_l0 <= D.shape[0]:
        raise ValueError(f"target_l0 must be in (0, k = {D.shape[0]}], got {target_l0}")
    hi = float(jnp.max(lam_max(X, D)))
    if hi <= 0:
        raise ValueError("no signal correlates positively with any atom: every code is zero")
    lo = hi * 1e-3
    l0_lo, codes_lo = _mean_l0(X, D, lo, None, solver, tol, max_steps)
    while l0_lo < target_l0 and lo > hi * 1e-12:
        lo *= 1e-2
        l0_lo, codes_lo = _mean_l0(X, D, lo, codes_lo, solver, tol, max_steps)
    codes_hi = jnp.zeros((X.shape[0], D.shape[0]), X.dtype)
    best = (lo, l0_lo)
    for _ in range(max_iter):
        mid = float(np.sqrt(lo * hi))
        warm = codes_lo if np.log(mid / lo) < np.log(hi / mid) else codes_hi
        l0, codes = _mean_l0(X, D, mid, warm, solver, tol, max_steps)
        if abs(l0 - target_l0) < abs(best[1] - target_l0):
            best = (mid, l0)
        if abs(l0 - target_l0) <= rtol * target_l0:
            return mid, l0
        if l0 > target_l0:
            lo, codes_lo = mid, codes
        else:
            hi, codes_hi = mid, codes
        if hi / lo - 1 < 1e-12:
            break
    return best
