"""benchmarks/pipeline.py's orchestration: contenders, the optional PyTorch peer (skipped with
its install command when absent), the rates and the ratios (workers faked: no training)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def pipeline():
    spec = importlib.util.spec_from_file_location("pipeline", REPO / "benchmarks" / "pipeline.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _raw(job: float, evals: int, train_s: float, eval_s: float) -> dict:
    return {"train_examples": 996, "train_seconds": train_s, "eval_seconds": eval_s,
            "evaluations": evals, "job_seconds": job, "n_test": 500, "test_acc": 0.88,
            "epoch_train_examples_per_sec": [30.0, 40.0], "peak_rss_mb": 2000.0}


FAKE = {"ours": _raw(40.0, 3, 25.0, 15.0), "peer": _raw(50.0, 3, 30.0, 20.0),
        "ceiling": _raw(0.0, 1, 20.0, 1.0), "book": _raw(80.0, 2, 70.0, 10.0)}


def _run_main(pipeline, monkeypatch, tmp_path, contenders: str, peer: bool):
    calls = []

    def spawn(name, args):
        calls.append(name)
        return pipeline.derive(dict(FAKE[name]), args)

    monkeypatch.setattr(pipeline, "run_worker", spawn)
    monkeypatch.setattr(pipeline, "peer_available", lambda: peer)
    monkeypatch.setenv("HOTDOG_DIR", str(tmp_path))
    out = tmp_path / "b.json"
    monkeypatch.setattr("sys.argv", ["pipeline.py", "--contenders", contenders, "--repeats", "2",
                                     "--epochs", "2", "--out", str(out)])
    assert pipeline.main() == 0
    return calls, json.loads(out.read_text())


def test_the_peer_runs_interleaved_and_is_compared(pipeline, monkeypatch, tmp_path, capsys):
    calls, result = _run_main(pipeline, monkeypatch, tmp_path, "ours,peer", peer=True)
    assert calls == ["ours", "peer", "ours", "peer"]
    r = result["ratios"]
    assert r["peer job s / ours job s (speed-up of the whole job)"] == pytest.approx(50 / 40)
    # evaluation: 3 passes over 500 photos in 15 s (ours) vs 20 s (peer)
    assert r["ours/peer evaluation img/s"] == pytest.approx(20 / 15)
    assert result["summary"]["ours"]["eval_images_per_sec"]["median"] == pytest.approx(100.0)
    assert "peer skipped" not in capsys.readouterr().out


def test_without_pytorch_the_peer_is_skipped_with_the_install_command(pipeline, monkeypatch,
                                                                     tmp_path, capsys):
    calls, result = _run_main(pipeline, monkeypatch, tmp_path, "ours,peer", peer=False)
    assert "peer" not in calls and "peer" not in result["summary"]
    assert not any("peer" in k for k in result["ratios"])
    assert "pip install -r requirements/peer.txt" in capsys.readouterr().out


def test_every_contender_and_a_bad_list(pipeline, monkeypatch, tmp_path):
    calls, result = _run_main(pipeline, monkeypatch, tmp_path, "book,ours,ceiling", peer=False)
    assert calls == ["book", "ours", "ceiling", "ours", "ceiling"]   # the book once by default
    assert "ours/ceiling train ex/s (last epoch)" in result["ratios"]
    assert result["ratios"]["book job s / ours job s (speed-up of the whole job)"] == 2.0
    with pytest.raises(SystemExit, match="subset of book, ours, ceiling, peer"):
        _run_main(pipeline, monkeypatch, tmp_path, "ours,tensorflow", peer=False)


def _checkout():
    spec = importlib.util.spec_from_file_location("checkout", REPO / "benchmarks" / "checkout.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_checkout_helper_examples_run_and_it_refuses_after_mxnet():
    """benchmarks/checkout.py: its docstring example runs (benchmarks/ is not collected for
    doctests), and importing a checkout after mxnet raises instead of silently timing with
    the thread count MXNet already read."""
    import doctest

    import mxnet  # noqa: F401  (this test process has it; a benchmark must not, yet)

    checkout = _checkout()
    assert doctest.testmod(checkout).failed == 0
    with pytest.raises(RuntimeError, match="before mxnet is imported"):
        checkout.import_checkout(str(REPO))


def _notebook_memory():
    spec = importlib.util.spec_from_file_location("notebook_memory",
                                                  REPO / "benchmarks" / "notebook_memory.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_notebook_memory_reports_the_kernels_peak(tmp_path):
    """benchmarks/notebook_memory.py runs a notebook in a fresh kernel and reads that
    kernel's peak RSS: a cell that holds 200 MB shows at least that much."""
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("block = b'x' * (200 * 2**20)   # written, so resident")])
    path = tmp_path / "holds_200_mb.ipynb"
    nbformat.write(nb, path)
    peak_mb, seconds = _notebook_memory().run_once(path, timeout=120)
    assert 200 <= peak_mb < 2000 and seconds > 0
    assert nbformat.read(path, as_version=4).cells[0].outputs == []   # not written back


def test_notebook_memory_names_what_is_missing(tmp_path, capsys):
    mod = _notebook_memory()
    with pytest.raises(SystemExit):
        mod.main([str(tmp_path / "nope.ipynb")])
    assert "no notebook at" in capsys.readouterr().err
    nb = tmp_path / "a.ipynb"
    nb.write_text("{}")
    with pytest.raises(SystemExit):
        mod.main([str(nb), "--runs", str(tmp_path / "no-runs")])
    assert "no saved runs at" in capsys.readouterr().err
