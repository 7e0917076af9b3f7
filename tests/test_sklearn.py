"""scikit-learn estimators: the estimator checks, and results against scikit-learn's own coders."""

import numpy as np
import pytest
from sklearn.decomposition import SparseCoder
from sklearn.utils.estimator_checks import parametrize_with_checks

from sparsedict.sklearn import (
    NonnegativeDictionaryLearning,
    NonnegativeMiniBatchDictionaryLearning,
    NonnegativeSparseCoder,
)

_FIXED_WIDTH = (
    "the dictionary fixes n_features (3 here); this check draws data with another number of "
    "features, which the coder refuses with a clear error (scikit-learn's SparseCoder too)"
)


def expected_failures(estimator):
    if isinstance(estimator, NonnegativeSparseCoder):
        return {
            name: _FIXED_WIDTH
            for name in (
                "check_estimators_dtypes",
                "check_dtype_object",
                "check_transformers_unfitted_stateless",
                "check_fit_idempotent",
            )
        }
    return {}


CODER = NonnegativeSparseCoder(np.random.default_rng(0).standard_normal((4, 3)), alpha=0.1)
# The learners compile a program per data shape, and the checks use many shapes: slow.
LEARNERS = [
    NonnegativeDictionaryLearning(3, alpha=0.1, max_iter=20, random_state=0),
    NonnegativeMiniBatchDictionaryLearning(3, alpha=0.1, max_iter=20, batch_size=8, random_state=0),
]


@parametrize_with_checks([CODER], expected_failed_checks=expected_failures)
def test_coder_passes_the_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks(LEARNERS, expected_failed_checks=expected_failures)
def test_learners_pass_the_estimator_checks(estimator, check):
    check(estimator)


def planted(seed=0, n=600, d=12, k=6):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((k, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    A = (rng.random((n, k)) < 0.25) * rng.uniform(0.5, 1.5, (n, k))
    return A @ D + 0.005 * rng.standard_normal((n, d)), D


def test_alpha_is_scikit_learns_sparse_coder_alpha():
    X, D = planted()
    alpha = 0.05
    ours = NonnegativeSparseCoder(D, alpha=alpha, tol=1e-14).transform(X)
    reference = SparseCoder(
        D, transform_algorithm="lasso_cd", transform_alpha=alpha, positive_code=True
    )
    theirs = reference.set_params(transform_max_iter=100_000).transform(X)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert ours.dtype == X.dtype and ours.min() >= 0
    assert NonnegativeSparseCoder(D).transform(X.astype(np.float32)).dtype == np.float32


def _objective(X, D, codes, alpha):
    return np.mean(0.5 * np.sum((X - codes @ D) ** 2, axis=1) + alpha * codes.sum(axis=1))


@pytest.mark.parametrize("Learner", [NonnegativeDictionaryLearning])
def test_dictionary_learning_recovers_a_planted_dictionary(Learner):
    X, D = planted()
    alpha = 0.02
    model = Learner(6, alpha=alpha, max_iter=200, random_state=0)
    codes = model.fit_transform(X)
    cosines = np.abs(model.components_ @ D.T).max(axis=0)
    assert cosines.min() > 0.99
    # error_ is the objective of the returned atoms with exact codes (scikit-learn's coder)
    reference = SparseCoder(
        model.components_, transform_algorithm="lasso_cd", transform_alpha=alpha, positive_code=True
    ).set_params(transform_max_iter=100_000)
    F = _objective(X, model.components_, reference.transform(X), alpha)
    np.testing.assert_allclose(model.error_, F, rtol=1e-6)
    np.testing.assert_allclose(_objective(X, model.components_, codes, alpha), F, rtol=1e-6)


def reference_online_step(D, AtA, AtX, batch, t, alpha, forgetting=3.0, sweeps=4):
    """Mairal et al.'s step in numpy: exact codes (scikit-learn), decayed statistics, `sweeps`
    sweeps over the atoms (the online learner's default)."""
    coder = SparseCoder(
        D, transform_algorithm="lasso_cd", transform_alpha=alpha, positive_code=True
    )
    A = coder.set_params(transform_max_iter=100_000).transform(batch)
    beta = (1 - 1 / t) ** forgetting
    AtA = beta * AtA + A.T @ A / len(batch)
    AtX = beta * AtX + A.T @ batch / len(batch)
    D = D.copy()
    for j in list(range(len(D))) * sweeps:  # block-coordinate descent on the unit sphere
        u = AtX[j] - AtA[j] @ D + AtA[j, j] * D[j]
        if AtA[j, j] > 0 and np.linalg.norm(u) > 0:
            D[j] = u / np.linalg.norm(u)
    return D, AtA, AtX


def test_partial_fit_is_the_online_step():
    X, D = planted(n=600)
    model = NonnegativeMiniBatchDictionaryLearning(6, alpha=0.02, random_state=0)
    batches = np.split(X, 6)
    model.partial_fit(batches[0])
    # the first call draws its initial atoms from the batch with the estimator's random_state
    D0 = batches[0][np.random.RandomState(0).choice(100, 6, replace=False)]
    D_ref = D0 / np.linalg.norm(D0, axis=1, keepdims=True)
    D_ref, AtA, AtX = reference_online_step(D_ref, 0.0, 0.0, batches[0], 1, 0.02)
    np.testing.assert_allclose(model.components_, D_ref, atol=1e-6)
    for t, batch in enumerate(batches[1:], start=2):
        model.partial_fit(batch)
        D_ref, AtA, AtX = reference_online_step(D_ref, AtA, AtX, batch, t, 0.02)
        np.testing.assert_allclose(model.components_, D_ref, atol=1e-5)
    assert model.n_iter_ == 6


def test_bad_parameters_are_named():
    X, D = planted(n=50)
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        NonnegativeSparseCoder(D, alpha=-1.0).transform(X)
    with pytest.raises(ValueError, match="X has 12 features but the dictionary has 5"):
        NonnegativeSparseCoder(D[:, :5]).transform(X)
    with pytest.raises(ValueError, match="needs at least n_components=6 samples"):
        NonnegativeMiniBatchDictionaryLearning(6).partial_fit(X[:3])
