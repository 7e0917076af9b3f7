from benchmark_utils.problems import sae_like
from benchopt import BaseDataset


class Dataset(BaseDataset):
    name = "SAE-like"
    parameters = {"n": [4096]}
    test_parameters = {"n": [128]}

    def get_data(self):
        X, D, lam = sae_like(0, n=self.n)
        return dict(X=X, D=D, lam=lam)
