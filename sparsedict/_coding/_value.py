r"""The optimal lasso value as a differentiable function of the data, the dictionary and lam.

$F(x, D, \lambda) = \min_{a \ge 0} \tfrac12\|x - aD\|^2 + \lambda \sum_k a_k$. By the envelope
theorem its gradient needs no code Jacobian: $\partial F/\partial x = r$,
$\partial F/\partial D = -a^\top r$ (summed over signals when D is shared),
$\partial F/\partial\lambda = \sum_k a_k$, with $r = x - aD$ at the optimal codes $a$.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._objective import primal, residual
from ._driver import checked_solve, sparse_code_options


# The primal at optimal codes, with the envelope derivatives above: the codes' own variation does
# not enter the first derivative. Codes from `implicit_codes` (as `solve` returns them) make second
# derivatives exact too.
@jax.custom_jvp
def _optimal_value(X, D, codes, lam):
    return primal(X, D, codes, lam)


@_optimal_value.defjvp
def _envelope_jvp(primals, tangents):
    X, D, codes, lam = primals
    dX, dD, _, dlam = tangents
    R = residual(X, D, codes)
    tangent = jnp.sum(R * (dX - codes @ dD), axis=-1) + dlam * jnp.sum(codes, axis=-1)
    return _optimal_value(*primals), tangent


def lasso_value(
    X: Float[ArrayLike, "n d"],
    D: Float[ArrayLike, "k d"],
    lam: float | Float[ArrayLike, " n"],
    **options,
) -> Float[Array, "*n"]:
    r"""Optimal objective $F_i = \min_{a \ge 0} \tfrac12\|x_i - aD\|^2 + \lambda_i \|a\|_1$ per
    signal.

    Arguments: `X`, `D`, `lam` and the keyword options (`solver`, `tol`, `max_steps`, `init`,
    `atom_mask`, `matmul_dtype`, `throw`, with the same defaults) are those of
    [`sparsedict.sparse_code`][]. First derivatives in X, D and lam come from the envelope
    theorem (exact at the computed codes, cost of one residual); second derivatives go through
    the implicit code derivatives of `sparse_code`. With a `matmul_dtype`, the value is that of
    the input-dtype problem at the codes of the rounded one.
    """
    options = sparse_code_options(options, "lasso_value")
    problem, result = checked_solve(X, D, lam, **options)
    D = problem.D
    if problem.atom_mask is not None:
        D = jnp.where(problem.atom_mask[:, None], D, 0.0)
    value = _optimal_value(problem.X, D, result.codes, problem.lam)
    return value[0] if problem.single else value
