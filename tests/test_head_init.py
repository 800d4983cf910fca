"""ImageNet's hot-dog row as a head: thresholds, the thresholded head, the book's copy."""
from __future__ import annotations

import mxnet as mx
import numpy as onp
import pytest
from mxnet.gluon import nn

from d2l_helpers.head_init import best_threshold, copy_row, init_from_row


class _Net(nn.Block):
    """features (identity on d-vectors) + output Dense: the shape of the book's nets."""

    def __init__(self, classes: int, d: int = 6):
        super().__init__()
        self.features = nn.Lambda(lambda x: x)
        self.output = nn.Dense(classes, in_units=d)

    def forward(self, x):
        return self.output(self.features(x))


def _nets(seed=0):
    mx.random.seed(seed)
    pretrained, head = _Net(10), _Net(2)
    pretrained.initialize(mx.init.Normal(3.0))
    head.initialize(mx.init.Xavier())
    return pretrained, head


def test_best_threshold_maximises_training_accuracy_at_a_midpoint():
    scores = onp.array([0.1, 0.4, 0.35, 0.8, 0.9])
    positive = onp.array([False, False, True, True, True])
    t, acc = best_threshold(scores, positive)
    assert acc == 0.8 and t == pytest.approx((0.1 + 0.35) / 2)
    assert best_threshold(onp.array([1.0, 1.0]), onp.array([True, True]))[1] == 1.0
    with pytest.raises(ValueError, match="same, non-zero length"):
        best_threshold(onp.array([1.0]), onp.array([True, False]))


def test_the_thresholded_head_makes_the_logit_rules_decisions_at_any_scale():
    pretrained, head = _nets()
    x = mx.nd.random.normal(shape=(200, 6))
    z = pretrained(x)[:, 3].asnumpy()
    t = float(onp.median(z))
    for scale in (1.0, 1 / z.std()):
        init_from_row(head, pretrained, t, row=3, positive=0, scale=scale)
        says_positive = head(x).asnumpy().argmax(axis=1) == 0
        onp.testing.assert_array_equal(says_positive, z > t)
    logits = head(x).asnumpy()
    assert abs(logits).max() < abs(z - t).max()   # softened by 1 / sd


def test_the_books_copy_keeps_the_other_row_random():
    pretrained, head = _nets()
    other = head.output.weight.data()[1].asnumpy().copy()
    copy_row(head, pretrained, row=3, positive=0)
    onp.testing.assert_array_equal(head.output.weight.data()[0].asnumpy(),
                                   pretrained.output.weight.data()[3].asnumpy())
    onp.testing.assert_array_equal(head.output.weight.data()[1].asnumpy(), other)


def test_init_from_row_refuses_a_bad_scale_or_a_wider_head():
    pretrained, head = _nets()
    with pytest.raises(ValueError, match="positive number"):
        init_from_row(head, pretrained, 0.0, row=3, scale=0.0)
    with pytest.raises(ValueError, match="2-way head"):
        init_from_row(pretrained, pretrained, 0.0, row=3)
