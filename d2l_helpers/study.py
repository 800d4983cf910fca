"""The seed study: the comparisons of notebooks 04-06, each over several seeds.

One run is one sample (`stats`). The study trains every *arm* below on the same seeds with
the book's loop (`training.train_fine_tuning`) and saves each run in the run store, so the
notebooks load what the study trained instead of training it again (`replay.train_or_replay`
with a ``recipe``: same profile, backbone, seed, rates, head init, data and code version),
and the study loads what a notebook trained.

=================  =========================================================================
arm                what it is
=================  =========================================================================
``finetune``       the book's recipe: ImageNet backbone at eta, new random head at 10 eta
``head-row934``    the same, the head started as ImageNet's hot-dog row (934) thresholded on
                   the training photos (`head_init.init_from_row`)
``head-copy934``   the same, the head's "hotdog" row copied from row 934 and "not-hotdog"
                   left random: the book's initialisation (with the right row)
``scratch-lr<r>``  every weight random, one rate ``r`` per batch of 128 for all of them;
                   ``r`` = 0.1 is the book's. `SCRATCH_RATES` is the sweep; the fair
                   baseline uses the rate `choose_scratch_rate` picks from it
``finetune-224``   variant: the book's recipe at the book's 224 px crops (first seed only)
``finetune-224-``  variant: 224 px, the head trained alone on cached features for 10 epochs
``warmup``         before the whole net trains (two-stage recipe), BatchNorm kept in
                   inference mode while it does (`batchnorm.use_running_statistics`)
=================  =========================================================================

Runs are named after their arm, with ``-seed<k>`` for seeds other than 0 (``finetune`` is
notebook 04's run; ``finetune-seed3`` the same recipe on seed 3).

Example (the recipe that decides whether a saved run can be reused):
    >>> sorted(arm_spec("scratch-lr0.03").to_dict())   # doctest: +NORMALIZE_WHITESPACE
    ['bn_running_stats', 'head_init', 'head_lr_mult', 'image_size', 'label', 'learning_rate',
     'name', 'pretrained', 'schedule', 'warmup_epochs']
    >>> arm_spec("scratch-lr0.03").learning_rate == 0.03 / 128
    True
    >>> run_name("finetune", 0), run_name("finetune", 3)
    ('finetune', 'finetune-seed3')
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .training import FINETUNE_LR, History

#: The scratch sweep, per batch of 128 (divided by 128 per example); 0.1 is the book's.
SCRATCH_RATES = (0.3, 0.1, 0.03, 0.01)
BOOK_SCRATCH_RATE = 0.1
#: The arms compared over seeds besides the scratch ones (which `study_arms` adds).
#: The book's fine-tune (random head): notebook 04's run and notebook 08's "full fine-tune".
FINETUNE_ARM = "finetune"
PRETRAINED_ARMS = (FINETUNE_ARM, "head-row934", "head-copy934")
SAVED_BY = "python -m d2l_helpers study"


@dataclass(frozen=True)
class Arm:
    """One configuration of the study; ``learning_rate`` per example."""

    name: str
    label: str
    pretrained: bool
    head_init: str
    learning_rate: float
    head_lr_mult: float
    image_size: int | None = None   # None: the profile's crop; else this crop, resize 8/7 of it
    warmup_epochs: int = 0          # epochs of the head alone on cached features first
    bn_running_stats: bool = False  # BatchNorm in inference mode while training
    schedule: str | None = None     # None: the book's constant rate; "cosine"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def profile(self, prof):
        """``prof`` with this arm's crop: test-time resize 256/224 of it, photos decoded to
        that resize (never upsampled before the crop), the rest unchanged."""
        import dataclasses

        if self.image_size is None or self.image_size == prof.image_size:
            return prof
        resize = round(self.image_size * 256 / 224)
        return dataclasses.replace(prof, image_size=self.image_size, resize=resize,
                                   decode_size=None if prof.decode_size is None else resize)


_FIXED = {
    "finetune": Arm("finetune", "fine-tune, random head (the book's)", True, "random",
                    FINETUNE_LR, 10.0),
    "head-row934": Arm("head-row934", "fine-tune, head = ImageNet row 934 thresholded", True,
                       "row 934 thresholded", FINETUNE_LR, 10.0),
    "head-copy934": Arm("head-copy934", "fine-tune, head = row 934 copied (book's way)", True,
                        "row 934 copied, other row random", FINETUNE_LR, 10.0),
    # Accuracy: the book's 224 px crops instead of the cpu profile's 160, alone and with a
    # head warm-up on cached features before the whole net trains (Keras' transfer-learning
    # guide, fastai's fine_tune). Labelled variants, never the book's row.
    "finetune-224": Arm("finetune-224", "variant: fine-tune at 224 px", True, "random",
                        FINETUNE_LR, 10.0, image_size=224),
    "finetune-224-warmup": Arm("finetune-224-warmup",
                               "variant: 224 px, head warm-up, BatchNorm frozen, cosine rate",
                               True, "random", FINETUNE_LR, 10.0, image_size=224,
                               warmup_epochs=10, bn_running_stats=True, schedule="cosine"),
}
#: Accuracy variants trained on every seed, and analysis runs trained on the first seed.
VARIANT_ARMS = ("finetune-224-warmup",)
ANALYSIS_ARMS = ("finetune-224",)


def scratch_name(rate: float) -> str:
    """The arm name of a scratch run at ``rate`` per batch of 128, e.g. ``scratch-lr0.1``."""
    return f"scratch-lr{rate:g}"


def arm_spec(name: str) -> Arm:
    """The `Arm` called ``name`` (one of `PRETRAINED_ARMS` or ``scratch-lr<rate>``)."""
    if name in _FIXED:
        return _FIXED[name]
    if name.startswith("scratch-lr"):
        try:
            rate = float(name[len("scratch-lr"):])
        except ValueError:
            rate = -1.0
        if rate > 0:
            book = " (the book's)" if rate == BOOK_SCRATCH_RATE else ""
            return Arm(name, f"scratch, rate {rate:g}/128{book}", False, "random (all weights)",
                       rate / 128, 1.0)
    raise ValueError(f"Unknown study arm {name!r}: use one of {', '.join(_FIXED)} or "
                     f"scratch-lr<rate per batch of 128>, e.g. {scratch_name(0.1)}")


def run_name(arm: str, seed: int) -> str:
    """The run-store name of ``arm`` on ``seed``: the arm's name for seed 0, else with
    ``-seed<k>`` appended."""
    return arm if seed == 0 else f"{arm}-seed{seed}"


def recipe(arm: str, run, seed: int | None = None) -> dict[str, Any]:
    """Everything that determines a run of ``arm`` for ``run`` (`session.RunInfo`) on
    ``seed`` (default ``run.seed``): the arm, the profile, backbone, seed, the photos and
    the loop. Two runs with equal recipes and code versions are the same run."""
    import os

    data = run.data_info()
    # The folder as an absolute path: the main job and the notebooks run in different
    # working directories, and a relative path would make the same photos look different.
    data["data_dir"] = os.path.realpath(data["data_dir"])
    return {"arm": arm_spec(arm).to_dict(), "profile": run.profile.to_dict(),
            "backbone": run.backbone, "seed": run.seed if seed is None else seed,
            "data": data, "loop": "training.train_fine_tuning"}


_ZERO_SHOT: dict[tuple, Any] = {}


def zero_shot_for(run, pretrained_net=None):
    """`head_init.zero_shot` of the hot-dog row on ``run``'s photos (test transform),
    computed once per process for the same profile, backbone and photos."""
    from .backbones import get_backbone
    from .head_init import zero_shot

    # The whole (frozen, hashable) profile: two profiles with one name and other sizes differ.
    key = (run.profile, run.backbone, str(run.data_dir))
    if key not in _ZERO_SHOT:
        if pretrained_net is None:
            pretrained_net = get_backbone(run.backbone, pretrained=True)
        _ZERO_SHOT.clear()
        _ZERO_SHOT[key] = zero_shot(pretrained_net, run.images("train"), run.images("test"),
                                    run.test_augs())
    return _ZERO_SHOT[key]


def build_net(arm: str, run, seed: int | None = None):
    """A fresh net for ``arm`` (ImageNet weights loaded anew, or random), seeded."""
    from .backbones import build_finetune_net, build_scratch_net
    from .head_init import copy_row, init_from_row

    spec = arm_spec(arm)
    seed = run.seed if seed is None else seed
    if not spec.pretrained:
        return build_scratch_net(run.backbone, classes=run.num_classes, seed=seed)
    net, pretrained = build_finetune_net(run.backbone, classes=run.num_classes,
                                         head_lr_mult=spec.head_lr_mult, seed=seed)
    positive = run.classes.index("hotdog") if spec.head_init != "random" else None
    if spec.head_init == "row 934 thresholded":
        zs = zero_shot_for(run, pretrained)
        init_from_row(net, pretrained, zs.logit_threshold, positive=positive,
                      scale=1.0 / zs.logit_sd)
    elif spec.head_init.startswith("row 934 copied"):
        copy_row(net, pretrained, positive=positive)
    return net


def run_arm(arm: str, run, seed: int | None = None, *, net=None, replay: bool = False,
            callback: Callable | None = None, progress: bool | None = None,
            saved_by: str = SAVED_BY) -> History:
    """Train ``arm`` on ``seed`` and save it, or load the saved run with the same recipe
    (or, with ``replay=True``, whatever run of that name is saved). ``net``: the net to
    train (default `build_net`); it ends up with the run's weights."""
    from .batchnorm import use_running_statistics
    from .replay import train_or_replay
    from .training import train_fine_tuning

    spec = arm_spec(arm)
    seed = run.seed if seed is None else seed
    net = net if net is not None else build_net(arm, run, seed)
    meta = {**run.to_dict(), "seed": seed, "arm": spec.to_dict()}
    if spec.head_init == "row 934 thresholded":
        meta["zero_shot"] = zero_shot_for(run).to_dict()

    prof = spec.profile(run.profile)

    def train() -> History:
        from .session import run_loaders

        warmup = None
        if spec.warmup_epochs:
            warmup = _warm_up_head(net, spec, prof, run.backbone, seed)
        if spec.bn_running_stats:
            use_running_statistics(net.features)
        history = train_fine_tuning(net, spec.learning_rate, head_lr_mult=spec.head_lr_mult,
                                    profile=prof, backbone=run.backbone, seed=seed,
                                    data_iters=run_loaders(prof, run.backbone, root=run.data_dir),
                                    callback=callback, progress=progress,
                                    schedule=spec.schedule)
        if warmup is not None:
            history.config["warmup"] = warmup
            history.seconds[0] += warmup["seconds"]   # epoch 0 holds the warm-up's time
            if history.eval_seconds:                     # and its evaluations' time
                history.eval_seconds[0] += warmup["eval_seconds"]
        return history

    return train_or_replay(run_name(arm, seed), net, train, replay=replay, meta=meta,
                           callback=callback, saved_by=saved_by,
                           recipe=None if replay else recipe(arm, run, seed))


def _warm_up_head(net, spec: Arm, prof, backbone: str, seed: int) -> dict[str, Any]:
    """Stage 1 of the two-stage recipe: the head alone, ``spec.warmup_epochs`` epochs on
    cached features (`features.train_head_on_features`, the test transform, the head's
    rate), then every backbone parameter trainable again for stage 2."""
    from .features import train_head_on_features

    grad_reqs = {name: p.grad_req for name, p in net.features.collect_params().items()}
    h = train_head_on_features(net, spec.learning_rate, num_epochs=spec.warmup_epochs,
                               profile=prof, backbone=backbone, seed=seed, progress=False)
    for name, p in net.features.collect_params().items():
        p.grad_req = grad_reqs[name]
    return {"epochs": spec.warmup_epochs, "test_acc": h.test_acc,
            "seconds": h.total_seconds, "eval_seconds": sum(h.eval_seconds),
            "mode": "cached features"}


def choose_scratch_rate(sweep: dict[float, History]) -> float:
    """The sweep's rate with the lowest training loss after the last epoch.

    Chosen on the training photos only: picking the best *test* accuracy would let the
    test photos choose the baseline's recipe.
    """
    if not sweep:
        raise ValueError("choose_scratch_rate needs at least one run of the sweep")
    return min(sweep, key=lambda r: (sweep[r].train_loss[-1], r))


def seeds_of(run) -> list[int]:
    """The seeds the study uses for ``run``'s profile: ``run.seed`` and the next ones."""
    return list(range(run.seed, run.seed + run.profile.seeds))


def study_arms(fair_rate: float) -> list[str]:
    """The arms compared over every seed: the pretrained ones, the fair scratch run and
    the accuracy variants."""
    return [PRETRAINED_ARMS[0], scratch_name(fair_rate), *PRETRAINED_ARMS[1:], *VARIANT_ARMS]


@dataclass
class StudyResult:
    """The study's runs: the scratch sweep (seed ``run.seed``), the chosen rate, and every
    compared arm's History per seed."""

    sweep: dict[float, History]
    fair_rate: float
    runs: dict[str, dict[int, History]]
    zero_shot: Any
    seconds: float
    analysis: dict[str, History] = field(default_factory=dict)   # first seed only

    def finals(self, arm: str) -> dict[int, float]:
        """Final test accuracy of ``arm`` per seed."""
        return {s: h.test_acc[-1] for s, h in self.runs[arm].items()}

    def table(self) -> list[dict[str, Any]]:
        """One row per arm: label, seeds, test accuracy before training (mean) and after
        the last epoch (mean, sd, min, max); the zero-shot rule as the last row."""
        from .stats import spread

        rows = []
        for arm, by_seed in self.runs.items():
            hs = list(by_seed.values())
            after = spread(h.test_acc[-1] for h in hs)
            before = [h.initial_test_acc for h in hs if h.initial_test_acc is not None]
            rows.append({"arm": arm, "label": arm_spec(arm).label, "seeds": after["n"],
                         "before training": sum(before) / len(before) if before else None,
                         "test acc mean": after["mean"], "sd": after["sd"],
                         "min": after["min"], "max": after["max"]})
        zs = self.zero_shot
        rows.append({"arm": "zero-shot", "label": "ImageNet row 934, no training",
                     "seeds": 0, "before training": zs.prob_test_acc,
                     "test acc mean": zs.prob_test_acc, "sd": 0.0,
                     "min": zs.prob_test_acc, "max": zs.prob_test_acc})
        return rows

    def wins(self, a: str, b: str) -> dict[str, int]:
        """How often ``a`` ended above ``b`` on the same seed (`stats.paired_wins`)."""
        from .stats import paired_wins

        return paired_wins(self.finals(a), self.finals(b))


def run_study(run, seeds: Sequence[int] | None = None, *, rates: Iterable[float] = SCRATCH_RATES,
              arms: Sequence[str] | None = None, analysis_runs: bool = True,
              replay: bool = False,
              say: Callable[[str], None] | None = None, saved_by: str = SAVED_BY) -> StudyResult:
    """The scratch sweep on ``run.seed``, then every arm on every seed (`seeds_of`);
    runs already saved with the same recipe are loaded, not trained (`run_arm`).

    ``say`` receives one line per run (name, what happened, seconds, final accuracy).
    With ``analysis_runs``, the `ANALYSIS_ARMS` are trained on the first seed as well.
    """
    start = time.perf_counter()
    seeds = list(seeds) if seeds is not None else seeds_of(run)
    say = say or (lambda line: None)

    def one(arm: str, seed: int) -> History:
        t = time.perf_counter()
        h = run_arm(arm, run, seed, replay=replay, saved_by=saved_by)
        say(f"{run_name(arm, seed)}: test acc {h.initial_test_acc} -> {h.test_acc[-1]:.3f}, "
            f"{time.perf_counter() - t:.0f} s")
        return h

    sweep = {rate: one(scratch_name(rate), run.seed) for rate in rates}
    fair = choose_scratch_rate(sweep)
    arms = list(arms or study_arms(fair))
    results: dict[str, dict[int, History]] = {arm: {} for arm in arms}
    for seed in seeds:          # seed by seed: an interrupted study has whole seeds saved
        for arm in arms:
            results[arm][seed] = one(arm, seed)
    analysis = {arm: one(arm, seeds[0]) for arm in ANALYSIS_ARMS} if analysis_runs else {}
    return StudyResult(sweep=sweep, fair_rate=fair, runs=results, zero_shot=zero_shot_for(run),
                       seconds=time.perf_counter() - start, analysis=analysis)


def format_table(result: StudyResult) -> str:
    """The study as Markdown: the sweep, the table over seeds and the paired wins."""
    lines = ["Scratch learning-rate sweep (seed-0 runs; the rate with the lowest final "
             "training loss is chosen):", "",
             "| rate per 128 | final train loss | final train acc | test acc |",
             "|---|---|---|---|"]
    for rate, h in result.sweep.items():
        mark = " (chosen)" if rate == result.fair_rate else ""
        lines.append(f"| {rate:g}{mark} | {h.train_loss[-1]:.3f} | {h.train_acc[-1]:.3f} | "
                     f"{h.test_acc[-1]:.3f} |")
    lines += ["", "| arm | seeds | before training | test acc mean | sd | min | max |",
              "|---|---|---|---|---|---|---|"]
    for r in result.table():
        before = "" if r["before training"] is None else f"{r['before training']:.3f}"
        lines.append(f"| {r['label']} | {r['seeds']} | {before} | {r['test acc mean']:.3f} | "
                     f"{r['sd']:.3f} | {r['min']:.3f} | {r['max']:.3f} |")
    scratch = scratch_name(result.fair_rate)
    if "finetune" in result.runs and scratch in result.runs:
        w = result.wins("finetune", scratch)
        lines += ["", f"Fine-tune beat the fair scratch run on {w['wins']} of {w['seeds']} "
                      f"seeds ({w['ties']} ties)."]
    for arm, h in result.analysis.items():
        lines.append(f"Analysis run (seed {h.config.get('seed')}): {arm_spec(arm).label}: test acc "
                     f"{h.test_acc[-1]:.3f}.")
    lines.append(f"Study time: {result.seconds:.0f} s.")
    return "\n".join(lines)
