"""THEORY 4.1b (exact local test) and 4.4 (absorption) against closed forms and brute force."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import sparsedict as sd
from sparsedict.optimality import absorption, local_test, noiseless_codes
from sparsedict.optimality._local_test import profiled_objective, tangent_bases


def two_clusters(R, phi):
    """THEORY 4.1: two points at half-angle phi and radius R, one atom on the bisector."""
    X = R * np.array([[np.cos(phi), np.sin(phi), 0.0], [np.cos(phi), -np.sin(phi), 0.0]])
    return X, np.array([[1.0, 0.0, 0.0]])


@pytest.mark.parametrize("R, phi, lam", [(2.0, 0.3, 0.5), (2.0, 0.7, 0.5), (1.5, 0.6, 1.0)])
def test_local_test_matches_the_closed_form_of_the_bisector_atom(R, phi, lam):
    X, D = two_clusters(R, phi)
    codes = np.full((2, 1), R * np.cos(phi) - lam)  # d . x - lam on both points
    result = local_test(X, D, codes, lam)
    # f(theta) = -1/2 mean_i (d(theta) . x_i - lam)^2 + const, differentiated by hand:
    in_plane = R**2 * np.cos(2 * phi) - lam * R * np.cos(phi)
    out_of_plane = R * np.cos(phi) * (R * np.cos(phi) - lam)
    np.testing.assert_allclose(
        np.sort(result.eigenvalues), np.sort([in_plane, out_of_plane]), rtol=1e-10, atol=1e-12
    )
    # THEORY 4.1: unstable iff R cos(2 phi) < lam cos(phi)
    unstable = R * np.cos(2 * phi) < lam * np.cos(phi)
    assert result.verdict == ("not a local minimum" if unstable else "strict local minimum")
    # the block test (a different code path) agrees for one atom
    report = sd.optimality.residuals(X, D, codes, lam)
    assert bool(report.atoms.block_ratio[0] > 1) == unstable


def _objective(X, D, lam):
    codes = sd.sparse_code(X, D, lam, tol=1e-14, max_steps=5000).codes
    r = X - codes @ D
    return float(np.mean(0.5 * np.sum(r**2, -1) + lam * np.sum(codes, -1))), np.asarray(codes)


def test_local_test_hessian_matches_finite_differences_of_the_resolved_objective():
    rng = np.random.default_rng(3)
    n, d, k, lam = 60, 5, 4, 0.2
    D = rng.standard_normal((k, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    X = np.abs(rng.standard_normal((n, k))) @ D + 0.1 * rng.standard_normal((n, d))
    F0, codes = _objective(X, D, lam)
    result = local_test(X, D, codes, lam)
    assert result.atoms == tuple(range(k))
    from sparsedict.optimality._local_test import _hessian, _supports

    grad, hess = _hessian(
        jnp.asarray(D),
        jnp.asarray(X),
        jnp.asarray(_supports(codes)),
        jnp.asarray(lam),
        jnp.ones(n),
        jnp.arange(k),
    )
    U = np.asarray(tangent_bases(jnp.asarray(D)))
    eps = 1e-4
    for v in rng.standard_normal((3, k * (d - 1))):
        v /= np.linalg.norm(v)

        def moved(s, v=v):
            Dm = D + s * np.einsum("kde,ke->kd", U, v.reshape(k, d - 1))
            return Dm / np.linalg.norm(Dm, axis=1, keepdims=True)

        # independent reference: the codes re-solved from scratch at each moved dictionary
        Fp, Fm = _objective(X, moved(eps), lam)[0], _objective(X, moved(-eps), lam)[0]
        np.testing.assert_allclose((Fp - Fm) / (2 * eps), float(grad @ v), atol=1e-7)
        np.testing.assert_allclose((Fp - 2 * F0 + Fm) / eps**2, float(v @ hess @ v), rtol=1e-4)
    # the profiled objective is the objective at the optimal codes
    support = jnp.asarray(_supports(codes))
    value = profiled_objective(jnp.asarray(D), jnp.asarray(X), support, lam, jnp.ones(n))
    np.testing.assert_allclose(float(value), F0, rtol=1e-12)


P, C = np.eye(3)[0], np.eye(3)[1]
HIERARCHY_X = np.array([2 * P] * 7 + [2 * P + 1.5 * C] * 3)  # THEORY 7: 70% / 30%
ABSORBED = np.array([P, (2 * P + 1.5 * C) / 2.5])


def test_local_test_on_the_hierarchy_example():
    lam = 0.3
    generating = np.array([P, C])
    codes = np.asarray(sd.sparse_code(HIERARCHY_X, generating, lam, tol=1e-14).codes)
    assert local_test(HIERARCHY_X, generating, codes, lam).verdict == "not stationary"
    codes = np.asarray(sd.sparse_code(HIERARCHY_X, ABSORBED, lam, tol=1e-14).codes)
    result = local_test(HIERARCHY_X, ABSORBED, codes, lam)
    assert result.verdict == "strict local minimum"
    # margins by hand: residual 0.3 p on x = 2p, and the child's correlation with it is 0.3 * 0.8
    np.testing.assert_allclose(float(result.complementarity_margin), 1 - 0.8, rtol=1e-10)


def test_local_test_refuses_bad_input():
    X, D = two_clusters(2.0, 0.3)
    codes = np.full((2, 1), 1.0)
    with pytest.raises(ValueError, match="max_coordinates"):
        local_test(X, D, codes, 0.5, max_coordinates=1)
    with pytest.raises(ValueError, match="atoms must be indices"):
        local_test(X, D, codes, 0.5, atoms=[3])
    with pytest.raises(ValueError, match="no atom to test"):
        local_test(X, D, np.zeros((2, 1)), 0.5)


def test_absorption_on_the_hierarchy_example():
    generating = np.array([P, C])
    codes = np.array([[2.0, 0.0]] * 7 + [[2.0, 1.5]] * 3)
    result = absorption(HIERARCHY_X, generating, codes)
    # the child (1) fires only with the parent (0): slope -(1 - d_c . d_p) = -1 per unit mass
    np.testing.assert_allclose(result.slope[1, 0], -1.0, atol=1e-9)
    assert result.slope[0, 1] == np.inf  # the parent alone cannot lean toward the child
    assert result.absorbable.tolist() == [True, False]
    assert [(j, p) for j, p, _ in result.pairs] == [(1, 0)]
    # the absorbed dictionary (the optimum, THEORY 7) has nothing left to absorb
    assert not absorption(HIERARCHY_X, ABSORBED).absorbable.any()


def _noiseless_value(X, D):
    total = 0.0
    for x in X:
        out = scipy.optimize.linprog(np.ones(len(D)), A_eq=D.T, b_eq=x, bounds=(0, None))
        if out.status != 0:
            return np.inf
        total += out.fun
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_absorption_slopes_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    d, k, n = 3, 5, 12
    D = rng.standard_normal((k, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    A = np.zeros((n, k))
    for i in range(n):  # one or two atoms per signal; atom 1 only ever fires with atom 0
        first = rng.integers(0, k)
        A[i, first] = rng.uniform(0.5, 2.0)
        if first == 0 and rng.random() < 0.7:
            A[i, 1] = rng.uniform(0.5, 2.0)
    X = A @ D
    codes = noiseless_codes(X, D)
    result = absorption(X, D, codes)
    V0 = _noiseless_value(X, D)
    mass = codes.sum(axis=0)
    eps = 1e-5  # HiGHS solves to ~1e-9: smaller steps drown the difference in its tolerance
    checked = 0
    for j, p in zip(*np.nonzero(np.isfinite(result.slope)), strict=True):
        t = D[p] - (D[j] @ D[p]) * D[j]
        Dm = D.copy()
        Dm[j] = (D[j] + eps * t) / np.linalg.norm(D[j] + eps * t)
        fd = (_noiseless_value(X, Dm) - V0) / eps / mass[j]
        # the program gives the derivative for unique optimal codes (generic random data)
        np.testing.assert_allclose(result.slope[j, p], fd, rtol=1e-3, atol=1e-3)
        checked += 1
    assert checked > 0


def test_absorption_refuses_bad_input():
    with pytest.raises(ValueError, match="norm is not 1"):
        absorption(HIERARCHY_X, 2 * ABSORBED)
    with pytest.raises(ValueError, match="misfit"):
        absorption(HIERARCHY_X, ABSORBED, np.ones((10, 2)))
    with pytest.raises(ValueError, match="not a nonnegative combination"):
        noiseless_codes(-HIERARCHY_X, ABSORBED)
