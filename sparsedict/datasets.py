"""Built-in datasets, generated on the fly (no downloads)."""

import numpy as np


def sparse_synthetic(n=2048, d=64, k=256, density=0.07, noise=0.05, seed=0, dtype=np.float32):
    """Signals `X = A D + noise` from a random unit-norm dictionary and sparse nonnegative codes.

    Each code entry is active with probability `density`, with magnitude uniform in [0.5, 2].
    Returns `(X, D, A)` with shapes (n, d), (k, d), (n, k).
    """
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((k, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    A = (rng.random((n, k)) < density) * rng.uniform(0.5, 2.0, (n, k))
    X = A @ D + noise * rng.standard_normal((n, d))
    return X.astype(dtype), D.astype(dtype), A.astype(dtype)
