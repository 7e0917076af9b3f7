"""Batched nonnegative lasso: mean primal value and relative duality gaps (float64, numpy)."""

import numpy as np
from benchopt import BaseObjective
from benchopt.stopping_criterion import SufficientProgressCriterion


def relative_gaps(X, D, codes, lam):
    r"""Per-signal `gap / primal` of `codes`, from the residual (THEORY section 1), in float64.

    $\theta = s r$, $s = \min(1, \lambda / \max_k d_k \cdot r)$;
    gap $= \tfrac12 (1 - s)^2 \|r\|^2 + \sum_k a_k (\lambda - s g_k)$.
    """
    X, D, A = (np.asarray(v, np.float64) for v in (X, D, codes))
    A = np.maximum(A, 0.0)
    R = X - A @ D
    G = R @ D.T
    top = G.max(axis=1)
    s = np.where(top > lam, lam / np.where(top > lam, top, 1.0), 1.0)
    r2 = np.sum(R * R, axis=1)
    primal = 0.5 * r2 + lam * A.sum(axis=1)
    gap = 0.5 * (1 - s) ** 2 * r2 + np.sum(A * (lam - s[:, None] * G), axis=1)
    return primal, np.maximum(gap, 0.0) / np.maximum(primal, 1e-300)


class Objective(BaseObjective):
    name = "Nonnegative lasso (batched)"
    min_benchopt_version = "1.5"
    requirements = []
    sampling_strategy = "tolerance"
    # Curves are about the certificate: stop a solver once its worst gap stops improving.
    stopping_criterion = SufficientProgressCriterion(
        eps=1e-3, patience=6, key_to_monitor="max_relative_gap"
    )
    parameters = {}

    def set_data(self, X, D, lam):
        self.X, self.D, self.lam = X, D, lam

    def get_objective(self):
        return dict(X=self.X, D=self.D, lam=self.lam)

    def evaluate_result(self, codes):
        primal, rel = relative_gaps(self.X, self.D, codes, self.lam)
        return dict(
            value=float(np.mean(primal)),
            max_relative_gap=float(rel.max()),
            median_relative_gap=float(np.median(rel)),
            fraction_at_1e6=float(np.mean(rel <= 1e-6)),
        )

    def get_one_result(self):
        return dict(codes=np.zeros((self.X.shape[0], self.D.shape[0])))
