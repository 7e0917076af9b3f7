"""What the per-signal scikit-learn-style peers share: one `Lasso` fit per signal."""

import numpy as np

from benchmark_utils.schedule import DecadeTolerances


class PerSignalLasso(DecadeTolerances):
    """Codes from `self.model(tol)` (a `Lasso(positive=True)`) fitted to each signal in turn.

    The design is `D.T`, so a signal's d features are the "samples": `Lasso`'s loss carries
    1 / (2 d), and `alpha = lam / d` is sparsedict's lam.
    """

    sampling_strategy = "tolerance"

    def set_objective(self, X, D, lam):
        self.X, self.D, self.lam = X, D, lam
        self.design = np.asfortranarray(D.T)
        self.codes = np.zeros((X.shape[0], D.shape[0]))

    def run(self, tol):
        model = self.model(tol)
        self.codes = np.array([model.fit(self.design, x).coef_.copy() for x in self.X])

    def get_result(self):
        return dict(codes=self.codes)
