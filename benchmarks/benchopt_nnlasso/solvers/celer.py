from benchmark_utils.per_signal import PerSignalLasso
from benchopt import BaseSolver
from celer import Lasso


class Solver(PerSignalLasso, BaseSolver):
    """celer Lasso(positive=True) per signal (working sets with dual extrapolation)."""

    name = "celer"
    requirements = ["pip::celer"]

    def model(self, tol):
        d = self.X.shape[1]
        return Lasso(alpha=self.lam / d, fit_intercept=False, positive=True, tol=tol)
