r"""The exact local test (THEORY 4.1b): the Hessian of the objective profiled over the codes.

Fix each signal's support $S_i = \{k: a_{ik} > 0\}$. For $\lambda > 0$ and strict complementarity
(every off-support correlation $g_{ik} = d_k \cdot r_i < \lambda$, every on-support code
$a_{ik} > 0$), a small move of $D$ keeps the supports, and the codes re-solve in closed form on
them: with $G_i = D_{S_i} D_{S_i}^\top$ and $q_i = D_{S_i} x_i - \lambda \mathbf 1$,
$a_{i,S_i} = G_i^{-1} q_i$ and

$$L(D) = \frac1W \sum_i w_i \Big[\tfrac12 \|x_i\|^2 - \tfrac12\, q_i^\top G_i^{-1} q_i\Big].$$

$L$ is smooth, so joint perturbations of $(D, A)$ reduce to perturbations of $D$ on the product of
unit spheres. Its Riemannian Hessian is the Euclidean Hessian of the pullback $t \mapsto
L(R(t))$ at $t = 0$ through the normalisation retraction $R(t)_k = (d_k + U_k t_k) / \|d_k + U_k
t_k\|$ ($U_k$ an orthonormal basis of the tangent space at $d_k$), which is a second-order
retraction, so the two agree at every point, not only at critical ones. It is computed with
`jax.hessian` in float64-ready form.

Verdict: a positive semidefinite Hessian is necessary for a local minimum; a positive definite one
(on the atoms in use: unused atoms do not enter $L$ and are flat) together with a strict
complementarity margin certifies a strict local minimum. Kinks ($g_{ik} = \lambda$ with
$a_{ik} = 0$) leave the test inconclusive (THEORY 8).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .. import _validation as check
from .._objective import mean_objective

# Largest Hessian (number of tangent coordinates, sum over tested atoms of d - 1) built by default.
MAX_COORDINATES = 4096
# A Hessian eigenvalue counts as zero within this many eps times the largest |eigenvalue| (x dim);
# a margin counts as zero within this many eps (relative to lam or to the largest code).
_ZERO_EPS = 100.0


class LocalTest(eqx.Module):
    r"""Result of [`local_test`][sparsedict.optimality.local_test].

    Attributes:
        eigenvalues: the Riemannian Hessian's eigenvalues on the tested atoms' tangent spaces,
            ascending (in units of $F$ per radian$^2$).
        min_eigenvalue: the smallest of them.
        gradient_norm: norm of the profiled objective's Riemannian gradient (zero at a stationary
            point; the Hessian test is meaningful only there).
        complementarity_margin: $\min_{a_{ik} = 0} (\lambda - g_{ik}) / \lambda$ (> 0: strict).
        code_margin: $\min_{a_{ik} > 0} a_{ik} / \max a$ (> 0 always; tiny values are near-kinks).
        atoms: indices of the tested atoms (in use and selected).
        verdict: `"strict local minimum"`, `"not a local minimum"` (a negative eigenvalue: a
            descent direction of second order), `"not stationary"` (the gradient is not zero),
            or `"inconclusive"` (semidefinite with zero eigenvalues, or a kink).
    """

    eigenvalues: Float[Array, " m"]
    min_eigenvalue: Float[Array, ""]
    gradient_norm: Float[Array, ""]
    complementarity_margin: Float[Array, ""]
    code_margin: Float[Array, ""]
    atoms: tuple[int, ...] = eqx.field(static=True)
    verdict: str = eqx.field(static=True)


def profiled_objective(D, X, support, lam, weights):
    r"""$L(D)$ for signals `X` with supports `support` (n, s) of atom indices, padded with `k`."""
    k, d = D.shape
    D_pad = jnp.concatenate([D, jnp.zeros((1, d), D.dtype)])

    def one(x, idx):
        valid = idx < k
        D_s = D_pad[idx]
        G = D_s @ D_s.T + jnp.diag(jnp.where(valid, 0.0, 1.0))
        q = jnp.where(valid, D_s @ x - lam, 0.0)
        return 0.5 * x @ x - 0.5 * q @ jnp.linalg.solve(G, q)

    values = jax.vmap(one)(X, support)
    return jnp.sum(weights * values) / jnp.sum(weights)


def tangent_bases(D):
    """Orthonormal bases `U` (k, d, d - 1) of the tangent spaces of the unit sphere at each atom.

    Columns 2..d of the Householder reflection that maps `e_1` to `d_k` (up to sign): a closed
    form, so every caller gets the same basis.
    """

    def basis(d_k):
        sign = jnp.where(d_k[0] >= 0, 1.0, -1.0)
        w = d_k.at[0].add(sign)  # d_k + sign e_1, never zero for a unit d_k
        H = jnp.eye(d_k.shape[0], dtype=d_k.dtype) - 2.0 * jnp.outer(w, w) / (w @ w)
        return H[:, 1:]

    return jax.vmap(basis)(D)


def retract(D, U, atoms, t):
    """`D` with the tested atoms moved to `(d_k + U_k t_k) / ||d_k + U_k t_k||`."""
    moved = D[atoms] + jnp.einsum("kde,ke->kd", U[atoms], t)
    return D.at[atoms].set(moved / jnp.linalg.norm(moved, axis=-1, keepdims=True))


def _supports(codes):
    """`(n, s)` atom indices of each signal's support, padded with k (s = the largest support)."""
    n, k = codes.shape
    active = codes > 0
    s = max(int(active.sum(axis=1).max()), 1)
    order = np.argsort(~active, axis=1, kind="stable")[:, :s]
    return np.where(np.take_along_axis(active, order, axis=1), order, k)


@eqx.filter_jit
def _hessian(D, X, support, lam, weights, atoms):
    """Riemannian gradient and Hessian of the profiled objective in the `tangent_bases` frame."""
    U = tangent_bases(D)
    m, d = atoms.shape[0], D.shape[1]

    def pulled_back(flat):
        moved = retract(D, U, atoms, flat.reshape(m, d - 1))
        return profiled_objective(moved, X, support, lam, weights)

    zero = jnp.zeros(m * (d - 1), D.dtype)
    return jax.grad(pulled_back)(zero), jax.hessian(pulled_back)(zero)


def local_test(
    X,
    D,
    codes,
    lam,
    *,
    weights=None,
    atoms=None,
    gradient_tol: float = 1e-6,
    max_coordinates: int = MAX_COORDINATES,
) -> LocalTest:
    r"""Exact second-order test of $(D, A)$ (THEORY 4.1b); a host-level diagnostic.

    Arguments:
        X: signals (n, d). D: unit-norm atoms (k, d). codes: (n, k), optimal for `D` (solve them
            with `sparse_code` to a tight gap first; the supports are read from them).
        lam: scalar penalty, > 0. weights: optional per-signal weights (n,).
        atoms: indices of the atoms to test (default: every atom in use). The Hessian restricted
            to a subset is a principal submatrix: a negative eigenvalue there still refutes a
            local minimum, positive definiteness there certifies only the moves of those atoms.
        gradient_tol: the point counts as stationary when the Riemannian gradient's norm is at
            most `gradient_tol` times the objective.
        max_coordinates: refuse to build a Hessian with more tangent coordinates than this
            (`len(atoms) * (d - 1)`); pass fewer `atoms` for large dictionaries.

    Returns:
        A [`LocalTest`][sparsedict.optimality.LocalTest].
    """
    X, D, codes, _ = check.signals_dictionary_codes(X, D, codes, None)
    lam = check.positive_lam(lam, X.dtype)
    weights = check.weights(weights, X.shape[0], X.dtype)
    codes_np = np.asarray(codes)
    k, d = D.shape
    used = np.flatnonzero(codes_np.sum(axis=0) > 0)
    if atoms is None:
        atoms = used
    else:
        atoms = np.asarray(atoms, dtype=int).reshape(-1)
        if atoms.size == 0 or atoms.min() < 0 or atoms.max() >= k:
            raise ValueError(f"atoms must be indices in [0, {k}), got {atoms.tolist()}")
        atoms = np.intersect1d(atoms, used)
    if atoms.size == 0:
        raise ValueError("no atom to test: the codes use none of the selected atoms")
    if atoms.size * (d - 1) > max_coordinates:
        raise ValueError(
            f"the Hessian would have {atoms.size * (d - 1)} tangent coordinates (atoms in use "
            f"x (d - 1)), above max_coordinates={max_coordinates}: pass atoms=[...] to test "
            "a subset, or raise max_coordinates"
        )
    support = jnp.asarray(_supports(codes_np))
    atoms_j = jnp.asarray(atoms, jnp.int32)
    grad, hess = _hessian(D, X, support, lam, weights, atoms_j)
    eigenvalues = jnp.linalg.eigvalsh(0.5 * (hess + hess.T))

    eps = float(jnp.finfo(X.dtype).eps)
    g = np.asarray((X - codes @ D) @ D.T)
    off = codes_np == 0
    lam_f = float(lam)
    margin = float(np.min(lam_f - g[off]) / lam_f) if off.any() else np.inf
    on = codes_np[~off]
    code_margin = float(on.min() / on.max()) if on.size else np.inf
    objective = float(mean_objective(X, D, codes, lam, weights))
    grad_norm = float(jnp.linalg.norm(grad))
    ev = np.asarray(eigenvalues)
    zero = _ZERO_EPS * eps * ev.size * max(np.abs(ev).max(), eps)
    if grad_norm > gradient_tol * max(objective, eps):
        verdict = "not stationary"
    elif ev.min() < -zero:
        verdict = "not a local minimum"
    elif ev.min() > zero and margin > _ZERO_EPS * eps and code_margin > 0:
        verdict = "strict local minimum"
    else:
        verdict = "inconclusive"
    return LocalTest(
        eigenvalues=eigenvalues,
        min_eigenvalue=eigenvalues[0],
        gradient_norm=jnp.asarray(grad_norm, X.dtype),
        complementarity_margin=jnp.asarray(margin, X.dtype),
        code_margin=jnp.asarray(code_margin, X.dtype),
        atoms=tuple(int(a) for a in atoms),
        verdict=verdict,
    )
