"""Signal sources: the rows of an (n, d) float array, read on demand from memory or from files.

A file-backed source reads rows with `os.pread` at the byte offset given by the file's header
(`_formats.py`), so only the rows asked for are read and nothing stays mapped: the
process's resident memory is the rows returned, not the file. Shards (several files, one array
each) concatenate along the rows; a read touches only the shards that hold its rows.
"""

import abc
import bisect
import glob
import os
import threading
import weakref

import jax
import ml_dtypes
import numpy as np

from . import _formats as formats

_FLOATS = tuple(np.dtype(t) for t in (np.float16, np.float32, np.float64, ml_dtypes.bfloat16))
# `take` reads through gaps of up to 64 KiB between wanted rows (one read beats many small
# ones) and reads at most 8 MiB at a time.
_GAP_BYTES = 64 << 10
_RUN_BYTES = 8 << 20


class SignalSource(abc.ABC):
    """Rows of an (n, d) floating-point array, read on demand.

    Attributes:
        n: number of signals (rows). d: number of features.
        dtype: the stored numpy dtype. name: a label used in error messages (a path or "X").
    """

    n: int
    d: int
    dtype: np.dtype
    name: str

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.d)

    @abc.abstractmethod
    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows `start:stop` (contiguous), a new (stop - start, d) host array."""

    def take(self, rows) -> np.ndarray:
        """Rows at the given indices (any order, repeats allowed), as a (len(rows), d) array.

        Nearby rows are read together: runs of sorted indices with gaps below 64 KiB become one
        contiguous `read` of at most 8 MiB.
        """
        rows = np.asarray(rows, np.int64).reshape(-1)
        out = np.empty((rows.size, self.d), self.dtype)
        if rows.size == 0:
            return out
        if rows.min() < 0 or rows.max() >= self.n:
            raise IndexError(f"{self.name}: row indices must lie in [0, {self.n})")
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]
        row_bytes = max(self.d * self.dtype.itemsize, 1)
        gap, run = max(_GAP_BYTES // row_bytes, 1), max(_RUN_BYTES // row_bytes, 1)
        run_id = np.concatenate([[0], np.cumsum(np.diff(wanted) > gap)])
        run_start = wanted[np.concatenate([[0], np.flatnonzero(np.diff(run_id)) + 1])][run_id]
        piece = np.stack([run_id, (wanted - run_start) // run])
        cuts = np.flatnonzero(np.any(np.diff(piece, axis=1) != 0, axis=0)) + 1
        for lo, hi in zip(
            np.concatenate([[0], cuts]), np.concatenate([cuts, [rows.size]]), strict=False
        ):
            first, last = int(wanted[lo]), int(wanted[hi - 1])
            out[order[lo:hi]] = self.read(first, last + 1)[wanted[lo:hi] - first]
        return out

    def _check_range(self, start, stop):
        if not 0 <= start <= stop <= self.n:
            raise IndexError(f"{self.name}: rows {start}:{stop} outside [0, {self.n})")

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}, n={self.n}, d={self.d}, dtype={self.dtype})"


class ArraySource(SignalSource):
    """An in-memory (n, d) array (numpy, a memory map, or a JAX array copied to the host)."""

    def __init__(self, array, name="X"):
        array = np.asarray(array) if not isinstance(array, np.ndarray) else array
        _check_array(array.shape, array.dtype, name)
        if array.shape[0] == 0:
            raise ValueError(
                f"{name} is empty: it must hold at least one signal, got shape {array.shape}"
            )
        self.array, self.name = array, name
        (self.n, self.d), self.dtype = array.shape, array.dtype

    def read(self, start, stop):
        self._check_range(start, stop)
        return np.array(self.array[start:stop])

    def take(self, rows):
        return np.asarray(self.array[np.asarray(rows, np.int64).reshape(-1)])


class FileSource(SignalSource):
    """Rows concatenated over one or more stored arrays (`.npy`, `.npz`, `.safetensors`)."""

    def __init__(self, stored: list[formats.Stored], name=None):
        first = stored[0]
        for s in stored:
            label = s.path if s.member is None else f"{s.path}[{s.member}]"
            _check_array(s.shape, s.dtype, label)
            if s.fortran_order and s.shape[0] > 1:
                raise ValueError(
                    f"{label} is stored in Fortran (column-major) order, so its rows are not "
                    "contiguous: rewrite it with np.save(path, np.ascontiguousarray(X))"
                )
            if s.shape[1] != first.shape[1]:
                raise ValueError(
                    f"{label} has d = {s.shape[1]} features but {first.path} has d = "
                    f"{first.shape[1]}"
                )
            if s.dtype != first.dtype:
                raise ValueError(
                    f"{label} has dtype {s.dtype} but {first.path} has dtype {first.dtype}"
                )
        self.stored = [s for s in stored if s.shape[0] > 0]
        self.starts = list(np.cumsum([0] + [s.shape[0] for s in self.stored]))
        self.n, self.d = int(self.starts[-1]), int(first.shape[1])
        self.dtype = first.dtype.newbyteorder("=")
        self.name = name or (
            first.path if len(stored) == 1 else f"{first.path} (+{len(stored) - 1} shards)"
        )
        if self.n == 0:
            raise ValueError(f"{self.name} is empty: it must hold at least one signal")
        self._lock = threading.Lock()
        self._fds: dict[str, int] = {}  # path -> open descriptor, closed with the source
        weakref.finalize(self, _close_all, self._fds)
        self._decoded = (None, None)  # the last compressed .npz member read, decoded

    def read(self, start, stop):
        self._check_range(start, stop)
        parts = []
        i = bisect.bisect_right(self.starts, start) - 1
        while start < stop:
            lo = start - self.starts[i]
            hi = min(stop, self.starts[i + 1]) - self.starts[i]
            parts.append(self._read_stored(self.stored[i], lo, hi))
            start, i = self.starts[i] + hi, i + 1
        if not parts:
            return np.empty((0, self.d), self.dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _read_stored(self, s, lo, hi):
        if s.offset is None:  # compressed member: decode it whole, keep the last one
            with self._lock:
                if self._decoded[0] is not s:
                    with np.load(s.path) as z:
                        self._decoded = (s, z[s.member.removesuffix(".npy")])
                array = self._decoded[1]
            return np.array(array[lo:hi], self.dtype)
        row_bytes = s.shape[1] * s.dtype.itemsize
        size, at = (hi - lo) * row_bytes, s.offset + lo * row_bytes
        buffer = bytearray(size)
        view, fd, done = memoryview(buffer), self._fd(s.path), 0
        while done < size:  # pread may return fewer bytes than asked
            got = os.preadv(fd, [view[done:]], at + done)
            if got == 0:
                raise OSError(
                    f"{s.path}: file ends before row {lo + done // row_bytes} (truncated?)"
                )
            done += got
        return (
            np.frombuffer(buffer, s.dtype)
            .reshape(hi - lo, s.shape[1])
            .astype(self.dtype, copy=False)
        )

    def _fd(self, path):
        with self._lock:
            if path not in self._fds:
                self._fds[path] = os.open(path, os.O_RDONLY)
            return self._fds[path]

    def close(self):
        """Close the open files (they reopen on the next read)."""
        with self._lock:
            _close_all(self._fds)


def _close_all(fds):
    for fd in fds.values():
        os.close(fd)
    fds.clear()


def _check_array(shape, dtype, label):
    dtype = np.dtype(dtype)
    if dtype.newbyteorder("=") not in _FLOATS:
        raise TypeError(
            f"{label} must hold floating-point signals (float16, bfloat16, float32 or float64), "
            f"got dtype {dtype}"
        )
    if len(shape) != 2:
        raise ValueError(f"{label} must have shape (n, d), got shape {tuple(shape)}")
    if shape[1] == 0:
        raise ValueError(
            f"{label} must have at least one feature (d >= 1), got shape {tuple(shape)}"
        )


def _is_path(x):
    return isinstance(x, (str, os.PathLike))


def _expand(path):
    path = os.fspath(path)
    if glob.has_magic(path):
        matches = sorted(glob.glob(path))
        if not matches:
            raise FileNotFoundError(f"no file matches the pattern {path}")
        return matches
    return [path]


def open_signals(signals, *, key: str | None = None, name: str | None = None) -> SignalSource:
    """A [`SignalSource`][sparsedict.streaming.SignalSource] for in-memory signals, a file, a glob
    pattern or a list of shards.

    Arguments:
        signals: a `SignalSource` (returned as is); an (n, d) array (kept in memory; a JAX array
            is copied to the host); the path of a `.npy`, `.npz` or `.safetensors` file; a glob
            pattern (`"acts/*.safetensors"`, files in sorted order); or a list of paths. Shards
            hold one (n_i, d) array each, with the same d and dtype; their rows concatenate.
        key: the array to read from `.npz`/`.safetensors` files that hold several (default: the
            only one).
        name: the label of errors (default: the path, or "X" for an array).

    Files are read by explicit reads at the array's byte offset, never memory-mapped: reading a
    file much larger than memory keeps the resident memory at the rows read. Compressed `.npz`
    members (`np.savez_compressed`) cannot be read in part: each is decoded whole when first
    read, so prefer `np.savez` or `.npy` shards for streaming.
    """
    if isinstance(signals, SignalSource):
        return signals
    if _is_path(signals) or (
        isinstance(signals, (list, tuple)) and signals and all(_is_path(p) for p in signals)
    ):
        paths = [
            p for entry in ([signals] if _is_path(signals) else signals) for p in _expand(entry)
        ]
        return FileSource([formats.parse(p, key) for p in paths], name=name)
    if isinstance(signals, (list, tuple)) and not signals:
        raise ValueError(f"{name or 'signals'}: an empty list of files")
    if isinstance(signals, jax.Array):
        signals = np.asarray(signals)
    return ArraySource(signals, name=name or "X")


def load_array(path, *, key: str | None = None) -> np.ndarray:
    """The whole (n, d) array of a `.npy`, `.npz` or `.safetensors` file, in memory.

    The same reader as [`open_signals`][sparsedict.streaming.open_signals] (no `safetensors`
    package needed; `key` picks one of several arrays; the data's extent is checked against the
    file's size when it is opened), read whole: for dictionaries and data that fit in memory.
    """
    if _is_path(path):
        stored = formats.parse(path, key)
        if stored.fortran_order and stored.offset is not None:
            # column-major .npy (e.g. np.save of a transposed array): fine when read whole
            count = int(np.prod(stored.shape, dtype=np.int64))
            with open(stored.path, "rb") as f:
                f.seek(stored.offset)
                raw = f.read(count * stored.dtype.itemsize)
            array = np.frombuffer(raw, stored.dtype, count).reshape(stored.shape, order="F")
            source = open_signals(np.ascontiguousarray(array), name=stored.path)
            return source.read(0, source.n)
    source = open_signals(path, key=key)
    return source.read(0, source.n)
