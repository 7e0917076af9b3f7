r"""Convex problem over a fixed candidate dictionary with a group usage penalty (THEORY section 6).

With candidates $C$ (m, d) (unit rows) and $\omega_i = w_i / W$:
$$\min_{A \ge 0}\; \sum_i \omega_i \big[\tfrac12\|x_i - a_i C\|^2
  + \lambda \textstyle\sum_j a_{ij}\big]
  + \gamma \sum_j \|A_{:, j}\|_2 .$$
The prox of the nonsmooth part (step $\tau$) is the sparse-group prox: clip
$A_{ij} \leftarrow (A_{ij} - \tau\lambda\omega_i)_+$, then shrink each column by
$(1 - \tau\gamma / \|A_{:,j}\|)_+$.

**Certificate.** For any $\Theta$ (n, d), weak duality gives $P(A) \ge \sum_i \omega_i
[\tfrac12\|x_i\|^2 - \tfrac12\|x_i - \theta_i\|^2]$ whenever every column satisfies
$\|(\omega \odot (\Theta c_j - \lambda))_+\|_2 \le \gamma$. Two feasible points are found by
bisection and the better dual value is kept: $\theta_i = \min(1, \tau / g^+_i) r_i$ with
$g^+_i = \max_j c_j\cdot r_i$ and the largest feasible $\tau \ge \lambda$ ($\tau = \lambda$ is
always feasible; tight at $\gamma = 0$), and $\Theta = sR$ with the largest feasible
$s \in [0, 1]$ (at the optimum $s = 1$ is feasible; tight for $\gamma > 0$).
At $\gamma = 0$ with the normalised data points as candidates the optimum is the wide limit.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .. import _objective
from ._fista import Certified, fista

_BISECTION_STEPS = 60


class CandidateSolution(Certified):
    """Codes (n, m) and the `selected` (m,) candidates with a nonzero column, with the
    certificate fields of `Certified` (`primal`, `dual`, `gap`, `steps`, `converged`, `result`)."""

    codes: Float[Array, "n m"]
    selected: Bool[Array, " m"]


def _dual_value(X, theta, omega):
    return jnp.sum(omega * _objective.dual(X, theta))


def _group_shrink(V, threshold, axis):
    norms = jnp.linalg.norm(V, axis=axis, keepdims=True)
    safe = jnp.where(norms > 0, norms, 1.0)
    return V * jnp.maximum(0.0, 1.0 - threshold / safe)


def _certificate(A, X, C, lam, gam, omega):
    R = X - A @ C
    primal = _objective.mean_objective(X, C, A, lam, omega) + gam * jnp.sum(
        jnp.linalg.norm(A, axis=0)
    )
    G = R @ C.T
    top = jnp.maximum(jnp.max(G, axis=1), jnp.finfo(X.dtype).tiny)

    def feasible(row_scale):
        excess = jnp.maximum(0.0, omega[:, None] * (row_scale[:, None] * G - lam))
        return jnp.all(jnp.linalg.norm(excess, axis=0) <= gam)

    def clipped(tau):  # tight at gam = 0: clip each signal's top correlation at tau
        return jnp.minimum(1.0, tau / top)

    def uniform(s):  # tight at gam > 0: the optimal residual itself is feasible
        return jnp.full_like(top, s)

    def dual_point(family, lo, hi):
        lo, _ = _largest_feasible(lambda t: feasible(family(t)), lo, hi)
        return _dual_value(X, family(lo)[:, None] * R, omega)

    dual = jnp.maximum(
        dual_point(clipped, lam, jnp.maximum(jnp.max(top), lam)),
        dual_point(uniform, jnp.zeros_like(lam), jnp.ones_like(lam)),
    )
    return primal, dual


def _largest_feasible(feasible, lo, hi):
    """Bisection for a monotone predicate with `feasible(lo)` true: `(t, hi)`, `t` feasible."""

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        ok = feasible(mid)
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo, hi = jax.lax.fori_loop(0, _BISECTION_STEPS, bisect, (lo, hi))
    return jnp.where(feasible(hi), hi, lo), hi


@eqx.filter_jit
def solve(X, C, lam, gam, weights, init, tol, max_steps):
    omega = weights / jnp.sum(weights)
    lipschitz = jnp.max(omega) * jnp.linalg.eigvalsh(C @ C.T)[-1]

    def grad(A):
        return -(omega[:, None] * (X - A @ C)) @ C.T

    def prox(V, tau):
        V = jnp.maximum(0.0, V - tau * lam * omega[:, None])
        return _group_shrink(V, tau * gam, axis=0)

    def certificate(A):
        return _certificate(A, X, C, lam, gam, omega)

    A, certified = fista(grad, prox, lipschitz, certificate, init, tol, max_steps)
    return CandidateSolution(codes=A, selected=jnp.any(A > 0, axis=0), **certified)
