"""Derivatives of sparse coding: implicit codes, envelope values, gaps, unrolled FISTA (issue 3).

References are float64 central finite differences of the solver itself, closed forms (envelope
theorem, a deduplicated dictionary) and the unrolled iteration at convergence.
"""

import pathlib
import re
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from problems import unit_rows

import sparsedict as sd

# Central differences with step 1e-6 in float64: truncation ~1e-12, rounding ~1e-10 relative.
FD_STEP = 1e-6
FD_RTOL = 1e-6
# Two exact derivatives computed differently (forward vs reverse, jit vs not): rounding only.
EXACT_RTOL = 1e-10
# Distance of every coefficient / correlation from a support change, so FD steps never cross one.
MARGIN = 1e-3
TOL = 1e-14  # relative gap asked of the solver: the codes are exact to rounding


@pytest.fixture
def rng(request):
    # crc32, not hash(): Python salts str hashes per process, so a failure could not be rerun
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


def codes(X, D, lam):
    return sd.sparse_code(X, D, lam, tol=TOL).codes


def fresh_problem(rng, n=3, d=10, k=6):
    """A random problem whose support is stable: coefficients and slacks at least MARGIN."""
    for _ in range(100):
        D = unit_rows(rng.standard_normal((k, d)))
        X = rng.standard_normal((n, d))
        lam = rng.uniform(0.2, 0.6, n)
        A = np.asarray(codes(X, D, lam))
        slack = lam[:, None] - (X - A @ D) @ D.T
        active = A > 0
        if active.sum(1).min() >= 1 and np.where(active, A, slack).min() > MARGIN:
            return X, D, lam
    raise RuntimeError("no problem with a stable support found")


def fd_grad(f, *args):
    """Central differences of scalar f(*args) in every coordinate of every argument, in one vmap."""
    flat, unravel = ravel_pytree(args)
    E = FD_STEP * jnp.eye(flat.size, dtype=flat.dtype)
    value = jax.jit(jax.vmap(lambda e: f(*unravel(flat + e))))
    return unravel((value(E) - value(-E)) / (2 * FD_STEP))


def assert_close(actual, expected, rtol):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert np.all(np.isfinite(actual))
    err = np.linalg.norm(actual - expected)
    assert err <= rtol * np.linalg.norm(expected), (err, np.linalg.norm(expected))


@pytest.mark.parametrize("target", ["codes", "value"])
def test_grad_matches_finite_differences(rng, target):
    X, D, lam = fresh_problem(rng)
    W = jnp.asarray(rng.standard_normal((X.shape[0], D.shape[0])))
    if target == "codes":

        def f(X, D, lam):  # a generic smooth scalar function of the codes
            A = codes(X, D, lam)
            return jnp.sum(W * A) + jnp.sum(A**2)
    else:

        def f(X, D, lam):
            return jnp.sum(sd.lasso_value(X, D, lam, tol=TOL))

    X, D, lam = map(jnp.asarray, (X, D, lam))
    grads = jax.grad(f, argnums=(0, 1, 2))(X, D, lam)
    for grad, fd in zip(grads, fd_grad(f, X, D, lam), strict=False):
        assert_close(grad, fd, FD_RTOL)


def test_value_gradient_is_envelope_formula(rng):
    X, D, lam = map(jnp.asarray, fresh_problem(rng))
    gX, gD, glam = jax.grad(lambda *a: jnp.sum(sd.lasso_value(*a, tol=TOL)), argnums=(0, 1, 2))(
        X, D, lam
    )
    A = codes(X, D, lam)
    R = X - A @ D
    assert_close(gX, R, EXACT_RTOL)
    assert_close(gD, -A.T @ R, EXACT_RTOL)
    assert_close(glam, A.sum(1), EXACT_RTOL)

    # Second derivative in lam (through the implicit codes): -1^T G_SS^{-1} 1 per signal.
    def value(x, lam_i):
        return sd.lasso_value(x, D, lam_i, tol=TOL)

    hess = jax.vmap(jax.grad(jax.grad(value, argnums=1), argnums=1))
    expected = []
    for a in np.asarray(A):
        S = a > 0
        D_S = np.asarray(D)[S]
        expected.append(-np.linalg.solve(D_S @ D_S.T, np.ones(S.sum())).sum())
    assert_close(hess(X, lam), np.array(expected), EXACT_RTOL)


def test_gap_of_fixed_codes_is_differentiable(rng):
    X, D, lam = map(jnp.asarray, fresh_problem(rng))
    A = jnp.maximum(codes(X, D, lam) + 0.05 * jnp.asarray(rng.standard_normal((3, 6))), 0.0)

    def gap(X, D, A):
        return jnp.sum(sd.duality_gap(X, D, A, lam))

    grads = jax.grad(gap, argnums=(0, 1))(X, D, A)
    for grad, fd in zip(grads, fd_grad(lambda X, D: gap(X, D, A), X, D), strict=False):
        assert_close(grad, fd, FD_RTOL)
    # A zero signal with zero codes (zero residual norm) still has a finite gradient.
    grads = jax.grad(gap, argnums=(0, 1, 2))(X.at[0].set(0.0), D, A.at[0].set(0.0))
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_jacfwd_equals_jacrev_and_jit(rng):
    X, D, lam = map(jnp.asarray, fresh_problem(rng))
    fwd = jax.jacfwd(codes, argnums=(0, 1, 2))(X, D, lam)
    rev = jax.jacrev(codes, argnums=(0, 1, 2))(X, D, lam)
    jit_rev = jax.jit(jax.jacrev(codes, argnums=(0, 1, 2)))(X, D, lam)
    for f, r, j in zip(fwd, rev, jit_rev, strict=False):
        assert_close(f, r, EXACT_RTOL)
        assert_close(j, r, EXACT_RTOL)


def test_vmap_over_signals_and_over_lam(rng):
    X, D, lam = map(jnp.asarray, fresh_problem(rng))

    def f(x, D, lam):  # one signal
        return jnp.sum(codes(x, D, lam) ** 2)

    batched = jax.grad(lambda X, D, lam: jnp.sum(codes(X, D, lam) ** 2), argnums=(0, 1, 2))
    gX, gD, glam = batched(X, D, lam)
    per_signal = jax.vmap(jax.grad(f, argnums=(0, 1, 2)), in_axes=(0, None, 0))(X, D, lam)
    assert_close(per_signal[0], gX, EXACT_RTOL)
    assert_close(per_signal[1].sum(0), gD, EXACT_RTOL)
    assert_close(per_signal[2], glam, EXACT_RTOL)

    # vmap over a grid of scalar lam, shared X and D.
    lams = jnp.asarray([0.25, 0.3, 0.35])

    def loss(lam_i, D):
        return jnp.sum(codes(X, D, lam_i) ** 2)

    grid = jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=(0, None))(lams, D)
    for i, lam_i in enumerate(lams):
        one = jax.grad(loss, argnums=(0, 1))(lam_i, D)
        assert_close(grid[0][i], one[0], EXACT_RTOL)
        assert_close(grid[1][i], one[1], EXACT_RTOL)


def test_duplicated_atoms_give_finite_min_norm_gradient(rng):
    d, k = 8, 4
    D = unit_rows(rng.standard_normal((k, d)))
    D_dup = np.concatenate([D[:1], D])  # atom 0 twice
    X = rng.uniform(0.5, 1.5, (2, k)) @ D + 0.01 * rng.standard_normal((2, d))
    X, D, D_dup = map(jnp.asarray, (X, D, D_dup))
    lam = jnp.asarray(0.05)

    def f(X, D, w):  # w = (1, 1, 0, ...): the summed coefficient of the twins, which is unique
        return jnp.sum(codes(X, D, lam) @ w)

    twins = jnp.zeros(k + 1).at[:2].set(1.0)
    gX, gD = jax.grad(f, argnums=(0, 1))(X, D_dup, twins)
    assert np.all(np.isfinite(gX)) and np.all(np.isfinite(gD))
    assert_close(gX, jax.grad(f)(X, D, twins[1:]), FD_RTOL)
    # Minimum-norm tangent: the twins share it equally.
    gX, gD = jax.grad(f, argnums=(0, 1))(X, D_dup, twins.at[1].set(-1.0))
    assert np.abs(gX).max() < FD_RTOL and np.abs(gD).max() < FD_RTOL


def test_boundary_coefficients_give_finite_gradient(rng):
    D = jnp.asarray(unit_rows(rng.standard_normal((5, 7))))
    X = jnp.asarray(rng.standard_normal((2, 7)))
    lam = sd.lam_max(X, D)  # every code zero, the top atom exactly at the boundary
    J = jax.jacrev(codes, argnums=(0, 1, 2))(X, D, lam)
    for j in J:  # documented: boundary coefficients count as inactive, derivative zero
        assert np.all(np.isfinite(j)) and np.all(np.asarray(j) == 0)
    # NNLS (lam = 0): finite too.
    g = jax.grad(lambda D: jnp.sum(codes(X, D, 0.0) ** 2))(D)
    assert np.all(np.isfinite(g))


def test_unrolled_is_exact_for_its_iteration_and_approaches_implicit(rng):
    X, D, lam = map(jnp.asarray, fresh_problem(rng))

    def f(X, D, n_steps):
        return jnp.sum(sd.unrolled_sparse_code(X, D, lam, max_steps=n_steps).codes ** 2)

    # The derivative of 20 steps is exact for that map (in X: the step size 1/L depends on D only).
    g = jax.grad(f)(X, D, 20)
    assert_close(g, fd_grad(lambda p: f(p, D, 20), X)[0], FD_RTOL)
    # Converged iterates: the unrolled derivative approaches the implicit one.
    g_long = jax.grad(f, argnums=(0, 1))(X, D, 2000)
    g_exact = jax.grad(lambda X, D: jnp.sum(codes(X, D, lam) ** 2), argnums=(0, 1))(X, D)
    assert_close(g_long[0], g_exact[0], FD_RTOL)
    assert_close(g_long[1], g_exact[1], FD_RTOL)


def test_task_driven_dictionary_learning_decreases_loss(rng):
    """The docs example: learn D, lam and a readout so that the codes predict a target."""
    text = (pathlib.Path(__file__).parents[1] / "docs" / "differentiation.md").read_text()
    (snippet,) = re.findall(r"```python\n(.*?)```", text, re.S)
    assert sum(1 for line in snippet.splitlines() if line.strip()) < 30  # lines of user code
    namespace = {}
    exec(snippet, namespace)
    losses = namespace["losses"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.2 * losses[0]


@pytest.mark.parametrize("lam_scale", [0.7, 0.02], ids=["support_le_8", "support_gt_8"])
def test_support_sized_rule_equals_dense_rule(rng, lam_scale):
    # The tangent solved in a buffer sized to the largest support (8 slots, or 16/32 here) equals
    # the full k x k rule (numpy float64, pseudo-inverse of G masked to the support).
    n, d, k = 5, 30, 40
    D = unit_rows(rng.standard_normal((k, d)))
    X = rng.standard_normal((n, d))
    lam = lam_scale * np.abs(X @ D.T).max(1)
    A = np.asarray(codes(X, D, lam))
    support = A > 0
    assert (support.sum(1).max() > 8) == (lam_scale < 0.1)
    dX, dD, dlam = (
        rng.standard_normal(X.shape),
        rng.standard_normal(D.shape),
        rng.standard_normal(n),
    )
    _, tangent = jax.jvp(
        lambda X, D, lam: sd.implicit_codes(jnp.asarray(A), X, D, lam), (X, D, lam), (dX, dD, dlam)
    )
    R = X - A @ D
    rhs = R @ dD.T + (dX - A @ dD) @ D.T - dlam[:, None]
    expected = np.zeros_like(A)
    for i in range(n):
        S = support[i]
        M = np.where(S[:, None] & S[None, :], D @ D.T, 0.0) + np.diag(~S * 1.0)
        expected[i] = np.where(S, np.linalg.pinv(M, hermitian=True) @ np.where(S, rhs[i], 0.0), 0)
    assert_close(tangent, expected, EXACT_RTOL)
