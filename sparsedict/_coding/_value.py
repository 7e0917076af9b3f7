r"""The optimal lasso value as a differentiable function of the data, the dictionary and lam.

$F(x, D, \lambda) = \min_{a \ge 0} \tfrac12\|x - aD\|^2 + \lambda \sum_k a_k$. By the envelope
theorem its gradient needs no code Jacobian: $\partial F/\partial x = r$,
$\partial F/\partial D = -a^\top r$ (summed over signals when D is shared),
$\partial F/\partial\lambda = \sum_k a_k$, with $r = x - aD$ at the optimal codes $a$.
"""

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .. import _validation as check
from ._base import AbstractCodingSolver
from ._driver import sparse_code
from ._implicit import optimal_value


def lasso_value(
    X: Float[ArrayLike, "n d"],
    D: Float[ArrayLike, "k d"],
    lam: float | Float[ArrayLike, " n"],
    *,
    solver: str | AbstractCodingSolver = "active_set",
    tol: float | None = None,
    max_steps: int = 1000,
    init: Float[ArrayLike, "n k"] | None = None,
    atom_mask: ArrayLike | None = None,
) -> Float[Array, "*n"]:
    r"""Optimal objective $F_i = \min_{a \ge 0} \tfrac12\|x_i - aD\|^2 + \lambda_i \|a\|_1$ per
    signal.

    Arguments are those of [`sparsedict.sparse_code`][]. First derivatives in X, D and lam come
    from the envelope theorem (exact at the computed codes, cost of one residual); second
    derivatives go through the implicit code derivatives of `sparse_code`.
    """
    codes = sparse_code(
        X, D, lam, solver=solver, tol=tol, max_steps=max_steps, init=init, atom_mask=atom_mask
    ).codes
    dtype = codes.dtype
    X = jnp.asarray(X, dtype)
    single = X.ndim == 1
    X2, codes2 = (X[None], codes[None]) if single else (X, codes)
    lam = jnp.broadcast_to(jnp.asarray(lam, dtype), X2.shape[:1])
    D = jnp.asarray(D, dtype)
    if atom_mask is not None:
        D = jnp.where(check.atom_mask(atom_mask, D.shape[0])[:, None], D, 0.0)
    value = optimal_value(codes2, X2, D, lam)
    return value[0] if single else value
