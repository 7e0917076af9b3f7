"""The benchmark's problems: synthetic (P1, P2), image patches (P3) and SAE-like, with lam."""

from pathlib import Path

import numpy as np
from joblib import Memory

# lam's bisection takes minutes on a busy CPU: the problems are cached on disk next to benchopt's
# own cache (ignored by git), so repeated runs regenerate nothing.
memory = Memory(Path(__file__).resolve().parents[1] / "__cache__" / "problems", verbose=0)


def unit_rows(M):
    return M / np.linalg.norm(M, axis=1, keepdims=True)


def lam_for_density(X, D, density, iters=30):
    """Bisection on lam so the exact codes (projected gradient, float64) have the given density."""
    lo, hi = 0.0, float(np.max(X @ D.T))
    X = X[:256]
    L = np.linalg.eigvalsh(D @ D.T)[-1]
    for _ in range(iters):
        lam = 0.5 * (lo + hi)
        A = np.zeros((len(X), len(D)))
        for _ in range(300):  # projected gradient: enough to read the support at this accuracy
            A = np.maximum(A - ((A @ D - X) @ D.T + lam) / L, 0.0)
        lo, hi = (lam, hi) if np.mean(A > 0) > density else (lo, lam)
    return 0.5 * (lo + hi)


@memory.cache
def synthetic(seed, n, d, k, density=0.07, noise=0.05):
    rng = np.random.default_rng(seed)
    D = unit_rows(rng.standard_normal((k, d)))
    A = (rng.random((n, k)) < density) * rng.uniform(0.5, 2.0, (n, k))
    X = A @ D + noise * rng.standard_normal((n, d))
    return X, D, lam_for_density(X, D, 0.075)


@memory.cache
def patches(seed, n=4096, k=256):
    """8x8 patches of scikit-learn's sample images; atoms are patches of the other image."""
    from sklearn.datasets import load_sample_images
    from sklearn.feature_extraction.image import extract_patches_2d

    china, flower = (img.mean(axis=2) / 255.0 for img in load_sample_images().images)

    def take(img, count, s):
        P = extract_patches_2d(img, (8, 8), max_patches=2 * count, random_state=s).reshape(-1, 64)
        P = P - P.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(P, axis=1)
        P = P[norms > 1e-2 * np.median(norms)][:count]
        return P / np.median(np.linalg.norm(P, axis=1))

    D = unit_rows(take(flower, k, seed))
    X = take(china, n, seed + 1)
    return X, D, lam_for_density(X, D, 0.075)


@memory.cache
def sae_like(seed, n=4096, d=128, k=1024, active=50, noise=0.02):
    """Signals from k unit features with about `active` per signal; D = features + 2% noise."""
    rng = np.random.default_rng(seed)
    F = unit_rows(rng.standard_normal((k, d)))
    A = (rng.random((n, k)) < active / k) * rng.exponential(1.0, (n, k))
    X = A @ F
    D = unit_rows(F + noise * rng.standard_normal((k, d)))
    return X, D, 0.1 * float(np.median(np.max(X @ D.T, axis=1)))
