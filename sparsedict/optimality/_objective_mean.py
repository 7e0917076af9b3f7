r"""The dictionary learning objective $F(D, A)$, a weighted mean of the per-signal lasso primal.

$$F(D, A) = \frac1W \sum_i w_i \Big[\tfrac12\|x_i - a_i D\|^2
  + \lambda \textstyle\sum_k a_{ik}\Big].$$

The per-signal primal comes from `sparsedict._objective`; every gradient in the optimality
residuals is `jax.grad` of this function.
"""

import jax.numpy as jnp

from .._objective import certificate


def mean_objective(D, codes, X, lam, weights):
    """`F(D, A)`; differentiable in `D` and `codes`."""
    primal = certificate(X, D, codes, lam).primal
    return jnp.sum(weights * primal) / jnp.sum(weights)
