from benchmark_utils.problems import patches
from benchopt import BaseDataset


class Dataset(BaseDataset):
    name = "P3"
    requirements = ["pip::scikit-learn"]
    parameters = {"n": [4096]}
    test_parameters = {"n": [256]}

    def get_data(self):
        X, D, lam = patches(0, n=self.n)
        return dict(X=X, D=D, lam=lam)
