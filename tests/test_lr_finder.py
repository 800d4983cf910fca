"""The learning-rate finder on a tiny separable problem: exponential schedule, a loss that
falls then explodes, an early stop, a suggestion on the falling part, per-example rates."""
from __future__ import annotations

import inspect

import mxnet as mx
import numpy as onp
import pytest
from mxnet import gluon, init, npx
from mxnet.gluon import nn

from d2l_helpers import arrays, training
from d2l_helpers.lr_finder import LRFinderResult, exponential_schedule, lr_find, smooth, suggest


@pytest.fixture
def np_mode():
    npx.set_np()
    yield
    npx.reset_np()


def separable(n: int = 256, scale: float = 3.0, seed: int = 0):
    rng = onp.random.RandomState(seed)
    X = rng.normal(size=(n, 2)).astype("float32") * scale
    y = (X[:, 0] + X[:, 1] > 0).astype("int32")
    return X, y


def batches(X, y, batch_size: int = 32) -> list:
    return [(arrays.array(X[i:i + batch_size]), arrays.array(y[i:i + batch_size]))
            for i in range(0, len(X), batch_size)]


def dense(seed: int = 0):
    mx.random.seed(seed)
    net = nn.Dense(2, in_units=2)
    net.initialize(init.Normal(0.01))
    return net


def test_default_range_holds_the_books_rate():
    defaults = inspect.signature(lr_find).parameters
    start, end = defaults["start_lr"].default, defaults["end_lr"].default
    assert start < training.FINETUNE_LR < end and defaults["num_steps"].default == 100


def test_loss_falls_then_explodes_and_the_finder_stops(np_mode):
    X, y = separable()
    onp.random.seed(0)                                     # the loader's shuffling
    loader = gluon.data.DataLoader(gluon.data.ArrayDataset(X, y), batch_size=32, shuffle=True)
    res = lr_find(dense(), loader, start_lr=1e-5, end_lr=1e2, num_steps=100)
    assert isinstance(res, LRFinderResult)
    n = len(res.lrs)
    assert res.stopped_early and n < 100 and len(res.losses) == len(res.smoothed) == n
    # The schedule is exponential: log-rates evenly spaced, from start_lr on.
    steps = onp.diff(onp.log(res.lrs))
    onp.testing.assert_allclose(steps, onp.log(1e7) / 99, rtol=1e-9)
    assert res.lrs[0] == pytest.approx(1e-5)
    # Smoothed loss: falls well below its start, then ends above 4x its minimum.
    s, i_min = onp.array(res.smoothed), res.min_index
    assert i_min == int(s.argmin()) and 0 < i_min < n - 1
    assert s[i_min] < 0.7 * s[0] and s[-1] > 4 * s[i_min] and (s[:-1] <= 4 * s[i_min]).all()
    onp.testing.assert_allclose(s, smooth(res.losses), rtol=1e-9)
    # The suggestion: strictly inside the range, on the falling part, steepest there.
    assert res.lrs[0] < res.suggested_lr < res.lrs[-1]
    assert 0 < res.suggested_index < i_min and res.suggested_lr == res.lrs[res.suggested_index]
    assert s[res.suggested_index] > s[i_min]
    assert res.lr_min_div10 == pytest.approx(res.lrs[i_min] / 10)
    assert res.book_ratio == pytest.approx(res.suggested_lr / training.FINETUNE_LR)
    assert res.to_dict()["book_lr"] == training.FINETUNE_LR


def test_every_step_is_train_batch_ch13_at_the_scheduled_rate(monkeypatch):
    seen = []
    real = training.train_batch_ch13

    def spy(net, X, y, loss, trainer, devices, *args, **kwargs):
        seen.append(trainer.learning_rate)
        assert trainer._optimizer.wd == training.WEIGHT_DECAY
        return real(net, X, y, loss, trainer, devices, *args, **kwargs)

    monkeypatch.setattr(training, "train_batch_ch13", spy)
    X, y = separable(64)
    res = lr_find(dense(), batches(X, y), start_lr=1e-6, end_lr=1e-4, num_steps=7)
    assert len(seen) == 7 and not res.stopped_early
    onp.testing.assert_allclose(seen, exponential_schedule(1e-6, 1e-4, 7), rtol=1e-12)
    assert seen == res.lrs


def test_rates_are_per_example_doubling_the_batch_doubles_the_step():
    """trainer.step(1): a batch of the same examples twice moves the weights twice as far
    (up to weight decay's lr * wd * w, which does not grow with the batch)."""
    X, y = separable(16)
    lr, deltas = 0.01, []
    for reps in (1, 2):
        net = dense()
        w0 = net.weight.data().asnumpy().copy()
        data = [(arrays.array(onp.tile(X, (reps, 1))), arrays.array(onp.tile(y, reps)))]
        lr_find(net, data, start_lr=lr, end_lr=2 * lr, num_steps=1, restore=False,
                hybridize=False)
        deltas.append(net.weight.data().asnumpy() - w0)
    assert onp.abs(deltas[0]).max() > 1e-3
    onp.testing.assert_allclose(deltas[1], 2 * deltas[0] + lr * training.WEIGHT_DECAY * w0,
                                rtol=1e-4, atol=1e-8)


def test_cycles_short_data_restores_the_net_and_sets_the_head_multiplier():
    X, y = separable(64)
    net = nn.HybridSequential()
    with net.name_scope():
        net.features = nn.HybridSequential()
        net.features.add(nn.Dense(4, in_units=2, activation="relu"))
        net.output = nn.Dense(2, in_units=4)
    net.initialize(init.Xavier())
    before = {k: p.data().asnumpy().copy() for k, p in net.collect_params().items()}
    res = lr_find(net, batches(X, y), start_lr=1e-6, end_lr=1e-5, num_steps=10,
                  head_lr_mult=10.0)                       # 2 batches, 10 steps
    assert len(res.lrs) == 10 and not res.stopped_early
    assert {p.lr_mult for p in net.output.collect_params().values()} == {10.0}
    for k, p in net.collect_params().items():
        onp.testing.assert_array_equal(p.data().asnumpy(), before[k])
    one_shot = iter(batches(X, y))                         # an iterator, not re-iterable
    assert len(lr_find(dense(), one_shot, 1e-6, 1e-5, num_steps=5).lrs) == 5
    with pytest.raises(ValueError, match="no batches"):
        lr_find(dense(), [], num_steps=3)
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        lr_find(dense(), batches(X, y), start_lr=1e-2, end_lr=1e-3)


def test_suggest_rule_on_a_known_curve():
    lrs = exponential_schedule(1e-6, 1e-1, 50)
    x = onp.log10(lrs)
    curve = 1 / (1 + onp.exp(3 * (x + 3.5))) + onp.maximum(x + 2, 0) ** 2   # steepest at 1e-3.5
    i_steep, i_min = suggest(lrs, curve)
    assert i_steep < i_min
    assert lrs[i_steep] == pytest.approx(10 ** -3.5, rel=0.3)
    assert suggest(lrs[:4], [3.0, 2.9, 1.0, 0.9]) == (1, 3)  # short run: fewer steps skipped
    assert suggest(lrs[:4], [1.0, 2.0, 3.0, 4.0]) == (1, 1)  # never falls: the minimum's
    # A low first value (one noisy batch) is not the minimum: the falling stretch after it is.
    noisy_start = onp.concatenate([[0.01], curve[1:]])
    assert suggest(lrs, noisy_start) == (i_steep, i_min)
