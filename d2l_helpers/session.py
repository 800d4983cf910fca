"""The run-info cell: resolve profile, data, backbone and devices once, and say them.

Example:
    >>> import d2l_helpers
    >>> run = d2l_helpers.setup(seed=0)
    >>> print(run)        # doctest: +SKIP
    profile  cpu (laptop CPU: 160 px, batch 64, 3 epochs, all images)
    ...
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .profiles import Profile


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

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile.name, "profile_description": self.profile.description,
                "backbone": self.backbone, "data_dir": str(self.data_dir),
                "data_source": self.data_source, "devices": [str(d) for d in self.devices],
                "seed": self.seed, "hardware": self.hardware, "git_commit": self.git_commit}

    def rows(self) -> list[tuple[str, str]]:
        hw = self.hardware
        return [("profile", f"{self.profile.name} ({self.profile.description})"),
                ("data", self.data_source),
                ("backbone", self.backbone),
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
    hardware and the caches allow (see `profiles` and `backbones`).
    """
    from .backbones import default_backbone_name
    from .data import describe_source, get_hotdog_dir
    from .profiles import get_profile
    from .runtime import hardware_info, seed_everything, try_all_gpus

    prof = get_profile(profile)
    name = backbone or default_backbone_name()
    root = get_hotdog_dir()
    seed_everything(seed)
    return RunInfo(profile=prof, backbone=name, data_dir=root, data_source=describe_source(root),
                   devices=try_all_gpus(), seed=seed, hardware=hardware_info(),
                   git_commit=git_commit())
