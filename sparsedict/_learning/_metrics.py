"""Per-step training metrics, recorded inside the compiled chunks."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._dictionary import riemannian_gradient
from .._objective import mean_objective, reconstruction


class StepInfo(NamedTuple):
    """One training step. Fields are arrays; a history stacks them along a leading axis."""

    objective: Float[Array, ""]  # mean 1/2 ||x - a D||^2 + lam sum(a)
    reconstruction: Float[Array, ""]  # mean 1/2 ||x - a D||^2
    l0: Float[Array, ""]  # mean number of active atoms per signal
    dead: Int[Array, ""]  # atoms with no activation
    grad_norm: Float[Array, ""]  # Frobenius norm of the Riemannian gradient in D


def step_info(X, D, A, lam, atom_mask=None) -> StepInfo:
    recon = jnp.mean(reconstruction(X, D, A))
    # Envelope theorem: with codes optimal, dF/dD at fixed codes is the gradient of F in D.
    objective, grad = jax.value_and_grad(mean_objective, argnums=1)(X, D, A, lam)
    used = jnp.sum(A, axis=0) > 0
    live = used if atom_mask is None else used | ~atom_mask
    return StepInfo(
        objective=objective,
        reconstruction=recon,
        l0=jnp.mean(jnp.sum(A > 0, axis=-1).astype(X.dtype)),
        dead=jnp.sum(~live),
        grad_norm=jnp.linalg.norm(riemannian_gradient(D, grad)),
    )
