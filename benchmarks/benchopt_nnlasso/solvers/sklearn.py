import numpy as np
from benchmark_utils.schedule import DecadeTolerances
from benchopt import BaseSolver
from sklearn.linear_model import Lasso


class Solver(DecadeTolerances, BaseSolver):
    """scikit-learn Lasso(positive=True) per signal on the Gram matrix (as sparse_encode)."""

    name = "scikit-learn"
    requirements = ["pip::scikit-learn"]
    sampling_strategy = "tolerance"

    def set_objective(self, X, D, lam):
        self.X, self.D, self.lam = X, D, lam
        self.codes = np.zeros((X.shape[0], D.shape[0]))

    def run(self, tol):
        d = self.X.shape[1]
        model = Lasso(
            alpha=self.lam / d,  # Lasso's loss carries 1 / (2 d) on one signal's d "samples"
            fit_intercept=False,
            precompute=self.D @ self.D.T,
            positive=True,
            tol=tol,
            max_iter=100_000,
        )
        self.codes = np.array([model.fit(self.D.T, x).coef_.copy() for x in self.X])

    def get_result(self):
        return dict(codes=self.codes)
