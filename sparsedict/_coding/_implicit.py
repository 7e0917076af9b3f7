r"""Exact derivatives of the nonnegative lasso solution by implicit differentiation (THEORY 1).

At a solution $a^\star(x, D, \lambda)$ with support $S = \{k : a_k > 0\}$ the KKT conditions
are the linear system $G_{SS}\, a_S = (Dx)_S - \lambda$ with $G = DD^\top$, and $a_k = 0$ off
$S$. While the support does not change, differentiating it gives, with $r = x - aD$,

$$G_{SS}\, \dot a_S = (\dot D r)_S + D_S(\dot x - a\dot D) - \dot\lambda, \qquad
  \dot a_k = 0 \;(k \notin S).$$

The system is solved on the support, in a buffer of $s$ slots (static shapes): the support's
indices are gathered (`nonzero`), $M = D_S D_S^\top$ is built from the gathered rows of $D$ with
the identity in the padding slots, and applied through its pseudo-inverse $M^+$: the inverse from
a Cholesky factor where eigenvalue bounds show that no eigenvalue falls below the pseudo-inverse's
cutoff (then $M^+ = M^{-1}$), an eigendecomposition for the batches where one might ($O(s^3)$ time
and $s^2$ memory per signal, nothing $k \times k$). The buffer
is the smallest of 8, 16, 32, ... (capped at $k$) that holds the largest support of the batch,
chosen at run time among compiled branches (`lax.switch`) inside a `custom_linear_solve`, so
reverse mode solves again instead of storing the pseudo-inverses. The tangent map is linear in
$(\dot x, \dot D, \dot\lambda)$, so one `custom_jvp` serves `jvp`, `jacfwd`, `grad` and `jacrev`
(by transposition), under `jit` and `vmap`.

Degenerate points get a finite answer, never NaN or inf:

- singular $G_{SS}$ (duplicated or linearly dependent active atoms): the minimum-norm
  least-squares tangent $M^+ b$; duplicated atoms share the tangent equally, and the tangent of
  their summed coefficient is exact;
- a coefficient exactly at the boundary ($a_k = 0$ with $d_k \cdot r = \lambda$): it counts as
  inactive, so $\dot a_k = 0$, the one-sided derivative along perturbations that keep it at zero.

Cost: $O(s^3)$ per signal for the pseudo-inverse (computed once, shared by all tangents).
Second derivatives are exact too while the support is fixed (the rule calls itself for its primal
output, and the pseudo-inverse has its own derivative).
"""

import functools

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Float


def _buffers(k: int) -> list[int]:
    """Support buffer sizes: 8, 16, 32, ... capped at k."""
    sizes, s = [], 8
    while s < k:
        sizes.append(s)
        s *= 2
    return sizes + [k]


def _support_system(codes: Float[Array, " k"], D: Float[Array, "k d"], size: int):
    r"""Support indices in a buffer of `size` slots (k in the empty ones) and the support system
    $M = D_S D_S^\top$ with the identity in the empty slots."""
    k = codes.shape[0]
    idx = jnp.nonzero(codes > 0, size=size, fill_value=k)[0]
    valid = idx < k
    rows = jnp.where(valid[:, None], D[jnp.minimum(idx, k - 1)], 0.0)
    M = jnp.where(valid[:, None] & valid[None, :], rows @ rows.T, 0.0)
    return idx, M + jnp.diag(jnp.where(valid, 0.0, 1.0))


def _cutoff(M, k):
    # Singular values below 10 k eps times the largest count as zero (the cutoff of the full
    # k x k system).
    return 10 * k * jnp.finfo(M.dtype).eps


def _pinv(M, k):
    # Its own derivative is the constant-rank formula (no eigenvector derivatives), so second
    # derivatives stay finite too.
    return jnp.linalg.pinv(M, rtol=_cutoff(M, k), hermitian=True)


def _cholesky_inverse(M, k):
    r"""$M^{-1}$ from a Cholesky factor, and whether it equals the pseudo-inverse with the cutoff:
    $\lambda_{\min} \ge 1/\min(\|M^{-1}\|_F, \|M^{-1}\|_\infty)$ and
    $\lambda_{\max} \le \min(\|M\|_F, \|M\|_\infty)$ bound the eigenvalues of the symmetric $M$,
    so when the bounds put every eigenvalue above the cutoff (with a factor 2 for rounding), no
    eigenvalue is cut and $M^+ = M^{-1}$ ($s^3$ flops, against an eigendecomposition's ~$10 s^3$
    that took 2/3 of `jax.grad` through S1-like codes)."""
    L = jnp.linalg.cholesky(M)
    P = jsl.cho_solve((L, True), jnp.eye(M.shape[0], dtype=M.dtype))
    P = 0.5 * (P + P.T)

    def norm(A):
        return jnp.minimum(jnp.sqrt(jnp.sum(A * A)), jnp.max(jnp.sum(jnp.abs(A), axis=1)))

    ok = jnp.all(jnp.isfinite(P)) & (2 * _cutoff(M, k) * norm(M) * norm(P) < 1)
    return P, ok


# Entries of the support systems held at once: larger buffers are solved in chunks of signals
# (XLA sizes the memory of every branch of a switch, taken or not).
_BUDGET = 2**24


def _solve_on_support(size, codes, D, rhs):
    r"""$\dot a$ with $M \dot a_S = b_S$ on the support, in buffers of `size` slots: $M^{-1}$
    by Cholesky, and the pseudo-inverse (an eigendecomposition) for the batches of signals where
    some $M$ is too close to singular for the cutoff (`_cholesky_inverse`)."""
    n, k = codes.shape
    batch = max(1, min(n, _BUDGET // size**2))
    rounds = -(-n // batch)

    def one_batch(args):
        a, b = args
        idx, M = jax.vmap(_support_system, in_axes=(0, None, None))(a, D, size)
        P, ok = jax.vmap(_cholesky_inverse, in_axes=(0, None))(M, k)
        pinv = jax.vmap(_pinv, in_axes=(0, None))
        P = jax.lax.cond(
            jnp.all(ok), lambda: P, lambda: jnp.where(ok[:, None, None], P, pinv(M, k))
        )
        rhs_s = jnp.take_along_axis(jnp.pad(b, ((0, 0), (0, 1))), idx, axis=1)  # slot k reads 0
        t = jnp.einsum("nij,nj->ni", P, rhs_s)
        return jax.vmap(lambda i, v: jnp.zeros(k + 1, v.dtype).at[i].add(v)[:k])(idx, t)

    # zero signals pad the last batch (an empty support: M = I, b = 0)
    pad = rounds * batch - n
    blocks = [jnp.pad(v, ((0, pad), (0, 0))).reshape(rounds, batch, k) for v in (codes, rhs)]
    out = jax.lax.map(one_batch, tuple(blocks))
    return out.reshape(rounds * batch, k)[:n]


@jax.jit  # one compiled kernel when called eagerly (under jit it is inlined)
def _codes_tangent(codes, X, D, dX, dD, dlam):
    r"""$\dot a$ for a batch: codes (n, k), X (n, d), D (k, d) shared, lam (n,)."""
    support = codes > 0
    R = X - codes @ D
    rhs = R @ dD.T + (dX - codes @ dD) @ D.T - dlam[:, None]
    rhs = jnp.where(support, rhs, 0.0)
    sizes = _buffers(codes.shape[1])
    largest = jnp.max(jnp.sum(support, axis=1), initial=0)
    branch = jnp.searchsorted(jnp.asarray(sizes), largest)  # smallest buffer that holds it
    branches = [functools.partial(_solve_on_support, s) for s in sizes]

    def matvec(t):  # M: G on the support, the identity off it
        return jnp.where(support, (jnp.where(support, t, 0.0) @ D) @ D.T, t)

    def solve(_, b):
        return jnp.where(support, jax.lax.switch(branch, branches, codes, D, b), 0.0)

    # A linear solve primitive: reverse mode transposes it by solving again (M is symmetric), so
    # no branch's pseudo-inverses are kept as residuals (a switch would keep the largest, k x k).
    tangent = jax.lax.custom_linear_solve(matvec, rhs, solve, symmetric=True)
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
