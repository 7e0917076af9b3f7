"""Where an array's rows lie in a file: `.npy`, `.npz` members and `.safetensors` tensors.

Each parser returns a `Stored` record (path, byte offset of row 0, shape, dtype) read from the
file's header only, so rows can be fetched later with `os.pread` (no memory map: the pages read
never count in the process's resident memory). Compressed `.npz` members have no fixed byte
offset; they are decoded whole, once, when first read (`Stored.offset is None`). Every other
record is checked against the file's size when the file is opened: a truncated file is refused
there, not at the first read past its end.
"""

import json
import os
import struct
import zipfile
from typing import NamedTuple

import ml_dtypes
import numpy as np

# safetensors dtype names (https://github.com/huggingface/safetensors, format spec).
_SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


class Stored(NamedTuple):
    path: str
    offset: int | None  # byte offset of row 0; None: a compressed `.npz` member
    shape: tuple
    dtype: np.dtype
    fortran_order: bool = False
    member: str | None = None  # the `.npz` member name


def _npy_header(f, path):
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        return np.lib.format.read_array_header_2_0(f)
    except ValueError as e:
        raise ValueError(f"{path}: not a valid .npy array ({e})") from e


def npy(path) -> Stored:
    with open(path, "rb") as f:
        shape, fortran_order, dtype = _npy_header(f, path)
        return Stored(path, f.tell(), shape, dtype, fortran_order)


class SeveralArrays(ValueError):
    """A file holds several arrays and no key names one (`names`: what it holds)."""

    def __init__(self, path, names, key_name="key="):
        self.path, self.names = path, sorted(names)
        super().__init__(f"{path} holds several arrays {self.names}: name one with {key_name}")


def _pick(names, key, path):
    if key is None:
        if len(names) != 1:
            raise SeveralArrays(path, names)
        return next(iter(names))
    if key not in names:
        raise KeyError(f"{path} has no array {key!r}; it holds {sorted(names)}")
    return key


def npz(path, key=None) -> Stored:
    with zipfile.ZipFile(path) as z:
        members = {
            name.removesuffix(".npy"): info for name in z.namelist() for info in [z.getinfo(name)]
        }
        name = _pick(members, key, path)
        info = members[name]
        with z.open(info) as f:
            shape, fortran_order, dtype = _npy_header(f, f"{path}[{name}]")
            header_size = f.tell()
    if info.compress_type != zipfile.ZIP_STORED:
        return Stored(path, None, shape, dtype, fortran_order, member=info.filename)
    # Stored member: its bytes follow the local file header (30 bytes + name + extra field).
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
    offset = info.header_offset + 30 + name_len + extra_len + header_size
    return Stored(path, offset, shape, dtype, fortran_order, member=info.filename)


def safetensors(path, key=None) -> Stored:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a valid .safetensors file (too short)")
        (size,) = struct.unpack("<Q", raw)
        if size > os.path.getsize(path):
            raise ValueError(f"{path}: not a valid .safetensors file (header size {size})")
        try:
            header = json.loads(f.read(size))
        except ValueError as e:
            raise ValueError(f"{path}: not a valid .safetensors file ({e})") from e
    header.pop("__metadata__", None)
    name = _pick(header, key, path)
    entry = header[name]
    if entry["dtype"] not in _SAFETENSORS_DTYPES:
        raise TypeError(f"{path}[{name}]: unsupported safetensors dtype {entry['dtype']}")
    begin, _ = entry["data_offsets"]
    return Stored(
        path, 8 + size + begin, tuple(entry["shape"]), _SAFETENSORS_DTYPES[entry["dtype"]]
    )


def parse(path, key=None) -> Stored:
    """The `Stored` record of `path` (`.npy`, `.npz` or `.safetensors`; `key` picks an array)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"{path} is a directory: pass its files, or a glob like '{path}/*.npy'"
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if path.endswith(".npy"):
        return _fits(npy(path))
    if path.endswith(".npz"):
        return _fits(npz(path, key))
    if path.endswith(".safetensors"):
        return _fits(safetensors(path, key))
    raise ValueError(f"{path}: expected a .npy, .npz or .safetensors file")


def _fits(stored: Stored) -> Stored:
    """`stored`, after checking that its data lie inside the file."""
    if stored.offset is None:
        return stored
    end = stored.offset + int(np.prod(stored.shape)) * stored.dtype.itemsize
    size = os.path.getsize(stored.path)
    if end > size:
        label = stored.path if stored.member is None else f"{stored.path}[{stored.member}]"
        raise ValueError(
            f"{label}: the header describes {stored.shape} {stored.dtype} ending at byte {end}, "
            f"but the file has {size} bytes (truncated?)"
        )
    return stored
