"""A learning-rate finder (Smith, 2017, "Cyclical Learning Rates"; fastai's ``lr_find``).

Train a fresh net for at most ``num_steps`` mini-batches while the learning rate grows
exponentially from ``start_lr`` to ``end_lr``, and record the loss of every step. The
loss first hardly moves (the rate is too small), then falls (the useful rates), then
explodes (too large). The search stops once the smoothed loss exceeds 4x its minimum.

Everything is as in `training.train_fine_tuning`: SGD with weight decay 0.001, the
head's ``lr_mult`` as set on the net (10 after `backbones.build_finetune_net`) and
``trainer.step(1)`` through `training.train_batch_ch13`, so the rates are *per example*:
the book's 0.01 per batch of 128 is 7.8125e-5, inside the default range 1e-7 .. 1e-1.

The loss is smoothed by an exponential moving average (beta 0.98) with bias correction,
``avg = beta * avg + (1 - beta) * loss; smoothed = avg / (1 - beta ** step)``. The
**suggested rate is the steepest descent** of the smoothed loss against log(lr), looked for
between the 5th step and the minimum after it (fastai's "steep"; the first smoothed values
average only a few noisy batches, so neither is looked for among them); `LRFinderResult.lr_min_div10`,
the rate at the minimum divided by 10 (fastai's "minimum"), is the more cautious second
opinion. When the loss never falls, the suggestion falls back to that one.

The net (initialized, parameter shapes known) is trained in place; by default its
parameters are restored afterwards, but pass a freshly built net anyway (e.g.
``build_finetune_net(name)[0]``) and train that one with `training.train_fine_tuning`.

Example:
    >>> import numpy as onp, mxnet as mx
    >>> from mxnet.gluon import nn
    >>> rng = onp.random.RandomState(0)
    >>> X = rng.normal(size=(64, 2)).astype("float32"); y = (X.sum(1) > 0).astype("float32")
    >>> batches = [(mx.nd.array(X[i:i + 16]), mx.nd.array(y[i:i + 16])) for i in range(0, 64, 16)]
    >>> net = nn.Dense(2, in_units=2); net.initialize()
    >>> res = lr_find(net, batches, num_steps=20, hybridize=False)
    >>> len(res.lrs) <= 20 and res.lrs[0] == 1e-7
    True
    >>> bool(res.lrs[0] <= res.suggested_lr <= res.lrs[-1])
    True
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as onp

SKIP_START = 5       # the first smoothed losses are averages of very few steps
DIVERGE = 4.0        # stop once the smoothed loss exceeds DIVERGE x its minimum
BETA = 0.98


@dataclass
class LRFinderResult:
    """Learning rates tried (per example), the loss at each and what they suggest."""

    lrs: list[float]
    losses: list[float]            # mean loss per example of each step's batch
    smoothed: list[float]          # EMA with bias correction (beta 0.98)
    suggested_lr: float            # steepest descent of the smoothed loss
    lr_min_div10: float            # rate at the smoothed loss's minimum, divided by 10
    suggested_index: int           # step of suggested_lr
    min_index: int                 # step of the smoothed loss's minimum
    stopped_early: bool            # the smoothed loss exceeded DIVERGE x its minimum
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def book_lr(self) -> float:
        from .training import FINETUNE_LR

        return FINETUNE_LR

    @property
    def book_ratio(self) -> float:
        """``suggested_lr / book_lr``: above 1 the finder would train faster than the book."""
        return self.suggested_lr / self.book_lr

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "book_lr": self.book_lr, "book_ratio": self.book_ratio}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LRFinderResult:
        """The result `to_dict` wrote (e.g. into a saved run's config), read back."""
        return cls(**{k: v for k, v in d.items() if k not in ("book_lr", "book_ratio")})


def exponential_schedule(start_lr: float, end_lr: float, num_steps: int) -> list[float]:
    """``num_steps`` rates from ``start_lr`` to ``end_lr``, evenly spaced in log scale."""
    if num_steps == 1:
        return [float(start_lr)]
    ratio = end_lr / start_lr
    return [float(start_lr * ratio ** (i / (num_steps - 1))) for i in range(num_steps)]


def smooth(losses: Sequence[float], beta: float = BETA) -> list[float]:
    """Exponential moving average of ``losses`` with bias correction (as fastai/Smith)."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** i))
    return out


def suggest(lrs: Sequence[float], smoothed: Sequence[float],
            skip_start: int = SKIP_START) -> tuple[int, int]:
    """(index of the steepest descent, index of the minimum) of ``smoothed`` vs log(lr).

    The first ``skip_start`` smoothed values (a third of a short run at most) average only a
    few noisy batches, so both the minimum and the steepest descent are looked for after
    them; the steepest descent lies between there and the minimum. Without at least two
    falling steps there it is the minimum's index (and the suggestion its rate / 10).

    Example:
        >>> lrs = [10.0 ** (k / 4 - 7) for k in range(12)]
        >>> suggest(lrs, [0.1, 0.9, 0.9, 0.9, 0.9, 0.9, 0.8, 0.5, 0.3, 0.2, 0.6, 2.0])
        (7, 9)
    """
    s = onp.asarray(smoothed, dtype=onp.float64)
    skip = min(skip_start, len(s) // 3)
    i_min = skip + int(onp.nanargmin(s[skip:]))
    if i_min - skip < 2:
        return i_min, i_min
    grad = onp.gradient(s[skip:i_min + 1], onp.log(onp.asarray(lrs[skip:i_min + 1])))
    return skip + int(onp.argmin(grad)), i_min


def _cycle(batches: Iterable) -> Iterator:
    """Batches of ``batches`` over and over: re-iterated (a DataLoader reshuffles), or, for
    a one-shot iterator, replayed from the batches it gave (held in memory)."""
    one_shot = iter(batches) is batches
    seen: list = []
    while True:
        n = 0
        for batch in (seen if one_shot and seen else batches):
            if one_shot and len(seen) <= n:
                seen.append(batch)
            n += 1
            yield batch
        if n == 0:
            raise ValueError("the data iterable yielded no batches")


def lr_find(net, data: Iterable, start_lr: float = 1e-7, end_lr: float = 1e-1,
            num_steps: int = 100, *, head_lr_mult: float | None = None, beta: float = BETA,
            diverge: float = DIVERGE, loss=None, devices: Sequence | None = None,
            restore: bool = True, hybridize: bool = True,
            seed: int | None = None) -> LRFinderResult:
    """Run the finder on ``net`` over ``data``, any iterable of ``(X, y)`` batches (e.g. a
    gluon ``DataLoader``, re-iterated when it has fewer than ``num_steps`` batches).

    ``start_lr``/``end_lr`` are per example. ``head_lr_mult`` overrides the ``lr_mult`` of
    ``net.output`` (as `training.train_fine_tuning` does). ``loss`` defaults to the book's
    ``SoftmaxCrossEntropyLoss``. ``restore`` puts the parameters (and BatchNorm statistics)
    back afterwards. ``seed`` seeds Python, NumPy and MXNet first.
    """
    from mxnet import gluon

    from .runtime import seed_everything, try_all_gpus
    from .training import WEIGHT_DECAY, _set_head_lr_mult, train_batch_ch13

    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got {start_lr}, {end_lr}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    if seed is not None:
        seed_everything(seed)
    devices = list(devices or try_all_gpus())
    if head_lr_mult is not None:
        _set_head_lr_mult(net, head_lr_mult)
    net.collect_params().reset_ctx(devices)
    params = net.collect_params()
    saved = {name: p.data(devices[0]).copy() for name, p in params.items()} if restore else {}
    if hybridize:
        net.hybridize(static_alloc=True)
    loss = loss or gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(params, "sgd", {"learning_rate": start_lr, "wd": WEIGHT_DECAY})
    lrs, losses, smoothed = [], [], []
    avg, stopped = 0.0, False
    try:
        for lr, (X, y) in zip(exponential_schedule(start_lr, end_lr, num_steps), _cycle(data)):
            trainer.set_learning_rate(lr)
            loss_sum, _ = train_batch_ch13(net, X, y, loss, trainer, devices)
            lrs.append(lr)
            losses.append(float(loss_sum.asnumpy().item()) / y.shape[0])   # syncs: per step
            avg = beta * avg + (1 - beta) * losses[-1]                      # as in `smooth`
            smoothed.append(avg / (1 - beta ** len(losses)))
            if not math.isfinite(smoothed[-1]) or smoothed[-1] > diverge * min(smoothed):
                stopped = True
                break
    finally:
        if restore:
            for name, p in params.items():
                p.set_data(saved[name])
        if hybridize:
            net._clear_cached_op()      # release static_alloc's memory, as training does
    i_steep, i_min = suggest(lrs, smoothed)
    return LRFinderResult(lrs, losses, smoothed, lrs[i_steep], lrs[i_min] / 10, i_steep, i_min,
                          stopped, config={"start_lr": start_lr, "end_lr": end_lr,
                                           "num_steps": num_steps, "beta": beta,
                                           "diverge": diverge, "weight_decay": WEIGHT_DECAY,
                                           "devices": [str(d) for d in devices]})

