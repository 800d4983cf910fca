"""The run store: a run saved whole, read back in any array mode, damage reported clearly.

Presenter mode (`replay`) is tested in test_replay.py, which reuses the helpers below.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from datetime import datetime

import mxnet as mx
import numpy as onp
import pytest
from mxnet import init
from mxnet.gluon import nn

from d2l_helpers import arrays, paths, runs
from d2l_helpers.runs import (
    RunStoreError,
    RunStoreWarning,
    code_version,
    list_runs,
    load_classifier,
    load_run,
    load_weights,
    save_run,
)
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



def save_tiny(name="finetune", seed=1, meta=META, **kw) -> dict[str, onp.ndarray]:
    """Save a run of a trained TinyNet; return its parameters."""
    net = tiny_net(0)
    history = fake_training(net, seed)()
    save_run(name, history, net, meta=dict(meta), **kw)
    return params(net)


def assert_same_params(net, expected: dict[str, onp.ndarray]) -> None:
    got = params(net)
    assert got.keys() == expected.keys()
    for k, a in expected.items():
        assert got[k].dtype == a.dtype and onp.array_equal(got[k], a), k


# ------------------------------------------------------------------ versions and saving
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


def test_code_version_leaves_out_modules_that_never_run_while_training(tmp_path, monkeypatch):
    """Editing the notebook runner, the figures or the widgets keeps every saved run valid;
    that is safe only because no other module imports them, checked here on the package."""
    import ast

    assert runs.NOT_TRAINING == {"notebook_runner.py", "plots.py", "widgets.py"}
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    monkeypatch.setattr(runs, "PACKAGE_DIR", pkg)
    for name in ("training.py", *runs.NOT_TRAINING):
        (pkg / name).write_text("x = 1\n")
    v1 = code_version()
    for name in runs.NOT_TRAINING:
        (pkg / name).write_text("x = 2\n")
    assert code_version() == v1
    (pkg / "training.py").write_text("x = 2\n")
    assert code_version() != v1

    import d2l_helpers

    left_out = {name[:-3] for name in runs.NOT_TRAINING}
    assert not set(d2l_helpers._LAZY.values()) & left_out   # the package's lazy attributes
    for f in sorted(runs.REPO_DIR.joinpath("d2l_helpers").glob("*.py")):
        if f.name in runs.NOT_TRAINING:
            continue
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if (f.name, node.module, [a.name for a in node.names]) == (
                        "__main__.py", "notebook_runner", ["run_notebooks"]):
                    continue   # `python -m d2l_helpers run` starts the runner: not training
                names = {(node.module or "").split(".")[-1], *(a.name for a in node.names)}
            elif isinstance(node, ast.Import):
                names = {a.name.split(".")[-1] for a in node.names}
            else:
                continue
            assert not names & left_out, f"{f.name} imports {names & left_out}: count it in code_version"


def test_code_version_ignores_docstrings_and_comments_not_code(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    monkeypatch.setattr(runs, "PACKAGE_DIR", pkg)
    src = 'def f(x):\n    """Double.\n\n    >>> f(2)\n    4\n    """\n    return 2 * x  # twice\n'
    (pkg / "m.py").write_text('"""Module."""\n' + src)
    v1 = code_version()
    (pkg / "m.py").write_text('"""Module, better said."""\n' + src.replace("4\n", "4.0\n")
                              .replace("# twice", "# two times"))
    assert code_version() == v1
    (pkg / "m.py").write_text('"""Module."""\n' + src.replace("2 * x", "3 * x"))
    assert code_version() != v1


def test_save_run_records_versions_mode_and_saver(tmp_path, array_mode):
    trained = save_tiny(saved_by="notebooks/04_fine_tuning.ipynb")
    folder = tmp_path / "runs" / "finetune"          # D2L_RUNS_DIR (conftest)
    assert sorted(p.name for p in folder.iterdir()) == ["history.json", "net.params"]
    assert not list(folder.parent.glob(".tmp-*"))
    meta = json.loads((folder / "history.json").read_text())["meta"]
    assert meta["code_version"] == code_version()
    assert "git_commit" in meta
    assert datetime.fromisoformat(meta["saved_at"]).tzinfo is not None
    assert meta["profile"] == "ci" and meta["backbone"] == "tiny" and meta["seed"] == 0
    assert meta["array_mode"] == array_mode
    assert meta["saved_by"] == "notebooks/04_fine_tuning.ipynb"
    saved = load_run("finetune")
    assert saved.history == fake_history() and saved.saved_by == meta["saved_by"]
    net = TinyNet()
    load_weights(saved, net)
    assert_same_params(net, trained)


@pytest.mark.parametrize("how", ["error", "kill"])
def test_a_crash_while_overwriting_keeps_the_old_run_whole(monkeypatch, how):
    old = save_tiny(seed=1)
    old_history = load_run("finetune").history
    folder = runs.runs_dir() / "finetune"

    def crash(tmp, record):
        assert (tmp / "net.params").is_file()       # the new weights are written by now
        raise RuntimeError("crashed between net.params and history.json")

    net = tiny_net(0)
    fake_training(net, seed=2)()                     # other weights
    new_history = fake_history(5)
    with monkeypatch.context() as m:
        m.setattr(runs, "_write_history", crash)
        if how == "kill":                            # no clean-up runs after a SIGKILL
            m.setattr(paths.shutil, "rmtree", lambda *a, **k: None)
        with pytest.raises(RuntimeError, match="crashed"):
            save_run("finetune", new_history, net, meta=dict(META))
    leftovers = list(runs.runs_dir().glob(".tmp-*"))
    assert len(leftovers) == (1 if how == "kill" else 0)
    assert [r.name for r in list_runs()] == ["finetune"]
    saved = load_run("finetune")
    assert saved.history == old_history != new_history
    fresh = TinyNet()
    load_weights(saved, fresh)
    assert_same_params(fresh, old)                   # the OLD weights with the old history
    paths.clean_stale(runs.runs_dir(), older_than=0)
    assert not list(runs.runs_dir().glob(".tmp-*"))
    assert sorted(p.name for p in folder.iterdir()) == ["history.json", "net.params"]


def test_saving_removes_stale_leftovers_and_listing_ignores_them():
    root = runs.runs_dir()
    stale = root / ".tmp-finetune-dead"
    stale.mkdir(parents=True)
    (stale / "history.json").write_text("{}")        # what a killed save leaves
    old = time.time() - 2 * paths.STALE_SECONDS
    os.utime(stale, (old, old))
    young = root / ".tmp-scratch-busy"               # another process saving right now
    young.mkdir()
    (young / "history.json").write_text("{}")
    save_tiny("scratch")
    assert not stale.exists() and young.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r.name for r in list_runs()] == ["scratch"]


# ------------------------------------------------------------------ missing and damaged runs
def test_a_missing_run_names_the_store_its_runs_and_what_saves_it(tmp_path):
    save_tiny("scratch")
    with pytest.raises(FileNotFoundError) as err:
        load_run("finetune", saved_by="notebooks/04_fine_tuning.ipynb")
    message = str(err.value)
    for part in ("'finetune'", str(tmp_path / "runs"), "notebooks/04_fine_tuning.ipynb",
                 "REPLAY = False", "bash scripts/module.sh", "Runs in this store: 'scratch'"):
        assert part in message, part
    with pytest.raises(FileNotFoundError) as err:
        load_run("finetune")
    assert "the notebook or command that trains it, with REPLAY = False" in str(err.value)
    assert ".ipynb" not in str(err.value)


DAMAGED_HISTORIES = {
    "truncated": lambda text: text[: len(text) // 2],
    "garbage bytes": lambda text: "\x00\xff\x13 not json",
    "not a run": lambda text: json.dumps({"name": "finetune"}),
    "wrong columns": lambda text: json.dumps({"history": {"epochs": [1]}, "meta": {}}),
}


@pytest.mark.parametrize("damage", list(DAMAGED_HISTORIES))
def test_a_damaged_history_is_a_run_store_error_with_the_fix(damage):
    save_tiny(saved_by="notebooks/04_fine_tuning.ipynb")
    f = runs.runs_dir() / "finetune" / "history.json"
    if damage == "garbage bytes":
        f.write_bytes(b"\x00\xff\xfe\x13garbage")
    else:
        f.write_text(DAMAGED_HISTORIES[damage](f.read_text()))
    with pytest.raises(RunStoreError) as err:
        load_run("finetune", saved_by="notebooks/04_fine_tuning.ipynb")
    message = str(err.value)
    for part in (str(f), f"delete its folder {f.parent}", "notebooks/04_fine_tuning.ipynb",
                 "REPLAY = False"):
        assert part in message, part
    assert isinstance(err.value, RuntimeError)


def test_list_runs_returns_the_good_runs_and_warns_about_each_bad_one():
    for name in ("a", "b", "c", "d"):
        save_tiny(name)
    (runs.runs_dir() / "b" / "history.json").write_text('{"history": {"epoch": [1')
    (runs.runs_dir() / "d" / "history.json").write_bytes(b"\x89garbage")
    with pytest.warns(RunStoreWarning) as record:
        good = list_runs()
    assert [r.name for r in good] == ["a", "c"]
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2
    assert messages[0].startswith("Skipping run 'b'") and "b/history.json" in messages[0]
    assert messages[1].startswith("Skipping run 'd'") and "d/history.json" in messages[1]
    assert all("REPLAY = False" in m and "delete" in m for m in messages)


@pytest.mark.parametrize("garbage", ["random bytes", "empty", "truncated", "older run, truncated"])
def test_garbage_weights_are_a_run_store_error_naming_the_file(garbage, array_mode):
    save_tiny(saved_by="notebooks/04_fine_tuning.ipynb")
    f = runs.runs_dir() / "finetune" / "net.params"
    if garbage.startswith("older run"):              # no array_mode recorded: both are tried
        h = f.parent / "history.json"
        record = json.loads(h.read_text())
        del record["meta"]["array_mode"]
        h.write_text(json.dumps(record))
    f.write_bytes({"random bytes": onp.random.RandomState(0).bytes(16), "empty": b""}.get(
        garbage, f.read_bytes()[:200]))
    with pytest.raises(RunStoreError) as err:
        load_weights(load_run("finetune"), TinyNet())
    message = str(err.value)
    for part in (str(f), "not a readable parameter file", f"delete its folder {f.parent}",
                 "notebooks/04_fine_tuning.ipynb", "REPLAY = False"):
        assert part in message, part
    assert "shape semantics" not in message
    assert not isinstance(err.value, mx.base.MXNetError)


def test_weights_that_do_not_fit_say_so():
    save_tiny()
    other = nn.Dense(2, in_units=5)
    with pytest.raises(RuntimeError, match="do not fit this net.*backbone 'tiny'"):
        load_weights(load_run("finetune"), other)
    bigger = TinyNet()
    bigger.output = nn.Dense(3, in_units=3)
    with pytest.raises(RuntimeError, match="do not fit this net.*shape incompatible"):
        load_weights(load_run("finetune"), bigger)


def test_a_run_without_weights_says_what_saves_it():
    save_run("frozen backbone", fake_history(), None, meta=dict(META),
             saved_by="notebooks/06_ablations.ipynb")
    with pytest.raises(FileNotFoundError, match="has no net.params.*06_ablations"):
        load_weights(load_run("frozen backbone"), TinyNet())


# ------------------------------------------------------------------ array modes
@pytest.mark.parametrize("saved_mode,load_mode", [("np", "nd"), ("nd", "np"), ("np", "np")])
@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "older run"])
def test_weights_load_in_the_callers_mode_whatever_mode_saved_them(saved_mode, load_mode,
                                                                   recorded):
    with arrays.np_semantics(saved_mode == "np"):
        trained = save_tiny()
    if not recorded:                                 # runs saved before array_mode existed
        f = runs.runs_dir() / "finetune" / "history.json"
        record = json.loads(f.read_text())
        del record["meta"]["array_mode"]
        f.write_text(json.dumps(record))
    with arrays.np_semantics(load_mode == "np"):
        net = TinyNet()
        load_weights(load_run("finetune"), net)
        assert_same_params(net, trained)
        p = net.output.weight
        assert isinstance(p.data(), mx.np.ndarray if load_mode == "np" else mx.nd.NDArray)
        assert type(p.grad()) is type(p.data())
        x = arrays.array(onp.ones((1, 3, 5, 5), "float32"))
        assert net(x).shape == (1, 2)


def _save_efficientnet_run(name: str = "finetune", **kw) -> tuple[onp.ndarray, onp.ndarray]:
    """A 2-class efficientnet_lite0 (random weights) saved as a notebook does (NumPy mode);
    returns a photo and the probabilities the saved net gives it."""
    from d2l_helpers import predict
    from d2l_helpers.backbones import get_backbone

    image = onp.random.RandomState(0).randint(0, 256, (64, 80, 3)).astype("uint8")
    with arrays.np_semantics(True):
        mx.random.seed(0)
        net = get_backbone("efficientnet_lite0", pretrained=False, classes=2)
        net.initialize(init.Xavier())
        history = History(epoch=[1], train_loss=[0.6], train_acc=[0.7], test_acc=[0.8],
                          examples_per_sec=[5.0], seconds=[2.0],
                          config={"profile": "ci", "backbone": "efficientnet_lite0", "seed": 0})
        probs = predict.predict_proba(net, [image], _test_transform("ci", "efficientnet_lite0"))
        save_run(name, history, net, meta={"profile": "ci", "backbone": "efficientnet_lite0",
                                           "seed": 0}, **kw)
    return image, probs


def _test_transform(profile: str, backbone: str):
    from d2l_helpers.backbones import backbone_spec
    from d2l_helpers.profiles import get_profile
    from d2l_helpers.transforms import test_augs

    prof, spec = get_profile(profile), backbone_spec(backbone)
    return test_augs(prof.image_size, prof.resize, spec.mean, spec.std)


@pytest.mark.parametrize("caller", ["np", "nd"])
def test_load_classifier_predicts_in_the_callers_mode(caller):
    from d2l_helpers import predict

    image, expected = _save_efficientnet_run(saved_by="notebooks/04_fine_tuning.ipynb")
    with arrays.np_semantics(caller == "np"):
        net, tf, class_names, saved = load_classifier("finetune")
        probs = predict.predict_proba(net, [image], tf)
        assert predict.classify(net, image, tf, class_names)[0] in ("hotdog", "not-hotdog")
    assert class_names == ["hotdog", "not-hotdog"] and saved.name == "finetune"
    onp.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-5)


def test_load_classifier_from_a_plain_script_in_nd_mode(tmp_path):
    """A fresh process without ``npx.set_np()`` loads the run a notebook saved and predicts."""
    image, expected = _save_efficientnet_run()
    onp.save(tmp_path / "image.npy", image)
    script = (
        "import json, sys\n"
        "import numpy as onp\n"
        "import d2l_helpers\n"
        "from d2l_helpers import arrays, predict, runs\n"
        "assert not arrays.is_np()\n"
        "net, tf, names, saved = runs.load_classifier('finetune')\n"
        "assert saved.meta['array_mode'] == 'np' and not arrays.is_np()\n"
        f"image = onp.load({str(tmp_path / 'image.npy')!r})\n"
        "print(json.dumps(predict.predict_proba(net, [image], tf).tolist()))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    probs = onp.array(json.loads(proc.stdout.strip().splitlines()[-1]))
    onp.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-5)


def test_load_classifier_reports_missing_and_damaged_runs():
    with pytest.raises(FileNotFoundError, match="notebooks/04_fine_tuning.ipynb"):
        load_classifier("finetune", saved_by="notebooks/04_fine_tuning.ipynb")
    save_run("finetune", fake_history(), None,
             meta={"profile": "ci", "backbone": "efficientnet_lite0", "seed": 0})
    with pytest.raises(FileNotFoundError, match="has no net.params"):
        load_classifier("finetune")
    _save_efficientnet_run()
    f = runs.runs_dir() / "finetune" / "net.params"
    f.write_bytes(onp.random.RandomState(1).bytes(16))
    with pytest.raises(RunStoreError, match=f"{f}.*not a readable parameter file"):
        load_classifier("finetune")
