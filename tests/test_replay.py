"""Presenter mode: train and save a run, or replay it (weights, curves, banner, warnings)."""
from __future__ import annotations

import json
import warnings
from datetime import datetime

import mxnet as mx
import numpy as onp
import pytest
from mxnet.gluon import nn
from test_runs import META, fake_history, fake_training, params, tiny_net

from d2l_helpers import replay, runs
from d2l_helpers.paths import display_path
from d2l_helpers.plots import LivePlot
from d2l_helpers.replay import ReplayMismatchWarning, train_or_replay
from d2l_helpers.runs import RunStoreError, code_version, load_run
from d2l_helpers.training import History

NB04 = "notebooks/04_fine_tuning.ipynb"


def never_train() -> History:
    raise AssertionError("replay mode must not train")


def save_tiny_run(name="finetune", meta=META, saved_by=None) -> dict[str, onp.ndarray]:
    net = tiny_net(0)
    train_or_replay(name, net, fake_training(net), replay=False, meta=dict(meta),
                    saved_by=saved_by)
    return params(net)


@pytest.mark.parametrize("value,expected", [(None, False), ("", False), ("0", False),
                                            ("1", True), ("true", True), ("Yes", True)])
def test_replay_default_reads_d2l_replay(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("D2L_REPLAY", raising=False)
    else:
        monkeypatch.setenv("D2L_REPLAY", value)
    assert replay.replay_default() is expected


def test_replay_default_rejects_other_values(monkeypatch):
    monkeypatch.setenv("D2L_REPLAY", "maybe")
    with pytest.raises(ValueError, match="D2L_REPLAY"):
        replay.replay_default()


def test_training_saves_the_run_with_its_versions(tmp_path, capsys):
    net = tiny_net(0)
    history = train_or_replay("finetune", net, fake_training(net), replay=False, meta=dict(META),
                              saved_by=NB04)
    assert history == fake_history()
    folder = tmp_path / "runs" / "finetune"          # D2L_RUNS_DIR (conftest)
    assert (folder / "net.params").is_file()
    assert not list(folder.glob(".tmp-*")) and not list(folder.parent.glob(".tmp-*"))
    meta = json.loads((folder / "history.json").read_text())["meta"]
    assert meta["code_version"] == code_version()
    assert "git_commit" in meta
    assert datetime.fromisoformat(meta["saved_at"]).tzinfo is not None
    assert meta["profile"] == "ci" and meta["backbone"] == "tiny" and meta["seed"] == 0
    assert meta["saved_by"] == NB04 and meta["array_mode"] == "nd"
    assert load_run("finetune").history == history
    assert f"Saved run 'finetune' to {display_path(folder)}" in capsys.readouterr().out


def test_replay_restores_the_parameters_bit_exactly(array_mode, capsys):  # noqa: F811
    trained = save_tiny_run()
    net = tiny_net(7)                                   # other weights before the replay
    assert any(not onp.array_equal(a, params(net)[k]) for k, a in trained.items())
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReplayMismatchWarning)
        history = train_or_replay("finetune", net, never_train, replay=True, meta=dict(META))
    assert history == fake_history()
    replayed = params(net)
    assert replayed.keys() == trained.keys()
    for k, a in trained.items():
        assert replayed[k].dtype == a.dtype and onp.array_equal(replayed[k], a), k
    p = next(iter(net.collect_params().values()))
    assert p.list_ctx() == [mx.cpu()]
    assert isinstance(p.data(), mx.np.ndarray if array_mode == "np" else mx.nd.NDArray)
    out = capsys.readouterr().out
    assert "Replaying saved run 'finetune' (saved " in out
    for part in ("on 2 CPUs, no GPU, mxnet 1.9.1", "profile ci", "backbone tiny", "seed 0",
                 f"code version {code_version()}", "): not training."):
        assert part in out, part


def test_replay_of_a_run_saved_in_the_other_array_mode():
    npx = mx.npx
    npx.set_np()
    try:
        trained = save_tiny_run()                       # a notebook saves in NumPy mode
    finally:
        npx.reset_np()
    net = tiny_net(7)                                   # a plain script replays in nd mode
    train_or_replay("finetune", net, never_train, replay=True, meta=dict(META))
    for k, a in trained.items():
        assert onp.array_equal(params(net)[k], a), k
    assert isinstance(net.output.weight.data(), mx.nd.NDArray)
    assert not isinstance(net.output.weight.data(), mx.np.ndarray)


def test_replay_feeds_the_callback_the_training_loops_events():
    save_tiny_run()
    events = []

    def callback(event, history, **info):
        events.append((event, len(history.epoch), info))

    h = fake_history()
    train_or_replay("finetune", tiny_net(3), never_train, replay=True, meta=dict(META),
                    callback=callback)
    expected = []
    for i, e in enumerate(h.epoch):
        expected.append(("batch", i, {"epoch": float(e), "train_loss": h.train_loss[i],
                                      "train_acc": h.train_acc[i]}))
        expected.append(("epoch", i + 1, {"epoch": e, "train_loss": h.train_loss[i],
                                          "train_acc": h.train_acc[i], "test_acc": h.test_acc[i]}))
    assert events == expected
    # The notebooks' LivePlot gets the curves from the saved history
    live = LivePlot()
    train_or_replay("finetune", None, never_train, replay=True, meta=dict(META), callback=live)
    assert live.points["test acc"] == list(zip(h.epoch, h.test_acc))
    assert live.points["train loss"] == list(zip(map(float, h.epoch), h.train_loss))


@pytest.mark.parametrize("key,now", [("profile", "cpu"), ("backbone", "resnet18_v2"), ("seed", 1)])
def test_replay_warns_when_the_setup_differs(key, now):
    save_tiny_run()
    with pytest.warns(ReplayMismatchWarning) as record:
        train_or_replay("finetune", tiny_net(3), never_train, replay=True,
                        meta={**META, key: now}, saved_by=NB04)
    (w,) = record
    message = str(w.message)
    assert f"{key}: saved {META[key]!r}, now {now!r}" in message
    assert "REPLAY = False" in message and "bash scripts/module.sh" in message
    assert NB04 in message


@pytest.mark.parametrize("saved_by,replayed_by,named", [
    (NB04, None, NB04),                                  # recorded when saved
    (None, NB04, NB04),                                  # given when replayed
    (None, None, "the notebook or command that trains it, with REPLAY = False")])
def test_the_warning_names_what_saves_the_run(saved_by, replayed_by, named):
    save_tiny_run(saved_by=saved_by)
    with pytest.warns(ReplayMismatchWarning, match="seed: saved 0, now 5") as record:
        train_or_replay("finetune", tiny_net(3), never_train, replay=True,
                        meta={**META, "seed": 5}, saved_by=replayed_by)
    assert named in str(record[0].message)


def test_replay_warns_when_the_code_changed(monkeypatch):
    save_tiny_run()
    saved = code_version()
    monkeypatch.setattr(runs, "code_version", lambda: "0123456789ab")
    with pytest.warns(ReplayMismatchWarning,
                      match=f"code version: saved {saved}, now 0123456789ab"):
        train_or_replay("finetune", tiny_net(3), never_train, replay=True, meta=dict(META))


def test_replay_of_a_missing_run_says_what_saves_it(tmp_path):
    save_tiny_run("scratch")
    with pytest.raises(FileNotFoundError) as err:
        train_or_replay("finetune", tiny_net(3), never_train, replay=True, meta=dict(META),
                        saved_by=NB04)
    message = str(err.value)
    for part in ("'finetune'", str(tmp_path / "runs"), NB04,
                 "REPLAY = False", "bash scripts/module.sh", "Runs in this store: 'scratch'"):
        assert part in message, part


def test_replay_of_a_missing_run_without_saved_by_says_so_generically():
    with pytest.raises(FileNotFoundError) as err:
        train_or_replay("finetune", tiny_net(3), never_train, replay=True, meta=dict(META))
    message = str(err.value)
    assert "the notebook or command that trains it, with REPLAY = False, or " \
           "`bash scripts/module.sh`" in message
    assert "Runs in this store: none." in message


def test_replay_needs_the_saved_weights():
    net = tiny_net(0)
    runs.save_run("frozen backbone", fake_history(), None, meta=dict(META),
                  saved_by="notebooks/06_ablations.ipynb")
    with pytest.raises(FileNotFoundError, match="has no net.params.*06_ablations"):
        train_or_replay("frozen backbone", net, never_train, replay=True, meta=dict(META))
    # without a net, the curves alone replay
    assert train_or_replay("frozen backbone", None, never_train, replay=True,
                           meta=dict(META)) == fake_history()


def test_replay_into_another_architecture_says_so():
    save_tiny_run()
    other = nn.Dense(2, in_units=5)
    other.initialize()
    with pytest.raises(RuntimeError, match="do not fit this net"):
        train_or_replay("finetune", other, never_train, replay=True, meta=dict(META))


def test_replay_of_damaged_files_is_a_run_store_error(array_mode):  # noqa: F811
    save_tiny_run(saved_by=NB04)
    folder = runs.runs_dir() / "finetune"
    (folder / "net.params").write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(RunStoreError) as err:
        train_or_replay("finetune", tiny_net(3), never_train, replay=True, meta=dict(META))
    message = str(err.value)
    assert str(folder / "net.params") in message and NB04 in message and "delete" in message
    (folder / "history.json").write_text('{"name": "finetune", "hist')
    with pytest.raises(RunStoreError, match="history.json is not a readable run record"):
        train_or_replay("finetune", tiny_net(3), never_train, replay=True, meta=dict(META),
                        saved_by=NB04)
