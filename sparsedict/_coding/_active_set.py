r"""Exact active-set method: block principal pivoting on a support buffer, warm-started by FISTA.

The nonnegative lasso is the linear complementarity problem
$a \ge 0,\ y = Ga - q \ge 0,\ a^\top y = 0$ with $G = DD^\top$, $q = Dx - \lambda$, so
$y = \lambda - g$ with the correlations $g = D(x - aD)$. Block principal pivoting
(Júdice and Pires 1994; Kim and Park 2011) keeps a passive set $F$ and each step

1. solves $G_{FF} z_F = q_F$ exactly (Cholesky in a fixed buffer of `max_support` slots whose
   padding slots hold the identity, so shapes never change) and sets $z = 0$ off $F$;
2. finds the infeasible indices $V = \{j \in F: z_j < 0\} \cup \{j \notin F: g_j(z) > \lambda\}$;
3. exchanges all of $V$ while the number of infeasibilities keeps falling (or for
   `full_exchanges` more tries); after that it falls back, for good, to Lawson–Hanson from
   $\max(z, 0)$ (feasible steps toward $z$, dropping the blocking atoms, one addition after each
   full step), whose finite termination does not depend on the buffer being large.

When $V$ is empty, $z$ satisfies the KKT conditions up to the rounding of one Cholesky solve, so
gaps reach machine precision. Unlike Lawson–Hanson, many atoms enter and leave per step. The
method starts from the support of a few FISTA steps (`warm_start_steps`), which is usually almost
right, so most signals finish in one or two exact solves. The codes reported mid-way are
$\max(z, 0)$. A passive set larger than `max_support` cannot be represented: additions beyond the
buffer are postponed, and a signal whose optimal support does not fit is reported as not
converged by the driver.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Bool, Float, Int

from ._base import AbstractCodingSolver
from ._fista import FISTA
from ._problem import DictionaryOperator

# Tikhonov ridge on the support system, in machine epsilons times the mean atom norm^2. It keeps
# Cholesky defined when atoms are duplicated (singular G_FF); refinement (`refine`) removes its bias.
_RIDGE_EPS = 64.0
# An atom off the support is a violation only when g_j exceeds lam by this many machine epsilons
# times ||x|| (the rounding scale of g), so degenerate atoms (g_j = lam) do not cycle.
_ADD_SLACK_EPS = 8.0


class _ActiveSetState(NamedTuple):
    a: Float[Array, " k"]  # max(z, 0): feasible codes
    passive: Bool[Array, " k"]  # the passive set F
    best: Int[Array, ""]  # fewest infeasibilities seen so far
    tries: Int[Array, ""]  # full exchanges left without progress before Lawson-Hanson
    lawson_hanson: Bool[Array, ""]  # fallback mode: feasible steps, one addition at a time


def _pad(v, value=0.0):
    return jnp.concatenate([v, jnp.full((1,) + v.shape[1:], value, v.dtype)])


def _products_with_d(op):
    """The operator computing correlations from D (2kd) instead of the Gram matrix (k^2) when k > 2d.

    The support solves need the Gram matrix; the dense correlation products do not.
    """
    k, d = op.D.shape
    if k <= 2 * d:
        return op
    return DictionaryOperator(D=op.D, gram=None, atom_mask=op.atom_mask, lipschitz=op.lipschitz)


def _first(mask, count):
    """The first `count` true entries of `mask`."""
    return mask & (jnp.cumsum(mask) <= count)


class ActiveSet(AbstractCodingSolver):
    """Block principal pivoting with exact support solves; `max_support` defaults to min(k, d + 1)."""

    max_support: int | None = None
    warm_start_steps: int = 50
    full_exchanges: int = 3
    # One step of iterative refinement removes the ridge's bias (machine-precision gaps in float64;
    # without it they stall near 1e-14 and the solve is ~6% cheaper).
    refine: bool = True
    check_every: int = 1

    @property
    def needs_gram(self) -> bool:
        return True

    def _size(self, op):
        k, d = op.D.shape
        # d + 1 slots: an optimal support needs at most d atoms (Caratheodory), and Lawson-Hanson
        # needs one more for the entering atom when d atoms are already in.
        return min(k, d + 1) if self.max_support is None else min(self.max_support, k)

    def init(self, op, sig, codes):
        size = self._size(op)
        if self.warm_start_steps > 0:
            fista, fast = FISTA(), _products_with_d(op)
            state = fista.init(fast, sig, codes)
            state = jax.lax.fori_loop(
                0, self.warm_start_steps, lambda _, s: fista.step(fast, sig, s), state
            )
            codes = fista.codes(state)
        passive = _first(codes > 0, size)
        k = codes.shape[0]
        return _ActiveSetState(
            a=jnp.where(passive, codes, 0.0),
            passive=passive,
            best=jnp.asarray(k + 1, jnp.int32),
            tries=jnp.asarray(self.full_exchanges, jnp.int32),
            lawson_hanson=jnp.asarray(False),
        )

    def _solve(self, op, sig, passive, size):
        """$z$ with $G_{FF} z_F = q_F$ and $z = 0$ off $F$ (F fits the buffer by construction)."""
        k = passive.shape[0]
        dtype = op.gram.dtype
        idx = jnp.nonzero(passive, size=size, fill_value=k)[0]  # empty slots hold k (a zero row)
        valid = idx < k
        gram_pad = _pad(_pad(op.gram).T)  # (k+1, k+1), zero last row and column
        gram_s = gram_pad[idx[:, None], idx[None, :]]
        ridge = (
            _RIDGE_EPS * jnp.finfo(dtype).eps * jnp.maximum(jnp.mean(jnp.diagonal(op.gram)), 1.0)
        )
        system = gram_s + jnp.diag(jnp.where(valid, ridge, 1.0))
        q = jnp.where(valid, _pad(sig.c - sig.lam)[idx], 0.0)
        factor = jsl.cho_factor(system, lower=True)
        z = jsl.cho_solve(factor, q)
        if self.refine:
            z = z + jsl.cho_solve(factor, q - gram_s @ z - jnp.where(valid, 0.0, z))
        z = jnp.where(valid, z, 0.0)
        return jnp.zeros(k + 1, dtype).at[idx].set(z)[:k]

    def step(self, op, sig, state):
        size = self._size(op)
        k = state.a.shape[0]
        eps = jnp.finfo(state.a.dtype).eps
        passive = state.passive
        z = self._solve(op, sig, passive, size)
        g, _ = _products_with_d(op).correlations_and_residual_sq(sig, z)  # one dense product
        excess = g - sig.lam - _ADD_SLACK_EPS * eps * sig.x_norm
        violated = ~passive & (excess > 0)
        if op.atom_mask is not None:
            violated = violated & op.atom_mask

        # Block principal pivoting: exchange every infeasible index
        drop = passive & (z < 0)
        n_inf = jnp.sum(drop) + jnp.sum(violated)
        improved = n_inf < state.best
        kept = passive & ~drop
        room = size - jnp.sum(kept)
        worst = jnp.max(jnp.where(violated, excess, 0.0))
        add = jnp.where(jnp.sum(violated) > room, violated & (excess >= 0.5 * worst), violated)
        bpp_passive = kept | _first(add, room)  # additions beyond the buffer wait
        done = n_inf == 0
        bpp_passive = jnp.where(done, passive, bpp_passive)
        # out of tries: switch to Lawson-Hanson from max(z, 0) for good
        to_lh = ~state.lawson_hanson & ~done & ~improved & (state.tries <= 0)

        # Lawson-Hanson: longest feasible step from a toward z, one addition after a full step
        a = state.a
        negative = passive & (z <= 0)
        denom = a - z
        ratio = jnp.where(negative & (denom > 0), a / jnp.where(denom > 0, denom, 1.0), 0.0)
        ratio = jnp.where(negative, ratio, jnp.inf)
        alpha = jnp.minimum(1.0, jnp.min(ratio))
        moved = a + alpha * (z - a)
        keep = passive & (moved > 0) & ~(negative & (ratio <= alpha))
        moved = jnp.where(keep, moved, 0.0)
        full = alpha >= 1.0  # then moved = max(z, 0) = z and g(z) is the current gradient
        best_atom = jnp.argmax(jnp.where(violated, excess, -jnp.inf))
        lh_add = full & jnp.any(violated) & (jnp.sum(keep) < size)
        lh_passive = keep | (lh_add & (jnp.arange(k) == best_atom))

        lh = state.lawson_hanson
        z_plus = jnp.maximum(z, 0.0)
        return _ActiveSetState(
            a=jnp.where(lh, moved, z_plus),
            passive=jnp.where(lh, lh_passive, jnp.where(to_lh, z_plus > 0, bpp_passive)),
            best=jnp.minimum(state.best, n_inf).astype(jnp.int32),
            tries=jnp.where(improved, self.full_exchanges, jnp.maximum(state.tries - 1, 0)).astype(
                jnp.int32
            ),
            lawson_hanson=lh | to_lh,
        )

    def codes(self, state):
        return state.a
