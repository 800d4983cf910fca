"""The book's training loop (``train_batch_ch13``, ``train_ch13``, ``train_fine_tuning``), fixed.

What differs from ``d2l.train_batch_ch13``/``d2l.train_ch13`` (MXNet):

* every visible GPU is used, else the CPU; a batch is split across the devices so the
  shards cover it exactly, even when it does not divide evenly (the last batch);
* ``trainer.step(1)``: gradients are the *sum* over the batch, not rescaled by its size,
  so learning rates are given per example: the book's 0.01 for a batch of 128 is
  ``0.01 / 128 = 7.8125e-5``;
* frozen parameters (``grad_req = 'null'``) are fine;
* no ``ZeroDivisionError`` with fewer than five batches per epoch;
* losses and accuracies stay on the device until a logging point: no host sync per batch;
* the loop returns a `History` (per-epoch loss, train/test accuracy, examples/s) and
  reports progress through a callback instead of drawing (plots live in `plots`).

Example:
    >>> from d2l_helpers.backbones import build_finetune_net
    >>> from d2l_helpers.training import train_fine_tuning
    >>> finetune_net, _ = build_finetune_net("efficientnet_lite0")
    >>> # a minute on 2 CPU cores (tests/test_real_run.py runs it): not run as a doctest
    >>> history = train_fine_tuning(finetune_net, 7.8125e-5, profile="ci")  # doctest: +SKIP
    >>> history.test_acc[-1]                                                 # doctest: +SKIP
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from . import fusion
from .runtime import PeakRSS, seed_everything, try_all_gpus

# The book's fine-tuning recipe (0.01 and 0.1 for a batch of 128, per example here).
FINETUNE_LR = 0.01 / 128      # 7.8125e-5
SCRATCH_LR = 0.1 / 128        # 7.8125e-4
WEIGHT_DECAY = 0.001


@dataclass
class History:
    """Per-epoch record of a training run plus the configuration that produced it.

    Entry 0 is epoch 0, before any update: its ``test_acc`` is measured, while
    ``train_loss``, ``train_acc`` and ``examples_per_sec`` are None (nothing trained yet).
    Runs saved before epoch 0 was recorded start at epoch 1 (`initial_test_acc` is None).
    ``seconds`` is each epoch's wall time, evaluation included; ``eval_seconds`` the part of
    it spent evaluating on the test set (empty for runs saved before it was recorded), so
    `eval_share` says what the curves' per-epoch test accuracy costs a run.

    Example:
        >>> h = History(epoch=[0, 1], train_loss=[None, 0.5], train_acc=[None, 0.8],
        ...             test_acc=[0.5, 0.9], examples_per_sec=[None, 20.0], seconds=[2.0, 9.0],
        ...             eval_seconds=[2.0, 1.6])
        >>> h.initial_test_acc, h.test_acc[-1], h.mean_examples_per_sec, round(h.eval_share, 2)
        (0.5, 0.9, 20.0, 0.33)
    """

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    examples_per_sec: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    eval_seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(**d)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds))

    @property
    def initial_test_acc(self) -> float | None:
        """Test accuracy before any update (epoch 0), or None for a run without it."""
        return self.test_acc[0] if self.epoch and self.epoch[0] == 0 else None

    @property
    def eval_share(self) -> float | None:
        """The share of the run's seconds spent evaluating (None when not recorded)."""
        if not self.eval_seconds or not self.total_seconds:
            return None
        return float(sum(self.eval_seconds)) / self.total_seconds

    @property
    def mean_examples_per_sec(self) -> float | None:
        """Mean training speed over the epochs that trained (epoch 0 does not)."""
        rates = [r for r in self.examples_per_sec if r is not None]
        return sum(rates) / len(rates) if rates else None

    def summary(self) -> str:
        """The book's closing line: loss, accuracies and speed of the last epoch."""
        if not self.epoch or self.epoch[-1] == 0:
            return "no epochs run"
        return (f"loss {self.train_loss[-1]:.3f}, train acc {self.train_acc[-1]:.3f}, "
                f"test acc {self.test_acc[-1]:.3f}; {self.examples_per_sec[-1]:.1f} examples/sec "
                f"on {self.config.get('devices', '?')}, {self.total_seconds:.0f} s in all")


def split_batch(X, y, devices: Sequence):
    """Split ``X`` and ``y`` along axis 0 into one shard per device, covering them exactly.

    Unlike ``gluon.utils.split_and_load(..., even_split=True)`` an uneven batch is fine:
    shard sizes differ by at most one, and a batch smaller than the number of devices uses
    fewer devices.
    """
    n = X.shape[0]
    k = max(1, min(len(devices), n))
    bounds = [n * i // k for i in range(k + 1)]
    Xs = [X[bounds[i]:bounds[i + 1]].as_in_context(devices[i]) for i in range(k)]
    ys = [y[bounds[i]:bounds[i + 1]].as_in_context(devices[i]) for i in range(k)]
    return Xs, ys


def _correct(y_hat, y):
    """Number of correct predictions, as a device array (no host sync)."""
    return (y_hat.argmax(axis=1).astype(y.dtype) == y).sum()


def train_batch_ch13(net, X, y, loss, trainer, devices: Sequence, split_f=split_batch):
    """One SGD step on a batch split over ``devices``; returns (loss sum, #correct) arrays.

    The step is ``trainer.step(1)``: gradients are summed over the batch, not averaged,
    so pass learning rates already divided by the batch size. Results stay on the device;
    call ``float(...)`` on them only when you need the numbers.
    """
    from mxnet import autograd

    Xs, ys = split_f(X, y, devices)
    with autograd.record():
        preds = [net(x) for x in Xs]
        ls = [loss(p, t) for p, t in zip(preds, ys)]
    for l in ls:
        l.backward()
    trainer.step(1, ignore_stale_grad=True)
    loss_sum = sum(l.sum().as_in_context(devices[0]) for l in ls)
    correct = sum(_correct(p, t).as_in_context(devices[0]) for p, t in zip(preds, ys))
    return loss_sum, correct


def evaluate_accuracy_gpus(net, data_iter, devices: Sequence | None = None,
                           split_f=split_batch) -> float:
    """Accuracy of ``net`` over ``data_iter``, batches split over ``devices``.

    In inference mode on the CPU the batches go through `fusion.inference_twin` (oneDNN's
    fused Conv+BatchNorm+ReLU6: the same decisions, about 2x the images/s on
    EfficientNet-Lite0), which stays built for the next call until `fusion.release` (as
    `train_ch13` does at its end); inside ``autograd.train_mode()`` through ``net`` itself,
    with batch statistics.
    """

    devices = devices or try_all_gpus()
    correct, total = 0.0, 0
    pending = []
    for X, y in data_iter:
        Xs, ys = split_f(X, y, devices)
        pending += [_correct(fusion.forward(net, x), t) for x, t in zip(Xs, ys)]
        total += y.shape[0]
    for c in pending:
        correct += _scalar(c)
    return correct / max(total, 1)


def _scalar(a) -> float:
    """One number from a one-element MXNet array (classic ``nd`` or ``np`` mode); syncs."""
    return float(a.asnumpy().item())


def train_ch13(net, train_iter, test_iter, loss, trainer, num_epochs: int,
               devices: Sequence | None = None, callback: Callable | None = None,
               progress: bool | None = None, config: dict | None = None) -> History:
    """Train for ``num_epochs`` and evaluate on ``test_iter`` after each; return a `History`.

    ``callback(event, history, **info)`` is called with ``event`` ``"batch"`` (about five
    times an epoch, with ``epoch`` as a float, ``train_loss`` and ``train_acc`` so far) and
    ``"epoch"`` (after each evaluation): `plots.LivePlot` draws the book's live curves from
    it. ``progress`` shows a tqdm bar on stderr (default: when stderr is a terminal).
    The process's peak RSS while training is recorded as ``config["peak_rss_mb"]``.
    """
    devices = devices or try_all_gpus()
    history = History(config=dict(config or {}))
    history.config.setdefault("devices", [str(d) for d in devices])
    history.config.setdefault("num_epochs", num_epochs)
    num_batches = len(train_iter)
    log_every = max(1, num_batches // 5)  # the book divides by this and crashes below 5
    if progress is None:
        progress = sys.stderr.isatty()
    with PeakRSS() as mem:
        _epochs(net, train_iter, test_iter, loss, trainer, num_epochs, devices, callback,
                progress, history, num_batches, log_every)
    fusion.release(net)  # the evaluation twin's memory pool (built by the first evaluation)
    # Memory of the whole process while this run trained (RSS sampled every 50 ms).
    history.config["peak_rss_mb"] = round(mem.peak_mb, 1)
    history.config["start_rss_mb"] = round(mem.start_mb, 1)
    return history


def _epochs(net, train_iter, test_iter, loss, trainer, num_epochs, devices, callback,
            progress, history, num_batches, log_every) -> None:
    from tqdm import tqdm

    # Epoch 0: the test accuracy before any update, so every curve starts where training
    # starts (a head copied from ImageNet starts far above chance; a random one near it).
    # No training has happened yet: its loss, training accuracy and speed are None.
    start = time.perf_counter()
    test_acc = evaluate_accuracy_gpus(net, test_iter, devices)
    seconds = time.perf_counter() - start
    _record(history, 0, None, None, test_acc, None, seconds, seconds)
    if callback is not None:
        callback("epoch", history, epoch=0, train_loss=None, train_acc=None, test_acc=test_acc)
    for epoch in range(num_epochs):
        start = time.perf_counter()
        loss_sum = correct = None
        seen = 0
        bar = tqdm(train_iter, total=num_batches, disable=not progress, leave=False,
                   desc=f"epoch {epoch + 1}/{num_epochs}")
        for i, (X, y) in enumerate(bar):
            l, c = train_batch_ch13(net, X, y, loss, trainer, devices)
            loss_sum = l if loss_sum is None else loss_sum + l
            correct = c if correct is None else correct + c
            seen += y.shape[0]
            if callback is not None and ((i + 1) % log_every == 0 or i == num_batches - 1):
                callback("batch", history, epoch=epoch + (i + 1) / num_batches,
                         train_loss=_scalar(loss_sum) / seen, train_acc=_scalar(correct) / seen)
        train_loss, train_acc = _scalar(loss_sum) / seen, _scalar(correct) / seen
        train_time = time.perf_counter() - start
        test_acc = evaluate_accuracy_gpus(net, test_iter, devices)
        seconds = time.perf_counter() - start
        _record(history, epoch + 1, train_loss, train_acc, test_acc, seen / train_time,
                seconds, seconds - train_time)
        if callback is not None:
            callback("epoch", history, epoch=epoch + 1, train_loss=train_loss,
                     train_acc=train_acc, test_acc=test_acc)


def _record(history: History, epoch: int, train_loss, train_acc, test_acc, rate,
            seconds: float, eval_seconds: float) -> None:
    history.epoch.append(epoch)
    history.train_loss.append(train_loss)
    history.train_acc.append(train_acc)
    history.test_acc.append(test_acc)
    history.examples_per_sec.append(rate)
    history.seconds.append(seconds)
    history.eval_seconds.append(eval_seconds)


def run_config(net, prof, backbone: str | None, learning_rate: float, batch_size: int,
               num_epochs: int, seed: int) -> dict[str, Any]:
    """The config recorded with a run: profile, backbone, rates, sizes, seed, counts.

    ``trainable_params`` and ``total_params`` are `peft.trainable_summary`'s ``trainable``
    (scalars that will be updated, ``grad_req != 'null'``) and ``total`` (every scalar but
    BatchNorm's running statistics), so ``trainable_params / total_params`` is the share
    that trains.
    """
    from .peft import trainable_summary

    counts = trainable_summary(net)
    head_mults = sorted({p.lr_mult for p in net.output.collect_params().values()})
    return {"profile": prof.name, "backbone": backbone, "learning_rate": learning_rate,
            "head_lr_mult": head_mults[0] if len(head_mults) == 1 else head_mults,
            "batch_size": batch_size, "num_epochs": num_epochs, "seed": seed,
            "weight_decay": WEIGHT_DECAY, "image_size": prof.image_size,
            "trainable_params": counts["trainable"], "total_params": counts["total"]}


def _set_head_lr_mult(net, head_lr_mult: float) -> None:
    for p in net.features.collect_params().values():
        p.lr_mult = 1.0
    for p in net.output.collect_params().values():
        p.lr_mult = head_lr_mult


def train_fine_tuning(net, learning_rate: float, batch_size: int | None = None,
                      num_epochs: int | None = None, *, head_lr_mult: float | None = None,
                      profile=None, backbone: str | None = None, data_iters=None,
                      devices: Sequence | None = None, seed: int = 0,
                      callback: Callable | None = None, progress: bool | None = None,
                      hybridize: bool = True, schedule: str | None = None,
                      static_shape: bool = False) -> History:
    """The book's ``train_fine_tuning``: SGD (wd 0.001) on the hot-dog data, returns a History.

    ``learning_rate`` is per example (the book's 0.01 / 128 = 7.8125e-5 for fine-tuning,
    7.8125e-4 from scratch). The head's ``lr_mult`` is used as set on the net, as the book
    does; ``head_lr_mult`` sets it here instead (``1.0`` is the uniform rate of a scratch run).

    ``batch_size`` and ``num_epochs`` default to the profile's (``full``: the book's 128 and
    5). ``data_iters`` is an optional ``(train_iter, test_iter)`` pair; by default the
    profile's loaders (`session.run_loaders`) with ``backbone``'s normalisation (ImageNet's,
    the resnet18_v2 one, when ``backbone`` is None). ``seed`` seeds Python,
    NumPy and MXNet before the data order and head init are drawn; it is recorded in
    ``history.config`` with the profile, backbone, devices and learning rates.

    ``schedule``: None (the book's constant rate) or ``"cosine"`` (MXNet's
    ``CosineScheduler``: from ``learning_rate`` down to 0 over all the run's steps).

    ``static_shape=True`` hybridizes with ``static_shape`` too: the same arithmetic, a
    memory plan fixed per batch shape. Measured on the cpu profile's job (2 vCPUs): 1.12x
    the training examples/s, but peak RSS 4.1 GB instead of 2.8 GB (one plan for the batch
    of 32 and one for the epoch's last, smaller batch), so it is off by default.
    """
    from mxnet import gluon

    from .profiles import resolve_profile

    prof = resolve_profile(profile)
    batch_size = batch_size or prof.batch_size
    num_epochs = num_epochs or prof.num_epochs
    devices = list(devices or try_all_gpus())
    seed_everything(seed)
    if head_lr_mult is not None:
        _set_head_lr_mult(net, head_lr_mult)
    if data_iters is None:
        from .session import run_loaders

        data_iters = run_loaders(prof, backbone or "resnet18_v2", batch_size)
    train_iter, test_iter = data_iters
    net.collect_params().reset_ctx(devices)
    if hybridize:
        # static_alloc reuses one memory plan across batches (+13% examples/s at batch 64,
        # 160 px on 2 vCPUs). static_shape as well is faster again but costs 40-70% more
        # memory (22.8 GB at the book's batch 128, 224 px, on EfficientNet-Lite0).
        net.hybridize(static_alloc=True, static_shape=bool(static_shape))
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    optimizer_params = {"learning_rate": learning_rate, "wd": WEIGHT_DECAY}
    if schedule == "cosine":
        from mxnet import lr_scheduler

        optimizer_params["lr_scheduler"] = lr_scheduler.CosineScheduler(
            max_update=max(1, num_epochs * len(train_iter)), base_lr=learning_rate,
            final_lr=0.0)
    elif schedule is not None:
        raise ValueError(f"schedule={schedule!r}: use None (constant, the book's) or 'cosine'")
    trainer = gluon.Trainer(net.collect_params(), "sgd", optimizer_params)
    config = run_config(net, prof, backbone, learning_rate, batch_size, num_epochs, seed)
    if schedule is not None:
        config["schedule"] = schedule
    history = train_ch13(net, train_iter, test_iter, loss, trainer, num_epochs, devices,
                         callback=callback, progress=progress, config=config)
    if hybridize:
        # static_alloc keeps its memory pool for as long as the net lives (1-2 GB at
        # batch 64, 160 px); release it so a notebook that trains several nets does not
        # hold every pool. The next call of the net builds what it needs.
        net._clear_cached_op()
    return history
