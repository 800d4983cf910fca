"""Helpers for the fine-tuning course module (Dive into Deep Learning, MXNet Gluon).

Import this package *before* ``mxnet`` or ``d2l``: it sets MXNet's OpenMP thread count
first (see `runtime.configure_threads`). The book's names are importable from the top,
lazily, so that importing the package still loads no MXNet:

    from d2l_helpers import train_fine_tuning, train_batch_ch13, train_ch13

Modules, one idea each: `runtime` (threads, seeds, devices), `paths` (folders, atomic
writes), `arrays` (MXNet's np/nd modes), `profiles` (run sizes), `data` (the photos),
`transforms` (the book's augmentations), `backbones` (pretrained nets), `efficientnet_lite`
and `torch_pickle` (EfficientNet-Lite0 with ImageNet weights, read without torch),
`imagenet` (class names), `training` (the book's training loop), `features` (cached-feature
head training), `peft` and `variants` (BitFit, LoRA), `predict` (inference), `runs` (the run
store), `replay` (presenter mode), `session` (the run-info cell), and on top of them
`plots` and `widgets` (the only modules that import matplotlib and ipywidgets).

Example:
    >>> import sys, d2l_helpers
    >>> run = d2l_helpers.setup(seed=0, profile="ci")   # profile, data, backbone, devices
    >>> callable(d2l_helpers.train_fine_tuning)          # the book's name, loaded on use
    True
"""
from __future__ import annotations

from importlib import import_module

from .runtime import configure_threads

configure_threads()

from .session import RunInfo, setup  # noqa: E402

__version__ = "0.1.0"

# The book's names -> the module that defines them; imported on first use (PEP 562).
_LAZY = {
    "train_batch_ch13": "training", "train_ch13": "training", "train_fine_tuning": "training",
    "evaluate_accuracy_gpus": "training", "try_all_gpus": "runtime",
    "load_data_hotdog": "data", "train_augs": "transforms", "test_augs": "transforms",
    "build_finetune_net": "backbones", "build_scratch_net": "backbones",
    "get_backbone": "backbones",
}

__all__ = ["RunInfo", "setup", "configure_threads", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
