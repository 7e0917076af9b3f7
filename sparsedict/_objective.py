r"""The nonnegative lasso: primal, dual, duality gap and KKT residual (THEORY section 1).

For one signal $x \in \mathbb{R}^d$, a dictionary $D \in \mathbb{R}^{k \times d}$ (atoms as rows)
and codes $a \in \mathbb{R}^k_{\ge 0}$:

$$P(a) = \tfrac12 \|x - aD\|^2 + \lambda \textstyle\sum_k a_k, \qquad
  \mathcal{D}(\theta) = \tfrac12\|x\|^2 - \tfrac12\|x - \theta\|^2
  \;\text{ s.t. } D\theta \le \lambda.$$

With the residual $r = x - aD$ and correlations $g = Dr$, the dual point is $\theta = s\,r$ with
$s = \min(1, \lambda / \max_k g_k)$ (and $s = 1$ when $\max_k g_k \le \lambda$). Expanding
$P(a) - \mathcal{D}(s r)$ with $x = aD + r$ gives the form used everywhere in sparsedict:

$$\mathrm{gap} = \tfrac12 (1 - s)^2 \|r\|^2 + \textstyle\sum_k a_k (\lambda - s\, g_k) \;\ge 0,$$

a sum of nonnegative terms (each $s g_k \le \lambda$, $a \ge 0$). The formula itself adds no
cancellation, but its inputs can carry one: $\|r\|^2$ in Gram form, $\|x\|^2 - a\cdot(c + g)$,
cancels when $r$ is small next to $x$, and $g$ computed in floating point is off by about
$u(\|x\| + \|a\|_1)$ ($u$ the unit roundoff), which moves both the dual scaling $s$ and the
terms $a_k(\lambda - s g_k)$. `certificate_from_terms` evaluates the formula as if the arithmetic
were exact (cheap, for checks inside solvers and for differentiable certificates);
`certified_certificate` adds a rigorous bound on the rounding of the residual, the correlations
and its own evaluation, so that its gap is never below the exact gap of the codes (the
certificate [`sparsedict.sparse_code`][] reports). Every function here works on any leading batch
shape; masked atoms (``atom_mask`` false) never enter the dual constraint.

This module is the only place the formulas live: solvers, certificates, optimality residuals and
tests all call it.
"""

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

# Dual feasibility is accepted up to rounding in the correlations: max_k g_k may exceed lam by
# this many machine epsilons times ||x|| (the scale of every g_k for unit-norm atoms).
_DUAL_SLACK_EPS = 8.0


class Certificate(NamedTuple):
    """Primal value, dual value and duality gap, one entry per signal."""

    primal: Float[Array, "*batch"]
    dual: Float[Array, "*batch"]
    gap: Float[Array, "*batch"]

    @property
    def relative_gap(self) -> Float[Array, "*batch"]:
        """`gap / max(primal, tiny)`: the tolerance the solvers stop on."""
        tiny = jnp.finfo(self.gap.dtype).tiny
        return self.gap / jnp.maximum(self.primal, tiny)


def residual(
    X: Float[Array, "*batch d"], D: Float[Array, "k d"], codes
) -> Float[Array, "*batch d"]:
    """`r = x - a D`."""
    return X - codes @ D


def masked_max(values: Float[Array, "*batch k"], atom_mask: Bool[Array, " k"] | None):
    """`max_k values_k` over unmasked atoms (-inf when every atom is masked)."""
    if atom_mask is not None:
        values = jnp.where(atom_mask, values, -jnp.inf)
    return jnp.max(values, axis=-1)


def dual_scaling(max_corr, lam, x_norm):
    r"""$s = \min(1, \lambda / \max_k g_k)$, and $s = 1$ when $\max_k g_k \le \lambda$ up to
    rounding."""
    eps = jnp.finfo(jnp.result_type(max_corr)).eps
    feasible = max_corr <= lam + _DUAL_SLACK_EPS * eps * x_norm
    safe_max = jnp.where(feasible, 1.0, max_corr)  # double-where: no NaN gradient through 1/0
    return jnp.where(feasible, 1.0, lam / safe_max)


def certificate_from_terms(
    residual_sq: Float[Array, "*batch"],
    corr: Float[Array, "*batch k"],
    codes: Float[Array, "*batch k"],
    lam: Float[Array, "*batch"],
    x_norm: Float[Array, "*batch"],
    atom_mask: Bool[Array, " k"] | None = None,
) -> Certificate:
    r"""Primal, dual and gap from $\|r\|^2$, $g = Dr$ and the codes (no matrix products).

    Solvers that keep $g$ and $\|r\|^2$ from Gram-matrix identities call this directly; the
    public [`sparsedict.duality_gap`][] computes them from X and D first.
    """
    lam = jnp.asarray(lam, corr.dtype)
    residual_sq = jnp.maximum(residual_sq, 0.0)
    s = dual_scaling(masked_max(corr, atom_mask), lam, x_norm)
    primal = primal_from_terms(residual_sq, jnp.sum(codes, axis=-1), lam)
    # Clipped at zero: s g_k <= lam holds exactly except for the rounding that dual_scaling accepts.
    slack = jnp.maximum(lam[..., None] - s[..., None] * corr, 0.0)
    if atom_mask is not None:
        slack = jnp.where(atom_mask, slack, 0.0)
    gap = 0.5 * (1.0 - s) ** 2 * residual_sq + jnp.sum(codes * slack, axis=-1)
    return Certificate(primal=primal, dual=primal - gap, gap=gap)


def certificate(X, D, codes, lam, atom_mask=None) -> Certificate:
    """Primal, dual and gap of `codes` for signals `X` (rows), computed from the residual."""
    r = residual(X, D, codes)
    lam = jnp.broadcast_to(jnp.asarray(lam, r.dtype), r.shape[:-1])
    return certificate_from_terms(
        jnp.sum(r * r, axis=-1), r @ D.T, codes, lam, jnp.linalg.norm(X, axis=-1), atom_mask
    )


def kkt_residual(codes, corr, lam, atom_mask=None) -> Float[Array, "*batch"]:
    r"""$\| a - \max(0, a + g - \lambda) \|$ per signal: zero iff the KKT conditions hold."""
    lam = jnp.broadcast_to(jnp.asarray(lam, corr.dtype), corr.shape[:-1])[..., None]
    step = codes - jnp.maximum(0.0, codes + corr - lam)
    if atom_mask is not None:
        step = jnp.where(atom_mask, step, 0.0)
    return jnp.linalg.norm(step, axis=-1)


def lam_max(X: Float[Array, "*batch d"], D: Float[Array, "k d"], atom_mask=None):
    r"""$\max(0, \max_k d_k \cdot x)$: for $\lambda$ at or above it the codes are zero."""
    return jnp.maximum(masked_max(X @ D.T, atom_mask), 0.0)


def lipschitz(gram: Float[Array, "k k"]) -> Float[Array, ""]:
    r"""$L = \lambda_{\max}(D D^\top)$, the Lipschitz constant of the smooth part's gradient."""
    return jnp.linalg.eigvalsh(gram)[-1]


def reconstruction(
    X: Float[Array, "*batch d"], D: Float[Array, "k d"], codes
) -> Float[Array, "*batch"]:
    r"""$\tfrac12\|x - aD\|^2$ per signal."""
    r = residual(X, D, codes)
    return 0.5 * jnp.sum(r * r, axis=-1)


def primal_from_terms(residual_sq, l1, lam):
    r"""$P = \tfrac12\|r\|^2 + \lambda\|a\|_1$ from $\|r\|^2$ and $\|a\|_1$ (arrays of any
    kind, numpy included): the one formula of the primal, which every other form calls."""
    return 0.5 * residual_sq + lam * l1


def primal(
    X: Float[Array, "*batch d"], D: Float[Array, "k d"], codes, lam, atom_weights=None
) -> Float[Array, "*batch"]:
    r"""$P(a) = \tfrac12\|x - aD\|^2 + \lambda \sum_k w_k a_k$ per signal (`lam` a scalar or
    (n,)); the weights $w$ (`atom_weights`, (k,)) are 1 unless given (an SAE's
    decoder-norm-weighted L1 passes $w_k = \|d_k\|$)."""
    r = residual(X, D, codes)
    l1 = codes if atom_weights is None else codes * jnp.broadcast_to(atom_weights, codes.shape)
    return primal_from_terms(jnp.sum(r * r, axis=-1), jnp.sum(l1, axis=-1), lam)


def mean_objective(X, D, codes, lam, weights=None) -> Float[Array, ""]:
    r"""The dictionary learning objective, the (weighted) mean of the per-signal primal:

    $$F(D, A) = \frac1W \sum_i w_i \Big[\tfrac12\|x_i - a_i D\|^2
      + \lambda \textstyle\sum_k a_{ik}\Big], \qquad W = \textstyle\sum_i w_i$$

    (`weights=None`: every $w_i = 1$). Differentiable in every argument; the optimality
    residuals and the learners' gradients in D are `jax.grad` of it.
    """
    values = primal(X, D, codes, lam)
    if weights is None:
        return jnp.mean(values)
    return jnp.sum(weights * values) / jnp.sum(weights)


def dual(X: Float[Array, "*batch d"], theta: Float[Array, "*batch d"]) -> Float[Array, "*batch"]:
    r"""$\mathcal{D}(\theta) = \tfrac12\|x\|^2 - \tfrac12\|x - \theta\|^2$ per signal (a lower bound
    on the optimum when $\theta$ is dual feasible)."""
    return 0.5 * jnp.sum(X**2, -1) - 0.5 * jnp.sum((X - theta) ** 2, -1)


# --- A certificate that bounds its own rounding -------------------------------------------------


def unit_roundoff(dtype) -> float:
    """`u = eps / 2`: `fl(a op b) = (a op b)(1 + e)` with `|e| <= u` (round to nearest)."""
    return float(jnp.finfo(dtype).eps) / 2


def gamma(n, dtype):
    r"""$\gamma_n = nu / (1 - nu)$: a sum or dot product of $n$ nonzero terms has relative error
    at most $\gamma_n$ of the sum of the magnitudes, whatever the order of summation (Higham,
    *Accuracy and Stability of Numerical Algorithms*, 3.1). Terms that are exactly zero add no
    rounding, so $n$ may count the nonzero terms only."""
    nu = jnp.asarray(n, dtype) * unit_roundoff(dtype)
    return nu / (1.0 - nu)


class CertificateBound(NamedTuple):
    """A certificate whose `gap` is an upper bound on the exact gap of the codes (see
    `certified_certificate`); `nominal`, the gap computed as if the arithmetic were exact (the
    dual scaling of `dual_scaling`); `rounding`, what the rounding bound adds to it at that
    scaling. Once `nominal <= rounding`, more solver steps cannot lower the certified gap."""

    certificate: Certificate
    nominal: Float[Array, "*batch"]
    rounding: Float[Array, "*batch"]


def _scaling_bound(max_corr, lam, up: bool, u):
    """`s(m) = min(1, lam / m)` (1 when `m <= lam`) rounded down (`up=False`) or up."""
    over = max_corr > lam
    safe = jnp.where(over, max_corr, 1.0)
    s = (lam / safe) * ((1.0 + 2 * u) if up else (1.0 - 2 * u))
    return jnp.where(over, jnp.minimum(s, 1.0), 1.0)


class Bounded(NamedTuple):
    """A computed `value` and a bound on its `error`: the exact value is within `error` of it
    (in the norm the consumer states)."""

    value: Array
    error: Array


def certified_certificate(
    computed_residual: Bounded,
    computed_corr: Bounded,
    codes: Float[Array, "*batch k"],
    lam,
    atom_mask=None,
) -> CertificateBound:
    r"""Primal, and a duality gap that is never below the exact gap of `codes`, in any dtype.

    Inputs are what floating point gives: the computed residual $\hat r \approx x - aD$
    (*batch, d) with $\|r - \hat r\| \le$ `computed_residual.error` (*batch) ($r$ the exact
    residual), and the computed correlations $\hat g \approx D\hat r$ (*batch, k) with
    $|g_k - \hat g_k| \le$ `computed_corr.error`$_k$ ($g = Dr$ exact); `lam` (*batch),
    `atom_mask` (k,) or None. With $m = \max_k g_k$ in
    $[m_-, m_+] = [\max_k(\hat g_k - \delta_k), \max_k(\hat g_k + \delta_k)]$, the exact dual
    scaling $s = \min(1, \lambda/m)$ lies in $[s(m_+), s(m_-)]$, and the exact gap at any fixed
    $t \ge 0$, $\mathrm{gap}(t) = \tfrac12(1-t)^2\|r\|^2 + \sum_k a_k(\lambda - t g_k)$, is at most

    $$U(t) = \tfrac12(1-t)^2(\|\hat r\| + \epsilon_r)^2 + \textstyle\sum_k a_k(\lambda - t\hat g_k)
      + t\sum_k a_k\delta_k$$

    plus the rounding of evaluating $U$ itself (bounded with $\gamma_n$, `gamma`). $\mathrm{gap}$
    is convex in $t$, so $\mathrm{gap}(s) \le \max(U(s(m_+)), U(s(m_-)))$: that is the reported
    gap. It is also a certificate on its own: $\theta = s(m_+)\,r$ is exactly dual feasible, so
    $P(a) - P^\star \le \mathrm{gap}(s(m_+)) \le$ the reported gap. The gap is finally scaled by
    $P/P_-$ ($P_-$ a lower bound on the exact primal) so that `gap / primal` bounds the exact
    relative gap. `rounding` is the part of the bound that comes from rounding: about
    $\|a\|_1 \max_k \delta_k + u\lambda\|a\|_1$; a relative gap below `rounding / primal` cannot
    be certified in this dtype.
    """
    residual, residual_error = computed_residual
    corr, corr_error = computed_corr
    dtype = corr.dtype
    u = unit_roundoff(dtype)
    lam = jnp.asarray(lam, dtype)
    nnz = jnp.sum(codes != 0, axis=-1)
    g_n = gamma(nnz + 4, dtype)
    g_d = gamma(residual.shape[-1] + 2, dtype)
    rho_sq = jnp.sum(residual * residual, axis=-1)
    rho = jnp.sqrt(rho_sq)
    rho_up = (rho * (1.0 + g_d) + residual_error) * (1.0 + 2 * u)
    rho_lo = jnp.maximum(rho * (1.0 - g_d) - residual_error, 0.0)
    # |g_k - ghat_k| <= delta_k, widened to cover the rounding of ghat +- delta
    delta = (corr_error + 2 * u * jnp.abs(corr)) * (1.0 + 4 * u)
    s_lo = _scaling_bound(masked_max(corr + delta, atom_mask), lam, False, u)
    s_hi = _scaling_bound(masked_max(corr - delta, atom_mask), lam, True, u)
    l1 = jnp.sum(codes, axis=-1)
    a_corr = jnp.sum(codes * jnp.abs(corr), axis=-1)
    a_delta = jnp.sum(codes * delta, axis=-1)

    def upper(t):
        """U(t), plus the rounding of its own evaluation."""
        w = codes * (lam[..., None] - t[..., None] * corr)
        linear = jnp.sum(w, axis=-1)
        quadratic = 0.5 * (1.0 - t) ** 2 * rho_up**2 * (1.0 + 8 * u)
        # fl(t ghat_k) is off by u t |ghat_k|; the rest of each term and the sum by g_n |w|
        evaluation = (u * t * a_corr + g_n * jnp.sum(jnp.abs(w), axis=-1)) * (1.0 + g_n)
        widening = t * a_delta * (1.0 + g_n)
        total = quadratic + linear + widening + evaluation
        return total + gamma(6, dtype) * (quadratic + jnp.abs(linear) + widening + evaluation)

    gap = jnp.maximum(jnp.maximum(upper(s_lo), upper(s_hi)), 0.0)
    # the gap as if exact, at a dual scaling that accepts infeasibility within the rounding of
    # the correlations, and what the bound adds to it there
    max_corr = masked_max(corr, atom_mask)
    feasible = max_corr <= lam + masked_max(delta, atom_mask)
    s = jnp.where(feasible, 1.0, lam / jnp.where(feasible, 1.0, max_corr))
    nominal = 0.5 * (1.0 - s) ** 2 * rho_sq + jnp.sum(
        codes * (lam[..., None] - s[..., None] * corr), axis=-1
    )
    rounding = jnp.maximum(upper(s) - nominal, 0.0)
    primal = primal_from_terms(rho_sq, l1, lam)
    primal_lo = (0.5 * rho_lo**2 + lam * l1 * (1.0 - g_n)) * (1.0 - 4 * u)
    tiny = jnp.finfo(dtype).tiny
    ratio = jnp.where(primal > 0, primal / jnp.maximum(primal_lo, tiny), 1.0)
    gap = gap * ratio * (1.0 + 4 * u)
    cert = Certificate(primal=primal, dual=primal - gap, gap=gap)
    return CertificateBound(certificate=cert, nominal=nominal, rounding=rounding * ratio)
