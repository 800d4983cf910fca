"""BatchNorm's running statistics: momentum, inference mode while training, recalibration."""
from __future__ import annotations

import mxnet as mx
import numpy as onp
import pytest
from mxnet import autograd
from mxnet.gluon import nn

from d2l_helpers import batchnorm


def _net(momentum=0.99):
    net = nn.HybridSequential()
    net.add(nn.Dense(4, in_units=3), nn.BatchNorm(in_channels=4, momentum=momentum))
    net.initialize(mx.init.Normal(1.0))
    return net


def test_set_momentum_checks_its_range_and_counts_layers():
    net = _net()
    assert batchnorm.set_momentum(net, 0.9) == 1
    assert batchnorm.layers(net)[0]._kwargs["momentum"] == 0.9
    with pytest.raises(ValueError, match=r"momentum=1\.0.*\[0, 1\)"):
        batchnorm.set_momentum(net, 1.0)


@pytest.mark.parametrize("hybridize", [False, True])
def test_recalibrate_sets_the_average_of_the_batch_statistics(hybridize):
    net = _net()
    if hybridize:
        net.hybridize(static_alloc=True)
    rng = onp.random.default_rng(0)
    batches = [(mx.nd.array(rng.normal(i, 1.0, (8, 3))), mx.nd.zeros(8)) for i in range(3)]
    assert batchnorm.recalibrate(net, batches) == 3
    dense = net[0]
    means = [dense(X).asnumpy().mean(axis=0) for X, _ in batches]
    onp.testing.assert_allclose(net[1].running_mean.data().asnumpy(), onp.mean(means, axis=0),
                                rtol=1e-4, atol=1e-5)
    assert net[1]._kwargs["momentum"] == 0.99           # restored
    w = dense.weight.data().asnumpy().copy()
    batchnorm.recalibrate(net, batches, max_batches=1)
    onp.testing.assert_array_equal(dense.weight.data().asnumpy(), w)   # no weight moves


def test_running_statistics_mode_trains_on_the_inference_features():
    net = _net()
    X = mx.nd.random.normal(shape=(8, 3))
    with autograd.predict_mode():
        inference = net(X).asnumpy()
    assert batchnorm.use_running_statistics(net) == 1
    before = net[1].running_mean.data().asnumpy().copy()
    with autograd.record():
        out = net(X)
    out.backward()
    onp.testing.assert_allclose(out.asnumpy(), inference, rtol=1e-5, atol=1e-6)
    onp.testing.assert_array_equal(net[1].running_mean.data().asnumpy(), before)
