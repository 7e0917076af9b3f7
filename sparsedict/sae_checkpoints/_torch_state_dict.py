"""Read a `torch.save`d state dict of plain tensors without torch, and without running its code.

A `torch.save` file is a zip archive: `<name>/data.pkl` (a pickle whose tensors refer to storages
by key through `persistent_load`) and one raw little-endian file `<name>/data/<key>` per storage.
The unpickler below resolves only the few globals such a state dict needs (an `OrderedDict`,
torch's tensor and parameter rebuild functions, the typed storage classes) to numpy
replacements; any other global is refused, so no code from the file ever runs.
"""

import collections
import pickle
import zipfile

import ml_dtypes
import numpy as np

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


def _rebuild_tensor(storage, offset, size, stride, *_):
    """A numpy view with torch's (offset, size, stride) in elements, copied to own its memory."""
    itemsize = storage.dtype.itemsize
    if len(size) == 0:
        return storage[offset].copy()
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    )
    return np.array(view)


def _rebuild_parameter(data, *_):
    return data


_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._storages = {}

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) in _GLOBALS:
            return _GLOBALS[(module, name)]
        raise pickle.UnpicklingError(
            f"refusing {module}.{name}: only plain tensor state dicts are read without torch "
            "(pip install torch to load other checkpoints)"
        )

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage reference {pid!r}")
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}data/{key}")
            self._storages[key] = np.frombuffer(raw, storage_type.dtype, numel)
        return self._storages[key]


def read_torch_state_dict(path) -> dict[str, np.ndarray]:
    """`{name: numpy array}` from a `torch.save`d dict of tensors (zip format, torch >= 1.6)."""
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path}: not a zip-format torch checkpoint (legacy torch.save format); "
            "load it with torch (pip install torch)"
        )
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pkl) != 1:
            raise ValueError(f"{path}: expected one data.pkl in the archive, found {pkl}")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = f"{prefix}byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        with archive.open(pkl[0]) as f:
            state = _Unpickler(f, archive, prefix).load()
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}")
    return dict(state)
