r"""First-order residuals: code KKT and dictionary stationarity (THEORY sections 1 and 2).

The Euclidean gradient of $F$ in the atoms is taken with `jax.grad` (at optimal codes the
envelope theorem makes it the gradient of the dictionary-only objective):
$\nabla_{d_k} F = -\tfrac1W s_k$ with $s_k = \sum_i w_i a_{ik} r_i$. On the unit sphere the
Riemannian gradient is $(I - d_k d_k^\top)\nabla_{d_k} F$ and the multiplier is
$\nu_k = d_k\cdot s_k$. At a stationary point $s_k / m_k = \lambda d_k$ for every used atom
(THEORY 2.2), equivalently the activation-weighted partial residuals
$q_k = \sum_i w_i a_{ik} e_{ik}$, $e_{ik} = r_i + a_{ik} d_k$, point along $d_k$ (THEORY 2.3).
"""

import jax
import jax.numpy as jnp

from .._objective import certificate, kkt_residual, mean_objective, residual
from ._report import AtomResiduals, SignalResiduals


def _safe_divide(num, den, used):
    """`num / den` where `used`, 0 elsewhere, with no NaN gradient (double where)."""
    safe = jnp.where(used, den, 1.0)
    return jnp.where(used, num / safe, 0.0)


def signal_residuals(X, D, codes, lam, mask) -> SignalResiduals:
    """Per-signal KKT residual, duality gap and residual norm."""
    r = residual(X, D, codes)
    cert = certificate(X, D, codes, lam, mask)
    return SignalResiduals(
        kkt=kkt_residual(codes, r @ D.T, jnp.broadcast_to(lam, r.shape[:-1]), mask),
        gap=cert.gap,
        relative_gap=cert.relative_gap,
        primal=cert.primal,
        residual_norm=jnp.linalg.norm(r, axis=-1),
    )


def atom_residuals(X, D, codes, lam, weights, mask) -> AtomResiduals:
    """Per-atom mass, gradients, multiplier, the 2.2 constraint residual and 2.3 alignment."""
    k = D.shape[0]
    active = jnp.ones((k,), bool) if mask is None else mask
    W = jnp.sum(weights)
    grad = jax.grad(mean_objective, argnums=1)(X, D, codes, lam, weights)  # -(1/W) s_k, row k
    return residuals_from_sums(D, -W * grad, weights @ codes, weights @ codes**2, lam, W, active)


def residuals_from_sums(D, s, mass, square_mass, lam, W, active) -> AtomResiduals:
    r"""The per-atom report from sums over signals, which can be accumulated in chunks:
    $s_k = \sum_i w_i a_{ik} r_i$, the mass $m_k = \sum_i w_i a_{ik}$, $\sum_i w_i a_{ik}^2$
    and $W = \sum_i w_i$."""
    grad = -s / W
    used = active & (mass > 0)
    normal = jnp.sum(D * grad, axis=-1)
    riemannian = grad - normal[:, None] * D
    nu = jnp.sum(D * s, axis=-1)
    mean_residual = _safe_divide(s, mass[:, None], used[:, None])
    constraint = jnp.where(used, jnp.linalg.norm(mean_residual - lam * D, axis=-1), 0.0)
    # q_k = s_k + (sum_i w_i a_ik^2) d_k; cos(q_k, d_k) is 1 at a stationary point.
    q = s + square_mass[:, None] * D
    q_norm = jnp.linalg.norm(q, axis=-1)
    alignment = jnp.where(used, _safe_divide(jnp.sum(q * D, axis=-1), q_norm, used), 1.0)
    return AtomResiduals(
        mass=mass,
        gradient=grad,
        riemannian_gradient=riemannian,
        gradient_norm=jnp.linalg.norm(riemannian, axis=-1),
        multiplier=nu,
        would_shrink=used & (nu < 0),
        constraint=constraint,
        relative_constraint=constraint / lam,
        alignment=alignment,
        dead=active & ~used,
        masked=~active,
    )
