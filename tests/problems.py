"""Fresh random test problems (independent of the library)."""

import numpy as np


def unit_rows(M):
    return M / np.linalg.norm(M, axis=1, keepdims=True)


def random_problem(rng, n=24, d=12, k=20, density=0.15, noise=0.05):
    """Signals drawn from a random unit-norm dictionary with sparse nonnegative codes."""
    D = unit_rows(rng.standard_normal((k, d)))
    A = (rng.random((n, k)) < density) * rng.uniform(0.5, 2.0, (n, k))
    X = A @ D + noise * rng.standard_normal((n, d))
    return X, D


def lasso_objective(X, D, A, lam):
    R = X - A @ D
    return 0.5 * np.sum(R * R, axis=1) + np.broadcast_to(lam, X.shape[:1]) * A.sum(1)


def reference_codes(X, D, lam):
    """Per-signal nonnegative lasso by scikit-learn (or scipy NNLS at lam = 0), in float64."""
    from scipy.optimize import nnls
    from sklearn.linear_model import Lasso

    lam = np.broadcast_to(np.asarray(lam, float), X.shape[:1])
    d = X.shape[1]
    out = np.zeros((X.shape[0], D.shape[0]))
    for i, (x, lam_i) in enumerate(zip(X, lam, strict=False)):
        if lam_i == 0:
            out[i] = nnls(D.T, x, maxiter=100 * D.shape[0])[0]
        else:
            model = Lasso(
                alpha=lam_i / d, positive=True, fit_intercept=False, tol=1e-14, max_iter=200_000
            )
            out[i] = model.fit(D.T, x).coef_
    return out


def reference_gap(X, D, A, lam, atom_mask=None):
    """The duality gap recomputed from its definition (THEORY section 1), in numpy float64."""
    X, D, A = (np.asarray(v, np.float64) for v in (X, D, A))
    lam = np.broadcast_to(np.asarray(lam, np.float64), X.shape[:1])
    R = X - A @ D
    G = R @ D.T
    if atom_mask is not None:
        G = np.where(atom_mask, G, -np.inf)
    gmax = G.max(1)
    s = np.ones_like(gmax)
    over = gmax > lam
    s[over] = lam[over] / gmax[over]
    theta = s[:, None] * R
    primal = lasso_objective(X, D, A, lam)
    dual = 0.5 * np.sum(X * X, 1) - 0.5 * np.sum((X - theta) ** 2, 1)
    return primal - dual, primal


def optimum_lower_bound(X, D, lam):
    """A float64 lower bound on each signal's optimal value: P(b) - gap(b) at scikit-learn's
    codes b (`reference_codes`), with the canonical gap of THEORY section 1."""
    ref = reference_codes(np.asarray(X, np.float64), np.asarray(D, np.float64), lam)
    gap, primal = reference_gap(X, D, ref, lam)
    return primal - gap
