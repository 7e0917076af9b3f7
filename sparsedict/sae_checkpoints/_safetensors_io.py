"""Read and write whole `.safetensors` files (every tensor, as numpy arrays).

The layout (huggingface/safetensors format spec): 8 bytes little-endian header size, a JSON
header `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`, then
the raw little-endian bytes. Offsets are parsed by the streaming reader's
`streaming._formats.safetensors` (one tensor per call); this module only lists the names and
writes files (for `save_sae` and the tests).
"""

import json
import os
import struct

import numpy as np

from ..streaming._formats import _SAFETENSORS_DTYPES
from ..streaming._formats import safetensors as stored_tensor

_DTYPE_NAMES = {np.dtype(v).str: k for k, v in _SAFETENSORS_DTYPES.items()}


def tensor_names(path) -> list[str]:
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return [name for name in header if name != "__metadata__"]


def read_safetensors(path) -> dict[str, np.ndarray]:
    """Every tensor of `path` as a numpy array in its stored dtype (bf16 as `ml_dtypes`)."""
    path = os.fspath(path)
    out = {}
    with open(path, "rb") as f:
        for name in tensor_names(path):
            s = stored_tensor(path, name)
            count = int(np.prod(s.shape, dtype=np.int64))
            f.seek(s.offset)
            raw = f.read(count * s.dtype.itemsize)
            out[name] = np.frombuffer(raw, s.dtype, count).reshape(s.shape).copy()
    return out


def write_safetensors(path, tensors: dict, metadata: dict | None = None) -> None:
    """Write `{name: array}` as a `.safetensors` file (C order, little endian)."""
    header, blobs, offset = {}, [], 0
    for name, value in tensors.items():
        a = np.array(value, order="C", copy=True)
        a = a.astype(a.dtype.newbyteorder("<")) if a.dtype.byteorder == ">" else a
        key = np.dtype(a.dtype).str.replace("=", "<").replace("|", "")
        dtype_name = _DTYPE_NAMES.get(key) or _DTYPE_NAMES.get(np.dtype(a.dtype).str)
        if dtype_name is None:
            raise TypeError(f"{name}: dtype {a.dtype} has no safetensors name")
        raw = a.tobytes()
        header[name] = {
            "dtype": dtype_name,
            "shape": list(a.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
