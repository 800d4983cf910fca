"""The book's two augmentation pipelines, sized per profile and normalised per backbone.

Training: a random crop of 8-100 % of the area at a random aspect ratio, resized to
``size``; a random left-right flip; then to a CHW float tensor in [0, 1], standardised
with the backbone's mean and std. Testing: resize to ``resize`` x ``resize``, take the
central ``size`` x ``size`` crop, same tensor conversion.

Note that MXNet's ``Resize(256)``, which the book uses, squashes the photo to 256 x 256
(``keep_ratio=False``), unlike torchvision's ``Resize(256)`` that scales the short side.
We keep the book's behaviour by default; ``keep_ratio=True`` gives the torchvision one.

The mean and std default to the ImageNet statistics of the book (resnet18_v2's); each
backbone's own come from `backbones.backbone_spec`, which owns them.

Example:
    >>> import mxnet as mx
    >>> from d2l_helpers.backbones import backbone_spec
    >>> from d2l_helpers.transforms import train_augs, test_augs
    >>> augs = test_augs(224, 256)          # the book's test_augs
    >>> spec = backbone_spec("efficientnet_lite0")
    >>> augs = test_augs(224, 256, spec.mean, spec.std)
    >>> augs(mx.nd.zeros((300, 400, 3), dtype="uint8")).shape
    (3, 224, 224)
"""
from __future__ import annotations

from collections.abc import Sequence

from .backbones import IMAGENET_MEAN, IMAGENET_STD  # the defaults: the book's normalisation


def normalize(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
    """``transforms.Normalize`` with the given per-channel mean and std."""
    from mxnet.gluon.data.vision import transforms

    return transforms.Normalize(list(mean), list(std))


def train_augs(size: int = 224, mean: Sequence[float] = IMAGENET_MEAN,
               std: Sequence[float] = IMAGENET_STD):
    """The book's ``train_augs``: RandomResizedCrop, flip, ToTensor, Normalize."""
    from mxnet.gluon.data.vision import transforms

    return transforms.Compose([
        transforms.RandomResizedCrop(size),
        transforms.RandomFlipLeftRight(),
        transforms.ToTensor(),
        normalize(mean, std)])


def test_augs(size: int = 224, resize: int = 256, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD, keep_ratio: bool = False):
    """The book's ``test_augs``: Resize, CenterCrop, ToTensor, Normalize."""
    from mxnet.gluon.data.vision import transforms

    return transforms.Compose([
        transforms.Resize(resize, keep_ratio=keep_ratio),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        normalize(mean, std)])


test_augs.__test__ = False  # the book's name, not a test: pytest --doctest-modules skips it
