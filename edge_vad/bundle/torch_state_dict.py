"""Read a PyTorch state-dict file (`torch.save` of a dict of tensors) into numpy arrays, without torch.

The device runtime never imports torch, but the ImageNet weights of the default backbone reach it as the
`.pth` file of a pip package (see edge_vad.bundle.package_weights). Both of torch's file formats hold plain
little-endian tensor bytes next to a pickle that says which bytes form which tensor:

- legacy (torch < 1.6, and what the Lite0 package ships): pickles of a magic number, a protocol version and
  system info, then the object pickle, then the list of storage keys, then per storage an int64 element
  count followed by the raw bytes, in the listed order;
- zip (torch >= 1.6): `<archive>/data.pkl` plus one raw file `<archive>/data/<key>` per storage.

The object pickle is read with an allow-list unpickler: only `collections.OrderedDict`, torch's tensor
rebuild functions and its storage type names resolve, so a file cannot run code. Anything else (a pickled
model object, a quantised tensor, bfloat16) is refused with one line.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Dict, Union

import numpy as np

from edge_vad.errors import EdgeVadError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {  # torch storage class name -> little-endian numpy dtype
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: Union[np.ndarray, None] = None


@dataclass
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple
    stride: tuple

    def to_numpy(self) -> np.ndarray:
        flat = self.storage.data
        if flat is None:
            raise EdgeVadError(f"storage {self.storage.key} has no data in the file; the file is truncated or damaged")
        if not self.size:
            return flat[self.offset:self.offset + 1].reshape(()).copy()
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.size,
                                               strides=tuple(s * item for s in self.stride), writeable=False)
        return np.ascontiguousarray(view)


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> _TensorRef:
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if last >= storage.numel:
        raise EdgeVadError(f"a tensor of shape {list(size)} reaches past its storage of {storage.numel} elements")
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: _TensorRef, *_: Any) -> _TensorRef:
    return data


class _StorageType:
    """Stands for `torch.<Name>Storage` inside the pickle."""

    def __init__(self, name: str):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Unpickler(pickle.Unpickler):
    """Resolves only the globals a state dict needs; storages come back as _Storage placeholders."""

    def __init__(self, fh: BinaryIO, storages: Dict[str, _Storage]):
        super().__init__(fh)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise EdgeVadError(f"the weights file pickles {module}.{name}, which a plain state dict does not hold; "
                           "save the model's state_dict() (a dict of tensors) instead")

    def persistent_load(self, pid: Any) -> _Storage:
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise EdgeVadError(f"the weights file holds a pickled {kind!r}, not only tensors; save a state_dict() instead")
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise EdgeVadError(f"storage {key} has an unsupported type {storage_type!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype, numel)
        return self.storages[key]


def _tensors(obj: Any, origin: str) -> Dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise EdgeVadError(f"{origin}: holds a {type(obj).__name__}, not a state dict (a dict of tensors)")
    out: Dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(value, _TensorRef):
            raise EdgeVadError(f"{origin}: entry {key!r} is a {type(value).__name__}, not a tensor")
        out[str(key)] = value.to_numpy()
    return out


class _PlainUnpickler(pickle.Unpickler):
    """For the legacy header pickles and the key list: plain data, no globals at all."""

    def find_class(self, module: str, name: str) -> Any:
        raise EdgeVadError(f"the weights file's header pickles {module}.{name}; not a PyTorch weights file")


def _read_legacy(fh: BinaryIO, origin: str) -> Dict[str, np.ndarray]:
    if _PlainUnpickler(fh).load() != LEGACY_MAGIC:
        raise EdgeVadError(f"{origin}: not a PyTorch weights file (no torch magic number)")
    if _PlainUnpickler(fh).load() != LEGACY_PROTOCOL:
        raise EdgeVadError(f"{origin}: unsupported PyTorch legacy protocol version")
    info = _PlainUnpickler(fh).load()
    if not isinstance(info, dict) or not info.get("little_endian", False):
        raise EdgeVadError(f"{origin}: written on a big-endian machine, which edge-vad does not read")
    storages: Dict[str, _Storage] = {}
    obj = _Unpickler(fh, storages).load()
    keys = _PlainUnpickler(fh).load()
    for key in keys:
        storage = storages[str(key)]
        head = fh.read(8)
        if len(head) != 8:
            raise EdgeVadError(f"{origin}: truncated at storage {key}; reinstall the package the file came from")
        (numel,) = struct.unpack("<q", head)
        nbytes = numel * storage.dtype.itemsize
        raw = fh.read(nbytes)
        if numel != storage.numel or len(raw) != nbytes:
            raise EdgeVadError(f"{origin}: storage {key} is truncated or damaged; reinstall the package the file came from")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return _tensors(obj, origin)


def _read_zip(path: Path, origin: str) -> Dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise EdgeVadError(f"{origin}: a zip file without exactly one data.pkl; not a PyTorch weights file")
        root = pkl[0][: -len("data.pkl")]
        storages: Dict[str, _Storage] = {}
        obj = _Unpickler(io.BytesIO(zf.read(pkl[0])), storages).load()
        for key, storage in storages.items():
            raw = zf.read(f"{root}data/{key}")
            if len(raw) < storage.numel * storage.dtype.itemsize:
                raise EdgeVadError(f"{origin}: storage {key} is truncated")
            storage.data = np.frombuffer(raw, dtype=storage.dtype, count=storage.numel)
    return _tensors(obj, origin)


def read_state_dict(path: Union[str, Path]) -> Dict[str, np.ndarray]:
    """The tensors of a `torch.save`d state dict, by key, as C-contiguous numpy arrays (no torch needed)."""
    path = Path(path)
    origin = str(path)
    if not path.is_file():
        raise EdgeVadError(f"{origin}: no such weights file")
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path, origin)
        with open(path, "rb") as fh:
            return _read_legacy(fh, origin)
    except (pickle.UnpicklingError, EOFError, KeyError, IndexError, TypeError, ValueError, struct.error) as exc:
        raise EdgeVadError(f"{origin}: not a readable PyTorch state dict ({type(exc).__name__}: {exc})") from None
