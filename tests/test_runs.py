"""The run store and presenter mode: save a run, replay it (weights, curves, banner, warnings)."""
from __future__ import annotations

import json
import warnings
from datetime import datetime

import numpy as onp
import pytest

import mxnet as mx
from mxnet import init, npx
from mxnet.gluon import nn

from d2l_helpers import runs
from d2l_helpers.plots import LivePlot
from d2l_helpers.runs import ReplayMismatchWarning, code_version, load_run, train_or_replay
from d2l_helpers.training import History

META = {"profile": "ci", "backbone": "tiny", "seed": 0,
        "hardware": {"cpus": 2, "gpus": 0, "mxnet": "1.9.1"}}


class TinyNet(nn.HybridBlock):
    """``features`` + ``output``, like the model zoo nets."""

    def __init__(self):
        super().__init__()
        self.features = nn.HybridSequential()
        self.features.add(nn.Conv2D(3, 3, in_channels=3), nn.BatchNorm(in_channels=3),
                          nn.GlobalAvgPool2D(), nn.Flatten())
        self.output = nn.Dense(2, in_units=3)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def tiny_net(seed: int) -> TinyNet:
    mx.random.seed(seed)
    net = TinyNet()
    net.initialize(init.Xavier())
    return net


def params(net) -> dict[str, onp.ndarray]:
    return {k: v.data().asnumpy() for k, v in net._collect_params_with_prefix().items()}


def fake_history(epochs: int = 3) -> History:
    return History(epoch=list(range(1, epochs + 1)),
                   train_loss=[0.9 - 0.2 * i for i in range(epochs)],
                   train_acc=[0.5 + 0.1 * i for i in range(epochs)],
                   test_acc=[0.55 + 0.1 * i for i in range(epochs)],
                   examples_per_sec=[10.0] * epochs, seconds=[1.5] * epochs,
                   config={"num_epochs": epochs, "profile": "ci", "backbone": "tiny", "seed": 0})


def fake_training(net, seed: int = 1):
    """A `train` callable: changes every parameter (BatchNorm statistics too), returns a History."""
    def train() -> History:
        rng = onp.random.RandomState(seed)
        for p in net.collect_params().values():
            p.set_data(rng.randn(*p.shape).astype(p.dtype))
        return fake_history()
    return train


def never_train() -> History:
    raise AssertionError("replay mode must not train")


@pytest.fixture(params=["np", "nd"])
def array_mode(request):
    """Notebooks run in NumPy mode (``npx.set_np()``); plain Gluon code in ndarray mode."""
    if request.param == "np":
        npx.set_np()
    try:
        yield request.param
    finally:
        if request.param == "np":
            npx.reset_np()


def save_tiny_run(name="finetune", meta=META) -> dict[str, onp.ndarray]:
    net = tiny_net(0)
    train_or_replay(name, net, fake_training(net), replay=False, meta=dict(meta))
    return params(net)


def test_code_version_hashes_every_module_by_name(tmp_path, monkeypatch):
    assert len(code_version()) == 12 and int(code_version(), 16) >= 0
    assert code_version() == code_version()
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "b.py").write_text("y = 2\n")
    (pkg / "notes.txt").write_text("not code")
    monkeypatch.setattr(runs, "PACKAGE_DIR", pkg)
    v1 = code_version()
    (pkg / "notes.txt").write_text("still not code")
    assert code_version() == v1
    (pkg / "b.py").write_text("y = 3\n")
    v2 = code_version()
    assert v2 != v1
    (pkg / "b.py").rename(pkg / "c.py")
    assert code_version() != v2


@pytest.mark.parametrize("value,expected", [(None, False), ("", False), ("0", False),
                                            ("1", True), ("true", True), ("Yes", True)])
def test_replay_default_reads_d2l_replay(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("D2L_REPLAY", raising=False)
    else:
        monkeypatch.setenv("D2L_REPLAY", value)
    assert runs.replay_default() is expected


def test_replay_default_rejects_other_values(monkeypatch):
    monkeypatch.setenv("D2L_REPLAY", "maybe")
    with pytest.raises(ValueError, match="D2L_REPLAY"):
        runs.replay_default()


def test_training_saves_the_run_with_its_versions(tmp_path, capsys):
    net = tiny_net(0)
    history = train_or_replay("finetune", net, fake_training(net), replay=False, meta=dict(META))
    assert history == fake_history()
    folder = tmp_path / "runs" / "finetune"          # D2L_RUNS_DIR (conftest)
    assert (folder / "net.params").is_file()
    assert not list(folder.glob(".tmp-*"))
    meta = json.loads((folder / "history.json").read_text())["meta"]
    assert meta["code_version"] == code_version()
    assert "git_commit" in meta
    assert datetime.fromisoformat(meta["saved_at"]).tzinfo is not None
    assert meta["profile"] == "ci" and meta["backbone"] == "tiny" and meta["seed"] == 0
    assert load_run("finetune").history == history
    assert f"Saved run 'finetune' to {folder}" in capsys.readouterr().out


def test_replay_restores_the_parameters_bit_exactly(array_mode, capsys):
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


def test_replay_feeds_the_callback_the_training_loops_events():
    save_tiny_run()
    events = []
    callback = lambda event, history, **info: events.append((event, len(history.epoch), info))
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
                        meta={**META, key: now})
    (w,) = record
    message = str(w.message)
    assert f"{key}: saved {META[key]!r}, now {now!r}" in message
    assert "REPLAY = False" in message and "bash scripts/module.sh" in message
    assert "notebooks/04_fine_tuning.ipynb" in message


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
        train_or_replay("finetune", tiny_net(3), never_train, replay=True, meta=dict(META))
    message = str(err.value)
    for part in ("'finetune'", str(tmp_path / "runs"), "notebooks/04_fine_tuning.ipynb",
                 "REPLAY = False", "bash scripts/module.sh", "Runs in this store: 'scratch'"):
        assert part in message, part


def test_replay_needs_the_saved_weights():
    net = tiny_net(0)
    runs.save_run("frozen backbone", fake_history(), None, meta=dict(META))
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
