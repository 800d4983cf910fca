"""Test-time augmentation: average the net's probabilities over several views of a photo.

The book tests each photo once, through ``test_augs`` (resize, centre crop). Test-time
augmentation (as fastai's ``tta``; the ten crops of Krizhevsky et al., 2012) also shows the
net the mirror image and the four corner crops of the same resize, and averages the
softmax probabilities: a cheap ensemble that costs one forward pass per view. Unlike
fastai's, our views are deterministic, so a run's numbers repeat.

=================  ==========================================================
view               what the net sees
=================  ==========================================================
``center``         exactly the book's ``test_augs(size, resize, mean, std)``
``flip``           the centre crop mirrored left-right
``top_left`` ...   a corner crop (``top_left``, ``top_right``, ``bottom_left``,
                   ``bottom_right``) of the same resize; ``..._flip`` mirrored
=================  ==========================================================

Example:
    >>> import numpy as onp
    >>> from mxnet.gluon import nn
    >>> net = nn.HybridSequential()
    >>> net.add(nn.GlobalAvgPool2D(), nn.Flatten(), nn.Dense(2, in_units=3))
    >>> net.initialize()
    >>> photos = [onp.full((12, 10, 3), 200, "uint8"), onp.zeros((9, 11, 3), "uint8")]
    >>> probs = tta_predict(net, photos, size=8, resize=10, views=TEN_CROP)
    >>> probs.shape, [round(float(p), 3) for p in probs.sum(axis=1)]
    ((2, 2), [1.0, 1.0])
    >>> res = compare_tta(net, photos, [0, 1], size=8, resize=10)
    >>> res.views, res.num_images
    (('center', 'flip'), 2)
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as onp

from .backbones import IMAGENET_MEAN, IMAGENET_STD
from .predict import PREDICT_BATCH

CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
#: The default: the book's view and its mirror image (2 forward passes per photo).
DEFAULT_VIEWS = ("center", "flip")
#: The centre, the four corners, and the mirror image of each (10 forward passes).
TEN_CROP = ("center", "flip", *CORNERS, *(c + "_flip" for c in CORNERS))


def view_transforms(size: int, resize: int, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD, views: Sequence[str] = DEFAULT_VIEWS,
                    keep_ratio: bool = False) -> dict[str, Callable]:
    """One deterministic test transform per view name (HWC uint8 -> normalised CHW).

    ``center`` is `transforms.test_augs` itself; the others use the same gluon
    ``Resize``, ``ToTensor`` and ``Normalize`` around their own crop.
    """
    from mxnet.gluon.data.vision import transforms as T

    from .transforms import normalize, test_augs

    center = test_augs(size, resize, mean, std, keep_ratio)
    resize_op = T.Resize(resize, keep_ratio=keep_ratio)
    to_tensor = T.Compose([T.ToTensor(), normalize(mean, std)])

    def corner(name: str) -> Callable:
        def crop(img):
            r = resize_op(img)
            h, w = r.shape[0], r.shape[1]
            if h < size or w < size:
                raise ValueError(f"resize {resize} gives a {h} x {w} image, smaller than the "
                                 f"{size} px crop of view {name!r}")
            top = 0 if name.startswith("top") else h - size
            left = 0 if name.endswith("left") else w - size
            return to_tensor(r[top:top + size, left:left + size])
        return crop

    def flipped(tf: Callable) -> Callable:
        return lambda img: tf(img)[:, :, ::-1]        # CHW: mirror the width axis

    out: dict[str, Callable] = {}
    for name in views:
        if name == "flip":
            base, flip = "center", True
        else:
            base, flip = (name[:-5], True) if name.endswith("_flip") else (name, False)
        if base == "center":
            tf = center
        elif base in CORNERS:
            tf = corner(base)
        else:
            raise ValueError(f"unknown view {name!r}; choose from {TEN_CROP}")
        out[name] = flipped(tf) if flip else tf
    return out


def tta_view_probs(net, images: Sequence, size: int, resize: int,
                   mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                   views: Sequence[str] = DEFAULT_VIEWS, keep_ratio: bool = False,
                   devices: Sequence | None = None,
                   batch_size: int = PREDICT_BATCH) -> dict[str, onp.ndarray]:
    """Softmax probabilities (len(images), classes) of each view, by view name.

    ``images`` are HWC uint8 photos (NumPy or MXNet arrays), like `data.HotdogImages` items.
    """
    from .predict import predict_proba

    tfs = view_transforms(size, resize, mean, std, views, keep_ratio)
    return {name: predict_proba(net, images, tf, devices, batch_size) for name, tf in tfs.items()}


def tta_predict(net, images: Sequence, size: int, resize: int,
                mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                views: Sequence[str] = DEFAULT_VIEWS, keep_ratio: bool = False,
                devices: Sequence | None = None, batch_size: int = PREDICT_BATCH) -> onp.ndarray:
    """The probabilities of `tta_view_probs`, averaged over the views: (len(images), classes)."""
    per_view = tta_view_probs(net, images, size, resize, mean, std, views, keep_ratio,
                              devices, batch_size)
    return onp.mean(onp.stack(list(per_view.values())), axis=0)


@dataclass
class TTAComparison:
    """Accuracy of the book's single centre view and of the TTA average, and their cost."""

    accuracy: float            # centre view only (the book's test_augs)
    accuracy_tta: float        # probabilities averaged over ``views``
    seconds: float             # wall-clock of the centre-view predictions
    seconds_tta: float         # wall-clock of the TTA predictions (every view)
    views: tuple[str, ...]
    num_images: int
    probs: onp.ndarray = field(repr=False)      # (N, classes), centre view
    probs_tta: onp.ndarray = field(repr=False)  # (N, classes), averaged

    @property
    def gain(self) -> float:
        """Accuracy points TTA adds (negative: it costs accuracy)."""
        return self.accuracy_tta - self.accuracy

    def to_dict(self) -> dict:
        """The numbers, without the probability arrays (for a table or a JSON record)."""
        return {"accuracy": self.accuracy, "accuracy_tta": self.accuracy_tta,
                "gain": self.gain, "seconds": self.seconds, "seconds_tta": self.seconds_tta,
                "views": list(self.views), "num_images": self.num_images}


def compare_tta(net, images: Sequence, labels: Sequence[int], size: int, resize: int,
                mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                views: Sequence[str] = DEFAULT_VIEWS, keep_ratio: bool = False,
                devices: Sequence | None = None, batch_size: int = PREDICT_BATCH) -> TTAComparison:
    """Accuracy on ``labels`` without and with TTA, and the seconds each took.

    Each view is predicted once and timed (``time.perf_counter``): the centre view, which
    is the book's test_augs exactly, gives the accuracy and seconds without TTA; the average
    over ``views`` (the centre included) gives the TTA accuracy, and its seconds are the
    sum over the views.
    """
    from .predict import predict_proba

    if "center" not in views:
        raise ValueError(f"views must include 'center' (the prediction without TTA), not {views}")
    labels = onp.asarray(labels)
    per_view, seconds = {}, {}
    for name, tf in view_transforms(size, resize, mean, std, views, keep_ratio).items():
        start = time.perf_counter()
        per_view[name] = predict_proba(net, images, tf, devices, batch_size)
        seconds[name] = time.perf_counter() - start
    probs, probs_tta = per_view["center"], onp.mean(onp.stack(list(per_view.values())), axis=0)
    n = len(labels)

    def acc(p: onp.ndarray) -> float:
        return float((p.argmax(axis=1) == labels).mean()) if n else float("nan")

    return TTAComparison(acc(probs), acc(probs_tta), seconds["center"], sum(seconds.values()),
                         tuple(views), n, probs, probs_tta)
