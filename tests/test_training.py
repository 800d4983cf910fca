"""The training loop: batch splitting, multi-device updates, no rescaling, frozen params."""
from __future__ import annotations

import mxnet as mx
import numpy as onp
import pytest
from mxnet import autograd, gluon, init, nd
from mxnet.gluon import nn

from d2l_helpers.training import (
    History,
    evaluate_accuracy_gpus,
    split_batch,
    train_batch_ch13,
    train_ch13,
    train_fine_tuning,
)


def small_net(ctx):
    """A net without BatchNorm, so a split batch gives exactly the full batch's gradient."""
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3, padding=1, activation="relu", in_channels=3), nn.GlobalAvgPool2D(),
            nn.Dense(2, in_units=4))
    net.initialize(init.Xavier(), ctx=ctx)
    return net


def batch(n=10, seed=0):
    rng = onp.random.RandomState(seed)
    return nd.array(rng.randn(n, 3, 8, 8)), nd.array(rng.randint(0, 2, n))


@pytest.mark.parametrize("n,k", [(10, 2), (7, 2), (1, 2), (9, 4), (5, 1)])
def test_split_covers_the_batch_exactly(n, k):
    X, y = batch(n)
    devices = [mx.cpu(i) for i in range(k)]
    Xs, ys = split_batch(X, y, devices)
    assert len(Xs) == min(n, k)
    assert sum(x.shape[0] for x in Xs) == n
    assert max(x.shape[0] for x in Xs) - min(x.shape[0] for x in Xs) <= 1
    onp.testing.assert_array_equal(nd.concat(*[x.as_in_context(mx.cpu()) for x in Xs],
                                             dim=0).asnumpy(), X.asnumpy())
    assert [x.context for x in Xs] == devices[:len(Xs)]


def _one_step(devices, lr=0.05):
    mx.random.seed(1)
    net = small_net(devices)
    params0 = [v.data(devices[0]).asnumpy() for v in net.collect_params().values()]
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr})
    X, y = batch(9)
    loss_sum, correct = train_batch_ch13(net, X, y, gluon.loss.SoftmaxCrossEntropyLoss(),
                                         trainer, devices)
    after = [v.data(devices[1] if len(devices) > 1 else devices[0]).asnumpy()
             for v in net.collect_params().values()]
    return params0, after, float(loss_sum.asscalar()), float(correct.asscalar())


def test_two_cpu_contexts_update_like_one_device():
    p0_single, single, loss1, c1 = _one_step([mx.cpu(0)])
    p0_multi, multi, loss2, c2 = _one_step([mx.cpu(0), mx.cpu(1)])
    for k in range(len(single)):
        onp.testing.assert_allclose(p0_single[k], p0_multi[k])
        onp.testing.assert_allclose(multi[k], single[k], rtol=1e-5, atol=1e-6)
        assert not onp.allclose(single[k], p0_single[k])  # the step did change the weights
    assert loss1 == pytest.approx(loss2, rel=1e-5) and c1 == c2


def test_step_is_not_rescaled_by_the_batch_size():
    """w1 = w0 - lr * (sum of per-example gradients): lr is per example."""
    ctx = [mx.cpu()]
    mx.random.seed(2)
    net = small_net(ctx)
    X, y = batch(8)
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    with autograd.record():
        l = loss(net(X), y)
    l.backward()
    dense = net[2]
    w0, grad = dense.weight.data().asnumpy(), dense.weight.grad().asnumpy()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.01})
    train_batch_ch13(net, X, y, loss, trainer, ctx)
    onp.testing.assert_allclose(dense.weight.data().asnumpy(), w0 - 0.01 * grad, rtol=1e-5,
                                atol=1e-7)


def test_frozen_parameters_stay_put():
    ctx = [mx.cpu()]
    net = small_net(ctx)
    for p in net[0].collect_params().values():
        p.grad_req = "null"
    frozen = net[0].weight.data().asnumpy()
    head = net[2].weight.data().asnumpy()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    X, y = batch(6)
    train_batch_ch13(net, X, y, gluon.loss.SoftmaxCrossEntropyLoss(), trainer, ctx)
    onp.testing.assert_array_equal(net[0].weight.data().asnumpy(), frozen)
    assert not onp.allclose(net[2].weight.data().asnumpy(), head)


def test_train_ch13_with_fewer_than_five_batches_returns_history():
    ctx = [mx.cpu()]
    net = small_net(ctx)
    X, y = batch(12)
    train_iter = gluon.data.DataLoader(gluon.data.ArrayDataset(X, y), batch_size=5)
    assert len(train_iter) == 3  # the book's train_ch13 divides by num_batches // 5 == 0
    events = []
    history = train_ch13(net, train_iter, train_iter, gluon.loss.SoftmaxCrossEntropyLoss(),
                         gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.01}),
                         2, ctx, callback=lambda e, h, **kw: events.append((e, kw["epoch"])),
                         progress=False)
    assert history.epoch == [0, 1, 2] and len(history.test_acc) == 3
    assert history.train_loss[0] is None and history.train_acc[0] is None
    assert all(0 <= a <= 1 for a in history.train_acc[1:] + history.test_acc)
    assert ("epoch", 0) in events and ("epoch", 2) in events
    assert sum(e == "batch" for e, _ in events) == 6
    again = History.from_dict(history.to_dict())
    assert again.test_acc == history.test_acc and "loss" in again.summary()


def test_epoch_0_is_the_accuracy_before_any_update():
    ctx = [mx.cpu()]
    net = small_net(ctx)
    X, y = batch(12)
    data = gluon.data.DataLoader(gluon.data.ArrayDataset(X, y), batch_size=4)
    before = evaluate_accuracy_gpus(net, data, ctx)
    history = train_ch13(net, data, data, gluon.loss.SoftmaxCrossEntropyLoss(),
                         gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.5}),
                         1, ctx, progress=False)
    assert history.initial_test_acc == before
    assert history.examples_per_sec[0] is None and history.mean_examples_per_sec > 0
    assert history.seconds[0] > 0 and "loss" in history.summary()
    # What evaluating costs, epoch by epoch: all of epoch 0, a part of each later epoch.
    assert history.eval_seconds[0] == history.seconds[0]
    assert 0 < history.eval_seconds[1] < history.seconds[1]
    assert 0 < history.eval_share < 1
    assert History.from_dict(history.to_dict()).eval_seconds == history.eval_seconds


def test_a_history_saved_before_epoch_0_has_no_initial_accuracy():
    old = History(epoch=[1], train_loss=[0.6], train_acc=[0.7], test_acc=[0.8],
                  examples_per_sec=[5.0], seconds=[2.0])
    assert old.initial_test_acc is None and old.mean_examples_per_sec == 5.0
    assert old.eval_seconds == [] and old.eval_share is None   # saved before it was recorded
    as_saved = old.to_dict()
    del as_saved["eval_seconds"]
    assert History.from_dict(as_saved).eval_share is None
    assert History(epoch=[0], train_loss=[None], train_acc=[None], test_acc=[0.5],
                   examples_per_sec=[None], seconds=[1.0]).summary() == "no epochs run"


def test_an_unknown_schedule_names_the_choices():
    net = small_net([mx.cpu()])
    X, y = batch(4)
    data = gluon.data.DataLoader(gluon.data.ArrayDataset(X, y), batch_size=4)
    with pytest.raises(ValueError, match="'cosine'"):
        train_fine_tuning(net, 0.01, 4, 1, data_iters=(data, data), schedule="step",
                          hybridize=False, progress=False)


def test_static_shape_changes_speed_and_memory_not_the_run():
    """The same seed with and without ``static_shape`` (a last batch of another size too):
    the same losses and accuracies, epoch by epoch."""
    from mxnet.gluon import nn

    class ConvBNNet(gluon.HybridBlock):   # the interface train_fine_tuning expects
        def __init__(self):
            super().__init__()
            self.features = nn.HybridSequential()
            self.features.add(nn.Conv2D(4, 3, padding=1, in_channels=3),
                              nn.BatchNorm(in_channels=4), nn.Activation("relu"),
                              nn.GlobalAvgPool2D())
            self.output = nn.Dense(2, in_units=4)

        def hybrid_forward(self, F, x):
            return self.output(self.features(x))

    def conv_bn_net():
        net = ConvBNNet()
        net.initialize(init.Xavier())
        return net

    X, y = batch(14)
    data = gluon.data.DataLoader(gluon.data.ArrayDataset(X, y), batch_size=4)   # 4, 4, 4, 2
    runs, flags = [], []
    for static_shape in (False, True):
        mx.random.seed(0)
        net = conv_bn_net()
        real = net.hybridize
        net.hybridize = lambda *a, real=real, **kw: (flags.append(kw.get("static_shape")),
                                                     real(*a, **kw))
        runs.append(train_fine_tuning(net, 0.05, 4, 2, data_iters=(data, data), seed=0,
                                      progress=False, static_shape=static_shape))
    assert flags == [False, True]
    assert runs[0].train_loss == runs[1].train_loss
    assert runs[0].test_acc == runs[1].test_acc
