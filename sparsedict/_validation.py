"""Argument checks shared by every public entry point.

Shape and dtype problems raise `ValueError`/`TypeError` at trace time, naming the argument and the
expected shape. Value problems (NaN/inf, negative `lam`, zero-norm atoms) are caught with
`eqx.error_if` on the arrays that are actually used, so they raise eagerly and under `jax.jit`.
"""

import contextlib

import equinox as eqx
import jax.numpy as jnp
import numpy as np

_CHECKS = [True]


@contextlib.contextmanager
def unchecked():
    """Trace without the value checks (for programs whose inputs were validated on the host).

    A check's error branch runs on one device, so inside a program with arrays split over
    devices (GSPMD) it would gather every checked array onto that device at every call.
    """
    _CHECKS.append(False)
    try:
        yield
    finally:
        _CHECKS.pop()


def error_if(x, pred, msg):
    return eqx.error_if(x, pred, msg) if _CHECKS[-1] else x


def float_dtype(*arrays):
    """The common floating dtype of the arrays; integer or boolean inputs are refused."""
    for name, a in arrays:
        dt = jnp.result_type(a)
        if not jnp.issubdtype(dt, jnp.floating):
            raise TypeError(
                f"{name} must be a floating-point array (float32 or float64), got dtype {dt}; "
                f"convert it with {name}.astype(float)"
            )
    return jnp.result_type(*(a for _, a in arrays))


def check_finite(a, name):
    return error_if(a, ~jnp.all(jnp.isfinite(a)), f"{name} contains NaN or inf")


def signals(X, dtype, name="X"):
    """`X` as a float array of shape (n, d) (or (d,) for one signal), checked finite."""
    X = jnp.asarray(X, dtype)
    if X.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape (n, d) or (d,), got shape {X.shape}")
    if X.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one feature (d >= 1), got shape {X.shape}")
    if X.ndim == 2 and X.shape[0] == 0:
        raise ValueError(f"{name} is empty: it must hold at least one signal, got shape {X.shape}")
    return check_finite(X, name)


def dictionary(D, d, dtype, mask=None, name="D"):
    """`(D, atom_mask)`: D of shape (k, d), finite, with no zero-norm unmasked atom."""
    D = jnp.asarray(D, dtype)
    if D.ndim != 2:
        raise ValueError(f"{name} must have shape (k, {d}) with atoms as rows, got shape {D.shape}")
    if D.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one atom, got shape {D.shape}")
    if D.shape[1] != d:
        raise ValueError(
            f"{name} has {D.shape[1]} features per atom but X has d = {d}: "
            f"{name} must have shape (k, {d}), got {D.shape}"
        )
    mask = atom_mask(mask, D.shape[0])
    D = check_finite(D, name)
    zero = jnp.sum(D * D, axis=-1) == 0
    if mask is not None:
        zero = zero & mask
    D = error_if(
        D, jnp.any(zero), f"{name} has a zero-norm atom that is not masked (pass atom_mask)"
    )
    return D, mask


def atom_mask(mask, k, name="atom_mask"):
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if mask.shape != (k,):
        raise ValueError(f"{name} must have shape ({k},), got shape {mask.shape}")
    if mask.dtype != jnp.bool_:
        raise TypeError(f"{name} must be boolean, got dtype {mask.dtype}")
    return mask


def lam(value, batch_shape, dtype, name="lam"):
    """`lam` (scalar or one per signal) broadcast to `batch_shape`, checked finite and >= 0."""
    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.floating) and not jnp.issubdtype(
        value.dtype, jnp.integer
    ):
        raise TypeError(f"{name} must be a real number or array, got dtype {value.dtype}")
    value = value.astype(dtype)
    if value.ndim > 0 and value.shape != tuple(batch_shape):
        raise ValueError(
            f"{name} must be a scalar or have one value per signal, shape {tuple(batch_shape)}; "
            f"got shape {value.shape}"
        )
    value = error_if(value, ~jnp.all(jnp.isfinite(value)), f"{name} must be finite")
    value = error_if(value, jnp.any(value < 0), f"{name} must be >= 0")
    return jnp.broadcast_to(value, batch_shape)


def codes(A, shape, dtype, name="codes"):
    """Codes of the given shape, finite and nonnegative."""
    A = jnp.asarray(A)
    if A.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got shape {A.shape}")
    A = check_finite(A.astype(dtype), name)
    return error_if(A, jnp.any(A < 0), f"{name} must be nonnegative")


def positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)
