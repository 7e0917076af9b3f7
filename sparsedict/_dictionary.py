r"""Dictionary operations shared by the learners and the optimality tests: atom updates on the
unit sphere, the initial dictionary, the Riemannian gradient and dead-atom revival.

With codes fixed, the objective in one atom $d_j$ on the sphere is
$\mathrm{const} - d_j\cdot\sum_i a_{ij} e_{ij}$ (THEORY section 2.3, $e_{ij}$ the partial
residual), so the exact block-coordinate update (Mairal et al. 2010, projected on the sphere) is

$$d_j \leftarrow \frac{u_j}{\|u_j\|}, \qquad
  u_j = (A^\top X)_j - (A^\top A)_{j,:} D + (A^\top A)_{jj}\, d_j,$$

computed from the sufficient statistics $A^\top A$ (k, k) and $A^\top X$ (k, d) alone. Unused atoms
($(A^\top A)_{jj} = 0$) are left where they are.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float


def update_atoms(
    D: Float[Array, "k d"],
    AtA: Float[Array, "k k"],
    AtX: Float[Array, "k d"],
    atom_mask: Bool[Array, " k"] | None = None,
    sweeps: int = 1,
) -> Float[Array, "k d"]:
    """`sweeps` passes of exact block-coordinate descent over the atoms (never increases F)."""
    k = D.shape[0]
    usable = jnp.diagonal(AtA) > 0
    if atom_mask is not None:
        usable = usable & atom_mask

    def update(j, D):
        u = AtX[j] - AtA[j] @ D + AtA[j, j] * D[j]
        norm = jnp.linalg.norm(u)
        ok = usable[j] & (norm > 0)
        return D.at[j].set(jnp.where(ok, u / jnp.where(ok, norm, 1.0), D[j]))

    return jax.lax.fori_loop(0, sweeps * k, lambda t, D: update(t % k, D), D)


def riemannian_gradient(D, grad):
    r"""Tangent part of the Euclidean gradient on each atom's sphere: $(I - d d^\top) \nabla$."""
    return grad - jnp.sum(grad * D, axis=-1, keepdims=True) * D


def init_dictionary(X: Float[Array, "n d"], k: int, key) -> Float[Array, "k d"]:
    """k distinct signals chosen at random, normalised (random directions if k > n or x = 0)."""
    n, d = X.shape
    kx, kr = jax.random.split(key)
    pick = jax.random.permutation(kx, n)[: min(k, n)]
    rows = X[pick]
    if k > n:
        rows = jnp.concatenate([rows, jax.random.normal(kr, (k - n, d), X.dtype)])
    norms = jnp.linalg.norm(rows, axis=-1, keepdims=True)
    fallback = jax.random.normal(kr, (k, d), X.dtype)
    rows = jnp.where(norms > 0, rows, fallback)
    return rows / jnp.linalg.norm(rows, axis=-1, keepdims=True)


def revive_dead_atoms(D, residuals, usage, lam, atom_mask=None):
    r"""Move unused atoms onto the largest residuals with norm above `lam` (THEORY section 3).

    A new atom at $u = r_j / \|r_j\|$ lowers the objective at first order by
    $t(\|r_j\| - \lambda)/W$ when it takes code $t$ on signal $j$; the dead atoms take the
    residual directions of the signals with the largest residual norms, one signal each.
    Returns the new dictionary and the number of atoms revived.
    """
    dead = usage <= 0
    if atom_mask is not None:
        dead = dead & atom_mask
    norms = jnp.linalg.norm(residuals, axis=-1)
    order = jnp.argsort(-norms)
    rank = jnp.cumsum(dead) - 1
    target = order[jnp.clip(rank, 0, norms.shape[0] - 1)]
    revive = dead & (rank < norms.shape[0]) & (norms[target] > lam)
    safe = jnp.where(revive, norms[target], 1.0)
    D = jnp.where(revive[:, None], residuals[target] / safe[:, None], D)
    return D, jnp.sum(revive)
