"""The run-info cell: resolve profile, data, backbone and devices once, say them, and hand
out the run's photos and transforms.

`setup` reads the environment and the caches only: it does no network I/O and prints
nothing. What it chose, and why, is in the returned `RunInfo`, which a notebook shows as a
table. Everything that needs "this run's test photos" or "this run's test transform" gets
them from one place, `run_transforms` and `run_images` (or the `RunInfo` methods that call
them), so a profile's sizes and a backbone's normalisation are applied the same way in
every notebook and module.

The photos are the hot-dog set by default, or any tree of class folders:
``setup(data="path/to/folder")`` (see `data.scan_folder`: ``<root>/<split>/<class>/*`` or
``<root>/<class>/*``, split per class by a recorded seed). `RunInfo.build_net` and
`RunInfo.train` then give the N-class net and train it with one of `METHODS`: the book's
fine-tuning, feature extraction on cached features, or the same net from scratch.

Example:
    >>> import d2l_helpers
    >>> run = d2l_helpers.setup(seed=0, profile="ci", backbone="efficientnet_lite0")
    >>> run.profile.image_size, run.backbone
    (96, 'efficientnet_lite0')
    >>> test_tf = run.test_augs()
    >>> [row for row, _ in run.rows()]
    ['profile', 'data', 'backbone', 'devices', 'seed']
"""
from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .profiles import Profile, resolve_profile

#: How a run adapts the network: the book's fine-tuning (backbone eta, head 10 eta), feature
#: extraction (frozen backbone run once, head trained on the cached features), or the same
#: architecture from random weights.
METHODS = ("finetune", "features", "scratch")


def run_transforms(profile: Profile | str | None, backbone: str):
    """The book's ``(train_augs, test_augs)`` at ``profile``'s sizes with ``backbone``'s
    normalisation: the one place that combines the two."""
    from .backbones import backbone_spec
    from .transforms import test_augs, train_augs

    prof, spec = resolve_profile(profile), backbone_spec(backbone)
    return (train_augs(prof.image_size, spec.mean, spec.std),
            test_augs(prof.image_size, prof.resize, spec.mean, spec.std))


def run_images(split: str, profile: Profile | str | None = None,
               root: str | Path | None = None, *, tree=None, storage: str = "auto"):
    """One split of the photos as ``profile`` uses them (decode size, photos per class).

    Without ``tree``: the hot-dog set at ``root`` (default: `data.get_hotdog_dir`) in memory
    (`data.HotdogImages`). With an `data.ImageTree`: its split in memory or streamed from
    RecordIO (``storage``, ``"auto"``: `recordio.choose_storage`).
    """
    from .data import HotdogImages, folder_images, get_hotdog_dir

    prof = resolve_profile(profile)
    per_class = prof.train_per_class if split == "train" else prof.test_per_class
    if tree is None:
        return HotdogImages(root if root is not None else get_hotdog_dir(), split,
                            prof.decode_size, per_class)
    storage = _resolve_storage(prof, tree, storage)
    return folder_images(tree, split, prof.decode_size, per_class, storage)


def _resolve_storage(prof: Profile, tree, storage: str) -> str:
    from .recordio import choose_storage

    return choose_storage(tree, prof.decode_size, prof.train_per_class, prof.test_per_class,
                          storage)[0]


def run_loaders(profile: Profile | str | None, backbone: str, batch_size: int | None = None,
                root: str | Path | None = None, *, tree=None, storage: str = "auto",
                num_workers: int | None = None):
    """Training and test ``DataLoader`` s of ``profile`` with the book's augmentations
    (`data.load_data_hotdog`, or `data.load_data_folder` for an `data.ImageTree`, at the
    profile's sizes and the backbone's normalisation)."""
    from .backbones import backbone_spec
    from .data import load_data_folder, load_data_hotdog

    prof, spec = resolve_profile(profile), backbone_spec(backbone)
    kwargs = dict(decode_size=prof.decode_size, train_per_class=prof.train_per_class,
                  test_per_class=prof.test_per_class, mean=spec.mean, std=spec.std)
    if tree is None:
        return load_data_hotdog(batch_size or prof.batch_size, prof.image_size, prof.resize,
                                root=root, num_workers=num_workers or 0, **kwargs)
    return load_data_folder(tree, batch_size or prof.batch_size, prof.image_size, prof.resize,
                            storage=storage, num_workers=num_workers, **kwargs)


@dataclass
class RunInfo:
    """What a notebook or script runs with; recorded next to every result.

    ``tree`` is None for the hot-dog set, else the `data.ImageTree` of the folder given to
    `setup`; ``storage`` how its photos are held (``"auto"``, ``"memory"``, ``"recordio"``).
    """

    profile: Profile
    backbone: str
    data_dir: Path
    data_source: str
    devices: list
    seed: int
    hardware: dict[str, Any] = field(default_factory=dict)
    git_commit: str | None = None
    backbone_reason: str = ""
    tree: Any = field(default=None, repr=False)
    storage: str = "auto"

    @property
    def classes(self) -> list[str]:
        """The class names, in label order (the folders' names, sorted)."""
        from .data import CLASSES

        return list(self.tree.classes if self.tree is not None else CLASSES)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def data_info(self) -> dict[str, Any]:
        """What is recorded about the photos: classes, layout, split (fraction and seed when
        the folder had no train/test), photos per split and class, limits, storage."""
        from .data import hotdog_tree

        tree = self.tree if self.tree is not None else hotdog_tree(self.data_dir)
        info = tree.to_dict()
        info.update(train_per_class=self.profile.train_per_class,
                    test_per_class=self.profile.test_per_class,
                    storage=self.storage_choice()[0])
        return info

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile.name, "profile_description": self.profile.description,
                "backbone": self.backbone, "backbone_reason": self.backbone_reason,
                "data_dir": str(self.data_dir), "data_source": self.data_source,
                "classes": self.classes,
                "data_split": self.tree.split if self.tree is not None else None,
                "devices": [str(d) for d in self.devices], "seed": self.seed,
                "hardware": self.hardware, "git_commit": self.git_commit}

    def limit(self, train_per_class: int | None = None,
              test_per_class: int | None = None) -> RunInfo:
        """This run with at most that many photos per class (the first ones, by name);
        None keeps the profile's limit. The profile keeps its name; its description says so.

        Example (notebook 09 does this in the ci profile)::

            small = run.limit(train_per_class=50, test_per_class=20)
        """
        from .data import _check_per_class

        prof = self.profile
        train = _check_per_class("train_per_class", train_per_class) or prof.train_per_class
        test = _check_per_class("test_per_class", test_per_class) or prof.test_per_class
        shown = lambda n: "all" if n is None else n  # noqa: E731
        prof = dataclasses.replace(
            prof, train_per_class=train, test_per_class=test,
            description=f"{prof.description}; limited to {shown(train)} train / "
                        f"{shown(test)} test photos per class")
        return dataclasses.replace(self, profile=prof)

    def storage_choice(self) -> tuple[str, str]:
        """``("memory" | "recordio", why)`` for this run's photos (`recordio.choose_storage`)."""
        if self.tree is None:
            return "memory", "the hot-dog set is decoded once and held in memory"
        from .recordio import choose_storage

        p = self.profile
        return choose_storage(self.tree, p.decode_size, p.train_per_class, p.test_per_class,
                              self.storage)

    # -- what the run trains and tests on
    @property
    def spec(self):
        """The backbone's `backbones.BackboneSpec` (normalisation, feature size)."""
        from .backbones import backbone_spec

        return backbone_spec(self.backbone)

    def train_augs(self):
        """The book's training augmentations at this run's sizes and normalisation."""
        return run_transforms(self.profile, self.backbone)[0]

    def test_augs(self):
        """The book's test transform at this run's sizes and normalisation."""
        return run_transforms(self.profile, self.backbone)[1]

    def images(self, split: str):
        """This run's ``"train"`` or ``"test"`` photos (`data.HotdogImages`, or for a folder
        `data.ImageFolder` / `recordio.RecordImages`)."""
        return run_images(split, self.profile, self.data_dir, tree=self.tree,
                          storage=self.storage)

    def loaders(self, batch_size: int | None = None, num_workers: int | None = None):
        """This run's training and test ``DataLoader`` s."""
        return run_loaders(self.profile, self.backbone, batch_size, self.data_dir,
                           tree=self.tree, storage=self.storage, num_workers=num_workers)

    def build_net(self, method: str = "finetune"):
        """A fresh ``num_classes``-way net of this run's backbone for ``method`` (seeded):
        ImageNet weights with a new head (``lr_mult`` 10) for ``"finetune"`` and
        ``"features"``, random weights for ``"scratch"``."""
        from .backbones import build_finetune_net, build_scratch_net

        _check_method(method)
        if method == "scratch":
            return build_scratch_net(self.backbone, classes=self.num_classes, seed=self.seed)
        return build_finetune_net(self.backbone, classes=self.num_classes, seed=self.seed)[0]

    def train(self, net, method: str = "finetune", **kwargs):
        """Train ``net`` on this run's photos with ``method``: see `train_method`."""
        return train_method(self, net, method, **kwargs)

    # -- how it is shown
    def rows(self) -> list[tuple[str, str]]:
        hw = self.hardware
        backbone = self.backbone + (f" ({self.backbone_reason})" if self.backbone_reason else "")
        source = self.data_source
        if self.tree is not None:
            source += f"; {self.storage_choice()[1]}"
        return [("profile", f"{self.profile.name} ({self.profile.description})"),
                ("data", source),
                ("backbone", backbone),
                ("devices", f"{', '.join(map(str, self.devices))}; {hw.get('cpus')} CPUs, "
                            f"{hw.get('omp_threads')} MXNet threads, mxnet {hw.get('mxnet')}"),
                ("seed", str(self.seed))]

    def __str__(self) -> str:
        return "\n".join(f"{k:<9}{v}" for k, v in self.rows())

    def _repr_markdown_(self) -> str:
        return "| run info | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in self.rows())


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")


def method_learning_rate(method: str) -> float:
    """The book's rate per example for ``method``: 0.01 / 128 for fine-tuning and for the
    head on cached features (times the head's ``lr_mult`` 10), 0.1 / 128 from scratch."""
    from .training import FINETUNE_LR, SCRATCH_LR

    _check_method(method)
    return SCRATCH_LR if method == "scratch" else FINETUNE_LR


def train_method(run: RunInfo, net, method: str = "finetune", *,
                 learning_rate: float | None = None, num_epochs: int | None = None,
                 batch_size: int | None = None, kv=None, callback: Callable | None = None,
                 progress: bool | None = None, num_workers: int | None = None):
    """Train ``net`` (from `RunInfo.build_net`) on ``run``'s photos; return the `History`.

    * ``"finetune"`` and ``"scratch"``: the book's `training.train_fine_tuning` on the run's
      loaders (``learning_rate`` per example, default `method_learning_rate`); with a
      ``dist_sync`` kvstore ``kv``, the same step (`training.train_batch_ch13`) on this
      worker's shard (`distributed.fit_data_parallel`).
    * ``"features"``: the backbone is frozen and run once over both splits through the test
      transform (no augmentation, BatchNorm in inference mode); the head trains on the
      cached vectors, as `features.train_head_on_features` does for the hot-dog set.

    The history's config records the method, the class names (so `runs.load_classifier`
    names the classes) and the data (`RunInfo.data_info`: layout, split seed and fraction).
    """
    _check_method(method)
    lr = learning_rate if learning_rate is not None else method_learning_rate(method)
    if method == "features":
        if kv is not None:
            raise ValueError("method 'features' trains on one process: the head on cached "
                             "features takes seconds; use finetune or scratch with a kvstore")
        history = _train_features(run, net, lr, batch_size, num_epochs, callback, progress,
                                  num_workers)
    elif kv is not None:
        from .distributed import fit_data_parallel

        history = fit_data_parallel(run, net, lr, kv, batch_size=batch_size,
                                    num_epochs=num_epochs, callback=callback,
                                    progress=progress, num_workers=num_workers)
    else:
        from .training import train_fine_tuning

        history = train_fine_tuning(net, lr, batch_size, num_epochs, profile=run.profile,
                                    backbone=run.backbone,
                                    data_iters=run.loaders(batch_size, num_workers),
                                    seed=run.seed, callback=callback, progress=progress)
    history.config.update(method=method, classes=run.classes, data=run.data_info())
    return history


def _train_features(run: RunInfo, net, lr, batch_size, num_epochs, callback, progress,
                    num_workers):
    """The head of ``net`` on cached ``net.features`` outputs of ``run``'s photos (what
    `features.train_head_on_features` does on the hot-dog set)."""
    from mxnet import gluon

    from .features import feature_loaders, freeze_features, release_features, train_head
    from .runtime import seed_everything, try_all_gpus

    prof = run.profile
    batch_size = batch_size or prof.batch_size
    num_epochs = num_epochs or prof.num_epochs
    devices = list(try_all_gpus())
    freeze_features(net, devices)
    test_tf = run.test_augs()
    start = time.perf_counter()
    if num_workers is None:
        from .recordio import default_num_workers

        num_workers = default_num_workers() if run.storage_choice()[0] == "recordio" else 0
    loaders = [gluon.data.DataLoader(run.images(split).transform_first(test_tf), batch_size,
                                     num_workers=num_workers) for split in ("train", "test")]
    net.features.hybridize(static_alloc=True)
    seed_everything(run.seed)
    loaders = feature_loaders(net, *loaders, batch_size, devices)
    feature_seconds = time.perf_counter() - start
    release_features(net)
    return train_head(net, loaders, prof=prof, backbone=run.backbone, learning_rate=lr,
                      batch_size=batch_size, num_epochs=num_epochs, seed=run.seed,
                      devices=devices, callback=callback, progress=progress,
                      feature_seconds=feature_seconds)


def git_commit(path: Path | None = None) -> str | None:
    """The repository's HEAD commit (with ``-dirty`` when files changed), or None."""
    cwd = str(path or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, text=True,
                             capture_output=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, text=True, capture_output=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def setup(seed: int = 0, profile: str | Profile | None = None, backbone: str | None = None,
          data: str | Path | None = None, *, test_fraction: float = 0.2, split_seed: int = 0,
          storage: str = "auto") -> RunInfo:
    """Pick profile, backbone and devices, find the data, seed everything; return a `RunInfo`.

    ``profile``/``backbone`` default to ``$D2L_PROFILE``/``$D2L_BACKBONE`` and then to what the
    hardware and the caches allow (see `profiles` and `backbones.choose_backbone`). No
    network I/O, nothing printed: the reasons are in the returned table.

    ``data`` is a folder of class folders (`data.scan_folder`: checked here, with
    ``test_fraction`` and ``split_seed`` for a folder without train/ and test/); None means
    the hot-dog set (``$HOTDOG_DIR`` or the book's download). ``storage`` is how a folder's
    photos are held: ``"auto"`` (`recordio.choose_storage`), ``"memory"`` or ``"recordio"``.
    """
    from .backbones import backbone_spec, choose_backbone
    from .data import describe_source, get_hotdog_dir, scan_folder
    from .profiles import get_profile
    from .recordio import STORAGES
    from .runtime import hardware_info, seed_everything, try_all_gpus

    prof = resolve_profile(profile) if isinstance(profile, Profile) else get_profile(profile)
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, not {storage!r}")
    if backbone:
        backbone_spec(backbone)  # validates the name
        name, reason = backbone, "chosen by the caller"
    else:
        name, reason = choose_backbone()
    if data is None:
        root, tree = get_hotdog_dir(), None
        source = describe_source(root)
    else:
        tree = scan_folder(data, test_fraction=test_fraction, split_seed=split_seed)
        root, source = tree.root, tree.describe()
    seed_everything(seed)
    return RunInfo(profile=prof, backbone=name, data_dir=root, data_source=source,
                   devices=try_all_gpus(), seed=seed, hardware=hardware_info(),
                   git_commit=git_commit(), backbone_reason=reason, tree=tree, storage=storage)
