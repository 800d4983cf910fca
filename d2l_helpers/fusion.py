"""Inference on the CPU with oneDNN's fused Convolution + BatchNorm + ReLU6.

In inference mode BatchNorm is an affine map with fixed statistics, so oneDNN can fold it
into the convolution before it and apply ReLU6 (``clip(x, 0, 6)``) as the convolution's
post-op: three passes over each activation become one. MXNet 1.9 does this when a block is
partitioned for its ``"MKLDNN"`` subgraph backend, but such a block can no longer be
trained. `inference_twin` therefore builds, once per net (and device, array mode, dtype), a
second block that shares every `Parameter` with the net (no copy: an update of the net is
seen by the twin) and is only ever called in inference mode. BatchNorm is folded again on
every call: the twin is hybridized without ``static_shape``, so MXNet makes a fresh operator
state per call, and a net whose convolution weights stay frozen while its BatchNorm
statistics move (a frozen backbone, BitFit, `batchnorm.recalibrate`) is still followed
(oneDNN's own check looks at the convolution's weight and bias only: never add
``static_shape=True`` here). On EfficientNet-Lite0 at 160 px, batch 32, evaluation runs at
about 2x the images/s, and the logits differ from the unfused net's by rounding only
(``tests/test_fusion.py``: within 1e-5 of the logits' scale on real photos;
docs/speed-profile.md has the tables).

A twin holds a memory pool while it lives: `release` drops one (training and prediction
do when they finish), `clear` drops all (`peft.merge_lora` does: merging changes the graph
but not the Parameters, which the cache key is made of).

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
    >>> scale = max(1.0, float(abs(plain).max().asscalar()))
    >>> bool(abs(plain - fused).max().asscalar() <= 1e-5 * scale)
    True
    >>> fusion.release(net)
"""
from __future__ import annotations

import functools
import os
import weakref

_TWINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
ENV_SWITCH = "D2L_FUSED_INFERENCE"


@functools.lru_cache(maxsize=1)
def _has_onednn() -> bool:
    import mxnet as mx

    features = mx.runtime.Features()
    return features.is_enabled("MKLDNN") if "MKLDNN" in features else False


def enabled() -> bool:
    """False when ``D2L_FUSED_INFERENCE=0`` is set, or the MXNet build has no oneDNN."""
    return os.environ.get(ENV_SWITCH, "1").strip() != "0" and _has_onednn()


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
    return (str(x.context), arrays.is_np(), str(x.dtype), params)


def _build(net, x):
    import mxnet as mx
    from mxnet import autograd, gluon

    from . import arrays

    if any(p._deferred_init for p in net.collect_params().values()):
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


def clear() -> None:
    """Drop every twin: for a change of a net's graph that keeps its Parameters."""
    _TWINS.clear()
