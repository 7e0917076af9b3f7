r"""What every training run reads, decided in one place for the learners and the sweeps.

- **dtype**: the stored dtype promoted to at least float32 (half precision trains in float32),
  then canonicalised by JAX (float64 only with `jax_enable_x64`).
- **scale**: every signal multiplied by $2^{-e}$, $e$ the binary exponent of the largest
  $|x_{ij}|$ of a sample of rows. The problem is homogeneous ($x, \lambda \to cx, c\lambda$ gives
  $D \to D$, $a \to ca$, $F \to c^2 F$) and a power of two is exact, so the learner sees the same
  problem at a scale where no square underflows; results are scaled back. Data whose squares
  cannot be represented in the dtype at all is refused.
- **initial atoms**: `k` distinct signals picked by `numpy.random.default_rng(seed)`, normalised
  (random directions beyond n or for zero signals). The pick is prefix-consistent: the first `w`
  atoms for width `k` are the atoms for width `w`, so a sweep member padded to a bucket starts
  where the same learner run alone starts.
- **minibatch order**: `sparsedict.streaming.Minibatches` seeded by `shuffle_seed` (not by the
  atoms' seed: a sweep's members share one stream).
- **fingerprint**: shape, dtype and a hash of sampled rows, recorded by checkpoints and sweep
  folders so that a resume on other data is refused.
"""

import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validation as check
from .. import streaming

# Rows hashed by the data fingerprint and read to choose the scale (spread over the data).
_SAMPLE_ROWS = 256
# Index draws per block when picking initial atoms from more than 2^20 signals.
_DRAW_BLOCK = 4096


def training_dtype(dtype) -> np.dtype:
    """The compute dtype for stored `dtype`: at least float32 (bfloat16/float16 promote)."""
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating) and dtype.name != "bfloat16":
        raise TypeError(f"X must hold floating-point signals, got dtype {dtype}")
    wide = np.float64 if dtype == np.float64 else np.float32
    return np.dtype(jax.dtypes.canonicalize_dtype(wide))


def is_streamed(X) -> bool:
    """Whether `X` is read as a stream (a path, a list of paths, a source or a memory map)."""
    paths = isinstance(X, (list, tuple)) and X and all(isinstance(p, (str, os.PathLike)) for p in X)
    return isinstance(X, (str, os.PathLike, streaming.SignalSource, np.memmap)) or bool(paths)


def open_source(X, name="X") -> streaming.SignalSource:
    """`X` as a signal source: streamed input opened, arrays (numpy or JAX) wrapped."""
    if is_streamed(X):
        return streaming.open_signals(X)
    if isinstance(X, jax.Array):
        X = np.asarray(X)
    X = np.asarray(X)
    if not (np.issubdtype(X.dtype, np.floating) or X.dtype.name == "bfloat16"):
        raise TypeError(
            f"{name} must be a floating-point array (float32 or float64), got dtype {X.dtype}; "
            f"convert it with {name}.astype(float)"
        )
    if X.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got shape {X.shape}")
    if X.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature (d >= 1), got shape {X.shape}")
    return streaming.ArraySource(X, name)


def _sample_positions(n: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, _SAMPLE_ROWS)).round().astype(np.int64))


def fingerprint(source: streaming.SignalSource) -> dict:
    """Shape, stored dtype and a SHA-256 of up to 256 rows spread over the data."""
    rows = _sample_positions(source.n)
    values = np.ascontiguousarray(source.take(rows))
    digest = hashlib.sha256(values.tobytes()).hexdigest()[:16]
    return {"shape": [int(source.n), int(source.d)], "dtype": str(source.dtype), "rows": digest}


def scale_exponent(source: streaming.SignalSource, dtype, rows=None) -> int:
    """`e` with the largest sampled `|x|` in [2^(e-1), 2^e): training sees `X 2^-e`.

    Refuses data whose squares underflow or overflow `dtype` (the objective of the original
    problem could not be returned), naming the scale.
    """
    sample = source.take(_sample_positions(source.n)) if rows is None else rows
    peak = float(np.max(np.abs(np.asarray(sample, np.float64)), initial=0.0))
    if peak == 0.0 or not np.isfinite(peak):
        return 0
    info = np.finfo(dtype)
    if peak**2 < float(info.tiny) / float(info.eps) or peak**2 > float(info.max) * float(info.eps):
        raise ValueError(
            f"{source.name}: the signals' scale (largest |x| = {peak:.3g}) cannot be trained in "
            f"{np.dtype(dtype).name}: the objective 1/2 ||x - aD||^2 would underflow or overflow. "
            f"Rescale X and lam by the same factor (the dictionary does not change) or use float64"
        )
    return int(np.frexp(peak)[1])


def scaled(values, exponent: int):
    """`values * 2^-exponent` (exact)."""
    return np.ldexp(values, -exponent).astype(values.dtype, copy=False)


class ScaledSource(streaming.SignalSource):
    """`source`'s rows times `2^-exponent`, converted to `dtype`."""

    def __init__(self, source: streaming.SignalSource, exponent: int, dtype):
        self.source, self.exponent = source, exponent
        self.n, self.d, self.name = source.n, source.d, source.name
        self.dtype = np.dtype(dtype)

    def read(self, start, stop):
        return scaled(self.source.read(start, stop).astype(self.dtype), self.exponent)

    def take(self, rows):
        return scaled(self.source.take(rows).astype(self.dtype), self.exponent)


def _distinct_rows(n: int, k: int, rng) -> np.ndarray:
    """min(k, n) distinct row indices; the first w for k are those for w (prefix-consistent)."""
    if n <= 1 << 20:
        return rng.permutation(n)[: min(k, n)]
    picked: dict[int, None] = {}
    while len(picked) < min(k, n):
        for i in rng.integers(0, n, _DRAW_BLOCK).tolist():
            picked.setdefault(i)
            if len(picked) == k:
                break
    return np.fromiter(picked, np.int64)


def initial_atoms(
    source: streaming.SignalSource, k: int, seed: int, dtype, center=None
) -> np.ndarray:
    """`k` distinct signals of `source` picked by `seed`, minus `center` if given, normalised
    (host array, (k, d)).

    Beyond n signals, and for zero signals, the atoms are random normal directions of the same
    generator. Memory O(k d); the first `w` atoms for `k` are the atoms for `w`.
    """
    rng = np.random.default_rng(seed)
    pick = _distinct_rows(source.n, k, rng)
    rows = source.take(pick).astype(np.float64)
    check.finite_rows(rows, pick, source.name, "the initial dictionary")
    if center is not None:
        rows = rows - np.asarray(center, np.float64)
    extra = np.random.default_rng([seed, 1]).standard_normal((k, source.d))
    rows = np.concatenate([rows, extra[len(pick) :]])
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    rows = np.where(norms > 0, rows, extra)
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(dtype)


def minibatches(source, batch_size: int, shuffle_seed: int, shuffle, dtype):
    """The minibatch stream of every minibatch learner and sweep."""
    return streaming.Minibatches(
        source, min(batch_size, source.n), shuffle_seed, shuffle=shuffle, dtype=dtype
    )


class TrainingData:
    """The signals of one run, opened once: `source` (scaled, in the training dtype), the device
    arrays the learner needs, and what identifies the data.

    Attributes:
        source: the rows as the learner sees them (times `2^-exponent`, in `dtype`).
        raw: the source as given. dtype: the training dtype. exponent: the scale exponent.
        fingerprint: see [`fingerprint`][]. n, d: the shape.
    """

    def __init__(self, X, *, name="X"):
        raw = open_source(X, name)
        self.raw, self.n, self.d = raw, raw.n, raw.d
        self.dtype = training_dtype(raw.dtype)
        self.fingerprint = fingerprint(raw)
        self.exponent = scale_exponent(raw, self.dtype)
        self.source = ScaledSource(raw, self.exponent, self.dtype)

    def rows(self, count: int, context: str | None = None) -> np.ndarray:
        """The first `count` signals as the learner sees them, checked finite (host array)."""
        count = min(count, self.n)
        values = self.source.read(0, count)
        what = context or f"the first {count} signals"
        check.finite_rows(values, np.arange(count), self.source.name, what)
        return values

    def device_rows(self, count: int, context: str | None = None) -> jax.Array:
        return jnp.asarray(self.rows(count, context), self.dtype)

    def unscale(self, value, power: int = 1):
        """A quantity of the scaled problem back at the data's scale (`power`: 1 codes, 2 F)."""
        return jnp.ldexp(jnp.asarray(value), power * self.exponent)
