"""The run store: every training run saved with its history, parameters and config.

A run is a folder ``<runs dir>/<name>/`` holding ``history.json`` (per-epoch numbers plus
the config: profile, backbone, seed, learning rates, devices, git commit) and, when a net
is given, ``net.params``. The runs dir is ``$D2L_RUNS_DIR``, else ``runs/`` in the cache
folder (`data.cache_dir`). Notebooks save their runs here; notebook 7 loads the model that
notebook 4 fine-tuned, and ``python -m d2l_helpers run`` builds its summary from them.

Example:
    >>> from d2l_helpers.runs import save_run, load_run
    >>> save_run("finetune", history, net)            # doctest: +SKIP
    >>> load_run("finetune").history.test_acc[-1]     # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .training import History


def runs_dir() -> Path:
    """``$D2L_RUNS_DIR`` or ``<cache>/runs``."""
    from .data import cache_dir

    return Path(os.environ.get("D2L_RUNS_DIR") or cache_dir() / "runs")


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@dataclass
class SavedRun:
    name: str
    path: Path
    history: History
    meta: dict[str, Any]

    @property
    def params_file(self) -> Path | None:
        f = self.path / "net.params"
        return f if f.exists() else None


def save_run(name: str, history: History, net=None, meta: dict[str, Any] | None = None) -> Path:
    """Save ``history`` (and ``net``'s parameters) as run ``name``; return its folder."""
    from .session import git_commit

    folder = runs_dir() / name
    record = {"name": name, "history": history.to_dict(),
              "meta": {"git_commit": git_commit(), **(meta or {})}}
    if net is not None:
        _atomic_write(folder / "net.params", lambda tmp: net.save_parameters(tmp))
    _atomic_write(folder / "history.json",
                  lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1, default=str)))
    return folder


def load_run(name: str) -> SavedRun:
    """Read run ``name`` back; `FileNotFoundError` names the notebook or command to run."""
    folder = runs_dir() / name
    f = folder / "history.json"
    if not f.exists():
        raise FileNotFoundError(
            f"No saved run {name!r} at {folder}. Run the notebook that trains it first "
            "(or `python -m d2l_helpers run`), or set D2L_RUNS_DIR to where it was saved.")
    record = json.loads(f.read_text())
    return SavedRun(name, folder, History.from_dict(record["history"]), record.get("meta", {}))


def list_runs() -> list[SavedRun]:
    """Every saved run, in name order."""
    root = runs_dir()
    if not root.is_dir():
        return []
    return [load_run(p.name) for p in sorted(root.iterdir()) if (p / "history.json").exists()]
