"""Built-in datasets, generated on the fly (no downloads)."""

import numpy as np

from .streaming import load_array as load_array  # the one reader of .npy/.npz/.safetensors


def sparse_synthetic(n=2048, d=64, k=256, *, density=0.07, noise=0.05, seed=0, dtype=np.float32):
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


def feature_mixture(n=2048, d=32, *, seed=0, dtype=np.float32):
    """Activations built from the feature kinds the theory explains (THEORY section 7).

    - 8 independent features: each active with probability 0.1, magnitude uniform in [0.5, 1.5];
    - a hierarchy: 3 parents, each with 3 exclusive children; a parent is active with probability
      0.15 and then one of its children with probability 0.6 (`x += 1.5 parent + child`);
    - one dense signed direction `v` with coefficient `0.5 N(0, 1)` (the antipodal pair);
    - isotropic noise of standard deviation 0.02.
    All feature directions are random unit vectors. Returns `X` (n, d).
    """
    rng = np.random.default_rng(seed)

    def unit(m):
        M = rng.standard_normal((m, d))
        return M / np.linalg.norm(M, axis=1, keepdims=True)

    independent, parents, children, dense = unit(8), unit(3), unit(9), unit(1)[0]
    X = ((rng.random((n, 8)) < 0.1) * rng.uniform(0.5, 1.5, (n, 8))) @ independent
    parent_on = rng.random((n, 3)) < 0.15
    child = rng.integers(0, 3, (n, 3))
    child_on = parent_on & (rng.random((n, 3)) < 0.6)
    X += 1.5 * parent_on @ parents
    for p in range(3):
        X += child_on[:, p : p + 1] * children[3 * p + child[:, p]]
    X += 0.5 * rng.standard_normal((n, 1)) * dense
    X += 0.02 * rng.standard_normal((n, d))
    return X.astype(dtype)


def image_patches(n=5000, size=8, *, seed=0, dtype=np.float32):
    """Natural-image patches from scikit-learn's bundled sample images (no download).

    Grayscale `size` x `size` patches drawn at random, each with its mean removed, then all
    scaled so the mean patch norm is 1. Requires scikit-learn. Returns `X` (n, size * size).
    """
    try:
        from sklearn.datasets import load_sample_images
        from sklearn.feature_extraction.image import extract_patches_2d
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("image_patches needs scikit-learn: pip install scikit-learn") from e
    images = [img.mean(axis=2) / 255.0 for img in load_sample_images().images]
    per_image = -(-n // len(images))
    patches = np.concatenate(
        [
            extract_patches_2d(img, (size, size), max_patches=per_image, random_state=seed + i)
            for i, img in enumerate(images)
        ]
    )[:n].reshape(n, -1)
    patches = patches - patches.mean(axis=1, keepdims=True)
    patches /= np.linalg.norm(patches, axis=1).mean()
    return patches.astype(dtype)
