r"""The convex infinite-width ReLU SAE over fixed random encoder candidates (THEORY section 6).

Features $\phi_{im} = \mathrm{relu}(v_m\cdot x_i + b_m)$ for $M$ fixed encoders; decoder vectors
$u_m$ (M, d) with the decoder-norm-weighted L1 penalty:
$$\min_U\; \sum_i \omega_i \Big[\tfrac12\|x_i - \textstyle\sum_m \phi_{im} u_m\|^2
  + \lambda \sum_m \phi_{im}\|u_m\|\Big] = \tfrac12\|x - \Phi U\|_\omega^2
  + \lambda \sum_m c_m \|u_m\|,\quad c_m = \textstyle\sum_i \omega_i \phi_{im},$$
a group lasso, convex in $U$, solved by FISTA with the group prox. Writing $\phi_{im}\|u_m\|$ as a
code on the unit atom $u_m / \|u_m\|$ shows its value is at least the dictionary learning optimum,
hence at least the Huber bound. **Certificate:** $\Theta = sR$ is dual feasible when
$\|\sum_i \omega_i \phi_{im} \theta_i\| \le \lambda c_m$ for every $m$; take the largest such
$s \le 1$; the dual value is $\sum_i \omega_i[\tfrac12\|x_i\|^2 - \tfrac12\|x_i - \theta_i\|^2]$.
"""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._candidate import _dual_value, _group_shrink
from ._fista import Certified, fista


class ReluSAESolution(Certified):
    """Decoder (M, d) and features (n, M), with the certificate fields of `Certified` (`primal`,
    `dual`, `gap`, `steps`, `converged`, `result`)."""

    decoder: Float[Array, "M d"]
    features: Float[Array, "n M"]


@eqx.filter_jit
def solve(X, encoders, biases, lam, weights, tol, max_steps):
    omega = weights / jnp.sum(weights)
    Phi = jnp.maximum(0.0, X @ encoders.T + biases[None, :])
    mass = omega @ Phi
    lipschitz = jnp.maximum(jnp.linalg.eigvalsh((Phi * omega[:, None]).T @ Phi)[-1], 1e-30)

    def grad(U):
        return -Phi.T @ (omega[:, None] * (X - Phi @ U))

    def prox(V, tau):
        return _group_shrink(V, tau * lam * mass[:, None], axis=1)

    def certificate(U):
        R = X - Phi @ U
        primal = jnp.sum(omega * 0.5 * jnp.sum(R**2, -1)) + lam * jnp.sum(
            mass * jnp.linalg.norm(U, axis=1)
        )
        corr = jnp.linalg.norm(Phi.T @ (omega[:, None] * R), axis=1)
        ratio = jnp.where(corr > 0, lam * mass / jnp.where(corr > 0, corr, 1.0), jnp.inf)
        s = jnp.minimum(1.0, jnp.min(ratio))
        return primal, _dual_value(X, s * R, omega)

    init = jnp.zeros((encoders.shape[0], X.shape[1]), X.dtype)
    U, certified = fista(grad, prox, lipschitz, certificate, init, tol, max_steps)
    return ReluSAESolution(decoder=U, features=Phi, **certified)
