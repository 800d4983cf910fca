"""BatchNorm's running statistics: their momentum, and recomputing them from data.

A BatchNorm layer normalises with the batch's own mean and variance while training and with
running averages of them at test time (``running = momentum * running + (1 - momentum) *
batch``). EfficientNet-Lite0 uses TensorFlow's momentum 0.99: after the 80 steps of the cpu
profile's five epochs, the starting values (mean 0, variance 1 for a net trained from
scratch) still weigh 0.99 ** 80 = 45 % of every running average. A fine-tune starts from
ImageNet's statistics, which are close; a scratch net starts from ones that are not.

`set_momentum` changes the momentum of every BatchNorm layer of a net; `recalibrate`
recomputes the running statistics as the average over batches of data ("precise BN"),
without touching any weight; `use_running_statistics` keeps BatchNorm in inference mode
while the net trains.

Example:
    >>> import mxnet as mx
    >>> from mxnet.gluon import nn
    >>> net = nn.HybridSequential()
    >>> net.add(nn.Dense(4, in_units=3), nn.BatchNorm(in_channels=4, momentum=0.99))
    >>> net.initialize()
    >>> set_momentum(net, 0.9)
    1
    >>> [bn._kwargs["momentum"] for bn in layers(net)]
    [0.9]
    >>> batches = [(mx.nd.ones((2, 3)) * i, mx.nd.zeros(2)) for i in range(1, 4)]
    >>> recalibrate(net, batches)
    3
    >>> bool(layers(net)[0].running_mean.data().abs().sum() > 0)   # no longer the zeros
    True
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence


def layers(net) -> list:
    """Every ``nn.BatchNorm`` block inside ``net``, in definition order."""
    from mxnet.gluon import nn

    found: list = []

    def visit(block) -> None:
        if isinstance(block, nn.BatchNorm):
            found.append(block)
        for child in block._children.values():
            visit(child)

    visit(net)
    return found


def _clear_cached(net) -> None:
    # A hybridized net has the momentum baked into its cached graph: rebuild it next call.
    if hasattr(net, "_clear_cached_op"):
        net._clear_cached_op()


def set_momentum(net, momentum: float) -> int:
    """Set the running-average momentum of every BatchNorm in ``net``; return how many.

    ``momentum`` must be in [0, 1): the weight of the old running value at each step.
    """
    if not 0.0 <= float(momentum) < 1.0:
        raise ValueError(f"momentum={momentum!r}: use a number in [0, 1), e.g. 0.9 "
                         "(PyTorch's default) or 0.99 (TensorFlow's, EfficientNet's).")
    found = layers(net)
    for bn in found:
        bn._kwargs["momentum"] = float(momentum)
    _clear_cached(net)
    return len(found)


def use_running_statistics(net, flag: bool = True) -> int:
    """Make every BatchNorm in ``net`` normalise with its running statistics in training
    too, and stop updating them (``use_global_stats``); return how many layers.

    The Keras transfer-learning guide keeps BatchNorm in inference mode while fine-tuning
    on small data: the backbone then computes, while training, the features its ImageNet
    statistics define, the same ones a head trained on cached features has seen. Its
    scales and shifts (gamma, beta) still train.
    """
    found = layers(net)
    for bn in found:
        bn._kwargs["use_global_stats"] = bool(flag)
    _clear_cached(net)
    return len(found)


def recalibrate(net, data_iter: Iterable, devices: Sequence | None = None,
                max_batches: int | None = None) -> int:
    """Recompute every BatchNorm's running mean and variance from ``data_iter``.

    Each batch goes through ``net`` in training mode (BatchNorm on the batch's statistics)
    with momentum 0, forward and backward (MXNet updates running statistics in the backward
    pass), so each layer's running values become that batch's; their average over the
    batches replaces the running statistics. No weight changes (no optimizer step; the
    gradient buffers are overwritten). The momentum is restored afterwards. Returns the
    number of batches used.
    """
    import mxnet as mx
    from mxnet import autograd

    from .training import split_batch

    devices = list(devices or [mx.cpu()])
    bns = layers(net)
    if not bns:
        return 0
    momenta = [bn._kwargs["momentum"] for bn in bns]
    for bn in bns:
        bn._kwargs["momentum"] = 0.0
    _clear_cached(net)
    sums_mean = sums_var = None
    count = 0
    try:
        for X, y in data_iter:
            if max_batches is not None and count >= max_batches:
                break
            Xs, _ = split_batch(X, y, devices[:1])
            x = Xs[0]
            x.attach_grad()   # so backward runs even when every weight is frozen
            with autograd.record():
                out = net(x)
            # MXNet 1.9 updates the running statistics in BatchNorm's backward pass, not in
            # its forward: a forward pass alone, even in training mode, leaves them as they
            # were. The gradients this writes are overwritten by the next training step.
            out.backward()
            means = [bn.running_mean.data(devices[0]).copy() for bn in bns]
            variances = [bn.running_var.data(devices[0]).copy() for bn in bns]
            if sums_mean is None:
                sums_mean, sums_var = means, variances
            else:
                sums_mean = [a + b for a, b in zip(sums_mean, means)]
                sums_var = [a + b for a, b in zip(sums_var, variances)]
            count += 1
        if count:
            for bn, m, v in zip(bns, sums_mean, sums_var):
                bn.running_mean.set_data(m / count)
                bn.running_var.set_data(v / count)
    finally:
        for bn, momentum in zip(bns, momenta):
            bn._kwargs["momentum"] = momentum
        _clear_cached(net)
    return count
