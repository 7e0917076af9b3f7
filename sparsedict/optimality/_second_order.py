r"""Second-order tests for one atom (THEORY 4.1 and 4.2), written for one atom and vmapped.

**Block test.** With $e_{ik} = r_i + a_{ik} d_k$, $C_k = \sum_{i \in \mathcal A_k} w_i e_{ik}
e_{ik}^\top$, $P_k = I - d_k d_k^\top$ and $\mu_k = \sum_i w_i a_{ik}(a_{ik} + \lambda)$, the
Riemannian Hessian of the block objective in $d_k$ is $\mu_k P_k - P_k C_k P_k$; the atom is at a
local minimum of its block only if $\rho_k = \lambda_{\max}(P_k C_k P_k) / \mu_k \le 1$. The active
set $\mathcal A_k$ includes kink points ($a_{ik} = 0$, $d_k \cdot r_i = \lambda$ up to rounding),
which makes the test one-sided there (THEORY 8).

**Splitting slope.** Splitting $d_k$ into $d_k \pm \epsilon u$ and giving each copy the signals on
its side changes $F$ at rate $-S_k / W$, $S_k = \max_{u \perp d_k, \|u\| = 1} \sum_i w_i a_{ik}
|u \cdot P_k r_i|$: an L1-PCA, started at the top eigenvector of the weighted projected residual
covariance and iterated as $u \leftarrow P_k \sum_i w_i a_{ik} \operatorname{sign}(u\cdot r_i) r_i$.
"""

import jax
import jax.numpy as jnp

# Kink points count as active when d_k . r_i >= lam - this many eps times the signal scale.
_KINK_EPS = 100.0
_L1_PCA_STEPS = 50


def _projector(d):
    return jnp.eye(d.shape[0], dtype=d.dtype) - jnp.outer(d, d)


def block_ratio(d, a, R, lam, weights, scale):
    """`lambda_max(P C P) / mu` for one atom (0 for an unused atom)."""
    e = R + a[:, None] * d[None, :]
    eps = jnp.finfo(R.dtype).eps
    active = (a > 0) | (R @ d >= lam - _KINK_EPS * eps * scale)
    P = _projector(d)
    Pe = e @ P
    C = (Pe * jnp.where(active, weights, 0.0)[:, None]).T @ Pe
    top = jnp.linalg.eigvalsh(C)[-1]
    mu = jnp.sum(weights * a * (a + lam))
    used = mu > 0
    return jnp.where(used, top / jnp.where(used, mu, 1.0), 0.0)


def splitting(d, a, R, weights):
    """`(S_k, u)`: the L1-PCA splitting strength and its tangent direction for one atom."""
    P = _projector(d)
    PR = R @ P
    c = weights * a
    cov = (PR * c[:, None]).T @ PR
    u = jnp.linalg.eigh(cov)[1][:, -1]

    def step(_, u):
        v = P @ (PR.T @ (c * jnp.sign(PR @ u)))
        n = jnp.linalg.norm(v)
        return jnp.where(n > 0, v / jnp.where(n > 0, n, 1.0), u)

    u = jax.lax.fori_loop(0, _L1_PCA_STEPS, step, u)
    return jnp.sum(c * jnp.abs(PR @ u)), u


def second_order(D, codes, R, lam, weights, scale):
    """`(block_ratio (k,), split_strength (k,), split_direction (k, d))` for every atom."""
    ratio = jax.vmap(block_ratio, in_axes=(0, 1, None, None, None, None))(
        D, codes, R, lam, weights, scale
    )
    # XLA:CPU (jaxlib 0.10) deadlocked when the two batched tests, each with batched eigh calls,
    # ran in one executable (every thread idle in Execute; e.g. 140 atoms, d = 64). The splitting
    # test therefore waits on the block test through a data dependency (an exact zero) and loops
    # over the atoms with `lax.map` instead of batching them.
    finite = jnp.where(jnp.isfinite(ratio), ratio, 0.0)
    R = R + 0.0 * jnp.sum(finite)
    strength, direction = jax.lax.map(lambda da: splitting(da[0], da[1], R, weights), (D, codes.T))
    return ratio, strength, direction
