"""Helpers for the fine-tuning course module (Dive into Deep Learning, MXNet Gluon).

Import this package *before* ``mxnet`` or ``d2l``: it sets MXNet's OpenMP thread count
first (see `runtime.configure_threads`).

Modules, one idea each: `runtime` (threads, seeds, devices), `profiles` (run sizes),
`data` (the hot-dog photos), `transforms` (the book's augmentations), `backbones`
(pretrained nets), `efficientnet_lite` (a Gluon EfficientNet-Lite0 with ImageNet weights),
`imagenet` (class names), `training` (the book's training loop), `session` (the run-info
cell), and on top of them `plots` (figures; the only module that imports matplotlib).

Example:
    >>> import d2l_helpers
    >>> run = d2l_helpers.setup(seed=0)     # profile, data, backbone, devices; seeds all
"""
from .runtime import configure_threads

configure_threads()

from .session import RunInfo, setup  # noqa: E402

__version__ = "0.1.0"
__all__ = ["RunInfo", "setup", "configure_threads", "__version__"]
