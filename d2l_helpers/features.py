"""Feature-extractor mode: run a frozen backbone once, then train only the head.

When the backbone is frozen (``grad_req = 'null'``) and the photos are not augmented, every
epoch feeds the head the very same backbone outputs. Computing them once and training the
head on the cached vectors gives the same result as running the frozen backbone every
epoch, without augmentation and with BatchNorm in inference mode (running statistics),
at a fraction of the cost: one forward pass over the data instead of one per epoch and no
backward pass through the backbone at all.

Two differences from the book's "freeze the backbone" ablation, both stated wherever the
mode is used: no random crops or flips (each photo is seen as the test transform shows
it), and the frozen BatchNorm layers use their ImageNet running statistics instead of
per-batch ones.

Example (one epoch at the ci profile's size, a few seconds):
    >>> from d2l_helpers.backbones import build_finetune_net
    >>> finetune_net, _ = build_finetune_net("efficientnet_lite0", seed=0)
    >>> history = train_head_on_features(finetune_net, 7.8125e-5, num_epochs=1, profile="ci",
    ...                                  backbone="efficientnet_lite0")
    >>> history.config["mode"], history.config["trainable_params"]
    ('cached features', 2562)
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from . import fusion
from .training import WEIGHT_DECAY, History, run_config, train_ch13


def extract_features(features, data_iter, devices: Sequence):
    """Run ``features`` in inference mode over ``data_iter``; return (X, y) on ``devices[0]``.

    On the CPU the batches go through `fusion.inference_twin` (fused Conv+BatchNorm+ReLU6).
    """
    from mxnet import autograd

    from .arrays import concat

    dev = devices[0]
    xs, ys = [], []
    with autograd.predict_mode():
        for X, y in data_iter:
            xs.append(fusion.forward(features, X.as_in_context(dev)))
            ys.append(y.as_in_context(dev))
    return concat(xs), concat(ys)


def feature_loaders(net, train_iter, test_iter, batch_size: int, devices: Sequence,
                    computed: tuple | None = None):
    """Cache ``net.features`` outputs of both splits; return DataLoaders over the vectors.

    ``computed`` is ``(Xtr, ytr, Xte, yte)`` from an earlier call with the same backbone
    weights and photos (`train_head_on_features` keeps them per process), in which case
    nothing is extracted. The training loader shuffles with NumPy's global generator,
    like the image loader.
    """
    from mxnet import gluon

    if computed is None:
        computed = (*extract_features(net.features, train_iter, devices),
                    *extract_features(net.features, test_iter, devices))
    Xtr, ytr, Xte, yte = computed
    return (gluon.data.DataLoader(gluon.data.ArrayDataset(Xtr, ytr), batch_size, shuffle=True),
            gluon.data.DataLoader(gluon.data.ArrayDataset(Xte, yte), batch_size))


def freeze_features(net, devices: Sequence) -> None:
    """Freeze ``net.features`` (`peft.freeze`) and put the whole net on ``devices``."""
    from .peft import freeze

    freeze(net.features)
    net.collect_params().reset_ctx(devices)


def release_features(net) -> None:
    """Free the memory the feature pass held: the hybridized graph and the fused twin."""
    net.features._clear_cached_op()
    fusion.release(net.features)


def train_head(net, loaders: tuple, *, prof, backbone: str | None, learning_rate: float,
               batch_size: int, num_epochs: int, seed: int, devices: Sequence,
               callback: Callable | None, progress: bool | None,
               feature_seconds: float, **config_extra: Any) -> History:
    """Train ``net.output`` on feature ``loaders`` (`feature_loaders`) with the book's SGD;
    the config says ``"mode": "cached features"`` with ``feature_seconds`` (also added to
    epoch 0's seconds, so totals compare with a full run) and ``config_extra``."""
    from mxnet import gluon

    trainer = gluon.Trainer(net.output.collect_params(), "sgd",
                            {"learning_rate": learning_rate, "wd": WEIGHT_DECAY})
    config = run_config(net, prof, backbone, learning_rate, batch_size, num_epochs, seed)
    config.update(mode="cached features", feature_seconds=feature_seconds, **config_extra)
    history = train_ch13(net.output, *loaders, gluon.loss.SoftmaxCrossEntropyLoss(), trainer,
                         num_epochs, devices, callback=callback, progress=progress,
                         config=config)
    if history.seconds:
        history.seconds[0] += feature_seconds
    return history


# Features already extracted in this process, by what determines them: the profile's photos
# and test transform, the backbone's weights (digest) and the device. Seeds do not enter:
# the test transform is deterministic and the backbone runs in inference mode.
_COMPUTED: dict[tuple, tuple] = {}


def _weights_digest(block) -> str:
    import hashlib

    sha = hashlib.sha1()
    for name, p in sorted(block._collect_params_with_prefix().items()):  # structural names
        sha.update(name.encode())
        sha.update(p.data().asnumpy().tobytes())
    return sha.hexdigest()


def train_head_on_features(net, learning_rate: float, batch_size: int | None = None,
                           num_epochs: int | None = None, *, profile=None,
                           backbone: str | None = None, devices: Sequence | None = None,
                           seed: int = 0, callback: Callable | None = None,
                           progress: bool | None = None) -> History:
    """Train ``net.output`` on cached ``net.features`` outputs; ``net.features`` is frozen.

    Same optimiser, learning rate (times the head's ``lr_mult``), weight decay, batch size
    and data order as `training.train_fine_tuning`; both splits use the test transform.
    The returned History's config says ``"mode": "cached features"`` and records the time
    spent extracting features (``feature_seconds``), which is also added to the first
    epoch's seconds so totals compare fairly with a full run. Features are extracted once
    per process for the same photos, backbone weights (by digest) and device: a second run
    (another seed) reuses them, and its config says ``features_reused: True`` with the
    seconds it spent (checking and reusing).
    """
    from mxnet import gluon

    from .profiles import resolve_profile
    from .runtime import seed_everything, try_all_gpus
    from .session import run_images, run_transforms

    prof = resolve_profile(profile)
    batch_size = batch_size or prof.batch_size
    num_epochs = num_epochs or prof.num_epochs
    devices = list(devices or try_all_gpus())
    freeze_features(net, devices)
    test_tf = run_transforms(prof, backbone or "resnet18_v2")[1]
    start = time.perf_counter()
    splits = [run_images(split, prof) for split in ("train", "test")]
    key = (tuple(sorted(prof.to_dict().items())), backbone, str(splits[0].root),
           _weights_digest(net.features), str(devices[0]))
    computed = _COMPUTED.get(key)
    reused = computed is not None
    if not reused:
        loaders = [gluon.data.DataLoader(ds.transform_first(test_tf), batch_size) for ds in splits]
        net.features.hybridize(static_alloc=True)
        computed = (*extract_features(net.features, loaders[0], devices),
                    *extract_features(net.features, loaders[1], devices))
        _COMPUTED.clear()  # one set is enough: a notebook uses one profile and backbone
        _COMPUTED[key] = computed
    seed_everything(seed)
    loaders = feature_loaders(net, None, None, batch_size, devices, computed)
    feature_seconds = time.perf_counter() - start
    release_features(net)
    # feature_seconds: what this run paid; a reused set was paid for by an earlier run
    return train_head(net, loaders, prof=prof, backbone=backbone, learning_rate=learning_rate,
                      batch_size=batch_size, num_epochs=num_epochs, seed=seed, devices=devices,
                      callback=callback, progress=progress, feature_seconds=feature_seconds,
                      features_reused=reused)
