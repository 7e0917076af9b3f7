r"""Exact primal active-set method (Lawson–Hanson with batched additions) on a support buffer.

The nonnegative lasso is the quadratic program $\min_{a \ge 0} \tfrac12 a^\top G a - q^\top a$
with $G = DD^\top$ and $q = Dx - \lambda$. On a support $S$ the unconstrained minimiser solves
$G_{SS} z_S = q_S$. Each step

1. adds up to `n_add` atoms outside $S$ with the largest positive $g_j - \lambda$ (only when the
   current codes are optimal on $S$), where $g = D(x - aD)$;
2. solves $G_{SS} z = q_S$ by Cholesky in a fixed-size buffer of `max_support` slots
   (padding slots hold the identity, so shapes never change);
3. moves $a \leftarrow a + \alpha (z - a)$ with the largest $\alpha \le 1$ keeping $a \ge 0$, and
   drops the coordinates that hit zero.

The objective never increases. `n_add` doubles after a full step and halves after a step blocked
by a new atom, so the method adds atoms in bulk when it can and falls back to one at a time (where
Lawson–Hanson's finite-termination argument applies) when it must. At the optimum the support
system is solved exactly, so gaps reach machine precision in a handful of steps on sparse
solutions. A support larger than `max_support` cannot be represented: the driver then reports
the affected signals as not converged.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Bool, Float, Int

from ._base import AbstractCodingSolver

# Tikhonov ridge on the support system, in machine epsilons times the mean atom norm^2. It keeps
# Cholesky defined when atoms are duplicated (singular G_SS); one refinement step removes its bias.
_RIDGE_EPS = 64.0


class _ActiveSetState(NamedTuple):
    a: Float[Array, " k"]
    support: Bool[Array, " k"]
    optimal_on_support: Bool[Array, ""]
    n_add: Int[Array, ""]


def _support_indices(support, size):
    """Indices of the support in a buffer of `size` slots; empty slots hold `k` (a zero row)."""
    k = support.shape[0]
    return jnp.nonzero(support, size=size, fill_value=k)[0]


def _pad(v, value=0.0):
    return jnp.concatenate([v, jnp.full((1,) + v.shape[1:], value, v.dtype)])


class ActiveSet(AbstractCodingSolver):
    """Primal active set with exact support solves; `max_support` defaults to min(k, d)."""

    max_support: int | None = None
    max_add: int | None = None
    initial_add: int = 8
    check_every: int = 1

    @property
    def needs_gram(self) -> bool:
        return True

    def _sizes(self, op):
        k, d = op.D.shape
        size = min(k, d) if self.max_support is None else min(self.max_support, k)
        max_add = size if self.max_add is None else min(self.max_add, size)
        return size, max_add

    def init(self, op, sig, codes):
        size, max_add = self._sizes(op)
        # A warm start with more nonzeros than the buffer keeps the first `size` of them.
        support = codes > 0
        support = support & (jnp.cumsum(support) <= size)
        codes = jnp.where(support, codes, 0.0)
        return _ActiveSetState(
            a=codes,
            support=support,
            optimal_on_support=~jnp.any(support),
            n_add=jnp.asarray(min(self.initial_add, max_add), jnp.int32),
        )

    def step(self, op, sig, state):
        size, max_add = self._sizes(op)
        k = state.a.shape[0]
        dtype = state.a.dtype
        g, _ = op.correlations_and_residual_sq(sig, state.a)  # one dense product: fast everywhere

        # 1. add the most violating atoms (only from a point optimal on its support): every
        # candidate within a factor 2 of the largest violation, at most n_add of them.
        violation = jnp.where(state.support, -jnp.inf, g - sig.lam)
        if op.atom_mask is not None:
            violation = jnp.where(op.atom_mask, violation, -jnp.inf)
        worst = jnp.max(violation)
        room = size - jnp.sum(state.support)
        n_new = jnp.where(state.optimal_on_support, jnp.minimum(state.n_add, room), 0)
        add = (violation > 0) & (violation >= 0.5 * worst)
        add = add & (jnp.cumsum(add) <= n_new)
        support = state.support | add

        # 2. exact solve on the support buffer
        idx = _support_indices(support, size)
        valid = idx < k
        gram_pad = _pad(_pad(op.gram).T)  # (k+1, k+1), zero last row and column
        gram_s = gram_pad[idx[:, None], idx[None, :]]
        ridge = _RIDGE_EPS * jnp.finfo(dtype).eps * jnp.maximum(jnp.mean(jnp.diagonal(op.gram)), 1.0)
        system = gram_s + jnp.diag(jnp.where(valid, ridge, 1.0))
        q = jnp.where(valid, _pad(sig.c - sig.lam)[idx], 0.0)
        factor = jsl.cho_factor(system, lower=True)
        z = jsl.cho_solve(factor, q)
        z = z + jsl.cho_solve(factor, q - gram_s @ z - jnp.where(valid, 0.0, z))  # refinement
        z = jnp.where(valid, z, 0.0)

        # 3. longest feasible step toward z
        a_s = _pad(state.a)[idx]
        negative = valid & (z <= 0)
        denom = a_s - z
        ratio = jnp.where(negative & (denom > 0), a_s / jnp.where(denom > 0, denom, 1.0), 0.0)
        ratio = jnp.where(negative, ratio, jnp.inf)
        alpha = jnp.minimum(1.0, jnp.min(ratio))
        new = a_s + alpha * (z - a_s)
        keep = valid & (new > 0) & ~(negative & (ratio <= alpha))
        new = jnp.where(keep, new, 0.0)
        a = jnp.zeros(k + 1, dtype).at[idx].set(new)[:k]
        support = jnp.zeros(k + 1, bool).at[idx].set(keep)[:k]

        full = alpha >= 1.0
        stalled = alpha <= 0.0
        n_add = jnp.where(
            stalled,
            jnp.maximum(1, state.n_add // 2),
            jnp.where(full & (n_new > 0), jnp.minimum(2 * state.n_add, max_add), state.n_add),
        )
        return _ActiveSetState(
            a=a,
            support=support,
            optimal_on_support=full | (stalled & state.optimal_on_support),
            n_add=n_add.astype(jnp.int32),
        )

    def codes(self, state):
        return state.a
