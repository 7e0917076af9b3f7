"""Argument checks shared by every public entry point.

Shape and dtype problems raise `ValueError`/`TypeError` at trace time, naming the argument and the
expected shape. Value problems (NaN/inf, negative `lam`, zero-norm atoms) are caught with
`eqx.error_if` on the arrays that are actually used, so they raise eagerly and under `jax.jit`.

Public entries validate once, then call internal kernels that check nothing (inside compiled
programs too: a check's error branch runs on one device, so in a program with arrays split over
devices it would gather every checked array onto that device at every call).

Inputs come from anywhere: numpy and JAX arrays, Python lists and scalars, and torch tensors
(when torch is imported) all pass through `as_array`. Integer inputs are computed in the default
float dtype (float64 with `jax_enable_x64`, else float32); float16 and bfloat16 inputs are upcast
to float32 for the solve (results are float32); complex, string and object inputs are refused
with a `TypeError` naming the argument.
"""

import inspect
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

error_if = eqx.error_if

# An atom counts as unit norm when | ||d_k|| - 1 | is below this many machine epsilons (x d).
_UNIT_NORM_EPS = 1e3


def is_torch_tensor(a):
    """Whether `a` is a torch tensor (without importing torch: a tensor implies it is loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(a, torch.Tensor)


def low_precision(dtype):
    """float16 or bfloat16: upcast to float32 for the solve."""
    return jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32


def _torch_to_numpy(a):
    """A torch tensor on the host as numpy (bfloat16, which numpy lacks, through float32)."""
    torch = sys.modules["torch"]
    a = a.detach().cpu()
    return (a.float() if a.dtype == torch.bfloat16 else a).numpy()


def as_array(a, name):
    """`a` (a numpy or JAX array, a torch tensor, a list or a scalar) as a numpy or JAX array of
    real numbers (boolean, integer or floating dtype, unchanged): the one converter of every
    public entry. Anything else (complex, strings, objects, ragged lists) raises a `TypeError`
    naming the argument. JAX arrays and tracers pass through untouched.
    """
    if is_torch_tensor(a):
        a = _torch_to_numpy(a)
    elif not isinstance(a, (jax.Array, np.ndarray)):
        try:
            a = np.asarray(a)
        except ValueError as e:  # ragged nested lists
            raise TypeError(f"{name} must be an array of numbers: {e}") from None
    dt = a.dtype
    if jnp.issubdtype(dt, jnp.complexfloating):
        raise TypeError(
            f"{name} is complex (dtype {dt}); the problem is real: pass {name}.real or abs({name})"
        )
    if not (
        jnp.issubdtype(dt, jnp.floating)
        or jnp.issubdtype(dt, jnp.integer)
        or jnp.issubdtype(dt, jnp.bool_)
    ):
        raise TypeError(f"{name} must be an array of real numbers, got dtype {dt}")
    return a


def optional_array(a, name):
    """`as_array(a, name)`, or None for None."""
    return None if a is None else as_array(a, name)


def _compute_dtype(dt, name):
    """Floating dtypes of at least 32 bits as they are; float16/bfloat16 -> float32."""
    if jnp.issubdtype(dt, jnp.bool_):
        raise TypeError(f"{name} must hold numbers, got dtype bool")
    if low_precision(dt):
        return jnp.dtype(jnp.float32)
    return dt


def float_dtype(*arrays):
    """The common dtype in which `(name, array)` pairs are computed: that of the floating inputs
    (float16 and bfloat16 count as float32); the default float if every input is integer."""
    dtypes = [_compute_dtype(as_array(a, name).dtype, name) for name, a in arrays]
    floats = [dt for dt in dtypes if jnp.issubdtype(dt, jnp.floating)]
    return jnp.result_type(*floats) if floats else jax.dtypes.canonicalize_dtype(jnp.float64)


def check_finite(a, name):
    return error_if(a, ~jnp.all(jnp.isfinite(a)), f"{name} contains NaN or inf")


def signals(X, dtype, name="X"):
    """`X` as a float array of shape (n, d) (or (d,) for one signal), checked finite."""
    X = jnp.asarray(as_array(X, name), dtype)
    if X.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape (n, d) or (d,), got shape {X.shape}")
    if X.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one feature (d >= 1), got shape {X.shape}")
    if X.ndim == 2 and X.shape[0] == 0:
        raise ValueError(f"{name} is empty: it must hold at least one signal, got shape {X.shape}")
    return check_finite(X, name)


def dictionary(D, d, dtype, mask=None, name="D"):
    """`(D, atom_mask)`: D of shape (k, d), finite, with no zero-norm unmasked atom."""
    D = jnp.asarray(as_array(D, name), dtype)
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
    mask = jnp.asarray(as_array(mask, name))
    if mask.shape != (k,):
        raise ValueError(f"{name} must have shape ({k},), got shape {mask.shape}")
    if mask.dtype != jnp.bool_:
        raise TypeError(f"{name} must be boolean, got dtype {mask.dtype}")
    return mask


def lam(value, batch_shape, dtype, name="lam"):
    """`lam` (scalar or one per signal) broadcast to `batch_shape`, checked finite and >= 0."""
    value = jnp.asarray(as_array(value, name))
    _compute_dtype(value.dtype, name)  # refuses booleans
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
    A = jnp.asarray(as_array(A, name))
    if A.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got shape {A.shape}")
    A = check_finite(A.astype(dtype), name)
    return error_if(A, jnp.any(A < 0), f"{name} must be nonnegative")


def int_at_least(value, name, least=1):
    """`value` as a Python int >= `least` (booleans and floats are refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < least:
        raise ValueError(f"{name} must be >= {least}, got {value!r}")
    return int(value)


def positive_int(value, name):
    return int_at_least(value, name, 1)


def tol(value, dtype, name="tol"):
    """A relative-gap tolerance: the dtype's default (1e-10 float64, 1e-6 float32) or one >= 0."""
    if value is None:
        value = 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-6
    value = jnp.asarray(as_array(value, name), dtype)
    return error_if(value, ~(value >= 0), f"{name} must be >= 0")


def weights(w, n, dtype, name="weights"):
    r"""Weights $w_i \ge 0$ of shape (n,), finite, with $W = \sum_i w_i > 0$ (default: all 1)."""
    if w is None:
        return jnp.ones((n,), dtype)
    w = jnp.asarray(as_array(w, name))
    if w.shape != (n,):
        raise ValueError(f"{name} must have one value per signal, shape ({n},), got {w.shape}")
    w = check_finite(w.astype(dtype), name)
    w = error_if(w, jnp.any(w < 0), f"{name} must be nonnegative")
    return error_if(w, jnp.sum(w) <= 0, f"{name} must have a positive sum")


def positive_lam(value, dtype, name="lam"):
    """A scalar `lam > 0` (the optimality residuals divide by it)."""
    value = lam(value, (), dtype, name)
    return error_if(value, value <= 0, f"{name} must be > 0 for optimality residuals")


def unit_atoms(D, mask, name="D"):
    """Refuse unmasked atoms whose norm is not 1, suggesting the fix."""
    eps = jnp.finfo(D.dtype).eps
    off = jnp.abs(jnp.linalg.norm(D, axis=-1) - 1.0) > _UNIT_NORM_EPS * eps * D.shape[-1]
    if mask is not None:
        off = off & mask
    return error_if(
        D,
        jnp.any(off),
        f"{name} has atoms whose norm is not 1 (the theory assumes unit-norm atoms); "
        f"normalise them first: {name} = {name} / jnp.linalg.norm({name}, axis=1, keepdims=True)",
    )


def matrix_signals(X, dtype, name="X"):
    """`X` as a float array of shape (n, d), checked finite."""
    X = jnp.asarray(as_array(X, name), dtype)
    if X.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got shape {X.shape}")
    return signals(X, dtype, name)


def signals_dictionary_codes(X, D, A, atom_mask):
    """Validated `(X, D, codes, mask)`: X (n, d), unit-norm D (k, d), codes `A` (n, k) >= 0 or
    None.

    Masked atoms are returned as zero rows with zero codes.
    """
    dtype = float_dtype(("X", X), ("D", D), *([] if A is None else [("codes", A)]))
    X = matrix_signals(X, dtype)
    D, mask = dictionary(D, X.shape[1], dtype, atom_mask)
    D = unit_atoms(D, mask)
    if mask is not None:
        D = jnp.where(mask[:, None], D, 0.0)
    if A is not None:
        A = codes(A, (X.shape[0], D.shape[0]), dtype)
        if mask is not None:
            A = jnp.where(mask, A, 0.0)
    return X, D, A, mask


def finite_rows(values, rows, name, context):
    """Raise if host `values` (one row per entry of `rows`) hold NaN or inf, naming the rows."""
    finite = np.isfinite(values).all(axis=-1)
    if finite.all():
        return
    bad = np.unique(np.asarray(rows).reshape(-1)[~finite])
    if bad[-1] - bad[0] + 1 == bad.size and bad.size > 1:
        where = f"rows {bad[0]}-{bad[-1]}"
    else:
        where = "row " if bad.size == 1 else "rows "
        where += ", ".join(map(str, bad[:5])) + (
            f" and {bad.size - 5} more" if bad.size > 5 else ""
        )
    raise ValueError(f"{name} contains NaN or inf in {where} (read for {context})")


def keyword_defaults(function, names=None) -> dict:
    """The keyword-only parameters of `function` (those in `names`, when given) with their
    defaults: the signature of the entry that documents them stays their one home."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and (names is None or name in names)
    }


def forwarded_options(options: dict, defaults: dict, caller: str) -> dict:
    """Keyword options that `caller` forwards, over their `defaults`; an unknown name raises a
    `TypeError` naming `caller` and the options it takes."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        known = ", ".join(defaults)
        raise TypeError(f"{caller}() got unknown option(s) {unknown}; the options are: {known}")
    return {**defaults, **options}
