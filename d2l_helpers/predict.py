"""Inference: class probabilities for photos, top-k ImageNet names, confusion matrices.

Example:
    >>> from d2l_helpers.predict import predict_proba, top_k
    >>> probs = predict_proba(pretrained_net, [img], test_augs(224, 256, MEAN, STD))
    >>> top_k(probs[0], imagenet_classes(), k=5)      # [(name, prob), ...]  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Sequence

import numpy as onp


def predict_proba(net, images: Sequence, transform, devices: Sequence | None = None,
                  batch_size: int = 64) -> onp.ndarray:
    """Softmax probabilities, shape (len(images), classes), for HWC uint8 images.

    ``transform`` is the test pipeline (e.g. `transforms.test_augs`). Runs in inference
    mode (BatchNorm uses its running statistics).
    """
    import mxnet as mx
    from mxnet import nd, np, npx

    from .runtime import try_all_gpus

    dev = (devices or try_all_gpus())[0]
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        arrs = [img if hasattr(img, "asnumpy") else
                (np.array(img, dtype="uint8") if npx.is_np_array() else nd.array(img, dtype="uint8"))
                for img in chunk]
        X = [transform(a) for a in arrs]
        X = (np.stack(X) if npx.is_np_array() else nd.stack(*X)).as_in_context(dev)
        logits = net(X)
        probs = (npx.softmax(logits) if npx.is_np_array() else nd.softmax(logits))
        out.append(probs.asnumpy())
    if not out:
        return onp.zeros((0, 0), dtype=onp.float32)
    return onp.concatenate(out)


def top_k(probs: onp.ndarray, class_names: Sequence[str], k: int = 5) -> list[tuple[int, str, float]]:
    """The ``k`` most probable classes of one probability vector: (row, name, probability)."""
    rows = onp.argsort(-probs)[:k]
    return [(int(r), class_names[r], float(probs[r])) for r in rows]


def confusion_matrix(labels: Sequence[int], preds: Sequence[int], num_classes: int = 2) -> onp.ndarray:
    """Counts, rows: true class, columns: predicted class."""
    m = onp.zeros((num_classes, num_classes), dtype=onp.int64)
    for t, p in zip(labels, preds):
        m[int(t), int(p)] += 1
    return m


def dataset_predictions(net, dataset, transform, devices: Sequence | None = None):
    """Probabilities and labels for every image of a `data.HotdogImages` split."""
    images = [dataset[i][0] for i in range(len(dataset))]
    return predict_proba(net, images, transform, devices), onp.asarray(dataset.labels)


def load_classifier(run_name: str = "finetune", devices: Sequence | None = None):
    """The hot-dog classifier saved as run ``run_name`` (notebook 04), ready to predict.

    Returns ``(net, transform, class_names, run)``: the 2-class net with the saved
    parameters, the test transform it was evaluated with, and the `runs.SavedRun`.
    """
    import mxnet as mx

    from .backbones import backbone_spec, get_backbone
    from .data import CLASSES
    from .profiles import get_profile
    from .runs import load_run
    from .transforms import test_augs

    saved = load_run(run_name)
    cfg = saved.history.config
    if saved.params_file is None:
        raise FileNotFoundError(f"Run {run_name!r} at {saved.path} has no net.params; "
                                "re-run the notebook that trained it.")
    ctx = (devices or [mx.cpu()])[0]
    net = get_backbone(cfg["backbone"], pretrained=False, classes=len(CLASSES), ctx=ctx)
    net.load_parameters(str(saved.params_file), ctx=ctx)
    prof, spec = get_profile(cfg["profile"]), backbone_spec(cfg["backbone"])
    return net, test_augs(prof.image_size, prof.resize, spec.mean, spec.std), list(CLASSES), saved


def classify(net, image, transform, class_names: Sequence[str]) -> tuple[str, float]:
    """The predicted class name of one HWC uint8 image and its probability."""
    p = predict_proba(net, [image], transform)[0]
    k = int(p.argmax())
    return class_names[k], float(p[k])
