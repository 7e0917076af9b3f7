import numpy as np
import spams
from benchopt import BaseSolver
from benchopt.stopping_criterion import SingleRunCriterion


class Solver(BaseSolver):
    """SPAMS lasso(mode=2, pos=True): LARS, exactly 1/2||x - Da||^2 + lambda1 ||a||_1 (one run)."""

    name = "spams"
    requirements = ["pip::spams-bin"]
    sampling_strategy = "run_once"
    stopping_criterion = SingleRunCriterion()  # not the objective's gap-progress criterion

    def set_objective(self, X, D, lam):
        self.Xf = np.asfortranarray(X.T)
        self.Df = np.asfortranarray(D.T)
        self.lam = lam

    def run(self, _):
        codes = spams.lasso(self.Xf, D=self.Df, lambda1=self.lam, lambda2=0.0, mode=2, pos=True)
        self.codes = np.asarray(codes.todense()).T

    def get_result(self):
        return dict(codes=self.codes)
