from benchmark_utils.problems import synthetic
from benchopt import BaseDataset


class Dataset(BaseDataset):
    name = "simulated"
    parameters = {"n": [128], "d": [16], "k": [48]}
    test_parameters = {"n": [32], "d": [8], "k": [16]}

    def get_data(self):
        X, D, lam = synthetic(self.get_seed(use_repetition=True), self.n, self.d, self.k)
        return dict(X=X, D=D, lam=lam)
