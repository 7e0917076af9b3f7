"""The exchange test (THEORY 4.3) against brute force: every removal re-solved independently."""

import numpy as np
import pytest
from sklearn.linear_model import Lasso

from sparsedict import optimality


def reference_codes(X, D, lam):
    """Exact nonnegative lasso codes from scikit-learn (float64, tight tolerance), one per signal.

    scikit-learn minimises 1/(2 n_samples) ||y - Xw||^2 + alpha ||w||_1; with the d features of a
    signal as its samples, alpha = lam / d gives 1/2 ||x - a D||^2 + lam ||a||_1 up to the factor d.
    """
    model = Lasso(alpha=lam / X.shape[1], positive=True, fit_intercept=False, tol=1e-14)
    model.set_params(max_iter=200_000)
    return np.array([model.fit(D.T, x).coef_.copy() for x in X])


def objective(X, D, codes, lam):
    r = X - codes @ D
    return float(np.mean(0.5 * np.sum(r * r, axis=1) + lam * codes.sum(axis=1)))


def problem(seed, n=40, d=4, k=4):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((k, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    A = rng.exponential(1.0, (n, k)) * (rng.random((n, k)) < 0.5)
    return A @ D + 0.05 * rng.standard_normal((n, d)), D


@pytest.mark.parametrize("seed", [0, 1])
def test_removal_costs_equal_brute_force_re_solved_codes(seed):
    X, D = problem(seed)
    lam = 0.1
    report = optimality.exchange(X, D, lam, refine_steps=2)
    F0 = objective(X, D, reference_codes(X, D, lam), lam)
    np.testing.assert_allclose(float(report.objective), F0, rtol=1e-9)
    for j in range(D.shape[0]):
        kept = np.delete(D, j, axis=0)
        cost = objective(X, kept, reference_codes(X, kept, lam), lam) - F0
        # codes re-solved without atom j: far below the cost of just zeroing its codes
        np.testing.assert_allclose(float(report.removal_cost[j]), cost, rtol=1e-7, atol=1e-10)


def test_the_swap_objective_is_the_objective_of_the_swap_dictionary():
    X, D = problem(2)
    lam = 0.1
    report = optimality.exchange(X, D, lam, refine_steps=3)
    D_swap = np.asarray(report.swap_dictionary)
    assert D_swap.shape == D.shape
    np.testing.assert_allclose(np.linalg.norm(D_swap, axis=1), 1.0, rtol=1e-12)
    F_swap = objective(X, D_swap, reference_codes(X, D_swap, lam), lam)
    np.testing.assert_allclose(float(report.swap_objective), F_swap, rtol=1e-8)
    assert report.violated == bool(
        np.max(report.split_gain[:, None] - report.removal_cost[None, :] - np.diag([np.inf] * 4))
        > 0
    )
