"""`python -m d2l_helpers train` and `predict`: any folder of classes, saved runs, clear errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_folders import CLASSES3, make_tree

from d2l_helpers import runs
from d2l_helpers.__main__ import default_run_name, main

REPO = Path(__file__).resolve().parent.parent
FOOD10 = Path(os.environ.get("FOOD10_DIR") or REPO.parent / "shared" / "data" / "food10")
TINY = ["--profile", "ci", "--epochs", "1", "--backbone", "efficientnet_lite0", "--no-progress"]


@pytest.fixture
def tree3(tmp_path) -> Path:
    return make_tree(tmp_path / "animals", per_class=(3, 2))


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    try:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
        return subprocess.run([sys.executable, "-m", "d2l_helpers", *args], capture_output=True,
                              text=True, timeout=timeout, cwd=REPO, env=env,
                              start_new_session=True)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{args} did not finish in {timeout} s: {err}")


@pytest.mark.parametrize("method", ["finetune", "features", "scratch"])
def test_train_saves_an_n_class_run_that_predict_uses(tree3, capsys, method):
    assert main(["train", str(tree3), "--method", method, *TINY]) == 0
    out = capsys.readouterr().out
    assert f"Training {method} on a local folder" in out and "3 classes" in out
    assert "epoch 1/1: loss" in out and f"Saved run 'animals-{method}'" in out
    saved = runs.load_run(f"animals-{method}")
    assert saved.meta["classes"] == list(CLASSES3) == saved.history.config["classes"]
    assert saved.meta["method"] == saved.history.config["method"] == method
    assert saved.meta["command"].startswith("python -m d2l_helpers train ")
    assert saved.history.config["data"]["counts"]["train"] == {c: 3 for c in CLASSES3}
    photos = [str(tree3 / "test" / "cat" / "000.jpg"), str(tree3 / "test" / "horse" / "001.jpg")]
    assert main(["predict", f"animals-{method}", *photos, "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == photos[0] and lines[3] == photos[1] and len(lines) == 6
    probs = [float(line.split()[0]) for line in lines[1:3]]
    assert probs == sorted(probs, reverse=True) and lines[1].split()[1] in CLASSES3


def test_a_flat_folder_records_its_split(tmp_path, capsys):
    root = make_tree(tmp_path / "flat", per_class=(4,), splits=())
    assert main(["train", str(root), "--method", "features", "--test-fraction", "0.5",
                 "--split-seed", "7", "--name", "flat-run", *TINY]) == 0
    meta = runs.load_run("flat-run").meta
    assert meta["data_split"]["seed"] == 7 and meta["data_split"]["test_fraction"] == 0.5
    assert "split 50%/50% per class by seed 7" in capsys.readouterr().out


def test_clear_errors(tree3, tmp_path, capsys):
    (tree3 / "test" / "dog").rename(tree3 / "test" / "wolf")
    assert main(["train", str(tree3), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Bad image folder layout:") and "class 'dog' is in train/" in err
    assert main(["train", str(tmp_path / "nope"), *TINY]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["predict", "no-such-run", "x.jpg"]) == 2
    assert "No saved run 'no-such-run'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", str(tree3), "--epochs", "0"])


def test_predict_names_unreadable_photos_and_goes_on(tree3, tmp_path, capsys):
    assert main(["train", str(tree3), "--method", "features", *TINY]) == 0
    capsys.readouterr()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    good = str(tree3 / "test" / "dog" / "000.jpg")
    assert main(["predict", "animals-features", str(broken), good, str(tmp_path / "gone.png")]) == 1
    out, err = capsys.readouterr()
    assert "Cannot decode image" in err and "broken.jpg" in err and "gone.png" in err
    assert out.splitlines()[0] == good


def test_default_run_name():
    assert default_run_name("/data/My Photos/", "features") == "My_Photos-features"


def test_train_and_predict_on_food10_at_ci_size(tmp_path):
    if not (FOOD10 / "train").is_dir():
        pytest.fail(f"food10 is missing at {FOOD10}; set FOOD10_DIR.")
    env_runs = os.environ["D2L_RUNS_DIR"]
    proc = _cli("train", str(FOOD10), "--train-per-class", "3", "--test-per-class", "2", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "10 classes" in proc.stdout and "Saved run 'food10-finetune'" in proc.stdout
    record = json.loads((Path(env_runs) / "food10-finetune" / "history.json").read_text())
    assert len(record["meta"]["classes"]) == 10 and record["history"]["config"]["num_epochs"] == 1
    photos = [str(FOOD10 / "test" / "baklava" / sorted(os.listdir(FOOD10 / "test" / "baklava"))[0])]
    proc = _cli("predict", "food10-finetune", *photos)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == photos[0] and len(lines) == 4
    assert all(line.split()[1] in record["meta"]["classes"] for line in lines[1:])
