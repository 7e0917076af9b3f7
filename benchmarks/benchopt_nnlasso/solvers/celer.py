import numpy as np
from benchmark_utils.schedule import DecadeTolerances
from benchopt import BaseSolver
from celer import Lasso


class Solver(DecadeTolerances, BaseSolver):
    """celer Lasso(positive=True) per signal (working sets with dual extrapolation)."""

    name = "celer"
    requirements = ["pip::celer"]
    sampling_strategy = "tolerance"

    def set_objective(self, X, D, lam):
        self.X, self.D, self.lam = X, D, lam
        self.codes = np.zeros((X.shape[0], D.shape[0]))

    def run(self, tol):
        d = self.X.shape[1]
        model = Lasso(alpha=self.lam / d, fit_intercept=False, positive=True, tol=tol)
        design = np.asfortranarray(self.D.T)
        self.codes = np.array([model.fit(design, x).coef_.copy() for x in self.X])

    def get_result(self):
        return dict(codes=self.codes)
