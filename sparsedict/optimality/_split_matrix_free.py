r"""THEORY 4.2's splitting slope for every atom at once, from kept residuals and active pairs.

The dense [`splitting`][] forms $P_k R$ (n, d) per atom. Here only the pairs $(i, k)$ with
$a_{ik} > 0$ enter, each with the weight $c_{ik} = w_i a_{ik}$, and every operator is a segment
sum over those pairs (batched over all atoms, one pass over the pairs per product):

* the weighted projected residual covariance $M_k = \sum_i c_{ik} P_k r_i r_i^\top P_k$ acts on a
  tangent $u$ ($u \perp d_k$) as $M_k u = P_k \sum_i c_{ik} (r_i \cdot u)\, r_i$; block subspace
  iteration with a final Rayleigh-Ritz step gives its top eigenvector $u_0$, never a $d \times d$
  matrix;
* the L1-PCA step $u \leftarrow P_k \sum_i c_{ik} \operatorname{sign}(u \cdot r_i)\, r_i$,
  normalised, runs the same `_L1_PCA_STEPS` as the dense code, and
  $S_k = \sum_i c_{ik} |u \cdot r_i|$ ($u$ tangent, so $u \cdot P_k r_i = u \cdot r_i$).

Atoms without pairs get $S_k = 0$ and a zero direction.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ._second_order import _L1_PCA_STEPS


def _tangent(U, D):
    """Project each atom's block `U` (k, d, b) on the tangent space of its atom (row of D)."""
    return U - D[:, :, None] * jnp.einsum("kd,kdb->kb", D, U)[:, None, :]


def _pair_sum(R, D, pairs, U, use_sign):
    r"""$P_k \sum_p c_p\, f(r_{i_p} \cdot P_k u_{k_p})\, r_{i_p}$ for every atom and block column,
    with $f$ the identity or `sign`; `pairs` = (rows, cols, c), each (blocks, pair_block)."""
    k = D.shape[0]
    U = _tangent(U, D)

    def add_block(acc, block):
        rows, cols, c = block
        Rp = R[rows]  # (pairs, d)
        g = jnp.einsum("pd,pdb->pb", Rp, U[cols])  # r_i . P_k u
        g = jnp.sign(g) if use_sign else g
        terms = (c[:, None] * g)[:, None, :] * Rp[:, :, None]  # (pairs, d, b)
        return acc + jax.ops.segment_sum(terms, cols, num_segments=k), None

    acc, _ = jax.lax.scan(add_block, jnp.zeros_like(U), pairs)
    return _tangent(acc, D)


def _orthonormal(U, D):
    """Batched QR of the tangent blocks, projected once more (rounding leaves the tangent)."""
    return _tangent(jnp.linalg.qr(_tangent(U, D))[0], D)


def _strength(R, u, pairs):
    r"""$S_k = \sum_p c_p |r_{i_p} \cdot u_{k_p}|$, a block of pairs at a time."""

    def add_block(acc, block):
        rows, cols, c = block
        terms = c * jnp.abs(jnp.sum(R[rows] * u[cols], axis=-1))
        return acc + jax.ops.segment_sum(terms, cols, num_segments=u.shape[0]), None

    return jax.lax.scan(add_block, jnp.zeros(u.shape[0], u.dtype), pairs)[0]


@functools.partial(jax.jit, static_argnames=("iterations",))
def _split(R, D, pairs, Q, iterations):
    """`(S (k,), u (k, d))` from the start blocks `Q` (k, d, b)."""
    Q = jax.lax.fori_loop(
        0,
        iterations,
        lambda _, Q: _orthonormal(_pair_sum(R, D, pairs, Q, False), D),
        _orthonormal(Q, D),
    )
    H = jnp.einsum("kdb,kdc->kbc", Q, _pair_sum(R, D, pairs, Q, False))
    ritz = jnp.linalg.eigh(0.5 * (H + jnp.swapaxes(H, 1, 2)))[1][:, :, -1]
    u = jnp.einsum("kdb,kb->kd", Q, ritz)

    def step(_, u):
        v = _pair_sum(R, D, pairs, u[:, :, None], True)[:, :, 0]
        n = jnp.linalg.norm(v, axis=-1, keepdims=True)
        return jnp.where(n > 0, v / jnp.where(n > 0, n, 1.0), u)

    u = jax.lax.fori_loop(0, _L1_PCA_STEPS, step, u)
    S = _strength(R, u, pairs)
    _, cols, c = pairs
    has_pairs = jax.ops.segment_sum(c.reshape(-1), cols.reshape(-1), D.shape[0]) > 0
    return S, jnp.where(has_pairs[:, None], u, 0.0)


def _blocks(rows, cols, c, pair_block):
    """Pad the pairs to whole blocks (padding: pair (0, 0) with weight 0) and reshape."""
    size = max(1, min(pair_block, rows.size))
    pad = -rows.size % size
    arrays = (np.pad(rows, (0, pad)), np.pad(cols, (0, pad)), np.pad(c, (0, pad)))
    return tuple(jnp.asarray(a.reshape(-1, size)) for a in arrays)


def splitting_from_pairs(R, D, rows, cols, c, *, block=4, iterations=60, seed=0, pair_block=16384):
    r"""$(S_k, u_k)$ of THEORY 4.2 for every atom from residuals `R` (n, d), atoms `D` (k, d) and
    the pairs `rows`, `cols` (p,) with weights `c` $= w_i a_{ik}$ (p,).

    Subspace iteration (`block` tangent vectors per atom, `iterations` steps, random start from
    `seed`) then `_L1_PCA_STEPS` L1-PCA steps; each step is one pass over the pairs in blocks of
    `pair_block` (about $2\,p\,d\,b$ flops, $\text{pair\_block}\cdot d\cdot b$ memory).
    """
    R = jnp.asarray(R)
    D = jnp.asarray(D, R.dtype)
    k, d = D.shape
    b = max(1, min(block, d - 1))
    Q = jnp.asarray(np.random.default_rng(seed).standard_normal((k, d, b)), R.dtype)
    pairs = _blocks(
        np.asarray(rows, np.int32), np.asarray(cols, np.int32), np.asarray(c, R.dtype), pair_block
    )
    return _split(R, D, pairs, Q, iterations)
