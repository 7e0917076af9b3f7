"""The wide limit (THEORY sections 5-6): closed form, Huber bound, convex candidate problem and the
convex infinite-width ReLU SAE, against independent numpy references."""

import equinox as eqx
import numpy as np
import pytest

import sparsedict
from sparsedict import optimality, wide_limit

CLOSED_FORM = 1e-12
# Relative duality gap asked of the convex solvers, and the matching agreement in objective.
CONVEX_TOL = 1e-9


def unit_rows(M):
    return M / np.linalg.norm(M, axis=1, keepdims=True)


def huber_reference(X, lam, w):
    t = np.linalg.norm(X, axis=1)
    h = np.where(t <= lam, 0.5 * t**2, lam * t - 0.5 * lam**2)
    return np.sum(w * h) / w.sum()


def objective(X, D, A, lam, w):
    R = X - A @ D
    return np.sum(w * (0.5 * np.sum(R * R, 1) + lam * A.sum(1))) / w.sum()


def test_closed_form_solution_and_bound():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((9, 4))
    X = np.concatenate([X, 2.5 * X[:3], 0.05 * X[3:4]])  # duplicated directions, one small point
    w = rng.uniform(0.2, 2.0, len(X))
    lam = 0.8
    sol = eqx.filter_jit(wide_limit.solution)(X, lam, weights=w)
    norms = np.linalg.norm(X, axis=1)
    np.testing.assert_allclose(sol.value, huber_reference(X, lam, w), rtol=1e-13)
    np.testing.assert_allclose(wide_limit.bound(X, lam, weights=w), sol.value, rtol=1e-13)
    D, A = sol.compact()
    D, A = np.asarray(D), np.asarray(A)
    assert len(D) == np.sum(norms[:9] > lam)  # multiples share their original's atom
    np.testing.assert_allclose(np.linalg.norm(D, axis=1), 1.0, atol=CLOSED_FORM)
    np.testing.assert_allclose(objective(X, D, A, lam, w), huber_reference(X, lam, w), rtol=1e-12)
    np.testing.assert_allclose(A.sum(1), np.maximum(norms - lam, 0), atol=CLOSED_FORM)
    np.testing.assert_allclose(np.asarray(sol.residuals), X - A @ D, atol=CLOSED_FORM)
    # the codes are the exact lasso codes of the compact dictionary
    exact = sparsedict.sparse_code(X, D, lam, tol=1e-14).codes
    np.testing.assert_allclose(exact, A, atol=1e-9)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_random_dictionaries_never_beat_the_bound(k):
    rng = np.random.default_rng(12 + k)
    X = rng.standard_normal((20, 5))
    lam = 0.6
    bound = huber_reference(X, lam, np.ones(20))
    for _ in range(3):
        D = unit_rows(rng.standard_normal((k, 5)))
        gap = float(wide_limit.gap_to_bound(X, D, lam))
        assert gap > 0
        A = np.asarray(sparsedict.sparse_code(X, D, lam, tol=1e-14).codes)
        np.testing.assert_allclose(gap, objective(X, D, A, lam, np.ones(20)) - bound, atol=1e-12)


def test_learned_optimum_with_k_at_least_n_attains_the_bound():
    """Alternating minimisation from the data directions plus noise, with k = n atoms."""
    rng = np.random.default_rng(13)
    X = rng.standard_normal((6, 3)) * 2
    lam = 0.5
    D = unit_rows(X + 0.2 * rng.standard_normal(X.shape))
    for _ in range(200):
        D_old = D.copy()
        A = np.asarray(sparsedict.sparse_code(X, D, lam, tol=1e-14).codes)
        R = X - A @ D
        for j in range(len(D)):
            E = R + np.outer(A[:, j], D[j])
            q = A[:, j] @ E
            if np.linalg.norm(q) > 0:
                D[j] = q / np.linalg.norm(q)
            R = E - np.outer(A[:, j], D[j])
        if np.max(np.abs(D - D_old)) < 1e-15:
            break
    assert float(wide_limit.gap_to_bound(X, D, lam)) < 1e-9
    assert float(optimality.certify(X, D, lam).free_atom.ratio) <= 1 + 1e-9


def test_candidate_problem_at_zero_gam_recovers_the_wide_limit_with_an_honest_gap():
    rng = np.random.default_rng(14)
    X = rng.standard_normal((12, 4)) * 1.5
    w = rng.uniform(0.5, 2.0, 12)
    lam = 0.5
    sol = wide_limit.solve_candidate_problem(X, unit_rows(X), lam, 0.0, weights=w, tol=CONVEX_TOL)
    bound = huber_reference(X, lam, w)
    primal, dual = float(sol.primal), float(sol.dual)
    assert dual <= bound + 1e-12 <= primal + 2e-12  # certificate brackets the optimum
    assert primal - dual <= CONVEX_TOL * primal * 1.0001
    np.testing.assert_allclose(primal, bound, rtol=2 * CONVEX_TOL)
    recomputed = objective(X, unit_rows(X), np.asarray(sol.codes), lam, w)
    np.testing.assert_allclose(primal, recomputed, rtol=1e-12)
    assert np.all(np.asarray(sol.codes) >= 0)


def test_candidate_problem_gap_is_honest_and_gam_selects_fewer_atoms():
    rng = np.random.default_rng(15)
    centres = unit_rows(rng.standard_normal((3, 4)))
    X = np.concatenate([2 * (c + 0.15 * rng.standard_normal((8, 4))) for c in centres])
    C = unit_rows(X)
    lam = 0.3
    counts = []
    for gam in [0.0, 0.01, 0.05]:
        sol = wide_limit.solve_candidate_problem(X, C, lam, gam, tol=1e-8)
        assert float(sol.gap) >= -1e-12 and float(sol.gap) <= 1e-8 * float(sol.primal) * 1.0001
        # honesty: an independent, much longer run lands between the dual and the primal
        ref = wide_limit.solve_candidate_problem(X, C, lam, gam, tol=1e-12, max_steps=200000)
        assert float(sol.dual) <= float(ref.primal) + 1e-12
        assert float(ref.primal) <= float(sol.primal) + 1e-12
        # primal value recomputed independently
        A = np.asarray(sol.codes)
        expected = objective(X, C, A, lam, np.ones(len(X))) + gam * np.linalg.norm(A, axis=0).sum()
        np.testing.assert_allclose(sol.primal, expected, rtol=1e-12)
        counts.append(int(np.sum(np.linalg.norm(A, axis=0) > 1e-8)))
    assert counts[0] > counts[1] > counts[2] >= 3, counts


def test_convex_relu_sae_bounds_and_certificate():
    rng = np.random.default_rng(16)
    X = unit_rows(rng.standard_normal((15, 3))) * 2.0
    lam = 0.3
    encoders = unit_rows(rng.standard_normal((60, 3)))
    biases = rng.uniform(-1.0, 0.0, 60)
    sol = wide_limit.solve_relu_sae(X, lam, encoders, biases, tol=1e-8)
    bound = huber_reference(X, lam, np.ones(15))
    assert float(sol.gap) <= 1e-8 * float(sol.primal) * 1.0001
    assert float(sol.primal) >= bound  # convex SAE value >= dictionary optimum >= Huber bound
    # primal value recomputed independently from the decoder
    U, Phi = np.asarray(sol.decoder), np.maximum(0, X @ encoders.T + biases)
    R = X - Phi @ U
    expected = np.mean(0.5 * np.sum(R * R, 1) + lam * Phi @ np.linalg.norm(U, axis=1))
    np.testing.assert_allclose(sol.primal, expected, rtol=1e-12)
    # more candidates can only help (nested candidate sets)
    more = wide_limit.solve_relu_sae(
        X,
        lam,
        np.concatenate([encoders, unit_rows(rng.standard_normal((140, 3)))]),
        np.concatenate([biases, rng.uniform(-1.0, 0.0, 140)]),
        tol=1e-8,
    )
    assert float(more.primal) <= float(sol.primal) + 1e-8 * float(sol.primal)


def test_bad_inputs():
    X = np.ones((3, 2))
    with pytest.raises(ValueError, match="X must have shape"):
        wide_limit.bound(np.ones(3), 0.5)
    with pytest.raises(ValueError, match="weights"):
        wide_limit.solution(X, 0.5, weights=np.ones(2))
    with pytest.raises(Exception, match="normalise"):
        wide_limit.solve_candidate_problem(X, 2 * np.eye(2), 0.5, 0.1)
    with pytest.raises(Exception, match="gam must be >= 0"):
        wide_limit.solve_candidate_problem(X, np.eye(2), 0.5, -0.1)


def test_convex_solvers_report_their_status_and_throw_when_asked():
    rng = np.random.default_rng(17)
    X = unit_rows(rng.standard_normal((12, 3))) * 2.0
    C, lam = unit_rows(X), 0.3
    encoders = unit_rows(rng.standard_normal((30, 3)))

    def candidate(**kw):
        return wide_limit.solve_candidate_problem(X, C, lam, 0.01, **kw)

    def relu_sae(**kw):
        return wide_limit.solve_relu_sae(X, lam, encoders, **kw)

    for solve in (candidate, relu_sae):
        done = solve(tol=1e-8)
        assert bool(done.converged) and bool(done.result == wide_limit.RESULTS.successful)
        assert float(done.gap) <= 1e-8 * float(done.primal) * 1.0001
        solve(tol=1e-8, throw=True)  # converged: nothing raised
        cut = solve(tol=1e-14, max_steps=10)  # one block of steps: far from 1e-14
        assert not bool(cut.converged) and int(cut.steps) == 10
        assert bool(cut.result == wide_limit.RESULTS.max_steps_reached)
        assert float(cut.gap) > 1e-14 * float(cut.primal)
        with pytest.raises(Exception, match="reached max_steps"):
            solve(tol=1e-14, max_steps=10, throw=True)
