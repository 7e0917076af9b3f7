"""Exact codes for internal callers: the coding kernel with its arrays built from defaults.

Learners, sweeps, the optimality and wide-limit entries and `lasso_value` validate their inputs
once, then call [`solve_codes`][] here (inside their own compiled programs, too): no check runs
again. [`sparsedict.sparse_code`][] is the public, validating entry to the same kernel.
"""

import jax.numpy as jnp

from ._driver import _solver, default_tol, solve
from ._result import CodingResult


def solve_codes(
    X,
    D,
    lam,
    *,
    atom_mask=None,
    init=None,
    tol=None,
    max_steps=1000,
    solver="active_set",
    polished=True,
) -> CodingResult:
    """Codes of validated signals `X` (n, d) for `D` (k, d) of the same dtype (no checks).

    `lam` is a scalar or (n,); `init` (n, k) or None (zeros); `tol` None (the dtype's default) or
    a scalar; `max_steps` an int or a scalar array; `solver` a name or an instance;
    `polished=False` for callers that use the codes only (no float32 polish and compensated
    certificate, `_driver._final_certificate`).
    """
    n, k = X.shape[0], D.shape[0]
    lam = jnp.broadcast_to(jnp.asarray(lam, X.dtype), (n,))
    init = jnp.zeros((n, k), X.dtype) if init is None else init
    tol = jnp.asarray(default_tol(X.dtype) if tol is None else tol, X.dtype)
    max_steps = jnp.asarray(max_steps, jnp.int32)
    return solve(X, D, lam, init, atom_mask, tol, max_steps, _solver(solver), None, polished)
