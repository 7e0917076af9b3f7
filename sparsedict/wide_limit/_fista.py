r"""Accelerated proximal gradient (FISTA with restart) for the convex problems of THEORY section 6.

One loop: `check_every` steps, then the duality gap; stop once `gap <= tol * max(primal, tiny)`
or at `max_steps` (a result code says which). The problem supplies the gradient of its smooth
part, the prox of its nonsmooth part, its Lipschitz constant and a certificate `(primal, dual)`
from any iterate.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

_CHECK_EVERY = 10


class RESULTS(eqx.Enumeration):
    """Status of the wide-limit convex solvers."""

    successful = ""
    max_steps_reached = (
        "the wide-limit solver reached max_steps before its relative duality gap fell below tol; "
        "raise max_steps or loosen tol"
    )


class Certified(eqx.Module):
    """What every wide-limit convex solution carries besides its variables.

    Attributes:
        primal: the objective. dual: a certified lower bound on the optimum.
        steps: FISTA steps taken.
        converged: whether `gap <= tol * primal`.
        result: `RESULTS.successful`, or `RESULTS.max_steps_reached`.
    """

    primal: Float[Array, ""]
    dual: Float[Array, ""]
    steps: Int[Array, ""]
    converged: Bool[Array, ""]
    result: RESULTS

    @property
    def gap(self) -> Float[Array, ""]:
        """`primal - dual >= 0`: a bound on the suboptimality of the solution."""
        return self.primal - self.dual


def fista(grad, prox, lipschitz, certificate, init, tol, max_steps):
    """Returns `(solution, certified)`: the iterate and the `Certified` fields of its
    certificate `certificate(z) -> (primal, dual)`."""
    step_size = 1.0 / lipschitz

    def one_step(_, carry):
        z, y, t = carry
        z_new = prox(y - step_size * grad(y), step_size)
        t_new = 0.5 * (1 + jnp.sqrt(1 + 4 * t**2))
        y_new = z_new + ((t - 1) / t_new) * (z_new - z)
        # gradient-based restart (O'Donoghue & Candes) keeps the iteration monotone in practice
        restart = jnp.sum((y - z_new) * (z_new - z)) > 0
        y_new = jnp.where(restart, z_new, y_new)
        t_new = jnp.where(restart, 1.0, t_new)
        return z_new, y_new, t_new

    def relative_gap(z):
        primal, dual = certificate(z)
        return (primal - dual) / jnp.maximum(primal, jnp.finfo(primal.dtype).tiny)

    def cond(carry):
        _, steps, done = carry
        return ~done & (steps < max_steps)

    def body(carry):
        state, steps, _ = carry
        state = jax.lax.fori_loop(0, _CHECK_EVERY, one_step, state)
        return state, steps + _CHECK_EVERY, relative_gap(state[0]) <= tol

    one = jnp.ones((), init.dtype)
    state = (init, init, one)
    start = (state, jnp.int32(0), relative_gap(init) <= tol)
    state, steps, converged = jax.lax.while_loop(cond, body, start)
    primal, dual = certificate(state[0])
    result = RESULTS.where(converged, RESULTS.successful, RESULTS.max_steps_reached)
    certified = dict(
        primal=primal,
        dual=dual,
        steps=steps,
        converged=converged,
        result=result,
    )
    return state[0], certified
