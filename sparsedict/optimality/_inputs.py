"""Argument checks for the optimality and wide-limit entry points (on top of `_validation`)."""

import jax.numpy as jnp

from .. import _validation as check

# An atom counts as unit norm when | ||d_k|| - 1 | is below this many machine epsilons (x d).
_UNIT_NORM_EPS = 1e3


def weights(w, n, dtype, name="weights"):
    r"""Weights $w_i \ge 0$ of shape (n,), finite, with $W = \sum_i w_i > 0$ (default: all 1)."""
    if w is None:
        return jnp.ones((n,), dtype)
    w = jnp.asarray(w)
    if w.shape != (n,):
        raise ValueError(f"{name} must have one value per signal, shape ({n},), got {w.shape}")
    w = check.check_finite(w.astype(dtype), name)
    w = check.error_if(w, jnp.any(w < 0), f"{name} must be nonnegative")
    return check.error_if(w, jnp.sum(w) <= 0, f"{name} must have a positive sum")


def positive_lam(lam, dtype, name="lam"):
    """A scalar `lam > 0` (the residuals divide by it)."""
    lam = check.lam(lam, (), dtype, name)
    return check.error_if(lam, lam <= 0, f"{name} must be > 0 for optimality residuals")


def unit_atoms(D, mask, name="D"):
    """Refuse unmasked atoms whose norm is not 1, suggesting the fix."""
    eps = jnp.finfo(D.dtype).eps
    off = jnp.abs(jnp.linalg.norm(D, axis=-1) - 1.0) > _UNIT_NORM_EPS * eps * D.shape[-1]
    if mask is not None:
        off = off & mask
    return check.error_if(
        D,
        jnp.any(off),
        f"{name} has atoms whose norm is not 1 (the theory assumes unit-norm atoms); "
        f"normalise them first: {name} = {name} / jnp.linalg.norm({name}, axis=1, keepdims=True)",
    )


def signals_dictionary_codes(X, D, codes, atom_mask):
    """Validated `(X, D, codes, mask)`: X (n, d), unit-norm D (k, d), codes (n, k) >= 0.

    Masked atoms are returned as zero rows with zero codes.
    """
    dtype = check.float_dtype(("X", X), ("D", D), *([] if codes is None else [("codes", codes)]))
    X = jnp.asarray(X, dtype)
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n, d), got shape {X.shape}")
    X = check.signals(X, dtype)
    D, mask = check.dictionary(D, X.shape[1], dtype, atom_mask)
    D = unit_atoms(D, mask)
    if mask is not None:
        D = jnp.where(mask[:, None], D, 0.0)
    if codes is not None:
        codes = check.codes(codes, (X.shape[0], D.shape[0]), dtype)
        if mask is not None:
            codes = jnp.where(mask, codes, 0.0)
    return X, D, codes, mask
