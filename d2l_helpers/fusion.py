"""Inference on the CPU with oneDNN's fused Convolution + BatchNorm + ReLU6.

In inference mode BatchNorm is an affine map with fixed statistics, so oneDNN can fold it
into the convolution before it and apply ReLU6 (``clip(x, 0, 6)``) as the convolution's
post-op: three passes over each activation become one. MXNet 1.9 does this when a block is
partitioned for its ``"MKLDNN"`` subgraph backend, but such a block can no longer be
trained. `inference_twin` therefore builds, once per net and device, a second block that
shares every `Parameter` with the net (no copy: an update of the net is seen by the twin;
oneDNN refolds when the weights or statistics change) and is only ever called in inference
mode. On EfficientNet-Lite0 at 160 px, batch 32, a forward pass takes 2.3x less time and
the logits differ from the unfused net's by rounding only (``tests/test_fusion.py``:
within 1e-5 of the logits' scale on real photos; docs/speed-profile.md has the tables).

`forward` is what the evaluation, feature extraction and prediction helpers call. It uses
the net itself, unfused, when fusion cannot apply: in training mode (``autograd.record`` or
``autograd.train_mode``: BatchNorm then uses batch statistics), on a GPU, for a block that
is not a ``HybridBlock``, without oneDNN in the MXNet build, or with ``D2L_FUSED_INFERENCE=0``
in the environment (the escape hatch to compare both).

Example:
    >>> import mxnet as mx
    >>> from d2l_helpers import fusion
    >>> from d2l_helpers.efficientnet_lite import efficientnet_lite0
    >>> net = efficientnet_lite0(classes=2)
    >>> net.initialize(mx.init.Xavier())
    >>> x = mx.nd.random.uniform(shape=(2, 3, 64, 64))
    >>> plain, fused = net(x), fusion.forward(net, x)
    >>> bool(abs(plain - fused).max() < 1e-5), fusion.inference_twin(net, x) is not net
    (True, True)
    >>> fusion.release(net)
"""
from __future__ import annotations

import os
import weakref

_TWINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
ENV_SWITCH = "D2L_FUSED_INFERENCE"


def enabled() -> bool:
    """False when ``D2L_FUSED_INFERENCE=0`` is set, or the MXNet build has no oneDNN."""
    if os.environ.get(ENV_SWITCH, "1").strip() == "0":
        return False
    import mxnet as mx

    features = mx.runtime.Features()
    return features.is_enabled("MKLDNN") if "MKLDNN" in features else False


def _applies(net, x) -> bool:
    from mxnet import autograd
    from mxnet.gluon import HybridBlock

    return (isinstance(net, HybridBlock) and not autograd.is_training()
            and x.context.device_type == "cpu" and enabled())


def _key(net, x) -> tuple:
    from . import arrays

    # The twin is the net's graph at the time it was built: a new head or an added adapter
    # brings new Parameters, so the ids of the net's Parameters are part of the key.
    params = tuple(id(p) for p in net.collect_params().values())
    return (str(x.context), arrays.is_np(), params)


def _build(net, x):
    import mxnet as mx
    from mxnet import autograd, gluon

    from . import arrays

    with autograd.predict_mode():
        net(x)  # completes deferred initialisation (e.g. a new Dense head's in_units)
    data = mx.sym.var("data", dtype=x.dtype)
    if arrays.is_np():
        data = data.as_np_ndarray()
    twin = gluon.SymbolBlock(net(data), data, params=net.collect_params())
    twin.optimize_for(x, backend="MKLDNN", static_alloc=True)
    return twin


def inference_twin(net, x):
    """The fused twin of ``net`` for inputs like ``x``, or ``net`` itself where fusion does
    not apply (see the module docstring). Built on first use, then cached for the net's
    lifetime (or until `release`)."""
    if not _applies(net, x):
        return net
    key = _key(net, x)
    entry = _TWINS.get(net)
    if entry is None or entry[0] != key:
        _TWINS[net] = entry = (key, _build(net, x))
    return entry[1]


def forward(net, x):
    """``net(x)`` in inference mode, through the fused twin where it applies."""
    return inference_twin(net, x)(x)


def release(net) -> None:
    """Drop ``net``'s twin and the memory pool it holds (the next `forward` rebuilds it)."""
    _TWINS.pop(net, None)
