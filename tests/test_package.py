"""The package's front door: lazy book names, a quiet offline setup(), clean notebooks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from d2l_helpers import notebook_runner

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env}, cwd=REPO)


def test_book_names_import_lazily_after_the_thread_fix():
    proc = _python(
        "import sys, os, d2l_helpers\n"
        "assert 'mxnet' not in sys.modules, 'import d2l_helpers loaded mxnet'\n"
        "assert os.environ['MXNET_OMP_MAX_THREADS']\n"
        "from d2l_helpers import train_fine_tuning, train_batch_ch13, train_ch13\n"
        "from d2l_helpers.training import train_fine_tuning as t\n"
        "assert train_fine_tuning is t\n"
        "print('ok')")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_unknown_top_level_name_is_an_attribute_error():
    import d2l_helpers

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        d2l_helpers.nope  # noqa: B018


def test_setup_prints_nothing_and_opens_no_socket(shared_hotdog, tmp_path):
    """setup() must not reach the network (it used to HEAD the model zoo) nor print."""
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise AssertionError('network I/O in setup()')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "import d2l_helpers\n"
        "run = d2l_helpers.setup(seed=0, profile='ci')\n"
        "import sys; sys.stderr.write(str(run))\n")
    proc = _python(code, HOTDOG_DIR=str(shared_hotdog), MXNET_HOME=str(tmp_path / "mx"),
                   D2L_BACKBONE="")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "efficientnet_lite0" in proc.stderr and "resnet18_v2" in proc.stderr  # the reason
    assert str(tmp_path) not in proc.stderr  # no machine path in the table


def test_run_hands_out_the_profile_transforms_and_photos(shared_hotdog):
    import d2l_helpers

    run = d2l_helpers.setup(seed=0, profile="ci", backbone="efficientnet_lite0")
    test = run.images("test")
    assert len(test) == 2 * run.profile.test_per_class
    x = run.test_augs()(test[0][0])
    assert tuple(x.shape) == (3, run.profile.image_size, run.profile.image_size)
    train_iter, test_iter = run.loaders(batch_size=8)
    X, y = next(iter(test_iter))
    assert tuple(X.shape) == (8, 3, 96, 96)


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_light_and_has_no_machine_paths(nb_path):
    assert notebook_runner.problems(nb_path) == []


def test_committed_notebooks_weigh_at_most_1_mb_together():
    total = sum(p.stat().st_size for p in NOTEBOOKS)
    assert total <= 1_000_000, f"{total:,} bytes"


def test_compact_turns_photos_to_jpeg_and_keeps_plots_png():
    import base64
    import io

    import nbformat
    import numpy as onp
    from PIL import Image, ImageDraw

    def png(img) -> str:
        buf = io.BytesIO()
        img.save(buf, "PNG")
        return base64.b64encode(buf.getvalue()).decode()

    photo = Image.fromarray(onp.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=onp.uint8))
    plot = Image.new("RGB", (300, 200), "white")
    ImageDraw.Draw(plot).line([(0, 0), (300, 200)], fill="blue", width=2)
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": png(photo)}),
                    nbformat.v4.new_output("display_data", data={"image/png": png(plot)}),
                    nbformat.v4.new_output("stream", text=f"saved to {Path.home()}/x\n")]
    nb.cells.append(cell)
    plot_png = png(plot)
    done = notebook_runner.compact(nb)
    assert done["jpeg"] == 1 and done["palette"] == 1
    assert "image/jpeg" in cell.outputs[0]["data"] and "image/png" in cell.outputs[1]["data"]
    assert cell.outputs[2]["text"] == "saved to ~/x\n"
    # The plot keeps its pixels' look in a palette PNG of fewer bytes; a second pass leaves it.
    small = cell.outputs[1]["data"]["image/png"]
    assert len(small) < len(plot_png)
    with Image.open(io.BytesIO(base64.b64decode(small))) as img:
        assert img.mode == "P" and img.size == plot.size
        diff = onp.abs(onp.asarray(img.convert("RGB"), dtype=int) - onp.asarray(plot, dtype=int))
        assert diff.max() <= 8
    assert notebook_runner.compact(nb)["palette"] == 0


def test_paths_are_shortened_to_the_most_specific_folder(monkeypatch):
    """A home folder beside the clone gives "~/x", not "../../home/x"; a home folder above
    the clone leaves the clone's paths relative to it."""
    from pathlib import Path

    from d2l_helpers import notebook_runner

    repo = notebook_runner.REPO
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: repo.parent / "home"))
    assert notebook_runner._local_paths(f"saved to {repo.parent}/home/x") == "saved to ~/x"
    assert notebook_runner._local_paths(f"{repo.parent}/shared/data") == "../../shared/data"
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: repo.parent))
    assert notebook_runner._local_paths(f"{repo}/build/runs") == "../build/runs"
    assert notebook_runner._local_paths(f"{repo}/notebooks/x.jpg") == "./x.jpg"


def test_problems_names_a_machine_path_and_widget_state(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": [
        {"output_type": "stream", "name": "stdout", "text": "from /home/alice/runs/x\n"}]}],
        "metadata": {"widgets": {}}, "nbformat": 4, "nbformat_minor": 5}
    f = tmp_path / "nb.ipynb"
    f.write_text(json.dumps(nb))
    found = notebook_runner.problems(f)
    assert any("widget state" in p for p in found)
    assert any("/home/alice/runs/x" in p for p in found)


def test_readme_course_table_is_generated_from_the_notebooks():
    readme = (REPO / "README.md").read_text()
    assert notebook_runner.with_course_table(readme, REPO / "notebooks") == readme, (
        "README's course table differs from the notebooks: run the main job with --in-place "
        "(bash scripts/module.sh --in-place), which rewrites it")
    for nb_path in NOTEBOOKS:
        meta = json.loads(nb_path.read_text())["metadata"].get("d2l", {})
        assert meta.get("learn"), f"{nb_path.name}: metadata.d2l.learn (one line) is missing"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_is_valid_nbformat_with_cell_ids(nb_path):
    import warnings

    import nbformat

    with warnings.catch_warnings():
        warnings.simplefilter("error")   # MissingIDFieldWarning: a future hard error
        nbformat.validate(nbformat.read(nb_path, as_version=4))


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_has_the_course_skeleton(nb_path):
    nb = json.loads(nb_path.read_text())
    first = "".join(nb["cells"][0]["source"])
    for part in ("**What you will learn**", "**Needs first:**", "**Time:**"):
        assert part in first, f"{nb_path.name}: first cell lacks {part}"
    setup = "".join(nb["cells"][1]["source"])
    assert "import d2l_helpers" in setup and "d2l_helpers.setup(" in setup
    headings = ["".join(c["source"]).splitlines()[0] for c in nb["cells"]
                if c["cell_type"] == "markdown" and c["source"]]
    assert "## Summary" in headings and headings[-1] == "## References"
    assert all("slideshow" in c["metadata"] for c in nb["cells"]), "every cell needs RISE metadata"


def test_main_job_runs_a_notebook_records_its_time_and_shows_progress(tmp_path, monkeypatch, capfd):
    import nbformat

    for var in ("D2L_PROFILE", "D2L_RUNS_DIR", "D2L_REPLAY"):
        monkeypatch.setenv(var, os.environ.get(var, ""))   # run_notebooks sets them; restore after
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 01 · Tiny"),
                                         nbformat.v4.new_code_cell("print(6 * 7)"),
                                         nbformat.v4.new_code_cell(
                                             "import os; print(os.environ['D2L_REPLAY'])")])
    nbformat.write(nb, nb_dir / "01_tiny.ipynb")
    out = tmp_path / "build" / "notebooks"
    import shutil
    import tempfile

    sockets = Path(tempfile.mkdtemp(prefix="t"))   # short: tmp_path is too long for a socket
    try:
        with monkeypatch.context() as m:
            m.setattr(tempfile, "tempdir", str(sockets))
            assert notebook_runner.run_notebooks(nb_dir, out, profile="ci", study=False) == 0
        left = list(sockets.iterdir())   # the kernel's socket folder is removed
    finally:
        shutil.rmtree(sockets)
    done = nbformat.read(out / "01_tiny.ipynb", as_version=4)
    assert done.cells[1].outputs[0]["text"] == "42\n" and done.cells[2].outputs[0]["text"] == "0\n"
    assert done.metadata["d2l"]["executed"]["profile"] == "ci"
    assert (tmp_path / "build" / "results.md").exists()
    err = capfd.readouterr().err   # the kernel's own log goes to this stderr too
    assert "[1/1] 01_tiny.ipynb" in err and "left" in err
    if os.name == "posix":   # IPC transport: ipykernel has no TCP warning to give
        assert "without encryption" not in err, err
    assert left == [] and [p.name for p in nb_dir.iterdir()] == ["01_tiny.ipynb"]


def test_kernels_use_unix_sockets_unless_the_path_is_too_long_for_one(tmp_path, monkeypatch):
    import tempfile

    import nbformat

    nb = nbformat.v4.new_notebook()
    with notebook_runner.notebook_client(nb, tmp_path) as client:   # no kernel started
        km = client.config.KernelManager
        assert (km.transport, Path(km.ip).name) == ("ipc", "kernel") if os.name == "posix" else True
    deep = tmp_path / ("x" * notebook_runner.MAX_SOCKET_PREFIX)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    with notebook_runner.notebook_client(nb, tmp_path) as client:
        assert "transport" not in client.config.KernelManager   # TCP, Jupyter's default


def test_the_main_job_runs_the_seed_study_first_as_a_timed_step(tmp_path, monkeypatch):
    import subprocess

    for var in ("D2L_PROFILE", "D2L_RUNS_DIR", "D2L_REPLAY"):
        monkeypatch.setenv(var, os.environ.get(var, ""))
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 3)
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    import nbformat

    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]),
                   nb_dir / "01_tiny.ipynb")
    assert notebook_runner.run_notebooks(nb_dir, tmp_path / "build" / "nb", profile="ci") == 1
    assert calls and calls[0][1:] == ["-m", "d2l_helpers", "study", "--profile", "ci"]
    results = (tmp_path / "build" / "results.md").read_text()
    assert "| seed study (python -m d2l_helpers study) | FAILED |" in results
