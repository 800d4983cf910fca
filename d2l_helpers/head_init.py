"""Start the new head from ImageNet's own classifier: its "hotdog" row (934).

ImageNet-1k has a hot-dog class, so the pretrained output layer already holds a hot-dog
detector: row 934 of its 1000 x d weight matrix (the book's MXNet text takes row 713,
"photocopier"). Three ways to use it, all measured in notebook 06:

* **zero-shot rule** (no training at all): "hot dog" iff the pretrained net's softmax
  probability of row 934 reaches a threshold chosen on the training photos (`zero_shot`);
* **row-934 head** (`init_from_row`): the 2-way head's "hotdog" row is row 934 and its
  "not-hotdog" row has weight 0 and bias ``t``, so the 2-way softmax says "hot dog" iff
  row 934's *logit* exceeds ``t``, a threshold chosen on the training photos. Before any
  update this head makes the decisions of ImageNet's hot-dog logit. Both rows are scaled
  by ``1 / sd`` (the spread of that logit over the training photos), which leaves every
  decision as it is but makes the head's logits as soft as a new head's: ImageNet's row
  has logits in the tens, and with them a wrong answer sends gradients through a weight
  vector far larger than a random head's into the backbone;
* **the book's copy** (`copy_row`): row 934 into the "hotdog" row, the "not-hotdog" row
  left random (Xavier). Its first decisions compare row 934's logit with a random
  projection of the features, not with a threshold.

Thresholds come from the training photos through the test transform (no augmentation),
never from the test photos: `best_threshold` takes the midpoint between neighbouring scores
that gives the most correct training decisions.

Example:
    >>> import numpy as onp
    >>> best_threshold(onp.array([3.0, 2.0, 0.5, -1.0]), onp.array([True, True, False, False]))
    (1.25, 1.0)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as onp

HOTDOG_ROW = 934


def best_threshold(scores: onp.ndarray, positive: onp.ndarray) -> tuple[float, float]:
    """The threshold ``t`` on ``scores`` ("positive iff score > t") with the highest
    accuracy on these examples, and that accuracy.

    Candidates are the midpoints between neighbouring distinct scores (and one below the
    lowest and above the highest); ties go to the lowest candidate.
    """
    scores = onp.asarray(scores, dtype=onp.float64)
    positive = onp.asarray(positive, dtype=bool)
    if scores.shape != positive.shape or scores.ndim != 1 or not len(scores):
        raise ValueError("scores and positive must be 1-D arrays of the same, non-zero length")
    values = onp.unique(scores)
    candidates = onp.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2,
                                  [values[-1] + 1.0]])
    accs = [float(((scores > t) == positive).mean()) for t in candidates]
    best = int(onp.argmax(accs))
    return float(candidates[best]), accs[best]


@dataclass
class ZeroShot:
    """ImageNet's hot-dog row used without training, on the train and test photos.

    ``prob_threshold``/``logit_threshold``: chosen on the training photos; ``*_train_acc``
    their accuracy there; ``*_test_acc`` on the test photos. ``prob_*`` is the zero-shot
    rule on row 934's softmax probability (over all 1000 classes); ``logit_*`` the rule
    the row-934 head starts with (row 934's logit alone); ``logit_sd`` is the standard
    deviation of that logit over the training photos (`init_from_row` divides by it).
    """

    row: int
    row_name: str
    positive_class: str
    prob_threshold: float
    prob_train_acc: float
    prob_test_acc: float
    logit_threshold: float
    logit_train_acc: float
    logit_test_acc: float
    logit_sd: float
    n_train: int
    n_test: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def row_scores(pretrained_net, images: Sequence, transform, row: int = HOTDOG_ROW,
               devices: Sequence | None = None) -> tuple[onp.ndarray, onp.ndarray]:
    """Row ``row``'s logit and softmax probability (over all 1000 classes) for each image."""
    from .predict import predict_logits, softmax

    logits = predict_logits(pretrained_net, images, transform, devices)
    return logits[:, row].astype(onp.float64), softmax(logits)[:, row].astype(onp.float64)


def zero_shot(pretrained_net, train_ds, test_ds, transform, positive_class: str = "hotdog",
              row: int = HOTDOG_ROW, devices: Sequence | None = None) -> ZeroShot:
    """Score ImageNet's row ``row`` as a ``positive_class`` detector without any training.

    ``train_ds``/``test_ds``: splits with ``synsets`` and ``labels`` (`data.HotdogImages`);
    ``transform``: the test transform. Thresholds are chosen on ``train_ds`` only.
    """
    from .imagenet import imagenet_classes

    pos = list(train_ds.synsets).index(positive_class)
    splits = []
    for ds in (train_ds, test_ds):
        images = [ds[i][0] for i in range(len(ds))]
        logit, prob = row_scores(pretrained_net, images, transform, row, devices)
        splits.append((logit, prob, onp.asarray(ds.labels) == pos))
    (tr_logit, tr_prob, tr_pos), (te_logit, te_prob, te_pos) = splits
    p_t, p_acc = best_threshold(tr_prob, tr_pos)
    l_t, l_acc = best_threshold(tr_logit, tr_pos)
    return ZeroShot(row=row, row_name=imagenet_classes()[row], positive_class=positive_class,
                    prob_threshold=p_t, prob_train_acc=p_acc,
                    prob_test_acc=float(((te_prob > p_t) == te_pos).mean()),
                    logit_threshold=l_t, logit_train_acc=l_acc,
                    logit_test_acc=float(((te_logit > l_t) == te_pos).mean()),
                    logit_sd=float(tr_logit.std()),
                    n_train=len(tr_pos), n_test=len(te_pos))


def _row(net, row: int):
    W = net.output.weight.data()
    b = net.output.bias.data()
    return W[row], b[row]


def _set_rows(finetune_net, rows: dict[int, tuple]) -> None:
    """Write ``{head row: (weight row, bias)}`` into the head, leaving the other rows."""
    W, b = finetune_net.output.weight.data(), finetune_net.output.bias.data()
    for i, (w_row, b_row) in rows.items():
        W[i] = w_row
        b[i] = b_row
    finetune_net.output.weight.set_data(W)
    finetune_net.output.bias.set_data(b)


def copy_row(finetune_net, pretrained_net, row: int = HOTDOG_ROW, positive: int = 0) -> None:
    """The book's initialisation: ImageNet row ``row`` into head row ``positive``; the
    other rows keep their random init."""
    _set_rows(finetune_net, {positive: _row(pretrained_net, row)})


def init_from_row(finetune_net, pretrained_net, logit_threshold: float, row: int = HOTDOG_ROW,
                  positive: int = 0, scale: float = 1.0) -> None:
    """A 2-way head that starts as ImageNet's row-``row`` detector thresholded at
    ``logit_threshold``: row ``positive`` is ImageNet's row, the other row has weight 0 and
    bias ``logit_threshold`` (`ZeroShot.logit_threshold`, chosen on the training photos),
    both times ``scale`` (``1 / ZeroShot.logit_sd`` in the study): a positive scale changes
    no decision, only how confident the 2-way softmax is.
    """
    rows = finetune_net.output.weight.shape[0]
    if rows != 2:
        raise ValueError(f"init_from_row needs a 2-way head; this one has {rows} rows")
    if not scale > 0:
        raise ValueError(f"scale={scale!r}: use a positive number (1 / ZeroShot.logit_sd)")
    w_row, b_row = _row(pretrained_net, row)
    _set_rows(finetune_net, {positive: (w_row * scale, b_row * scale),
                             1 - positive: (0, float(logit_threshold) * scale)})
