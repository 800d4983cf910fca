"""Five ways to adapt a pretrained net, trained with one recipe and compared fairly.

=====================  ===================================================================
method                 what trains (the new 2-way head always trains in full)
=====================  ===================================================================
``full fine-tune``     everything; backbone at eta, head at 10 eta (the book's recipe)
``feature extraction`` the head only, on cached backbone features (`features`)
``BitFit``             the backbone's biases: BatchNorm shifts (beta) and scales (gamma),
                       counted separately; every weight matrix/kernel stays frozen
``LoRA``               rank-r adapters on the backbone's 1 x 1 convs (`peft.add_lora`)
``residual adapters``  a zero-initialised 1 x 1 conv beside every spatial conv of the
                       backbone (`peft.add_adapters`, Rebuffi et al.)
=====================  ===================================================================

Same data, profile, optimiser (SGD, weight decay 0.001), learning rate eta (per example:
0.01 / 128), epochs and seed for every method. The parameters that are new or few, the
head, the LoRA and residual adapters and BitFit's BatchNorm shifts and scales, train at 10 eta like the
book's head; the pretrained weights that train (full fine-tune) at eta.

"Trainable" and "% of all" are `peft.trainable_summary`'s: every parameter but BatchNorm's
running statistics is counted in the total. `summarize` turns the runs into one row per
method (mean, spread and range over seeds), and `plots.plot_variants` draws those rows.

Example:
    >>> from d2l_helpers.variants import build_variant, train_variant
    >>> net, details = build_variant("LoRA", "efficientnet_lite0", seed=0)
    >>> details["lora"]["wrapped"], details["lora"]["skipped"]
    (32, {'grouped/depthwise conv': 16, 'k x k conv': 1})
    >>> # Skipped: training on the photos is too slow for a doctest (notebook 08 runs it).
    >>> h = train_variant(net, details, "efficientnet_lite0", profile="ci")  # doctest: +SKIP
"""
from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from typing import Any

from .stats import spread
from .training import FINETUNE_LR, History

METHODS = ("full fine-tune", "feature extraction", "BitFit", "LoRA", "residual adapters")
#: The seeds of notebook 08's comparison (`run_comparison`), trained by the study step too.
SEEDS = (0, 1, 2)
LORA_RANK = 8
LORA_ALPHA = 8.0
PEFT_LR_MULT = 10.0


def build_variant(method: str, backbone: str, seed: int = 0, rank: int = LORA_RANK,
                  alpha: float = LORA_ALPHA):
    """A fresh ImageNet-initialised net set up for ``method``; returns ``(net, details)``.

    ``details`` says what trains: BitFit's group counts, LoRA's wrapped/skipped layers.
    """
    from .backbones import build_finetune_net
    from .peft import add_adapters, add_lora, bitfit, freeze

    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}")
    net, _ = build_finetune_net(backbone, head_lr_mult=10.0, seed=seed)
    details: dict[str, Any] = {"method": method}
    if method == "feature extraction":
        freeze(net.features)
    elif method == "BitFit":
        details["bitfit"] = bitfit(net.features, bn_scale=True)
    elif method == "LoRA":
        lora = add_lora(net.features, rank=rank, alpha=alpha)
        details["lora"] = {"rank": rank, "alpha": alpha, **lora}
    elif method == "residual adapters":
        details["adapters"] = add_adapters(net.features)
    if method in ("BitFit", "LoRA", "residual adapters"):
        for p in net.features.collect_params().values():
            if p.grad_req != "null":
                p.lr_mult = PEFT_LR_MULT
    return net, details


def train_variant(net, details: dict[str, Any], backbone: str, *, profile=None, seed: int = 0,
                  learning_rate: float = FINETUNE_LR, callback: Callable | None = None,
                  progress: bool | None = None) -> History:
    """Train a net from `build_variant` with the shared recipe; return its History.

    The config records the method, its details, the trainable scalars by kind and the
    peak RSS of the whole run (feature extraction included).
    """
    from .features import train_head_on_features
    from .peft import trainable_summary
    from .runtime import PeakRSS
    from .training import train_fine_tuning

    counts = trainable_summary(net)
    method = details["method"]
    train = train_head_on_features if method == "feature extraction" else train_fine_tuning
    with PeakRSS() as mem:
        history = train(net, learning_rate, profile=profile, backbone=backbone, seed=seed,
                        callback=callback, progress=progress)
    history.config.update(details)
    history.config["peak_rss_mb"] = round(mem.peak_mb, 1)
    history.config["trainable_by_kind"] = _by_kind(counts)
    return history


def _by_kind(counts: dict[str, Any]) -> dict[str, Any]:
    """The trainable scalars by kind from a `peft.trainable_summary`."""
    return {k: counts[k] for k in ("weight", "bias", "bn_shift", "bn_scale")}


SAVED_BY = "notebooks/08_modern_variants.ipynb"


def run_name(method: str, seed: int) -> str:
    """The run-store name of ``method`` on ``seed``, e.g. ``variant-lora-seed0``.

    The full fine-tune is the seed study's ``finetune`` arm (`study`: the same net, recipe
    and loop), so its runs are the study's: ``finetune``, ``finetune-seed1``, ...

    Example:
        >>> run_name("LoRA", 0), run_name("full fine-tune", 0), run_name("full fine-tune", 2)
        ('variant-lora-seed0', 'finetune', 'finetune-seed2')
    """
    if method == "full fine-tune":
        from . import study

        return study.run_name(study.FINETUNE_ARM, seed)
    return f"variant-{method.lower().replace(' ', '-')}-seed{seed}"


def recipe(method: str, run, seed: int) -> dict[str, Any]:
    """Everything that determines a run of ``method`` (not the full fine-tune, which is the
    study's `study.recipe`): the method and its settings, profile, backbone, seed, photos."""
    from . import study

    base = study.recipe(study.FINETUNE_ARM, run, seed)
    del base["arm"]
    return {**base, "method": method, "learning_rate": FINETUNE_LR, "head_lr_mult": 10.0,
            "peft_lr_mult": PEFT_LR_MULT, "lora": {"rank": LORA_RANK, "alpha": LORA_ALPHA},
            "loop": "variants.train_variant"}


def run_variant(method: str, run, seed: int, *, replay: bool = False,
                progress: bool | None = None, saved_by: str = SAVED_BY) -> tuple[History, Any]:
    """Train ``method`` on ``seed`` for ``run`` (`session.RunInfo`) and save it, or load the
    saved run with the same recipe and code (`replay.train_or_replay`); return
    ``(history, net)``, the net holding the run's weights.

    The full fine-tune is the seed study's ``finetune`` arm (`study.run_arm`): notebook 08
    reuses the runs of notebooks 04-05 and the main job's study step instead of training
    them again, and its history gets the same ``method`` and ``trainable_by_kind`` entries
    as the other methods'.
    """
    from .peft import trainable_summary
    from .replay import train_or_replay

    if run.tree is not None:
        raise ValueError(
            f"run_variant trains on the hot-dog photos, but this run was set up on the folder "
            f"{run.data_dir}: call d2l_helpers.setup() without a folder (notebook 08), or use "
            "session.train_method for your own photos (notebook 09).")
    if method == "full fine-tune":
        from . import study

        net = study.build_net(study.FINETUNE_ARM, run, seed)
        history = study.run_arm(study.FINETUNE_ARM, run, seed, net=net, replay=replay,
                                progress=progress, saved_by=saved_by)
        history.config["method"] = method
        history.config["trainable_by_kind"] = _by_kind(trainable_summary(net))
        return history, net
    net, details = build_variant(method, run.backbone, seed=seed)
    history = train_or_replay(
        run_name(method, seed), net,
        lambda: train_variant(net, details, run.backbone, profile=run.profile, seed=seed,
                              progress=progress),
        replay=replay, meta={**run.to_dict(), "seed": seed}, saved_by=saved_by,
        recipe=None if replay else recipe(method, run, seed))
    return history, net


def run_comparison(run, seeds: Iterable[int] = SEEDS, methods: Iterable[str] = METHODS, *,
                   replay: bool = False, keep: Iterable[tuple[str, int]] = (),
                   say: Callable[[str], None] | None = None, progress: bool | None = None,
                   saved_by: str = SAVED_BY) -> tuple[list[History], dict[tuple[str, int], Any]]:
    """Notebook 08's comparison: every method on every seed (`run_variant`: saved runs with
    the same recipe and code are loaded), seed by seed. Returns the histories in order and
    the nets named in ``keep`` as ``(method, seed)`` pairs (the others are let go as soon as
    their run is saved: a net holds its weights and MXNet's memory pools).

    ``say`` receives one line per run: method, seed, final test accuracy, seconds, peak RSS.
    The study step (``python -m d2l_helpers study``) calls it too, so that the notebook
    loads these runs in class instead of training them.
    """
    keep = set(keep)
    histories: list[History] = []
    nets: dict[tuple[str, int], Any] = {}
    for seed in seeds:
        for method in methods:
            h, net = run_variant(method, run, seed, replay=replay, progress=progress,
                                 saved_by=saved_by)
            histories.append(h)
            if (method, seed) in keep:
                nets[method, seed] = net
            del net   # else the name holds this net while the next run builds and trains
            if say is not None:
                rss = h.config.get("peak_rss_mb")   # absent from runs saved before it was kept
                say(f"{method:<19} seed {seed}: test acc {h.test_acc[-1]:.3f}, "
                    f"{h.total_seconds:.0f} s, peak RSS "
                    f"{'not recorded' if rss is None else f'{rss / 1024:.1f} GB'}")
    return histories, nets


def group_runs(histories: Iterable[History]) -> dict[tuple[Any, str], list[History]]:
    """The runs by ``(backbone, method)``, in the order each pair first appears."""
    groups: dict[tuple[Any, str], list[History]] = {}
    for h in histories:
        groups.setdefault((h.config.get("backbone"), h.config["method"]), []).append(h)
    return groups


def final_accuracies(histories: Iterable[History]) -> list[float]:
    """Each run's test accuracy after its last epoch."""
    return [h.test_acc[-1] for h in histories]


def summarize(histories: Iterable[History]) -> list[dict[str, Any]]:
    """One row per (backbone, method): mean and spread over seeds of the final test accuracy,
    trainable parameters (count and % of all), seconds and peak RSS.

    ``acc sd`` is the sample standard deviation (0 with one seed); ``acc min``/``acc max``
    show the range. ``% of all`` is ``100 * trainable_params / total_params`` as
    `training.run_config` recorded them (`peft.trainable_summary`: BatchNorm running
    statistics are in neither). Rows keep the order methods first appear in.
    """
    rows = []
    for (backbone, method), hs in group_runs(histories).items():
        acc = spread(final_accuracies(hs))
        cfg = hs[0].config
        rows.append({
            "backbone": backbone, "method": method, "seeds": len(hs),
            "test acc mean": acc["mean"], "acc sd": acc["sd"],
            "acc min": acc["min"], "acc max": acc["max"],
            "trainable params": cfg["trainable_params"],
            "% of all": 100.0 * cfg["trainable_params"] / cfg["total_params"],
            "seconds mean": statistics.fmean(h.total_seconds for h in hs),
            "peak RSS MB": max(h.config.get("peak_rss_mb", 0.0) for h in hs),
        })
    return rows
