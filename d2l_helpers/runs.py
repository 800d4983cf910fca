"""The run store: every training run saved with its history, parameters and config.

A run is a folder ``<runs dir>/<name>/`` holding ``history.json`` (per-epoch numbers plus
the config: profile, backbone, seed, learning rates, devices, hardware, git commit, code
version, array mode, what saved it, time saved) and, when a net is given, ``net.params``.
The folder is written whole (`paths.atomic_dir`): a crash or kill while saving leaves the
previous run as it was, never new weights beside an old history. The runs dir is
``$D2L_RUNS_DIR``, else ``runs/`` in the cache folder (`paths.cache_dir`); the main job
(``bash scripts/module.sh``) and ``scripts/lab.sh`` use ``build/runs`` in the repository.
Notebooks save their runs here (through `replay.train_or_replay`); notebook 7 loads the
model that notebook 4 fine-tuned (`load_classifier`), and ``python -m d2l_helpers run``
builds its summary from them (`list_runs`).

Weights load in whichever array mode the caller is in (MXNet's NumPy mode after
``npx.set_np()``, or the legacy ``nd`` mode of a plain script), whatever mode saved them.
A damaged run raises `RunStoreError` saying which file and how to fix it.

Example:
    >>> import tempfile, os
    >>> os.environ["D2L_RUNS_DIR"] = tempfile.mkdtemp()
    >>> from mxnet.gluon import nn
    >>> from d2l_helpers.training import History
    >>> net = nn.Dense(2, in_units=3); net.initialize()
    >>> history = History(epoch=[1], train_loss=[0.7], train_acc=[0.5], test_acc=[0.6],
    ...                   examples_per_sec=[9.0], seconds=[1.0], config={"profile": "ci"})
    >>> folder = save_run("demo", history, net, meta={"seed": 0}, saved_by="a doctest")
    >>> sorted(p.name for p in folder.iterdir())
    ['history.json', 'net.params']
    >>> saved = load_run("demo")
    >>> saved.history.test_acc, saved.meta["seed"], saved.meta["saved_by"]
    ([0.6], 0, 'a doctest')
    >>> other = nn.Dense(2, in_units=3)
    >>> load_weights(saved, other)
    >>> bool((other.weight.data() == net.weight.data()).asnumpy().all())
    True
    >>> [r.name for r in list_runs()]
    ['demo']
    >>> del os.environ["D2L_RUNS_DIR"]
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from . import arrays
from .paths import TMP_PREFIX, atomic_dir, clean_stale
from .training import History

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
# Modules that cannot change what a run computes, left out of `code_version`: the runner
# that executes notebooks, and the figures and widgets drawn from the numbers. No other
# module imports them (a test checks it); during training they run only as a notebook's
# read-only callback (`plots.LivePlot`), whose drawing time counts in a run's seconds.
NOT_TRAINING = frozenset({"notebook_runner.py", "plots.py", "widgets.py"})

# What to run when the caller did not say (see `how_to_save`).
GENERIC_SAVER = "the notebook or command that trains it"


class RunStoreError(RuntimeError):
    """A saved run is damaged (unreadable ``history.json`` or ``net.params``).

    The message names the file and the fix: delete the run's folder and save it again.
    """


class RunStoreWarning(UserWarning):
    """`list_runs` skipped a damaged run (the message says which and how to fix it)."""


def runs_dir() -> Path:
    """``$D2L_RUNS_DIR`` or ``<cache>/runs``."""
    from .paths import cache_dir

    return Path(os.environ.get("D2L_RUNS_DIR") or cache_dir() / "runs")


def _code_without_docs(source: str) -> str:
    """The module's syntax tree without docstrings (comments are not in it): what runs.

    ``ast.dump``'s text is stable within one Python minor version (3.11 here, pinned by
    ``requires-python``); another version may print the same code differently, which only
    makes saved runs look like other code's (they are retrained, never misused)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:]
    return ast.dump(tree, include_attributes=False)


def code_version() -> str:
    """A short SHA-1 of the helper package's code: every ``d2l_helpers/*.py`` by name, but
    the modules in `NOT_TRAINING` (the notebook runner, figures, widgets).

    Each file contributes its name and its syntax tree without docstrings, so editing code,
    adding, removing or renaming a module changes the version, while a fixed docstring,
    doctest or comment does not (it would otherwise orphan every saved run of an hour's
    seed study), nor does an edit of a module that never runs while training. Saved with
    every run; replaying a run saved by other code warns (`replay.ReplayMismatchWarning`).

    Example:
        >>> len(code_version())
        12
    """
    sha = hashlib.sha1()
    for f in sorted(PACKAGE_DIR.glob("*.py"), key=lambda p: p.name):
        if f.name in NOT_TRAINING:
            continue
        data = _code_without_docs(f.read_text(encoding="utf-8")).encode()
        sha.update(f"{f.name}\0{len(data)}\0".encode())
        sha.update(data)
    return sha.hexdigest()[:12]


def how_to_save(saved_by: str | None = None) -> str:
    """What to run to save a run again: ``saved_by`` (a notebook or command) with
    ``REPLAY = False``, or the main job; a generic sentence when ``saved_by`` is None.

    Example:
        >>> how_to_save("notebooks/04_fine_tuning.ipynb")
        'notebooks/04_fine_tuning.ipynb with REPLAY = False, or `bash scripts/module.sh`'
        >>> how_to_save()
        'the notebook or command that trains it, with REPLAY = False, or `bash scripts/module.sh`'
    """
    if saved_by:
        return f"{saved_by} with REPLAY = False, or `bash scripts/module.sh`"
    return f"{GENERIC_SAVER}, with REPLAY = False, or `bash scripts/module.sh`"


@dataclass
class SavedRun:
    """A run read back from the store: its folder, `History` and ``meta`` (see `save_run`)."""

    name: str
    path: Path
    history: History
    meta: dict[str, Any]

    @property
    def params_file(self) -> Path | None:
        """``net.params``, or None when the run was saved without its weights."""
        f = self.path / "net.params"
        return f if f.exists() else None

    @property
    def saved_by(self) -> str | None:
        """The notebook or command that saved the run, when it said (``save_run(saved_by=)``)."""
        return self.meta.get("saved_by")


def _write_history(folder: Path, record: dict[str, Any]) -> None:
    (folder / "history.json").write_text(json.dumps(record, indent=1, default=str))


def save_run(name: str, history: History, net=None, meta: dict[str, Any] | None = None,
             *, saved_by: str | None = None) -> Path:
    """Save ``history`` (and ``net``'s parameters) as run ``name``; return its folder.

    ``meta`` (usually ``run.to_dict()``: profile, backbone, seed, hardware, ...) is stored
    with the git commit, the `code_version`, the array mode the parameters were saved in
    (``array_mode``: ``"np"`` or ``"nd"``), ``saved_by`` (the notebook or command that
    saves the run, named again when the run is missing or damaged) and the time
    (``saved_at``, ISO 8601). The folder is filled under a temporary name and renamed into
    place (`paths.atomic_dir`), so a crash leaves the previous run whole; ``.tmp-*``
    leftovers of earlier crashes are removed (`paths.clean_stale`).

    Example (in a notebook, after training; tests/test_runs.py runs it on a tiny net)::

        save_run("finetune", history, net, meta=run.to_dict(),
                 saved_by="notebooks/04_fine_tuning.ipynb")   # -> PosixPath('.../runs/finetune')
    """
    from .session import git_commit

    root = runs_dir()
    clean_stale(root)
    folder = root / name
    meta = dict(meta or {})
    if saved_by:
        meta["saved_by"] = saved_by
    record = {"name": name, "history": history.to_dict(),
              "meta": {"git_commit": git_commit(), **meta,
                       "code_version": code_version(),
                       "array_mode": "np" if arrays.is_np() else "nd",
                       "saved_at": datetime.now().astimezone().isoformat(timespec="seconds")}}
    with atomic_dir(folder) as tmp:
        if net is not None:
            net.save_parameters(str(tmp / "net.params"))
        _write_history(tmp, record)
    return folder


def _run_names(root: Path) -> list[str]:
    """Names of the runs in ``root`` (folders with a ``history.json``; no ``.tmp-*``)."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if not p.name.startswith(TMP_PREFIX) and (p / "history.json").exists())


def missing_run_message(name: str, saved_by: str | None = None) -> str:
    """Why run ``name`` cannot be loaded: the store, what saves the run, the runs it holds."""
    root = runs_dir()
    where = ("D2L_RUNS_DIR" if os.environ.get("D2L_RUNS_DIR")
             else "the default; set D2L_RUNS_DIR to use another")
    lines = [f"No saved run {name!r} in the run store {root} ({where}).",
             f"Save it by running {how_to_save(saved_by)} (the main job runs every notebook)."]
    if (REPO_DIR / "scripts" / "module.sh").exists():
        lines.append(f"The main job saves into {REPO_DIR / 'build' / 'runs'}; "
                     "`bash scripts/lab.sh` points D2L_RUNS_DIR there.")
    lines.append("Runs in this store: "
                 + (", ".join(repr(n) for n in _run_names(root)) or "none") + ".")
    return "\n".join(lines)


def _damaged(name: str, file: Path, problem: str, saved_by: str | None) -> RunStoreError:
    return RunStoreError(
        f"Run {name!r} is damaged: {file} {problem}. The run cannot be used; delete its "
        f"folder {file.parent} and save it again by running {how_to_save(saved_by)}.")


def load_run(name: str, *, saved_by: str | None = None) -> SavedRun:
    """Read run ``name`` back (its history and meta; weights: `load_weights`).

    ``saved_by`` names what saves the run, for the messages. A missing run raises
    `FileNotFoundError` naming the store, the runs it holds and what to run; a damaged
    ``history.json`` (truncated, not JSON, not a run) raises `RunStoreError` naming it.
    """
    folder = runs_dir() / name
    f = folder / "history.json"
    if not f.exists():
        raise FileNotFoundError(missing_run_message(name, saved_by))
    try:
        record = json.loads(f.read_text())
        meta = record.get("meta") or {}
        if not isinstance(meta, dict):
            raise TypeError("meta is not a mapping")
        history = History.from_dict(record["history"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:  # JSONDecodeError, bad bytes
        raise _damaged(name, f, f"is not a readable run record ({type(err).__name__}: {err})",
                       saved_by) from err
    return SavedRun(name, folder, history, meta)


def list_runs() -> list[SavedRun]:
    """Every readable saved run, in name order; each damaged one is skipped with a
    `RunStoreWarning` naming it and the fix."""
    out = []
    for name in _run_names(runs_dir()):
        try:
            out.append(load_run(name))
        except RunStoreError as err:
            warnings.warn(f"Skipping run {name!r}: {err}", RunStoreWarning, stacklevel=2)
        except FileNotFoundError:  # removed or being replaced meanwhile
            continue
    return out


def _read_params(saved: SavedRun, saved_by: str | None) -> dict:
    """The arrays of ``saved``'s ``net.params``, read with the shape semantics they were saved
    in (``meta["array_mode"]``; runs saved before it was recorded: either)."""
    import mxnet as mx
    from mxnet.base import MXNetError

    f = saved.params_file
    mode = saved.meta.get("array_mode")
    semantics = [mode == "np"] if mode in ("np", "nd") else [arrays.is_np(), not arrays.is_np()]
    errors: list[Exception] = []
    for np_on in semantics:
        try:
            with arrays.np_semantics(np_on):
                loaded = mx.nd.load(str(f))
        except MXNetError as err:
            errors.append(err)
            continue
        if isinstance(loaded, dict):
            return loaded
        errors.append(TypeError(f"holds a {type(loaded).__name__} of arrays, not named parameters"))
    # The informative error, not "saved in np shape semantics" from trying the other mode
    error = next((e for e in errors if "shape semantics" not in str(e)), errors[-1])
    first_line = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    raise _damaged(saved.name, f, f"is not a readable parameter file ({first_line})",
                   saved_by or saved.saved_by) from error


def _in_caller_mode(x):
    """An array read from a parameter file as the array type of the caller's mode."""
    from mxnet import np as mnp

    if arrays.is_np():
        return x if isinstance(x, mnp.ndarray) else x.as_np_ndarray()
    return x.as_nd_ndarray() if isinstance(x, mnp.ndarray) else x


def _require_params(saved: SavedRun, saved_by: str | None) -> None:
    if saved.params_file is None:
        raise FileNotFoundError(
            f"Run {saved.name!r} at {saved.path} has no net.params (saved without its "
            f"weights). Save it again by running {how_to_save(saved_by or saved.saved_by)}.")


def load_weights(saved: SavedRun, net, ctx=None, *, saved_by: str | None = None) -> None:
    """Put the saved parameters of run ``saved`` into ``net`` on ``ctx`` (default: CPU).

    Works in the caller's array mode whatever mode saved the run: the file is read with the
    shape semantics it was saved in and each array becomes the caller's kind (``mx.np`` in
    NumPy mode, ``mx.nd`` otherwise), so ``net`` is used as usual afterwards. As
    ``Block.load_parameters`` (whose checks it repeats; MXNet 1.9.1): a shared parameter may
    be stored under any of its names.

    Raises `FileNotFoundError` when the run has no weights, `RunStoreError` when
    ``net.params`` is damaged, and `RuntimeError` when the weights do not fit ``net``.
    """
    import mxnet as mx

    _require_params(saved, saved_by)
    loaded = _read_params(saved, saved_by)
    ctx = ctx if ctx is not None else mx.cpu()
    params = net._collect_params_with_prefix()
    names_of = defaultdict(list)
    for k, p in params.items():
        names_of[p].append(k)
    missing = [k for k, p in params.items() if not any(n in loaded for n in names_of[p])]
    extra = sorted(set(loaded) - set(params))
    backbone = saved.meta.get("backbone") or saved.history.config.get("backbone")

    def misfit(why: str) -> RuntimeError:
        return RuntimeError(f"The weights of run {saved.name!r} ({saved.params_file}) do not "
                            f"fit this net (saved with backbone {backbone!r}): {why}")

    if missing or extra:
        raise misfit("; ".join(
            ([f"missing in the file: {', '.join(missing[:5])}"] if missing else [])
            + ([f"not in this net: {', '.join(extra[:5])}"] if extra else [])))
    try:
        for k in loaded:
            params[k]._load_init(_in_caller_mode(loaded[k]), ctx)
    except (AssertionError, ValueError, KeyError) as err:
        raise misfit(str(err)) from err


def run_class_names(saved: SavedRun) -> list[str]:
    """The class names of a saved run, in label order: recorded by runs trained on a folder
    of N classes (``meta["classes"]`` or ``history.config["classes"]``); runs saved before
    that (the hot-dog notebooks) are the hot-dog set's two."""
    from .data import CLASSES

    names = saved.meta.get("classes") or saved.history.config.get("classes")
    return list(names) if names else list(CLASSES)


def load_classifier(run_name: str = "finetune", devices: Sequence | None = None, *,
                    saved_by: str | None = None):
    """The classifier saved as run ``run_name``, ready to predict in the caller's mode.

    Returns ``(net, transform, class_names, run)``: the N-class net of the run's backbone
    with the saved parameters (on ``devices[0]``, default CPU), the test transform it was
    evaluated with, the run's class names in label order (`run_class_names`: the hot-dog
    set's two, or the folders of the data set it was trained on), and the `SavedRun`. Works
    from a notebook (NumPy mode) and from a plain script (``nd`` mode) alike. ``saved_by``
    names what saves the run, for the messages (`FileNotFoundError` when missing,
    `RunStoreError` when damaged).

    Example (needs the run notebook 04 saves; tests/test_runs.py runs it on a tiny net)::

        net, tf, class_names, saved = load_classifier(
            "finetune", saved_by="notebooks/04_fine_tuning.ipynb")
        predict.classify(net, image, tf, class_names)             # -> ('hotdog', 0.93)
    """
    import mxnet as mx

    from .backbones import backbone_spec, get_backbone
    from .profiles import get_profile
    from .transforms import test_augs

    saved = load_run(run_name, saved_by=saved_by)
    cfg = saved.history.config
    ctx = (devices or [mx.cpu()])[0]
    _require_params(saved, saved_by)  # before building the net
    class_names = run_class_names(saved)
    net = get_backbone(cfg["backbone"], pretrained=False, classes=len(class_names), ctx=ctx)
    load_weights(saved, net, ctx, saved_by=saved_by)
    prof, spec = get_profile(cfg["profile"]), backbone_spec(cfg["backbone"])
    return net, test_augs(prof.image_size, prof.resize, spec.mean, spec.std), class_names, saved
