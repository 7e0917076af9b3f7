from benchmark_utils.problems import synthetic
from benchopt import BaseDataset

SIZES = {"P1": (4096, 64, 256), "P2": (2048, 128, 1024)}


class Dataset(BaseDataset):
    name = "synthetic"
    parameters = {"problem": ["P1", "P2"]}
    test_parameters = {"problem": ["P1"]}

    def get_data(self):
        n, d, k = SIZES[self.problem]
        X, D, lam = synthetic(0, n, d, k)
        return dict(X=X, D=D, lam=lam)
