"""Optimality residuals (THEORY sections 1-4) against closed forms, finite differences and the
worked examples of section 7."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsedict
from sparsedict import optimality, wide_limit

# Residuals at an exact stationary point (float64, closed forms or converged codes).
STATIONARY = 1e-8
# Closed-form vs autodiff agreement (same float64 arithmetic, different order).
CLOSED_FORM = 1e-12
# Finite-difference step and tolerance (central differences, O(h^2) truncation).
FD_STEP = 1e-6
FD_TOL = 1e-7


def unit_rows(M):
    return M / np.linalg.norm(M, axis=1, keepdims=True)


def objective(X, D, A, lam, w):
    """Independent numpy F(D, A)."""
    R = X - A @ D
    return np.sum(w * (0.5 * np.sum(R * R, 1) + lam * A.sum(1))) / w.sum()


def test_objective_equals_numpy_with_and_without_weights():
    rng = np.random.default_rng(21)
    X = rng.standard_normal((9, 4))
    D = 1.3 * unit_rows(rng.standard_normal((5, 4)))  # any atom norms
    A = np.abs(rng.standard_normal((9, 5)))
    w, lam = rng.uniform(0.2, 2.0, 9), 0.4
    got = optimality.objective(X, D, A, lam, weights=w)
    np.testing.assert_allclose(got, objective(X, D, A, lam, w), rtol=CLOSED_FORM)
    got = optimality.objective(X, D, A, lam)
    np.testing.assert_allclose(got, objective(X, D, A, lam, np.ones(9)), rtol=CLOSED_FORM)
    with pytest.raises(TypeError):  # weights are keyword-only
        optimality.objective(X, D, A, lam, w)


def clustered_data(rng, n_per=10, d=4, k=3, spread=0.05, radius=2.0):
    centres = unit_rows(rng.standard_normal((k, d)))
    X = np.concatenate([radius * (c + spread * rng.standard_normal((n_per, d))) for c in centres])
    return X, centres


def alternating_minimisation(X, D, lam, w, steps=400):
    """Exact codes, then block-coordinate atom updates d_k <- normalise(sum_i w_i a_ik e_ik)."""
    for _ in range(steps):
        A = np.asarray(sparsedict.sparse_code(X, D, lam, tol=1e-14).codes)
        D_old = D.copy()
        R = X - A @ D
        for k in range(D.shape[0]):
            E = R + np.outer(A[:, k], D[k])
            q = (w * A[:, k]) @ E
            if np.linalg.norm(q) > 0:
                D[k] = q / np.linalg.norm(q)
            R = E - np.outer(A[:, k], D[k])
        if np.max(np.abs(D - D_old)) < 1e-15:
            break
    return D, np.asarray(sparsedict.sparse_code(X, D, lam, tol=1e-14).codes)


def assert_stationary(report, tol=STATIONARY):
    a, s = report.atoms, report.signals
    assert np.max(np.asarray(s.kkt)) < tol
    assert np.max(np.asarray(s.gap)) < tol
    assert np.max(np.asarray(a.constraint)) < tol
    assert np.max(np.asarray(a.gradient_norm)) < tol
    assert np.max(1 - np.asarray(a.alignment)) < tol
    assert not np.any(np.asarray(a.would_shrink))


def test_residuals_vanish_at_wide_limit_with_weights_and_duplicates():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((12, 5))
    X = np.concatenate([X, 3.0 * X[:2], 0.01 * X[2:3]])  # positive multiples and a tiny point
    w = rng.uniform(0.1, 2.0, len(X))
    lam = 0.7
    sol = wide_limit.solution(X, lam, weights=w)
    # duplicated directions share one atom
    assert int(np.asarray(sol.atom_mask).sum()) == int(np.sum(np.linalg.norm(X[:12], axis=1) > lam))
    report = eqx.filter_jit(optimality.residuals)(
        X, sol.dictionary, sol.codes, lam, weights=w, atom_mask=sol.atom_mask
    )
    assert_stationary(report)
    assert abs(float(report.objective) - float(wide_limit.bound(X, lam, weights=w))) < CLOSED_FORM
    assert float(report.free_atom.ratio) <= 1 + CLOSED_FORM  # polar certificate: global optimum
    masked = np.asarray(report.atoms.masked)
    assert masked.any() and np.all(np.asarray(report.atoms.mass)[masked] == 0)
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(report))


def test_residuals_vanish_after_alternating_minimisation_and_not_when_perturbed():
    rng = np.random.default_rng(2)
    X, centres = clustered_data(rng)
    w = rng.uniform(0.5, 1.5, len(X))
    lam = 0.3
    D0 = unit_rows(centres + 0.3 * rng.standard_normal(centres.shape))
    D, A = alternating_minimisation(X, D0, lam, w)
    report = optimality.residuals(X, D, A, lam, weights=w)
    assert_stationary(report)
    # nu_k = lam m_k (THEORY 2.2) and the certify entry point agrees
    np.testing.assert_allclose(report.atoms.multiplier, lam * report.atoms.mass, rtol=1e-8)
    assert float(optimality.certify(X, D, lam, weights=w).atoms.constraint.max()) < STATIONARY
    # perturbed and random dictionaries are clearly not stationary
    D_pert = unit_rows(D + 1e-2 * rng.standard_normal(D.shape))
    perturbed = optimality.certify(X, D_pert, lam, weights=w).atoms.relative_constraint
    assert float(perturbed.max()) > 1e-3
    D_rand = unit_rows(rng.standard_normal(D.shape))
    random = optimality.certify(X, D_rand, lam, weights=w).atoms.relative_constraint
    assert float(random.max()) > 1e-2


def test_gradient_residuals_equal_closed_forms():
    rng = np.random.default_rng(3)
    n, d, k, lam = 30, 4, 3, 0.4  # shapes shared with other tests: one compilation
    X = rng.standard_normal((n, d))
    D = unit_rows(rng.standard_normal((k, d)))
    A = (rng.random((n, k)) < 0.5) * rng.uniform(0, 1, (n, k))
    A[:, 2] = 0  # one dead atom
    w = rng.uniform(0.2, 2.0, n)
    report = optimality.residuals(X, D, A, lam, weights=w)
    a = report.atoms
    R = X - A @ D
    S = (w[:, None] * A).T @ R  # s_k
    W, m = w.sum(), w @ A
    np.testing.assert_allclose(a.gradient, -S / W, atol=CLOSED_FORM)
    riem = np.stack([(np.eye(d) - np.outer(D[j], D[j])) @ (-S[j] / W) for j in range(k)])
    np.testing.assert_allclose(a.riemannian_gradient, riem, atol=CLOSED_FORM)
    np.testing.assert_allclose(a.multiplier, np.sum(D * S, 1), atol=CLOSED_FORM)
    used = m > 0
    constraint = np.linalg.norm(S[used] / m[used, None] - lam * D[used], axis=1)
    np.testing.assert_allclose(np.asarray(a.constraint)[used], constraint, atol=CLOSED_FORM)
    q = np.stack([(w * A[:, j]) @ (R + np.outer(A[:, j], D[j])) for j in range(k)])
    cos = np.sum(q[used] * D[used], 1) / np.linalg.norm(q[used], axis=1)
    np.testing.assert_allclose(np.asarray(a.alignment)[used], cos, atol=CLOSED_FORM)
    assert bool(a.dead[2]) and float(a.constraint[2]) == 0 and float(a.block_ratio[2]) == 0
    np.testing.assert_allclose(report.objective, objective(X, D, A, lam, w), rtol=1e-13)
    # block ratio (THEORY 4.1) against an explicit numpy eigenvalue
    for j in np.flatnonzero(used):
        P = np.eye(d) - np.outer(D[j], D[j])
        E = R + np.outer(A[:, j], D[j])
        act = (A[:, j] > 0) | (R @ D[j] >= lam)
        C = (E[act] * w[act, None]).T @ E[act]
        mu = np.sum(w * A[:, j] * (A[:, j] + lam))
        expected = np.linalg.eigvalsh(P @ C @ P)[-1] / mu
        np.testing.assert_allclose(a.block_ratio[j], expected, rtol=1e-10)


def test_free_atom_slope_equals_finite_difference():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((12, 3))
    D = unit_rows(rng.standard_normal((2, 3)))
    w = rng.uniform(0.5, 2.0, 12)
    lam = 0.5
    A = np.asarray(sparsedict.sparse_code(X, D, lam, tol=1e-14).codes)
    fa = optimality.residuals(X, D, A, lam, weights=w).free_atom
    R = X - A @ D
    j = int(np.argmax(np.linalg.norm(R, axis=1)))
    assert int(fa.signal) == j
    np.testing.assert_allclose(fa.ratio, np.linalg.norm(R[j]) / lam, rtol=1e-13)
    D_new = np.concatenate([D, np.asarray(fa.direction)[None]])

    def F(t):
        A_new = np.concatenate([A, np.zeros((12, 1))], 1)
        A_new[j, 2] = t
        return objective(X, D_new, A_new, lam, w)

    fd = (F(FD_STEP) - F(0.0)) / FD_STEP  # one-sided: t >= 0
    np.testing.assert_allclose(fa.slope, fd, atol=FD_TOL * 10)
    np.testing.assert_allclose(fa.slope, w[j] / w.sum() * (lam - np.linalg.norm(R[j])), rtol=1e-12)
    assert float(fa.slope) < 0


def test_splitting_slope_equals_finite_difference():
    rng = np.random.default_rng(5)
    # two clusters around directions symmetric about the atom
    phi = 0.6
    centres = np.array([[np.cos(phi), np.sin(phi), 0.0], [np.cos(phi), -np.sin(phi), 0.0]])
    X = np.concatenate([2 * (c + 0.1 * rng.standard_normal((6, 3))) for c in centres])
    D = np.array([[1.0, 0.0, 0.0], unit_rows(rng.standard_normal((1, 3)))[0]])
    lam = 0.3
    A = np.asarray(sparsedict.sparse_code(X, D, lam, tol=1e-14).codes)
    w = np.ones(len(X))
    a = optimality.residuals(X, D, A, lam).atoms
    u = np.asarray(a.split_direction[0])
    assert abs(u @ D[0]) < 1e-12
    R = X - A @ D
    side = np.sign(R @ u)

    def F(eps):
        D_split = np.concatenate([D, [D[0] - eps * u]])
        D_split[0] = D[0] + eps * u
        A_split = np.concatenate([A, np.zeros((len(X), 1))], 1)
        A_split[side < 0, 2], A_split[side < 0, 0] = A[side < 0, 0], 0.0
        return objective(X, D_split, A_split, lam, w)

    fd = (F(FD_STEP) - F(0.0)) / FD_STEP
    np.testing.assert_allclose(-a.split_strength[0] / len(X), fd, atol=1e-5)
    # L1-PCA maximum against a brute-force search over the tangent circle
    t = np.linspace(0, np.pi, 20001)
    basis = np.linalg.svd(np.eye(3) - np.outer(D[0], D[0]))[0][:, :2]
    U = np.cos(t)[:, None] * basis[:, 0] + np.sin(t)[:, None] * basis[:, 1]
    brute = np.max(np.abs(R @ U.T).T @ A[:, 0])
    np.testing.assert_allclose(a.split_strength[0], brute, rtol=1e-6)


@pytest.mark.parametrize("lam", [0.0001, 0.5, 1.0, 1.5])
def test_block_ratio_two_clusters_crosses_one_at_predicted_angle(lam):
    """Two points at half-angle phi, radius R, atom on the bisector: unstable iff
    R cos(2 phi) < lam cos(phi) (THEORY 4.1); here ratio = R sin^2 / (cos (R cos - lam))."""
    R_ = 3.0
    for phi in np.linspace(0.1, 1.0, 7):
        X = R_ * np.array([[np.cos(phi), np.sin(phi)], [np.cos(phi), -np.sin(phi)]])
        D = np.array([[1.0, 0.0]])
        A = np.maximum(X @ D.T - lam, 0.0)
        ratio = float(optimality.residuals(X, D, A, lam).atoms.block_ratio[0])
        expected = R_ * np.sin(phi) ** 2 / (np.cos(phi) * (R_ * np.cos(phi) - lam))
        np.testing.assert_allclose(ratio, expected, rtol=1e-12)
        assert (ratio > 1) == (R_ * np.cos(2 * phi) < lam * np.cos(phi))


def hierarchy():
    p, c = np.eye(3)[0], np.eye(3)[1]
    X = np.stack([2 * p, 2 * p + 1.5 * c])
    return X, np.array([0.7, 0.3]), 0.3, p, c


def test_hierarchy_example_generating_and_absorbed():
    X, w, lam, p, c = hierarchy()
    gen = optimality.certify(X, np.stack([p, c]), lam, weights=w)
    np.testing.assert_allclose(gen.atoms.constraint, [0.09, 0.30], atol=CLOSED_FORM)
    np.testing.assert_allclose(gen.objective, 0.6765, atol=CLOSED_FORM)
    assert float(gen.signals.gap.max()) < STATIONARY
    absorbed = optimality.certify(X, np.stack([p, (2 * p + 1.5 * c) / 2.5]), lam, weights=w)
    np.testing.assert_allclose(absorbed.objective, 0.6, atol=CLOSED_FORM)
    np.testing.assert_allclose(wide_limit.bound(X, lam, weights=w), 0.6, atol=CLOSED_FORM)
    assert_stationary(absorbed)
    assert float(absorbed.free_atom.ratio) <= 1 + CLOSED_FORM
    # learning from the generating dictionary lands on the absorbed one
    D, A = alternating_minimisation(X, np.stack([p, c]), lam, w, steps=300)
    np.testing.assert_allclose(objective(X, D, A, lam, w), 0.6, atol=1e-9)
    assert A[1, 0] < 1e-9  # the parent does not fire where the child does


def test_report_table_masks_and_vmap():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((8, 3))
    D = np.concatenate([unit_rows(rng.standard_normal((3, 3))), [[5.0, 0.0, 0.0]]])
    mask = np.array([True, True, True, False])  # masked atom is not unit norm: allowed
    report = optimality.certify(X, D, 0.3, atom_mask=mask)
    text = str(report)
    worst = int(np.argmax(np.asarray(report.atoms.relative_constraint)))
    assert text.splitlines()[1].split()[0] == str(worst)
    assert "F = " in text.splitlines()[-1] and "1 masked" in text
    assert bool(report.atoms.masked[3]) and float(jnp.abs(report.atoms.gradient[3]).max()) == 0
    A = sparsedict.sparse_code(X, D, 0.3, atom_mask=mask).codes

    @jax.vmap
    def constraint(lam):
        return optimality.residuals(X, D, A, lam, atom_mask=mask).atoms.constraint

    batched = constraint(jnp.array([0.3, 0.6]))
    np.testing.assert_allclose(batched[0], report.atoms.constraint, atol=1e-14)
    single = optimality.residuals(X, D, A, jnp.asarray(0.6), atom_mask=mask).atoms.constraint
    np.testing.assert_allclose(batched[1], single, atol=1e-14)


def test_bad_inputs_name_the_argument():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((12, 3))
    D = unit_rows(rng.standard_normal((2, 3)))
    A = np.abs(rng.standard_normal((12, 2)))
    with pytest.raises(Exception, match="codes must be nonnegative"):
        optimality.residuals(X, D, -A, 0.3)
    with pytest.raises(ValueError, match="codes must have shape"):
        optimality.residuals(X, D, A[:, :1], 0.3)
    with pytest.raises(ValueError, match="D has 2 features"):
        optimality.residuals(X, D[:, :2], A, 0.3)
    with pytest.raises(Exception, match="normalise"):
        optimality.residuals(X, 2 * D, A, 0.3)
    with pytest.raises(Exception, match="lam must be > 0"):
        optimality.residuals(X, D, A, 0.0)
    with pytest.raises(ValueError, match="weights"):
        optimality.residuals(X, D, A, 0.3, weights=np.ones(11))


def test_exchange_finds_a_better_dictionary_of_the_same_width():
    rng = np.random.default_rng(8)
    # a small cluster with its own atom, and two big clusters sharing one atom between them
    small = 1.0 * (np.array([0, 0, 1.0]) + 0.02 * rng.standard_normal((2, 3)))
    phi = 0.7
    big = [
        2.0 * (np.array([np.cos(phi), s * np.sin(phi), 0]) + 0.02 * rng.standard_normal((8, 3)))
        for s in (1, -1)
    ]
    X = np.concatenate([small] + big)
    lam = 0.3
    D = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    result = optimality.exchange(X, D, lam, refine_steps=10)
    assert result.violated and result.split_atom == 1 and result.removed_atom == 0
    assert float(result.swap_objective) < float(result.objective) - 0.05
    np.testing.assert_allclose(np.linalg.norm(result.swap_dictionary, axis=1), 1.0, atol=1e-12)
    assert result.swap_dictionary.shape == D.shape
