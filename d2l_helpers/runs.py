"""The run store: every training run saved with its history, parameters and config.

A run is a folder ``<runs dir>/<name>/`` holding ``history.json`` (per-epoch numbers plus
the config: profile, backbone, seed, learning rates, devices, hardware, git commit, code
version, time saved) and, when a net is given, ``net.params``. The runs dir is
``$D2L_RUNS_DIR``, else ``runs/`` in the cache folder (`data.cache_dir`); the main job
(``bash scripts/module.sh``) and ``scripts/lab.sh`` use ``build/runs`` in the repository.
Notebooks save their runs here; notebook 7 loads the model that notebook 4 fine-tuned, and
``python -m d2l_helpers run`` builds its summary from them.

**Presenter mode.** `train_or_replay` trains and saves a run, or, with ``replay=True``,
loads the saved run instead: the weights go into the net, the curves are redrawn from the
history, a banner says which run is replayed, and a `ReplayMismatchWarning` says when the
run was saved with another profile, backbone, seed or code version.

Example:
    >>> from d2l_helpers.runs import save_run, load_run, train_or_replay
    >>> save_run("finetune", history, net)            # doctest: +SKIP
    >>> load_run("finetune").history.test_acc[-1]     # doctest: +SKIP
    >>> history = train_or_replay("finetune", net, lambda: train_fine_tuning(net, 7.8125e-5),
    ...                           replay=True, meta=run.to_dict())   # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from .runtime import try_all_gpus
from .training import History

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent

# Which notebook saves which run (for the message when a run is missing).
SAVED_BY = {
    "finetune": "notebooks/04_fine_tuning.ipynb",
    "scratch": "notebooks/05_scratch_baseline.ipynb",
    **{name: "notebooks/06_ablations.ipynb" for name in (
        "frozen backbone", "frozen, cached features", "fine-tune (head 1x)",
        "fine-tune (head 100x)", "head from ImageNet row 934")},
}



def _saved_by(name: str) -> str:
    """The notebook that saves run ``name`` (notebook 08 saves ``variant-<method>-seed<k>``)."""
    if name.startswith("variant-"):
        return "notebooks/08_modern_variants.ipynb"
    return SAVED_BY.get(name, "the notebook that trains it")


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


class ReplayMismatchWarning(UserWarning):
    """A replayed run was saved with another profile, backbone, seed or code version."""


def runs_dir() -> Path:
    """``$D2L_RUNS_DIR`` or ``<cache>/runs``."""
    from .data import cache_dir

    return Path(os.environ.get("D2L_RUNS_DIR") or cache_dir() / "runs")


def code_version() -> str:
    """A short SHA-1 of the helper package's code: every ``d2l_helpers/*.py``, by name.

    Each file contributes its name and its bytes, so editing, adding, removing or renaming
    a module changes the version. Saved with every run; replaying a run saved by other code
    warns (`ReplayMismatchWarning`).

    Example:
        >>> len(code_version())
        12
    """
    sha = hashlib.sha1()
    for f in sorted(PACKAGE_DIR.glob("*.py"), key=lambda p: p.name):
        data = f.read_bytes()
        sha.update(f"{f.name}\0{len(data)}\0".encode())
        sha.update(data)
    return sha.hexdigest()[:12]


def replay_default() -> bool:
    """True when the environment asks for presenter mode: ``D2L_REPLAY=1`` (or true/yes/on).

    The notebooks write ``REPLAY = False`` and then ``REPLAY = REPLAY or
    runs.replay_default()``, so ``D2L_REPLAY=1 jupyter lab`` replays in every notebook
    without editing them, while ``REPLAY = True`` in a notebook needs no variable.

    Example:
        >>> import os; os.environ["D2L_REPLAY"] = "1"; replay_default()
        True
        >>> del os.environ["D2L_REPLAY"]; replay_default()
        False
    """
    value = os.environ.get("D2L_REPLAY", "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"D2L_REPLAY={os.environ['D2L_REPLAY']!r}: use 1 (replay saved runs) or 0.")


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a run store is shared reading
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
    """Save ``history`` (and ``net``'s parameters) as run ``name``; return its folder.

    ``meta`` (usually ``run.to_dict()``: profile, backbone, seed, hardware, ...) is stored
    with the git commit, the `code_version` and the time (``saved_at``, ISO 8601). Each file
    is written to a temporary name and renamed, so a crash never leaves half a file.

    Example:
        >>> save_run("finetune", history, net, meta=run.to_dict())   # doctest: +SKIP
        PosixPath('.../runs/finetune')
    """
    from .session import git_commit

    folder = runs_dir() / name
    record = {"name": name, "history": history.to_dict(),
              "meta": {"git_commit": git_commit(), **(meta or {}),
                       "code_version": code_version(),
                       "saved_at": datetime.now().astimezone().isoformat(timespec="seconds")}}
    if net is not None:
        _atomic_write(folder / "net.params", lambda tmp: net.save_parameters(tmp))
    _atomic_write(folder / "history.json",
                  lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1, default=str)))
    return folder


def _missing_run_message(name: str) -> str:
    root = runs_dir()
    where = ("D2L_RUNS_DIR" if os.environ.get("D2L_RUNS_DIR")
             else "the default; set D2L_RUNS_DIR to use another")
    notebook = _saved_by(name)
    have = sorted(p.name for p in root.iterdir() if (p / "history.json").exists()) \
        if root.is_dir() else []
    lines = [f"No saved run {name!r} in the run store {root} ({where}).",
             f"Save it by running {notebook} with REPLAY = False, or run every notebook "
             "with the main job, `bash scripts/module.sh`."]
    if (REPO_DIR / "scripts" / "module.sh").exists():
        lines.append(f"The main job saves into {REPO_DIR / 'build' / 'runs'}; "
                     "`bash scripts/lab.sh` points D2L_RUNS_DIR there.")
    lines.append("Runs in this store: " + (", ".join(repr(n) for n in have) or "none") + ".")
    return "\n".join(lines)


def load_run(name: str) -> SavedRun:
    """Read run ``name`` back; `FileNotFoundError` names the store and what saves the run."""
    folder = runs_dir() / name
    f = folder / "history.json"
    if not f.exists():
        raise FileNotFoundError(_missing_run_message(name))
    record = json.loads(f.read_text())
    return SavedRun(name, folder, History.from_dict(record["history"]), record.get("meta", {}))


def list_runs() -> list[SavedRun]:
    """Every saved run, in name order."""
    root = runs_dir()
    if not root.is_dir():
        return []
    return [load_run(p.name) for p in sorted(root.iterdir()) if (p / "history.json").exists()]


def _hardware_summary(hw: dict[str, Any]) -> str:
    if not hw:
        return "unrecorded hardware"
    gpus = hw.get("gpus") or 0
    parts = [f"{hw.get('cpus', '?')} CPUs",
             f"{gpus} GPU{'s' if gpus > 1 else ''}" if gpus else "no GPU"]
    if hw.get("mxnet"):
        parts.append(f"mxnet {hw['mxnet']}")
    return ", ".join(parts)


def _saved_value(saved: SavedRun, key: str):
    value = saved.meta.get(key)
    return saved.history.config.get(key) if value is None else value


def replay_banner(saved: SavedRun) -> str:
    """The line a replay prints: which run, when and where it was saved, and with what."""
    m = saved.meta
    return (f"Replaying saved run {saved.name!r} (saved {m.get('saved_at', 'at an unrecorded time')}"
            f" on {_hardware_summary(m.get('hardware') or {})}, "
            f"profile {_saved_value(saved, 'profile')}, backbone {_saved_value(saved, 'backbone')}, "
            f"seed {_saved_value(saved, 'seed')}, code version {m.get('code_version', 'unrecorded')}, "
            f"commit {m.get('git_commit') or 'unknown'}): not training.\n"
            f"  from {saved.path}")


def replay_mismatches(saved: SavedRun, meta: dict[str, Any] | None) -> list[str]:
    """What differs between a saved run and the current one, as ``"<what>: saved X, now Y"``.

    Compares profile, backbone and seed with ``meta`` (the current ``run.to_dict()``; keys
    it lacks are not compared) and the saved `code_version` with the current one.
    """
    current = meta or {}
    diffs = [f"{key}: saved {_saved_value(saved, key)!r}, now {current[key]!r}"
             for key in ("profile", "backbone", "seed")
             if key in current and _saved_value(saved, key) != current[key]]
    saved_code, now_code = saved.meta.get("code_version"), code_version()
    if saved_code != now_code:
        diffs.append(f"code version: saved {saved_code or 'unrecorded'}, now {now_code} "
                     "(d2l_helpers/*.py changed since the run was saved)")
    return diffs


def _load_params(saved: SavedRun, net) -> None:
    try:
        # Onto the devices training would use (every GPU, else the CPU), like train_fine_tuning
        net.load_parameters(str(saved.params_file), ctx=try_all_gpus())
    except (AssertionError, ValueError, KeyError) as err:
        raise RuntimeError(
            f"The weights of run {saved.name!r} ({saved.params_file}) do not fit this net "
            f"(saved with backbone {_saved_value(saved, 'backbone')!r}): {err}") from err


def _replay_curves(history: History, callback: Callable) -> None:
    """Call ``callback`` as `training.train_ch13` would, once per epoch, from ``history``."""
    columns = ("epoch", "train_loss", "train_acc", "test_acc", "examples_per_sec", "seconds")

    def upto(n: int) -> History:
        return History(**{c: list(getattr(history, c)[:n]) for c in columns},
                       config=dict(history.config))

    for i, epoch in enumerate(history.epoch):
        callback("batch", upto(i), epoch=float(epoch), train_loss=history.train_loss[i],
                 train_acc=history.train_acc[i])
        callback("epoch", upto(i + 1), epoch=epoch, train_loss=history.train_loss[i],
                 train_acc=history.train_acc[i], test_acc=history.test_acc[i])


def train_or_replay(name: str, net, train: Callable[[], History], *, replay: bool,
                    meta: dict[str, Any] | None = None,
                    callback: Callable | None = None) -> History:
    """Train and save run ``name``, or replay the saved one (presenter mode).

    ``replay=False``: ``history = train()``, saved with ``net``'s parameters and ``meta``
    (`save_run`), and returned. ``train`` draws its own curves (pass it the callback).

    ``replay=True``: nothing is trained. The saved run is loaded, its parameters go into
    ``net`` (on the devices training would use: every GPU, else the CPU), ``callback`` (e.g.
    `plots.LivePlot`) receives the ``"batch"`` and ``"epoch"`` events of `training.train_ch13`
    once per epoch from the saved history, a banner names the run, and the saved history
    is returned. A `ReplayMismatchWarning` says when the run was saved with another
    profile, backbone or seed than ``meta`` (the current ``run.to_dict()``) or by other
    code (`code_version`). A missing run raises `FileNotFoundError` saying what saves it.

    Example:
        >>> live = plots.LivePlot("fine-tuning")                        # doctest: +SKIP
        >>> history = train_or_replay(
        ...     "finetune", net, lambda: train_fine_tuning(net, 7.8125e-5, callback=live),
        ...     replay=REPLAY, meta=run.to_dict(), callback=live)         # doctest: +SKIP
    """
    if not replay:
        history = train()
        folder = save_run(name, history, net, meta)
        print(f"Saved run {name!r} to {folder}")
        return history
    saved = load_run(name)
    if net is not None:
        if saved.params_file is None:
            raise FileNotFoundError(
                f"Run {name!r} at {saved.path} has no net.params (saved without its weights). "
                f"Re-run {_saved_by(name)} with REPLAY = False, "
                "or `bash scripts/module.sh`.")
        _load_params(saved, net)
    print(replay_banner(saved), flush=True)
    diffs = replay_mismatches(saved, meta)
    if diffs:
        sys.stdout.flush()
        warnings.warn(
            f"Replaying run {name!r}, which was saved with another setup than this one: "
            + "; ".join(diffs) + ". Its curves and weights may not be what this code would "
            f"train now. To replay a matching run, re-run "
            f"{_saved_by(name)} with REPLAY = False (it trains "
            "and saves the run), or save every run with `bash scripts/module.sh`.",
            ReplayMismatchWarning, stacklevel=2)
    if callback is not None:
        _replay_curves(saved.history, callback)
    return saved.history
