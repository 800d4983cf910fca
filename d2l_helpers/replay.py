"""Presenter mode: train and save a run, or replay the saved one instead of training.

`train_or_replay` trains and saves a run in the run store (`runs`), or, with
``replay=True``, loads the saved run instead: the weights go into the net, the curves are
redrawn from the history, a banner says which run is replayed, and a
`ReplayMismatchWarning` says when the run was saved with another profile, backbone, seed or
code version. Callers say what saves each run (``saved_by=``, e.g. the notebook), so the
messages for a missing or outdated run tell the user what to run; the package itself names
no notebook.

The notebooks write ``REPLAY = False`` then ``REPLAY = REPLAY or replay.replay_default()``
(``D2L_REPLAY=1`` in the environment turns presenter mode on everywhere).

Example:
    >>> import os, tempfile
    >>> os.environ["D2L_RUNS_DIR"] = tempfile.mkdtemp()
    >>> from mxnet.gluon import nn
    >>> from d2l_helpers.training import History
    >>> def train():                                  # stands for train_fine_tuning(...)
    ...     return History(epoch=[1, 2], train_loss=[0.7, 0.5], train_acc=[0.5, 0.7],
    ...                    test_acc=[0.6, 0.8], examples_per_sec=[9.0, 9.0], seconds=[1.0, 1.0])
    >>> net = nn.Dense(2, in_units=3); net.initialize()
    >>> h = train_or_replay("demo", net, train, replay=False, saved_by="a doctest")  # doctest: +ELLIPSIS
    Saved run 'demo' to .../demo
    >>> fresh = nn.Dense(2, in_units=3)
    >>> h2 = train_or_replay("demo", fresh, train, replay=True)   # doctest: +ELLIPSIS
    Replaying saved run 'demo' (saved ...): not training.
      from .../demo
    >>> h2.test_acc, bool((fresh.weight.data() == net.weight.data()).asnumpy().all())
    ([0.6, 0.8], True)
    >>> del os.environ["D2L_RUNS_DIR"]
"""
from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

from . import runs
from .paths import display_path
from .runs import SavedRun, load_run, load_weights, save_run
from .training import History

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


class ReplayMismatchWarning(UserWarning):
    """A replayed run was saved with another profile, backbone, seed or code version."""


def replay_default() -> bool:
    """True when the environment asks for presenter mode: ``D2L_REPLAY=1`` (or true/yes/on).

    The notebooks write ``REPLAY = False`` and then ``REPLAY = REPLAY or
    replay.replay_default()``, so ``D2L_REPLAY=1 jupyter lab`` replays in every notebook
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
            f"  from {display_path(saved.path)}")


def replay_mismatches(saved: SavedRun, meta: dict[str, Any] | None) -> list[str]:
    """What differs between a saved run and the current one, as ``"<what>: saved X, now Y"``.

    Compares profile, backbone and seed with ``meta`` (the current ``run.to_dict()``; keys
    it lacks are not compared) and the saved `runs.code_version` with the current one.
    """
    current = meta or {}
    diffs = [f"{key}: saved {_saved_value(saved, key)!r}, now {current[key]!r}"
             for key in ("profile", "backbone", "seed")
             if key in current and _saved_value(saved, key) != current[key]]
    saved_code, now_code = saved.meta.get("code_version"), runs.code_version()
    if saved_code != now_code:
        diffs.append(f"code version: saved {saved_code or 'unrecorded'}, now {now_code} "
                     "(d2l_helpers' training code changed since the run was saved)")
    return diffs


def replay_curves(history: History, callback: Callable) -> None:
    """Call ``callback`` as `training.train_ch13` would, once per epoch, from ``history``:
    a ``"batch"`` event (the epoch's training numbers) then an ``"epoch"`` event; epoch 0
    (before training) has only its ``"epoch"`` event."""
    columns = ("epoch", "train_loss", "train_acc", "test_acc", "examples_per_sec", "seconds",
               "eval_seconds")

    def upto(n: int) -> History:
        return History(**{c: list(getattr(history, c)[:n]) for c in columns},
                       config=dict(history.config))

    for i, epoch in enumerate(history.epoch):
        if history.train_loss[i] is not None:   # epoch 0 trained nothing: no batch event
            callback("batch", upto(i), epoch=float(epoch), train_loss=history.train_loss[i],
                     train_acc=history.train_acc[i])
        callback("epoch", upto(i + 1), epoch=epoch, train_loss=history.train_loss[i],
                 train_acc=history.train_acc[i], test_acc=history.test_acc[i])


def normalize_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """``recipe`` as it reads back from JSON (tuples become lists, keys strings), so a
    fresh recipe compares equal to a saved one.

    Example:
        >>> normalize_recipe({"lr": 7.8125e-05, "sizes": (160, 183)})
        {'lr': 7.8125e-05, 'sizes': [160, 183]}
    """
    import json

    return json.loads(json.dumps(recipe, sort_keys=True))


def matching_run(name: str, recipe: dict[str, Any]) -> SavedRun | None:
    """Saved run ``name`` when it was trained with exactly ``recipe`` by the current code
    (`runs.code_version`), else None (also when it is missing or damaged)."""
    try:
        saved = load_run(name)
    except (FileNotFoundError, runs.RunStoreError):
        return None
    if saved.meta.get("recipe") != normalize_recipe(recipe):
        return None
    if saved.meta.get("code_version") != runs.code_version():
        return None
    return saved


def train_or_replay(name: str, net, train: Callable[[], History], *, replay: bool,
                    meta: dict[str, Any] | None = None, callback: Callable | None = None,
                    saved_by: str | None = None,
                    recipe: dict[str, Any] | None = None) -> History:
    """Train and save run ``name``, or replay the saved one (presenter mode).

    ``saved_by`` is what saves the run (e.g. ``"notebooks/04_fine_tuning.ipynb"``): it is
    recorded with the run and named by every message that says what to run; without it the
    run's recorded one is used, else a generic sentence.

    ``replay=False``: ``history = train()``, saved with ``net``'s parameters and ``meta``
    (`runs.save_run`), and returned. ``train`` draws its own curves (pass it the callback).

    ``recipe`` (with ``replay=False``): everything that determines the run (profile,
    backbone, seed, learning rates, head init, epochs, data; `study.recipe` builds it). A
    saved run ``name`` with the same recipe and code version (`matching_run`) is not
    trained again: its weights and history are loaded, a line says which run was reused,
    and ``callback`` receives its curves. So notebook 04 reuses the seed-0 fine-tune that
    the seed study (`study`) saved, and the reverse. Without ``recipe`` the run trains.

    ``replay=True``: nothing is trained. The saved run is loaded, its parameters go into
    ``net`` (on the devices training would use: every GPU, else the CPU; in the caller's
    array mode), ``callback`` (e.g. `plots.LivePlot`) receives the ``"batch"`` and
    ``"epoch"`` events of `training.train_ch13` once per epoch from the saved history, a
    banner names the run, and the saved history is returned. A `ReplayMismatchWarning` says
    when the run was saved with another profile, backbone or seed than ``meta`` (the current
    ``run.to_dict()``) or by other code (`runs.code_version`). A missing run raises
    `FileNotFoundError` saying what saves it; a damaged one `runs.RunStoreError`.

    Example (notebook 04's training cell; tests/test_replay.py runs it on a tiny net)::

        live = plots.LivePlot("fine-tuning")
        history = train_or_replay(
            "finetune", net, lambda: train_fine_tuning(net, 7.8125e-5, callback=live),
            replay=REPLAY, meta=run.to_dict(), callback=live,
            saved_by="notebooks/04_fine_tuning.ipynb")
    """
    from .runtime import try_all_gpus

    if not replay:
        saved = matching_run(name, recipe) if recipe is not None else None
        if saved is not None:
            if net is not None:
                load_weights(saved, net, try_all_gpus(), saved_by=saved_by)
            print(f"Reusing saved run {name!r}: same recipe and code version, saved "
                  f"{saved.meta.get('saved_at', 'at an unrecorded time')} by "
                  f"{saved.saved_by or 'an unrecorded command'}: not training again.\n"
                  f"  from {display_path(saved.path)}", flush=True)
            if callback is not None:
                replay_curves(saved.history, callback)
            return saved.history
        history = train()
        if recipe is not None:
            meta = {**(meta or {}), "recipe": normalize_recipe(recipe)}
        folder = save_run(name, history, net, meta, saved_by=saved_by)
        print(f"Saved run {name!r} to {display_path(folder)}")
        return history
    saved = load_run(name, saved_by=saved_by)
    if net is not None:
        # Onto the devices training would use (every GPU, else the CPU), like train_fine_tuning
        load_weights(saved, net, try_all_gpus(), saved_by=saved_by)
    print(replay_banner(saved), flush=True)
    diffs = replay_mismatches(saved, meta)
    if diffs:
        sys.stdout.flush()
        warnings.warn(
            f"Replaying run {name!r}, which was saved with another setup than this one: "
            + "; ".join(diffs) + ". Its curves and weights may not be what this code would "
            f"train now. To replay a matching run, save it again: run "
            f"{runs.how_to_save(saved_by or saved.saved_by)}.",
            ReplayMismatchWarning, stacklevel=2)
    if callback is not None:
        replay_curves(saved.history, callback)
    return saved.history
