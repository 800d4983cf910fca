"""Grad-CAM: which part of a photo made the net say "hot dog" (Selvaraju et al., 2017).

For a Gluon net with the model zoo's ``.features``/``.output`` split, take the last
spatial feature map ``A`` (N, C, h, w): the output of the ``net.features`` child just
before its ``GlobalAvgPool2D``. Backpropagate one class score ``y_c`` (a row of the
output *before* the softmax: ImageNet row 934 "hotdog" of the pretrained 1000-way net, or
class 0 of the fine-tuned 2-way head) to ``A``. Each channel's weight is the spatial mean
of its gradient, ``w_k = mean_ij dy_c / dA_kij``, and the map is ``ReLU(sum_k w_k A_k)``:
the places whose features raise the class score. It is upsampled (bilinear) to the input
size and divided by its maximum, so it lies in [0, 1] (an all-zero map stays zero: nothing
in the photo speaks for that class). For the nets here, whose head is global average
pooling and one ``Dense`` layer, the gradient is the same at every cell, ``w_k = W[c, k] /
(h * w)``, so Grad-CAM equals the CAM of Zhou et al. (2016) up to scale; the gradient route
also serves heads with more layers and earlier ``target_layer`` s.

The net runs in inference mode (BatchNorm uses its running statistics) and is not changed.
Hybridized nets are fine and stay hybridized: `grad_cam` calls ``net.features``' children
and ``net.output`` one by one, and autograd flows through their cached graphs.

Example:
    >>> import mxnet as mx
    >>> from mxnet.gluon import nn
    >>> net = nn.HybridSequential()
    >>> with net.name_scope():
    ...     net.features = nn.HybridSequential()
    ...     net.features.add(nn.Conv2D(4, 3, padding=1, in_channels=3), nn.Activation("relu"),
    ...                      nn.GlobalAvgPool2D(), nn.Flatten())
    ...     net.output = nn.Dense(2, in_units=4)
    >>> net.initialize()
    >>> cam = grad_cam(net, mx.nd.random.uniform(shape=(2, 3, 8, 8)), class_index=0)
    >>> cam.maps.shape, cam.probs.shape, cam.class_index.tolist()
    ((2, 8, 8), (2, 2), [0, 0])
    >>> bool(0 <= cam.maps.min() and cam.maps.max() <= 1)
    True
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as onp


@dataclass
class GradCAM:
    """What `grad_cam` found for a batch of N images of H x W pixels."""

    maps: onp.ndarray             # (N, H, W) in [0, 1], at the input's size
    probs: onp.ndarray            # (N, classes) softmax of the net's output
    class_index: onp.ndarray      # (N,) the output row each map explains
    channel_weights: onp.ndarray  # (N, C) w_k: spatial mean of d score / d A_k
    raw: onp.ndarray              # (N, h, w) ReLU(sum_k w_k A_k) before upsampling and scaling


def pooling_index(net) -> int:
    """Index of the last ``GlobalAvgPool2D`` among ``net.features``' children."""
    from mxnet.gluon import nn

    children = [net.features[i] for i in range(len(net.features))]
    for i in range(len(children) - 1, -1, -1):
        if isinstance(children[i], nn.GlobalAvgPool2D):
            return i
    raise ValueError("net.features has no GlobalAvgPool2D child; pass target_layer, the "
                     "index of the child whose output is the feature map to explain")


def grad_cam(net, x, class_index: int | Sequence[int] | None = None,
             target_layer: int | None = None) -> GradCAM:
    """Grad-CAM maps of a batch ``x`` (N, 3, H, W), already transformed for ``net``.

    ``class_index``: one output row for the whole batch, one per image, or None for each
    image's predicted class. ``target_layer``: index of the ``net.features`` child whose
    output is the map ``A`` (default: the one just before the global average pooling).
    ``x`` may be an MXNet array of either array mode or a NumPy array.
    """
    from mxnet import autograd

    from . import arrays

    children = [net.features[i] for i in range(len(net.features))]
    split = (pooling_index(net) if target_layer is None else target_layer % len(children) + 1)
    ctx = next(iter(net.collect_params().values())).list_ctx()[0]
    A = arrays.array(x, dtype="float32", ctx=ctx)
    for block in children[:split]:
        A = block(A)
    if len(A.shape) != 4:
        raise ValueError(f"the feature map must be (N, C, h, w), got {A.shape}")
    A.attach_grad()
    with autograd.record(train_mode=False):
        out = A
        for block in children[split:]:
            out = block(out)
        logits = net.output(out)
        probs = arrays.to_numpy(arrays.softmax(logits))
        n = probs.shape[0]
        if class_index is None:
            rows = probs.argmax(axis=1)
        else:
            rows = onp.broadcast_to(onp.asarray(class_index, dtype=onp.int64), (n,))
        if ((rows < 0) | (rows >= probs.shape[1])).any():
            raise ValueError(f"class_index {rows.tolist()} outside 0..{probs.shape[1] - 1}")
        mask = arrays.array(onp.eye(probs.shape[1], dtype=onp.float32)[rows], ctx=ctx)
        score = (logits * mask).sum()      # the sum of each image's own class score
    score.backward()
    a, g = arrays.to_numpy(A), arrays.to_numpy(A.grad)
    weights = g.mean(axis=(2, 3))                                    # (N, C)
    raw = onp.maximum((weights[:, :, None, None] * a).sum(axis=1), 0)  # (N, h, w)
    H, W = x.shape[2], x.shape[3]
    maps = onp.stack([_normalise(_resize_bilinear(m, H, W)) for m in raw]) if n else \
        onp.zeros((0, H, W), onp.float32)
    return GradCAM(maps, probs, onp.asarray(rows, dtype=onp.int64), weights, raw)


def grad_cam_images(net, images: Sequence, transform,
                    class_index: int | Sequence[int] | None = None,
                    target_layer: int | None = None) -> GradCAM:
    """`grad_cam` of HWC uint8 photos after ``transform`` (e.g. ``run.test_augs()``).

    The maps have the size of the transformed image (the test crop), not the photo's.
    """
    from . import arrays

    X = [transform(img if hasattr(img, "asnumpy") else arrays.array(img, dtype="uint8"))
         for img in images]
    return grad_cam(net, arrays.stack(X), class_index, target_layer)


def _resize_bilinear(m: onp.ndarray, H: int, W: int) -> onp.ndarray:
    """``m`` (h, w) resized to (H, W), bilinear with pixel centres aligned (PIL's rule)."""
    from PIL import Image

    img = Image.fromarray(onp.ascontiguousarray(m, dtype=onp.float32), mode="F")
    return onp.asarray(img.resize((W, H), Image.BILINEAR), dtype=onp.float32)


def _normalise(m: onp.ndarray) -> onp.ndarray:
    top = float(m.max())
    return m / top if top > 0 else onp.zeros_like(m)
