r"""Accelerated projected gradient (FISTA) with adaptive restart.

$$a^{t+1} = \Pi_{\ge 0}\big(y^t + (g(y^t) - \lambda)/L\big), \quad g(y) = D(x - yD),
\quad L = \lambda_{\max}(DD^\top),$$
$$\tau_{t+1} = \tfrac12\big(1 + \sqrt{1 + 4\tau_t^2}\big), \quad
y^{t+1} = a^{t+1} + \tfrac{\tau_t - 1}{\tau_{t+1}}(a^{t+1} - a^t),$$
restarting the momentum ($\tau = 1$, $y = a$) whenever $(y^t - a^{t+1})\cdot(a^{t+1} - a^t) > 0$
(O'Donoghue and Candès, 2015). One step costs one product with $G$ (or with $D$ and $D^\top$):
the accelerator workhorse.
"""

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._base import AbstractCodingSolver


class _FistaState(NamedTuple):
    a: Float[Array, " k"]
    y: Float[Array, " k"]
    tau: Float[Array, ""]
    inv_lipschitz: Float[Array, ""]


class FISTA(AbstractCodingSolver):
    """Accelerated projected gradient with gradient-based adaptive restart."""

    check_every: int = 10

    def init(self, op, sig, codes):
        one = jnp.ones((), codes.dtype)
        return _FistaState(a=codes, y=codes, tau=one, inv_lipschitz=1.0 / op.lipschitz)

    def step(self, op, sig, state):
        g, _ = op.correlations_and_residual_sq(sig, state.y)
        a_new = op.project(state.y + (g - sig.lam) * state.inv_lipschitz)
        restart = jnp.dot(state.y - a_new, a_new - state.a) > 0
        tau_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * state.tau**2))
        y_new = a_new + ((state.tau - 1.0) / tau_new) * (a_new - state.a)
        return _FistaState(
            a=a_new,
            y=jnp.where(restart, a_new, y_new),
            tau=jnp.where(restart, jnp.ones_like(tau_new), tau_new),
            inv_lipschitz=state.inv_lipschitz,
        )

    def codes(self, state):
        return state.a
