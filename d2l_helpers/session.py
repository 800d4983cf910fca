"""The run-info cell: resolve profile, data, backbone and devices once, say them, and hand
out the run's photos and transforms.

`setup` reads the environment and the caches only: it does no network I/O and prints
nothing. What it chose, and why, is in the returned `RunInfo`, which a notebook shows as a
table. Everything that needs "this run's test photos" or "this run's test transform" gets
them from one place, `run_transforms` and `run_images` (or the `RunInfo` methods that call
them), so a profile's sizes and a backbone's normalisation are applied the same way in
every notebook and module.

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

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .profiles import Profile, resolve_profile


def run_transforms(profile: Profile | str | None, backbone: str):
    """The book's ``(train_augs, test_augs)`` at ``profile``'s sizes with ``backbone``'s
    normalisation: the one place that combines the two."""
    from .backbones import backbone_spec
    from .transforms import test_augs, train_augs

    prof, spec = resolve_profile(profile), backbone_spec(backbone)
    return (train_augs(prof.image_size, spec.mean, spec.std),
            test_augs(prof.image_size, prof.resize, spec.mean, spec.std))


def run_images(split: str, profile: Profile | str | None = None,
               root: str | Path | None = None):
    """One split of the photos as ``profile`` uses them (decode size, photos per class)."""
    from .data import HotdogImages, get_hotdog_dir

    prof = resolve_profile(profile)
    per_class = prof.train_per_class if split == "train" else prof.test_per_class
    return HotdogImages(root if root is not None else get_hotdog_dir(), split,
                        prof.decode_size, per_class)


def run_loaders(profile: Profile | str | None, backbone: str, batch_size: int | None = None,
                root: str | Path | None = None):
    """Training and test ``DataLoader`` s of ``profile`` with the book's augmentations
    (`data.load_data_hotdog` at the profile's sizes and the backbone's normalisation)."""
    from .backbones import backbone_spec
    from .data import load_data_hotdog

    prof, spec = resolve_profile(profile), backbone_spec(backbone)
    return load_data_hotdog(batch_size or prof.batch_size, prof.image_size, prof.resize,
                            root=root, decode_size=prof.decode_size,
                            train_per_class=prof.train_per_class,
                            test_per_class=prof.test_per_class, mean=spec.mean, std=spec.std)


@dataclass
class RunInfo:
    """What a notebook or script runs with; recorded next to every result."""

    profile: Profile
    backbone: str
    data_dir: Path
    data_source: str
    devices: list
    seed: int
    hardware: dict[str, Any] = field(default_factory=dict)
    git_commit: str | None = None
    backbone_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile.name, "profile_description": self.profile.description,
                "backbone": self.backbone, "backbone_reason": self.backbone_reason,
                "data_dir": str(self.data_dir), "data_source": self.data_source,
                "devices": [str(d) for d in self.devices], "seed": self.seed,
                "hardware": self.hardware, "git_commit": self.git_commit}

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
        """This run's ``"train"`` or ``"test"`` photos (`data.HotdogImages`)."""
        return run_images(split, self.profile, self.data_dir)

    def loaders(self, batch_size: int | None = None):
        """This run's training and test ``DataLoader`` s."""
        return run_loaders(self.profile, self.backbone, batch_size, self.data_dir)

    # -- how it is shown
    def rows(self) -> list[tuple[str, str]]:
        hw = self.hardware
        backbone = self.backbone + (f" ({self.backbone_reason})" if self.backbone_reason else "")
        return [("profile", f"{self.profile.name} ({self.profile.description})"),
                ("data", self.data_source),
                ("backbone", backbone),
                ("devices", f"{', '.join(map(str, self.devices))}; {hw.get('cpus')} CPUs, "
                            f"{hw.get('omp_threads')} MXNet threads, mxnet {hw.get('mxnet')}"),
                ("seed", str(self.seed))]

    def __str__(self) -> str:
        return "\n".join(f"{k:<9}{v}" for k, v in self.rows())

    def _repr_markdown_(self) -> str:
        return "| run info | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in self.rows())


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


def setup(seed: int = 0, profile: str | None = None, backbone: str | None = None) -> RunInfo:
    """Pick profile, backbone and devices, find the data, seed everything; return a `RunInfo`.

    ``profile``/``backbone`` default to ``$D2L_PROFILE``/``$D2L_BACKBONE`` and then to what the
    hardware and the caches allow (see `profiles` and `backbones.choose_backbone`). No
    network I/O, nothing printed: the reasons are in the returned table.
    """
    from .backbones import backbone_spec, choose_backbone
    from .data import describe_source, get_hotdog_dir
    from .profiles import get_profile
    from .runtime import hardware_info, seed_everything, try_all_gpus

    prof = get_profile(profile)
    if backbone:
        backbone_spec(backbone)  # validates the name
        name, reason = backbone, "chosen by the caller"
    else:
        name, reason = choose_backbone()
    root = get_hotdog_dir()
    seed_everything(seed)
    return RunInfo(profile=prof, backbone=name, data_dir=root, data_source=describe_source(root),
                   devices=try_all_gpus(), seed=seed, hardware=hardware_info(),
                   git_commit=git_commit(), backbone_reason=reason)
