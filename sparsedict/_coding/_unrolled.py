r"""Sparse coding by a fixed number of FISTA steps, differentiated by unrolling (approximate).

`unrolled_sparse_code` runs exactly `max_steps` FISTA steps (a `lax.scan`, no stopping test) and
lets JAX differentiate through them. The derivative is that of the truncated iteration, not of
the lasso solution: it approaches the exact (implicit) derivative of
[`sparsedict.sparse_code`][] only as the iterates converge and the support settles, and it costs
memory proportional to `max_steps` in reverse mode. The step size $1/L$,
$L = \lambda_{\max}(DD^\top)$, is treated as a constant (no derivative flows through the
eigenvalue).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike, Float

from .. import _validation as check
from .._objective import kkt_residual
from ._driver import coding_inputs, make_operator, unbatch
from ._fista import FISTA
from ._problem import Signal
from ._result import CodingResult, coding_result


@eqx.filter_jit
def _unrolled(X, D, lam, init, atom_mask, tol, max_steps):
    solver = FISTA()
    op = make_operator(D, atom_mask, use_gram=D.shape[0] <= 2 * D.shape[1])
    op = eqx.tree_at(lambda o: o.lipschitz, op, jax.lax.stop_gradient(op.lipschitz))
    # ||x|| with the derivative x / ||x|| and 0 at x = 0 (double where: no NaN), so that
    # ||x||^2 (the certificate's) has the derivative 2x everywhere
    x_sq = jnp.sum(X * X, axis=-1)
    nonzero = x_sq > 0
    X_norm = jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, x_sq, 1.0)), 0.0)
    signals = Signal(x=X, c=X @ op.D.T, x_norm=X_norm, lam=lam)

    def solve_one(sig, a0):
        state = solver.init(op, sig, op.project(a0))
        state, _ = jax.lax.scan(
            lambda s, _: (solver.step(op, sig, s), None), state, length=max_steps
        )
        codes = solver.codes(state)
        cert, g = op.certificate(sig, codes)
        return codes, cert, kkt_residual(codes, g, sig.lam, op.atom_mask)

    codes, cert, kkt = jax.vmap(solve_one)(signals, init)
    converged = cert.relative_gap <= tol
    steps = jnp.full(converged.shape, max_steps, jnp.int32)
    return coding_result(codes, cert, kkt, converged, steps, jnp.zeros_like(converged))


def unrolled_sparse_code(
    X: Float[ArrayLike, "n d"],
    D: Float[ArrayLike, "k d"],
    lam: float | Float[ArrayLike, " n"],
    *,
    max_steps: int,
    init: Float[ArrayLike, "n k"] | None = None,
    atom_mask: ArrayLike | None = None,
    tol: float | None = None,
) -> CodingResult:
    r"""Codes after exactly `max_steps` FISTA steps, differentiable by unrolling (approximate).

    Arguments as in [`sparsedict.sparse_code`][]; `max_steps` is static (changing it recompiles) and
    `tol` only sets the `converged` flags. Every field of the result, certificates included, is
    differentiable through the iteration. Prefer `sparse_code` (exact implicit derivatives) unless
    the truncated map itself is what you want to differentiate.
    """
    X2, D, lam, init, atom_mask, tol, single = coding_inputs(X, D, lam, init, atom_mask, tol)
    max_steps = check.positive_int(max_steps, "max_steps")
    result = _unrolled(X2, D, lam, init, atom_mask, tol, max_steps)
    return unbatch(result) if single else result
