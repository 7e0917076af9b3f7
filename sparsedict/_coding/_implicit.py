r"""Exact derivatives of the nonnegative lasso solution by implicit differentiation (THEORY 1).

At a solution $a^\star(x, D, \lambda)$ with support $S = \{k : a_k > 0\}$ the KKT conditions
are the linear system $G_{SS}\, a_S = (Dx)_S - \lambda$ with $G = DD^\top$, and $a_k = 0$ off
$S$. While the support does not change, differentiating it gives, with $r = x - aD$,

$$G_{SS}\, \dot a_S = (\dot D r)_S + D_S(\dot x - a\dot D) - \dot\lambda, \qquad
  \dot a_k = 0 \;(k \notin S).$$

The system is solved at full size $k \times k$ (static shapes): $M = G$ masked to
$S \times S$ plus the identity off $S$, applied through its pseudo-inverse $M^+$ (one symmetric
eigendecomposition per signal). The tangent map is linear in
$(\dot x, \dot D, \dot\lambda)$, so one `custom_jvp` serves `jvp`, `jacfwd`, `grad` and `jacrev`
(by transposition), under `jit` and `vmap`.

Degenerate points get a finite answer, never NaN or inf:

- singular $G_{SS}$ (duplicated or linearly dependent active atoms): the minimum-norm
  least-squares tangent $M^+ b$; duplicated atoms share the tangent equally, and the tangent of
  their summed coefficient is exact;
- a coefficient exactly at the boundary ($a_k = 0$ with $d_k \cdot r = \lambda$): it counts as
  inactive, so $\dot a_k = 0$, the one-sided derivative along perturbations that keep it at zero.

Cost: $O(k^3)$ per signal for the pseudo-inverse (computed once, shared by all tangents).
Second derivatives are exact too while the support is fixed (the rule calls itself for its primal
output, and the pseudo-inverse has its own derivative).
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def _support_pinv(codes: Float[Array, " k"], D: Float[Array, "k d"]):
    """Support mask and the pseudo-inverse $M^+$ of the masked support system."""
    support = codes > 0
    both = support[:, None] & support[None, :]
    M = jnp.where(both, D @ D.T, 0.0) + jnp.diag(jnp.where(support, 0.0, 1.0))
    # Default cutoff: singular values below 10 k eps times the largest count as zero. Its own
    # derivative is the constant-rank formula (no eigenvector derivatives), so second derivatives
    # stay finite too.
    return support, jnp.linalg.pinv(M, hermitian=True)


@jax.jit  # one compiled kernel when called eagerly (under jit it is inlined)
def _codes_tangent(codes, X, D, dX, dD, dlam):
    r"""$\dot a$ for a batch: codes (n, k), X (n, d), D (k, d) shared, lam (n,)."""
    support, P = jax.vmap(_support_pinv, in_axes=(0, None))(codes, D)
    R = X - codes @ D
    rhs = R @ dD.T + (dX - codes @ dD) @ D.T - dlam[:, None]
    rhs = jnp.where(support, rhs, 0.0)
    tangent = jnp.einsum("nij,nj->ni", P, rhs)
    return jnp.where(support, tangent, 0.0)


@jax.custom_jvp
def implicit_codes(
    codes: Float[Array, "n k"],
    X: Float[Array, "n d"],
    D: Float[Array, "k d"],
    lam: Float[Array, " n"],
) -> Float[Array, "n k"]:
    """Returns `codes` (an optimum of the lasso for X, D, lam) with implicit derivatives.

    `codes` must not carry derivatives of its own (compute it from stop-gradient inputs); its
    tangent is ignored.
    """
    return codes


@implicit_codes.defjvp
def _implicit_codes_jvp(primals, tangents):
    _, dX, dD, dlam = tangents
    codes = implicit_codes(*primals)  # a higher-order trace sees its dependence on X, D, lam
    return codes, _codes_tangent(codes, primals[1], primals[2], dX, dD, dlam)


@jax.custom_jvp
def optimal_value(
    codes: Float[Array, "n k"],
    X: Float[Array, "n d"],
    D: Float[Array, "k d"],
    lam: Float[Array, " n"],
) -> Float[Array, " n"]:
    r"""$F = \tfrac12\|x - aD\|^2 + \lambda \sum_k a_k$ at optimal codes, with envelope derivatives.

    Since $a$ minimises the objective, its own variation does not enter the first derivative:
    $\partial F/\partial x = r$, $\partial F/\partial D = -a^\top r$,
    $\partial F/\partial \lambda = \sum_k a_k$. Pass codes from [`implicit_codes`][] to make second
    derivatives exact too.
    """
    R = X - codes @ D
    return 0.5 * jnp.sum(R * R, axis=-1) + lam * jnp.sum(codes, axis=-1)


@optimal_value.defjvp
def _optimal_value_jvp(primals, tangents):
    codes, X, D, lam = primals
    _, dX, dD, dlam = tangents
    R = X - codes @ D
    tangent = jnp.sum(R * (dX - codes @ dD), axis=-1) + dlam * jnp.sum(codes, axis=-1)
    return optimal_value(*primals), tangent
