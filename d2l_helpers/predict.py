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

# Photos per forward pass. 32, the training batch of the cpu profile: on EfficientNet-Lite0
# (2 vCPUs, fused inference) it was the fastest of 16/32/64 at 160 and 224 px, and the
# zero-shot pass over the 998 photos at 224 px peaked at 2.1 GB of RSS against 2.7 GB at 64
# (docs/measurements-2026-11.md, "Memory").
PREDICT_BATCH = 32


def predict_logits(net, images: Sequence, transform, devices: Sequence | None = None,
                   batch_size: int = PREDICT_BATCH) -> onp.ndarray:
    """The net's outputs before the softmax, shape (len(images), classes), for HWC uint8
    images. ``transform`` is the test pipeline (e.g. `transforms.test_augs`). Runs in
    inference mode (BatchNorm uses its running statistics), in the caller's array mode,
    through `fusion.forward` on the CPU (released when done), ``batch_size`` photos at a time.
    """
    from . import arrays, fusion
    from .runtime import try_all_gpus

    dev = (devices or try_all_gpus())[0]
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        X = [transform(img if hasattr(img, "asnumpy") else arrays.array(img, dtype="uint8"))
             for img in chunk]
        out.append(arrays.to_numpy(fusion.forward(net, arrays.stack(X).as_in_context(dev))))
    fusion.release(net)  # its memory pool: a net kept for later should not hold one
    if not out:
        return onp.zeros((0, 0), dtype=onp.float32)
    return onp.concatenate(out)


def softmax(logits: onp.ndarray) -> onp.ndarray:
    """Row-wise softmax of a NumPy array, computed stably (the row maximum subtracted).

    Example:
        >>> softmax(onp.array([[0.0, 0.0], [1000.0, 0.0]])).round(3).tolist()
        [[0.5, 0.5], [1.0, 0.0]]
    """
    z = onp.asarray(logits, dtype=onp.float64)
    e = onp.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(onp.float32)


def predict_proba(net, images: Sequence, transform, devices: Sequence | None = None,
                  batch_size: int = PREDICT_BATCH) -> onp.ndarray:
    """Softmax probabilities, shape (len(images), classes), for HWC uint8 images
    (`predict_logits` through `softmax`)."""
    logits = predict_logits(net, images, transform, devices, batch_size)
    return softmax(logits) if logits.size else logits


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


def per_class_accuracy(matrix) -> onp.ndarray:
    """Accuracy (recall) of each true class from a confusion matrix: the diagonal over each
    row's sum; NaN for a class with no test photos.

    Example:
        >>> per_class_accuracy([[8, 2, 0], [1, 4, 5], [0, 0, 0]]).round(2).tolist()
        [0.8, 0.4, nan]
    """
    m = onp.asarray(matrix, dtype=onp.float64)
    totals = m.sum(axis=1)
    with onp.errstate(invalid="ignore", divide="ignore"):
        return onp.where(totals > 0, onp.diag(m) / totals, onp.nan)


def dataset_predictions(net, dataset, transform, devices: Sequence | None = None):
    """Probabilities and labels for every image of a `data.HotdogImages` split."""
    images = [dataset[i][0] for i in range(len(dataset))]
    return predict_proba(net, images, transform, devices), onp.asarray(dataset.labels)


def classify(net, image, transform, class_names: Sequence[str]) -> tuple[str, float]:
    """The predicted class name of one HWC uint8 image and its probability."""
    p = predict_proba(net, [image], transform)[0]
    k = int(p.argmax())
    return class_names[k], float(p[k])


def top_losses(probs: onp.ndarray, labels: Sequence[int], k: int = 6,
               per_class: bool = False) -> list[tuple[int, float]]:
    """The ``k`` photos with the largest cross-entropy loss ``-log p(true class)``, as
    ``(index, loss)``, largest first (fastai's ``plot_top_losses``). With ``per_class``,
    the ``k`` largest of each true class, class by class.

    Example:
        >>> p = onp.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
        >>> [(i, round(l, 2)) for i, l in top_losses(p, [0, 0, 1], k=2)]
        [(1, 1.61), (2, 0.92)]
    """
    labels = onp.asarray(labels, dtype=int)
    losses = -onp.log(onp.clip(probs[onp.arange(len(labels)), labels], 1e-12, 1.0))
    groups = [onp.flatnonzero(labels == c) for c in onp.unique(labels)] if per_class \
        else [onp.arange(len(labels))]
    out = []
    for idx in groups:
        order = idx[onp.argsort(-losses[idx], kind="stable")][:k]
        out += [(int(i), float(losses[i])) for i in order]
    return out


def most_confused(matrix, class_names: Sequence[str], min_count: int = 1) -> list[tuple[str, str, int]]:
    """Off-diagonal cells of a confusion matrix, largest first: ``(true, predicted, count)``.

    Example:
        >>> most_confused([[5, 2], [1, 7]], ["hotdog", "not-hotdog"])
        [('hotdog', 'not-hotdog', 2), ('not-hotdog', 'hotdog', 1)]
    """
    m = onp.asarray(matrix)
    cells = [(class_names[i], class_names[j], int(m[i, j])) for i in range(m.shape[0])
             for j in range(m.shape[1]) if i != j and m[i, j] >= min_count]
    return sorted(cells, key=lambda c: -c[2])
