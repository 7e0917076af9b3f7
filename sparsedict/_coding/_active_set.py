r"""Exact active-set method: block principal pivoting on support buffers sized to the supports.

The nonnegative lasso is the linear complementarity problem
$a \ge 0,\ y = Ga - q \ge 0,\ a^\top y = 0$ with $G = DD^\top$, $q = Dx - \lambda$, so
$y = \lambda - g$ with the correlations $g = D(x - aD)$. Block principal pivoting
(Júdice and Pires 1994; Kim and Park 2011) keeps a passive set $F$ and each step

1. solves $G_{FF} z_F = q_F$ exactly (Cholesky in a buffer of $s$ slots whose padding slots hold
   the identity, so shapes never change) and sets $z = 0$ off $F$; $G_{FF}$ is gathered from the
   Gram matrix when the operator has one, else built as $D_F D_F^\top$ from gathered rows of $D$
   ($s^2 d$), so nothing $k \times k$ is formed for wide dictionaries;
2. finds the infeasible indices $V = \{j \in F: z_j < 0\} \cup \{j \notin F: g_j(z) > \lambda\}$
   with one dense product ($g = c - zG$, or $D(x - zD)$ when $k > 2d$);
3. exchanges all of $V$ while the number of infeasibilities keeps falling (or for
   `full_exchanges` more tries); after that it falls back, for good, to Lawson–Hanson from the
   starting codes (the FISTA start; $\max(z, 0)$ when they are zero) with feasible steps toward
   $z$, dropping the blocking atoms and adding violators after each full step; its finite
   termination does not depend on the buffer being large. A full step adds up to
   `lawson_hanson_adds` violators (those within half of the largest $g_j - \lambda$) while the
   objective at full steps keeps falling, then one at a time for good: until then no passive set
   recurs at a full step (each is the unique minimiser on its set, at a strictly lower
   objective), and classic Lawson–Hanson terminates from any feasible point. On correlated
   dictionaries (8x8 image patches, `benchmarks/coding.py` P3) block exchanges cycle: starting
   Lawson–Hanson from the FISTA start after one try without progress, instead of from a cycling
   exchange's $\max(z, 0)$ after three, took the slowest signal from 101 to 37 steps and the mean
   from 2.9 to 2.4.

When $V$ is empty, $z$ satisfies the KKT conditions up to the rounding of one Cholesky solve, so
gaps reach machine precision. The step keeps $g(z)$ and $\|x - zD\|^2$, so the certificate of a
step whose $z$ is feasible costs no further product.

**Buffers sized to supports.** The solver is run as a ladder of stages ([`stages`][]) with
buffers of `min_support`, twice that, ... slots (a buffer of 3/4 of the last or more is skipped)
up to `max_support` (default $\min(k, d+1)$: an optimal support needs at most $d$ atoms, and
Lawson–Hanson one more for the entering atom). Additions beyond the buffer wait (the largest
violations enter first); a signal whose kept support fills its buffer while atoms still violate is
flagged ([`overflow`][]) and the driver moves it on to the next stage, so one large exchange does
not send a signal with a small optimal support to a large buffer (whose support solves cost
$s^2 d + s^3/3$ each: measured on d = 256, k = 4096, 30 active, moving on at every overflowing
exchange made the solve 13x slower). In the last stage a signal whose optimal support does not
fit is reported as not converged by the driver's certificate.

**Start.** A warm start whose support fits the first buffer starts from that support (a
learner's codes for the previous dictionary: one or two exact solves). Any other start gets the
support of `warm_start_steps` FISTA steps from the given codes (dense products, $4kd$ each). By
default that is 50 steps when $k \le 8d$ and none for wider dictionaries: measured from zero
codes (2-core CPU), with 50 steps most signals finish in one or two exact solves, while screening
alone needs 4 to 8 (P1, P3 at k = 4d and S1 at k = 8d: the FISTA start was as fast or up to 1.8x
faster); at k = 16d (d = 256, k = 4096, 30 active) the 50 steps cost more than the 4 to 5 exact
solves of screening (screening 1.6x faster). For a float64 solve the FISTA steps run in float32
(only their support is used; half the cost of float64 products on a CPU); when they leave zero
codes, the start is the most correlated atom. With `warm_start_steps=0`: a warm start's own
support, or from zero codes, screening with the correlations (the `start_support` atoms with the
largest $c_j - \lambda > 0$). A signal starts in the first stage whose buffer holds its
starting support. The codes reported mid-way are $\max(z, 0)$.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Bool, Float, Int

from .._objective import Certificate, certificate_from_terms, primal_from_terms
from ._base import AbstractCodingSolver
from ._fista import FISTA
from ._problem import DictionaryOperator, gram, ridged_support_system
from ._select import largest

# An atom off the support is a violation only when g_j exceeds lam by this many machine epsilons
# times ||x|| (the rounding scale of g), so degenerate atoms (g_j = lam) do not cycle.
_ADD_SLACK_EPS = 8.0


class _ActiveSetState(NamedTuple):
    a: Float[Array, " k"]  # max(z, 0): feasible codes
    passive: Bool[Array, " k"]  # the passive set F
    g: Float[Array, " k"]  # correlations g(z) of the last solve
    r_sq: Float[Array, ""]  # ||x - zD||^2 of the last solve
    exact: Bool[Array, ""]  # z >= 0 on F (so a = z and g, r_sq are those of a)
    best: Int[Array, ""]  # fewest infeasibilities seen so far
    tries: Int[Array, ""]  # full exchanges left without progress before Lawson-Hanson
    lawson_hanson: Bool[Array, ""]  # fallback mode: feasible steps toward z
    lh_objective: Float[Array, ""]  # objective at the last full Lawson-Hanson step
    lh_many: Bool[Array, ""]  # several additions per full step (until the objective stalls)
    start: Float[Array, " k"]  # the starting codes (feasible): where Lawson-Hanson starts
    demand: Int[Array, ""]  # slots the next step needs: |F|, plus 1 when the buffer held it back


def _products_with_d(op):
    """The operator computing correlations from D (2kd), not the Gram matrix (k^2), when k > 2d."""
    k, d = op.D.shape
    if op.gram is None or k <= 2 * d:
        return op
    return DictionaryOperator(D=op.D, gram=None, atom_mask=op.atom_mask, lipschitz=op.lipschitz)


def _start_problem(op, sig):
    """The operator and signal of the FISTA start: correlations from D when cheaper
    (`_products_with_d`), and in float32 for a float64 solve whose D is stored in float64 or
    float32 (only the start's support is used; float32 products cost half as much on a CPU)."""
    fast = _products_with_d(op)
    work = sig.x.dtype
    if work != jnp.float64 or fast.D.dtype not in (jnp.float64, jnp.float32):
        return fast, sig
    f32 = jnp.float32
    fast = DictionaryOperator(
        D=fast.D.astype(f32),
        gram=None if fast.gram is None else fast.gram.astype(f32),
        atom_mask=fast.atom_mask,
        lipschitz=(fast.lipschitz * (1 + 1e-6)).astype(f32),  # never below the float64 one
    )
    return fast, jax.tree_util.tree_map(lambda v: v.astype(f32), sig)


def _first(mask, count):
    """The first `count` true entries of `mask`."""
    return mask & (jnp.cumsum(mask) <= count)


def _lh_additions(violated, excess, many, count):
    """The violators a Lawson-Hanson full step adds: the largest, or with `many` up to `count` of
    those within half of the largest (a sort would cost more than the step's solve)."""
    ranked = jnp.where(violated, excess, -jnp.inf)
    worst = jnp.max(ranked)
    best = jnp.arange(ranked.shape[0]) == jnp.argmax(ranked)
    return violated & jnp.where(many, _first(ranked >= 0.5 * worst, count), best)


def _full_size(op, max_support):
    k, d = op.D.shape
    return min(k, d + 1) if max_support is None else min(max_support, k)


class ActiveSet(AbstractCodingSolver):
    """Block principal pivoting with exact support solves in buffers sized to the supports.

    `min_support` is the first buffer (doubled per stage), `max_support` the last (default
    min(k, d + 1)); `start_support` caps the screened starting support.
    """

    max_support: int | None = None
    min_support: int = 32
    start_support: int | None = None  # default: the first buffer
    warm_start_steps: int | None = None  # default: 50 when k <= 8d, else 0
    full_exchanges: int = 1
    # One step of iterative refinement removes the ridge's bias (machine-precision gaps in float64;
    # without it they stall near 1e-14 and the solve is ~6% cheaper).
    refine: bool = True
    check_every: int = 1
    # Lawson-Hanson adds up to this many of the largest violators per full step (1: classic)
    lawson_hanson_adds: int = 8
    # The buffer of this stage (set by `stages`; None: the last buffer).
    support: int | None = None
    last_stage: bool = True

    def _size(self, op):
        full = _full_size(op, self.max_support)
        return full if self.support is None else min(self.support, full)

    def stages(self, op):
        full = _full_size(op, self.max_support)
        sizes, s = [], max(1, self.min_support)
        # A buffer within 3/4 of the last one saves little and costs a compiled stage.
        while 4 * s < 3 * full:
            sizes.append(s)
            s *= 2
        sizes.append(full)
        return tuple(dataclasses.replace(self, support=s, last_stage=s == full) for s in sizes)

    def overflow(self, op, state):
        return jnp.asarray(not self.last_stage) & (state.demand > self._size(op))

    def init(self, op, sig, codes):
        k, d = op.D.shape
        warm_start_steps = self.warm_start_steps
        if warm_start_steps is None:
            warm_start_steps = 50 if k <= 8 * d else 0
        if warm_start_steps > 0:
            # A warm start whose support fits the first buffer is used as it is (a learner's
            # codes for the previous dictionary); other starts get the FISTA steps. Under vmap
            # the loop runs for the most any signal of the batch needs: none when all are warm.
            nnz = jnp.sum(codes > 0)
            fits = (nnz > 0) & (nnz <= min(self.min_support, self._size(op)))
            fista, (fast, fast_sig) = FISTA(), _start_problem(op, sig)
            state = fista.init(fast, fast_sig, codes.astype(fast_sig.x.dtype))
            steps = jnp.where(fits, 0, warm_start_steps)
            state = jax.lax.fori_loop(0, steps, lambda _, s: fista.step(fast, fast_sig, s), state)
            codes = jnp.where(fits, codes, fista.codes(state).astype(codes.dtype))
        excess = sig.c - sig.lam
        if op.atom_mask is not None:
            excess = jnp.where(op.atom_mask, excess, -jnp.inf)
        if warm_start_steps > 0:
            # zero codes after the FISTA steps: the most correlated atom, as homotopy starts
            screened = (jnp.arange(k) == jnp.argmax(excess)) & (excess > 0)
        else:  # screening: the atoms most correlated with x beyond lam
            m = min(k, self.start_support or min(self.min_support, self._size(op)))
            screened = largest(excess, m) & (excess > 0)
        warm = jnp.any(codes > 0)
        passive = jnp.where(warm, codes > 0, screened)
        zero = jnp.zeros((), codes.dtype)
        return _ActiveSetState(
            a=jnp.where(passive, codes, 0.0),
            passive=passive,
            g=jnp.zeros_like(codes),
            r_sq=zero,
            exact=jnp.asarray(False),
            best=jnp.asarray(k + 1, jnp.int32),
            tries=jnp.asarray(self.full_exchanges, jnp.int32),
            lawson_hanson=jnp.asarray(False),
            lh_objective=jnp.full((), jnp.inf, codes.dtype),
            lh_many=jnp.asarray(self.lawson_hanson_adds > 1),
            start=jnp.where(passive, codes, 0.0),
            demand=jnp.sum(passive).astype(jnp.int32),
        )

    def _solve(self, op, sig, passive, size):
        """$z$ with $G_{FF} z_F = q_F$ and $z = 0$ off $F$ (F fits the buffer by construction)."""
        k = passive.shape[0]
        dtype = sig.c.dtype
        idx = jnp.nonzero(passive, size=size, fill_value=k)[0]  # empty slots hold k
        valid = idx < k
        safe = jnp.minimum(idx, k - 1)
        if op.gram is not None:
            gram_s = op.gram[safe[:, None], safe[None, :]]
        else:  # rows of D: s x d gathered, s^2 d flops, nothing k x k
            rows = jnp.where(valid[:, None], op.D[safe], 0)
            gram_s = gram(rows, dtype)
        # the ridge keeps Cholesky defined for duplicated atoms; `refine` removes its bias
        system, gram_s = ridged_support_system(gram_s, valid)
        q = jnp.where(valid, (sig.c - sig.lam)[safe], 0.0)
        factor = jsl.cho_factor(system, lower=True)
        z = jsl.cho_solve(factor, q)
        if self.refine:
            z = z + jsl.cho_solve(factor, q - gram_s @ z - jnp.where(valid, 0.0, z))
        z = jnp.where(valid, z, 0.0)
        return jnp.zeros(k + 1, dtype).at[idx].set(z)[:k]

    def step(self, op, sig, state):
        size = self._size(op)
        eps = jnp.finfo(state.a.dtype).eps
        passive = _first(state.passive, size)  # a warm start larger than the last buffer
        z = self._solve(op, sig, passive, size)
        g, r_sq = _products_with_d(op).correlations_and_residual_sq(sig, z)  # one dense product
        excess = g - sig.lam - _ADD_SLACK_EPS * eps * sig.x_norm
        violated = ~passive & (excess > 0)
        if op.atom_mask is not None:
            violated = violated & op.atom_mask

        # Block principal pivoting: exchange every infeasible index
        drop = passive & (z < 0)
        n_inf = jnp.sum(drop) + jnp.sum(violated)
        improved = n_inf < state.best
        kept = passive & ~drop
        done = n_inf == 0
        # Additions beyond the buffer wait, the largest first; a signal whose kept support fills
        # the buffer while atoms still violate moves on to the next stage (`demand`), so the
        # buffer follows the support, not the size of one exchange.
        room = size - jnp.sum(kept)
        worst = jnp.max(jnp.where(violated, excess, 0.0))
        add = jnp.where(jnp.sum(violated) > room, violated & (excess >= 0.5 * worst), violated)
        bpp_passive = jnp.where(done, passive, kept | _first(add, room))
        bpp_blocked = jnp.any(violated) & (room <= 0)
        # out of tries: switch to Lawson-Hanson for good, from the start (max(z, 0) when it is
        # zero): the FISTA start is closer than a cycling exchange's z on correlated atoms
        to_lh = ~state.lawson_hanson & ~done & ~improved & (state.tries <= 0)

        # Lawson-Hanson: longest feasible step from a toward z, one addition after a full step
        a = jnp.where(passive, state.a, 0.0)
        negative = passive & (z <= 0)
        denom = a - z
        ratio = jnp.where(negative & (denom > 0), a / jnp.where(denom > 0, denom, 1.0), 0.0)
        ratio = jnp.where(negative, ratio, jnp.inf)
        alpha = jnp.minimum(1.0, jnp.min(ratio))
        moved = a + alpha * (z - a)
        keep = passive & (moved > 0) & ~(negative & (ratio <= alpha))
        moved = jnp.where(keep, moved, 0.0)
        full = alpha >= 1.0  # then moved = max(z, 0) = z and g(z) is the current gradient
        lh = state.lawson_hanson
        z_plus = jnp.maximum(z, 0.0)
        lh_from = jnp.where(jnp.any(state.start > 0), state.start, z_plus)
        # several additions while the objective at full steps keeps falling, then one at a time
        objective = primal_from_terms(r_sq, jnp.sum(z_plus), sig.lam)
        many = state.lh_many & (~full | (objective < state.lh_objective))
        lh_add = _lh_additions(violated, excess, many, self.lawson_hanson_adds)
        room_lh = size - jnp.sum(keep)  # additions beyond the buffer wait
        lh_passive = keep | (full & _first(lh_add, room_lh))
        lh_blocked = full & jnp.any(violated) & (room_lh <= 0)

        new_passive = jnp.where(lh, lh_passive, jnp.where(to_lh, lh_from > 0, bpp_passive))
        blocked = jnp.where(lh, lh_blocked, ~to_lh & bpp_blocked)
        return _ActiveSetState(
            a=jnp.where(lh, moved, jnp.where(to_lh, lh_from, z_plus)),
            passive=new_passive,
            g=g,
            r_sq=r_sq,
            exact=~jnp.any(passive & (z < 0)) & (~lh | full) & ~to_lh,
            best=jnp.minimum(state.best, n_inf).astype(jnp.int32),
            tries=jnp.where(improved, self.full_exchanges, jnp.maximum(state.tries - 1, 0)).astype(
                jnp.int32
            ),
            lawson_hanson=lh | to_lh,
            lh_objective=jnp.where(lh & full, objective, state.lh_objective),
            lh_many=jnp.where(lh, many, state.lh_many),
            start=state.start,
            demand=(jnp.sum(new_passive) + blocked).astype(jnp.int32),
        )

    def codes(self, state):
        return state.a

    def certificate(self, op, sig, state):
        """The certificate from the last solve's products when its $z$ was feasible ($a = z$);
        otherwise an infinite gap (not certified yet), at no further product."""
        cert: Certificate = certificate_from_terms(
            state.r_sq, state.g, state.a, sig.lam, sig.x_norm, op.atom_mask
        )
        inf = jnp.full_like(cert.gap, jnp.inf)
        cert = cert._replace(gap=jnp.where(state.exact, cert.gap, inf))
        return cert, state.g
