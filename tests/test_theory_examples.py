"""THEORY's worked examples whose setup THEORY states (section 7, and section 6's tied encoder).

References: the Huber bound computed here with numpy (THEORY 5), objectives recomputed with numpy
from codes certified by their duality gap, and the numbers THEORY prints. Sampling tolerances are
derived from the data (standard errors over points), not chosen after seeing the result.
"""

import os
import sys

import numpy as np
import pytest

import sparsedict as sd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# THEORY 7's one-parent-three-children setup, shared with the hierarchy experiment
from experiments.hierarchy import (  # noqa: E402
    theory_one_parent_three_children as one_parent_three_children,
)

LAM = 0.3
# THEORY 7, one parent with three exclusive children: F - bound for k = 1..5 (best of 4 inits)
THEORY_GAPS = {1: 0.502, 2: 0.308, 3: 0.122, 4: 0.014, 5: 0.011}


def huber(X, lam):
    t = np.linalg.norm(X, axis=1)
    return np.where(t <= lam, 0.5 * t**2, lam * t - 0.5 * lam**2)


def excess_per_point(X, D, lam):
    """Per-point objective minus the per-point Huber bound, with codes certified to 1e-12."""
    result = sd.sparse_code(X, D, lam, tol=1e-12)
    assert bool(result.converged.all())
    A = np.asarray(result.codes)
    R = X - A @ D
    return 0.5 * np.sum(R * R, 1) + lam * A.sum(1) - huber(X, lam)


@pytest.fixture(scope="module")
def best_excess():
    """{k: per-point excess of the best of 4 initialisations at width k} on one fixed draw."""
    X = one_parent_three_children(seed=0)
    best = {}
    for k in THEORY_GAPS:
        fits = [sd.learn_dictionary(X, k, LAM, max_steps=300, seed=s) for s in range(4)]
        fit = min(fits, key=lambda f: float(f.objective))
        assert fit.converged
        best[k] = excess_per_point(X, np.asarray(fit.dictionary), LAM)
        np.testing.assert_allclose(best[k].mean(), float(fit.objective) - huber(X, LAM).mean())
    return best


def _tolerance(excess):
    # THEORY's number comes from an independent draw of the same distribution, so the difference
    # of the two means has standard error sqrt(2) * SE (SE over the 1200 points); 3 of those.
    return 3 * np.sqrt(2) * excess.std(ddof=1) / np.sqrt(len(excess))


@pytest.mark.slow
@pytest.mark.parametrize("k", sorted(THEORY_GAPS))
def test_one_parent_three_children_gaps_match_theory(best_excess, k):
    """Measured on this draw: 0.4755, 0.3001, 0.1220, 0.0145, 0.0110 for k = 1..5 against
    THEORY's 0.502, 0.308, 0.122, 0.014, 0.011. k = 1 and 2 are the farthest off (0.027 and 0.008)
    but within the sampling tolerance of a second draw; k = 3..5 agree to the digits printed."""
    excess = best_excess[k]
    tol = _tolerance(excess)
    print(f"k = {k}: F - bound {excess.mean():.4f}, THEORY {THEORY_GAPS[k]}, tolerance {tol:.4f}")
    assert abs(excess.mean() - THEORY_GAPS[k]) <= tol


@pytest.mark.slow
def test_one_parent_three_children_gaps_fall_with_width(best_excess):
    """THEORY 3: F*(k) strictly decreases while k is below the number of directions."""
    gaps = [best_excess[k].mean() for k in sorted(best_excess)]
    assert np.all(np.diff(gaps) < 0)
    assert min(gaps) >= -1e-12  # the Huber bound holds at every width


def three_parents_three_children(seed, per_child=30, d=12, noise=0.03):
    """THEORY 7's hierarchy of 270 points at lam 0.3. THEORY gives only the counts and lam; the
    rest is this test's choice, borrowed from the one-parent example: parents e1..e3, children
    of parent i the basis vectors e(4 + 3i + j), `x = a p_i + b c_ij + noise` with `a` uniform in
    [1.5, 2.5], `b` in [1, 2], noise 0.03, 30 points per child."""
    rng = np.random.default_rng(seed)
    E = np.eye(d)
    parent = np.repeat(np.arange(3), 3 * per_child)
    child = 3 + np.repeat(np.arange(9), per_child)
    n = 9 * per_child
    X = rng.uniform(1.5, 2.5, (n, 1)) * E[parent] + rng.uniform(1.0, 2.0, (n, 1)) * E[child]
    return X + noise * rng.standard_normal((n, d))


def _best_fit(X, k):
    fits = [sd.learn_dictionary(X, k, LAM, max_steps=300, seed=s) for s in range(4)]
    return np.asarray(min(fits, key=lambda f: float(f.objective)).dictionary)


@pytest.mark.slow
def test_three_parents_three_children_split_hierarchically():
    """k = 3 finds the parents, k = 9 the children, each k = 9 atom under one k = 3 atom, 3 each."""
    X = three_parents_three_children(seed=0)
    E = np.eye(12)
    D3, D9 = _best_fit(X, 3), _best_fit(X, 9)
    # k = 3: one atom per parent group, along the group's mean direction 2 p + 0.5 sum_j c_j
    # (cosine 2 / sqrt(4.75) = 0.918 with p); any other parent is orthogonal to it.
    cos_parents = D3 @ E[:3].T
    assert sorted(cos_parents.argmax(axis=1)) == [0, 1, 2]
    assert cos_parents.max(axis=1).min() > 0.85
    assert np.sort(cos_parents, axis=1)[:, :2].max() < 0.05
    # k = 9: one atom per child direction p_i + c_ij (mean magnitudes 2 and 1.5; cos 1 if exact)
    children = E[np.repeat(np.arange(3), 3)] * 2 + 1.5 * E[3:]
    children /= np.linalg.norm(children, axis=1, keepdims=True)
    cos_children = D9 @ children.T
    assert sorted(cos_children.argmax(axis=1)) == list(range(9))
    assert cos_children.max(axis=1).min() > 0.98
    # each k = 9 atom is closest to the k = 3 atom of its own parent: 3 per k = 3 atom
    parent_of_child = cos_children.argmax(axis=1) // 3
    nearest_k3 = (D9 @ D3.T).argmax(axis=1)
    k3_parent = cos_parents.argmax(axis=1)
    np.testing.assert_array_equal(k3_parent[nearest_k3], parent_of_child)
    assert sorted(np.bincount(nearest_k3, minlength=3)) == [3, 3, 3]


# ---- THEORY 6: when a tied ReLU encoder is exact ---------------------------------------------
# THEORY states the criterion and three percentages (orthogonal clusters 100%, random clusters 2%,
# sparse superposition 20%) without their data. Reconstructed here: the criterion itself, which
# holds for any generic dictionary and data, and the orthogonal case, where 100% is structural.
# The 2% and 20% depend on unstated sizes, coherence and lam, and are not tested.


def _tied_and_exact(X, D, lam):
    """Codes of the tied encoder relu(D x - lam) and exact codes certified to 1e-12."""
    result = sd.sparse_code(X, D, lam, tol=1e-12)
    assert bool(result.converged.all())
    return np.maximum(0.0, X @ D.T - lam), np.asarray(result.codes)


def _criterion(X, D, A, lam):
    """THEORY 6: at most one active atom and no inactive atom with d_k . x_i > lam."""
    active = A > 0
    return (active.sum(1) <= 1) & ~np.any(~active & (X @ D.T > lam), axis=1)


def test_tied_encoder_is_exact_exactly_where_theory_says():
    """On a generic (random, coherent) dictionary the tied encoder reproduces the exact codes on
    a point iff THEORY 6's criterion holds there; both outcomes occur on these data."""
    rng = np.random.default_rng(60)
    D = rng.standard_normal((12, 6))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    A0 = (rng.random((400, 12)) < 0.1) * rng.uniform(0.5, 1.5, (400, 12))
    X = A0 @ D + 0.05 * rng.standard_normal((400, 6))
    tied, A = _tied_and_exact(X, D, LAM)
    # exact codes are certified to a relative gap of 1e-12, so the codes agree to ~1e-6 at worst
    exact = np.abs(tied - A).max(axis=1) <= 1e-6
    criterion = _criterion(X, D, A, LAM)
    # away from the criterion the tied codes are off by at least a margin set by the data
    assert np.abs(tied - A).max(axis=1)[~criterion].min() > 1e-4
    np.testing.assert_array_equal(exact, criterion)
    assert 0.1 < exact.mean() < 0.9, exact.mean()


@pytest.mark.slow
def test_tied_encoder_is_exact_on_every_point_of_orthogonal_clusters():
    """Five clusters along orthogonal directions in R^10 (magnitudes uniform in [1, 2], noise
    0.05), dictionary learned at width 5: the atoms are the cluster directions, each point
    activates its own atom, and every other correlation d_k . x_i is noise of SD about 0.05
    (6 SD below lam = 0.3) plus the atoms' small tilt; so the criterion holds on 100% of points."""
    rng = np.random.default_rng(61)
    E = np.eye(10)
    labels = np.repeat(np.arange(5), 40)
    X = rng.uniform(1.0, 2.0, (200, 1)) * E[labels] + 0.05 * rng.standard_normal((200, 10))
    # started from one point of each cluster (random starts put two atoms on one cluster here)
    init = X[::40] / np.linalg.norm(X[::40], axis=1, keepdims=True)
    fit = sd.learn_dictionary(X, 5, LAM, max_steps=200, init=init)
    assert fit.converged
    D = np.asarray(fit.dictionary)
    assert np.abs(D @ D.T - np.eye(5)).max() < 0.05  # nearly orthogonal atoms
    tied, A = _tied_and_exact(X, D, LAM)
    assert np.all(_criterion(X, D, A, LAM))
    assert np.abs(tied - A).max() <= 1e-6
    # with orthonormal atoms the nonnegative lasso is solved by the tied encoder on any data
    Q = np.linalg.qr(rng.standard_normal((10, 5)))[0].T
    tied, A = _tied_and_exact(rng.standard_normal((100, 10)), Q, LAM)
    assert np.abs(tied - A).max() <= 1e-6
