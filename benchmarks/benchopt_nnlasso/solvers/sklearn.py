from benchmark_utils.per_signal import PerSignalLasso
from benchopt import BaseSolver
from sklearn.linear_model import Lasso


class Solver(PerSignalLasso, BaseSolver):
    """scikit-learn Lasso(positive=True) per signal on the Gram matrix (as sparse_encode)."""

    name = "scikit-learn"
    requirements = ["pip::scikit-learn"]

    def model(self, tol):
        d = self.X.shape[1]
        return Lasso(
            alpha=self.lam / d,
            fit_intercept=False,
            precompute=self.D @ self.D.T,
            positive=True,
            tol=tol,
            max_iter=100_000,
        )
