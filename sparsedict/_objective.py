r"""The nonnegative lasso: primal, dual, duality gap and KKT residual (THEORY section 1).

For one signal $x \in \mathbb{R}^d$, a dictionary $D \in \mathbb{R}^{k \times d}$ (atoms as rows)
and codes $a \in \mathbb{R}^k_{\ge 0}$:

$$P(a) = \tfrac12 \|x - aD\|^2 + \lambda \textstyle\sum_k a_k, \qquad
  \mathcal{D}(\theta) = \tfrac12\|x\|^2 - \tfrac12\|x - \theta\|^2 \;\text{ s.t. } D\theta \le \lambda.$$

With the residual $r = x - aD$ and correlations $g = Dr$, the dual point is $\theta = s\,r$ with
$s = \min(1, \lambda / \max_k g_k)$ (and $s = 1$ when $\max_k g_k \le \lambda$). Expanding
$P(a) - \mathcal{D}(s r)$ with $x = aD + r$ gives the form used everywhere in sparsedict:

$$\mathrm{gap} = \tfrac12 (1 - s)^2 \|r\|^2 + \textstyle\sum_k a_k (\lambda - s\, g_k) \;\ge 0,$$

a sum of nonnegative terms (each $s g_k \le \lambda$, $a \ge 0$), so it carries no cancellation
between large numbers and stays honest in float32. Every function here works on any leading batch
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
    r"""$s = \min(1, \lambda / \max_k g_k)$, with $s = 1$ when $\max_k g_k \le \lambda$ up to rounding."""
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
    l1 = jnp.sum(codes, axis=-1)
    primal = 0.5 * residual_sq + lam * l1
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
    lam = jnp.asarray(lam, corr.dtype)[..., None]
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


def primal(
    X: Float[Array, "*batch d"], D: Float[Array, "k d"], codes, lam
) -> Float[Array, "*batch"]:
    r"""$P(a) = \tfrac12\|x - aD\|^2 + \lambda \sum_k a_k$ per signal (`lam` a scalar or (n,))."""
    r = residual(X, D, codes)
    return 0.5 * jnp.sum(r * r, axis=-1) + lam * jnp.sum(codes, axis=-1)


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
