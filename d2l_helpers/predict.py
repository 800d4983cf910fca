"""Inference: class probabilities for photos, top-k ImageNet names, confusion matrices.

Pure inference on a net you already have, in either array mode (`arrays`). To load the
classifier a notebook saved, use `runs.load_classifier`.

Example:
    >>> from mxnet.gluon import nn
    >>> net = nn.Dense(2, in_units=3); net.initialize()
    >>> flat = lambda img: img.reshape(-1).astype("float32") / 255   # stands for test_augs
    >>> probs = predict_proba(net, [onp.zeros((1, 3, 1), "uint8")], flat)
    >>> probs.shape, [round(float(p), 3) for p in probs[0]]
    ((1, 2), [0.5, 0.5])
    >>> top_k(onp.array([0.1, 0.7, 0.2]), ["cat", "hotdog", "dog"], k=2)
    [(1, 'hotdog', 0.7), (2, 'dog', 0.2)]
    >>> confusion_matrix([0, 0, 1], [0, 1, 1]).tolist()
    [[1, 1], [0, 1]]
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as onp


def predict_proba(net, images: Sequence, transform, devices: Sequence | None = None,
                  batch_size: int = 64) -> onp.ndarray:
    """Softmax probabilities, shape (len(images), classes), for HWC uint8 images.

    ``transform`` is the test pipeline (e.g. `transforms.test_augs`). Runs in inference
    mode (BatchNorm uses its running statistics), in the caller's array mode.
    """
    from . import arrays
    from .runtime import try_all_gpus

    dev = (devices or try_all_gpus())[0]
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        X = [transform(img if hasattr(img, "asnumpy") else arrays.array(img, dtype="uint8"))
             for img in chunk]
        logits = net(arrays.stack(X).as_in_context(dev))
        out.append(arrays.to_numpy(arrays.softmax(logits)))
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


def classify(net, image, transform, class_names: Sequence[str]) -> tuple[str, float]:
    """The predicted class name of one HWC uint8 image and its probability."""
    p = predict_proba(net, [image], transform)[0]
    k = int(p.argmax())
    return class_names[k], float(p[k])
