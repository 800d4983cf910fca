"""variants.summarize and plots.plot_variants: one aggregation, drawn as computed; the
share of trainable parameters recorded by run_config has one definition."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from d2l_helpers import plots, variants  # noqa: E402
from d2l_helpers.training import History, run_config  # noqa: E402


def _run(method, seed, acc, trainable, total=1000, backbone="efficientnet_lite0"):
    return History(epoch=[1, 2], test_acc=[0.5, acc], seconds=[1.0, 2.0 + seed],
                   config={"backbone": backbone, "method": method, "seed": seed,
                           "trainable_params": trainable, "total_params": total,
                           "peak_rss_mb": 100.0 + seed})


RUNS = [_run("full fine-tune", 0, 0.90, 1000), _run("LoRA", 0, 0.80, 10),
        _run("full fine-tune", 1, 0.94, 1000), _run("LoRA", 1, 0.84, 10),
        _run("LoRA", 2, 0.83, 10)]


def test_summarize_rows():
    rows = variants.summarize(RUNS)
    assert [r["method"] for r in rows] == ["full fine-tune", "LoRA"]
    full, lora = rows
    assert full["seeds"] == 2 and full["test acc mean"] == pytest.approx(0.92)
    assert full["acc sd"] == pytest.approx(0.028284, abs=1e-6)
    assert (lora["acc min"], lora["acc max"]) == (0.80, 0.84)
    assert full["% of all"] == 100.0 and lora["% of all"] == pytest.approx(1.0)
    assert lora["seconds mean"] == pytest.approx(4.0) and lora["peak RSS MB"] == 102.0
    assert not hasattr(variants, "compare")


def test_plot_variants_draws_the_summarized_rows(monkeypatch):
    calls = []
    real = variants.summarize

    def spy(histories):
        rows = real(histories)
        calls.append(rows)
        return rows

    monkeypatch.setattr(variants, "summarize", spy)
    ax = plots.plot_variants(iter(RUNS))  # any iterable, consumed once
    assert len(calls) == 1
    rows = calls[0]
    means = [(line.get_xdata()[0], line.get_ydata()[0]) for line in ax.lines
             if line.get_marker() == "o"]
    assert means == [(r["% of all"], r["test acc mean"]) for r in rows]
    dots = [sorted(line.get_ydata()) for line in ax.lines if line.get_marker() == "."]
    assert dots == [[0.90, 0.94], [0.80, 0.83, 0.84]]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["full fine-tune (n=2)", "LoRA (n=3)"]
    matplotlib.pyplot.close("all")


def test_run_config_full_fine_tune_is_100_percent():
    from d2l_helpers.backbones import build_scratch_net
    from d2l_helpers.profiles import get_profile

    net = build_scratch_net("efficientnet_lite0", seed=0)
    cfg = run_config(net, get_profile("ci"), "efficientnet_lite0", 1e-4, 8, 1, 0)
    assert cfg["trainable_params"] == cfg["total_params"] == 4652008 - 1281000 + 1280 * 2 + 2


@pytest.mark.slow
def test_run_variant_reuses_the_studys_fine_tune_and_its_own_runs(monkeypatch, shared_hotdog,
                                                                 capsys):
    """Notebook 08's full fine-tune is the seed study's `finetune` run: once the study (or
    notebook 04) has saved it, it is loaded, not trained again; other methods are reused
    when their recipe and code match."""
    import d2l_helpers
    from d2l_helpers import study

    monkeypatch.setenv("HOTDOG_DIR", str(shared_hotdog))
    run = d2l_helpers.setup(seed=0, profile="ci", backbone="efficientnet_lite0")
    trained = study.run_arm(study.FINETUNE_ARM, run, 0)
    capsys.readouterr()
    h, net = variants.run_variant("full fine-tune", run, 0)
    assert "Reusing saved run 'finetune'" in capsys.readouterr().out
    assert h.test_acc == trained.test_acc
    assert h.config["method"] == "full fine-tune"
    assert h.config["trainable_by_kind"]["weight"] > 0
    first, _ = variants.run_variant("feature extraction", run, 0)
    capsys.readouterr()
    again, _ = variants.run_variant("feature extraction", run, 0)
    assert "Reusing saved run 'variant-feature-extraction-seed0'" in capsys.readouterr().out
    assert again.test_acc == first.test_acc
    rows = variants.summarize([h, first])
    assert [r["method"] for r in rows] == ["full fine-tune", "feature extraction"]


def test_run_comparison_runs_seed_by_seed_keeps_only_the_nets_asked_for(monkeypatch):
    """Notebook 08's loop and the study step: every method on every seed in order, each
    run passed ``saved_by`` and ``replay``, one line per run, and only the kept nets."""
    calls = []

    def fake_run_variant(method, run, seed, *, replay, progress, saved_by):
        calls.append((method, seed, replay, saved_by))
        return _run(method, seed, 0.5 + seed / 10, 10), object()

    monkeypatch.setattr(variants, "run_variant", fake_run_variant)
    lines = []
    histories, nets = variants.run_comparison(
        run=None, seeds=(0, 1), methods=("LoRA", "BitFit"), replay=True,
        keep=[("BitFit", 1)], say=lines.append, saved_by="a test")
    assert [(m, s) for m, s, *_ in calls] == [("LoRA", 0), ("BitFit", 0), ("LoRA", 1),
                                              ("BitFit", 1)]
    assert all(r is True and by == "a test" for *_, r, by in calls)
    assert [h.config["method"] for h in histories] == ["LoRA", "BitFit", "LoRA", "BitFit"]
    assert list(nets) == [("BitFit", 1)]
    assert len(lines) == 4 and lines[3].startswith("BitFit") and "seed 1: test acc 0.600" in lines[3]
    assert variants.SEEDS == (0, 1, 2)


def test_run_comparison_lets_each_net_go_before_the_next_run(monkeypatch):
    """A net not kept is freed before the next run builds and trains its own (a net holds
    its weights and MXNet's buffers); a run saved without a peak RSS says so."""
    import weakref

    class Net:
        pass

    made, alive_at_start = [], []

    def fake_run_variant(method, run, seed, *, replay, progress, saved_by):
        alive_at_start.append([r() is not None for r in made])
        net = Net()
        made.append(weakref.ref(net))
        h = _run(method, seed, 0.7, 10)
        if seed == 1:
            del h.config["peak_rss_mb"]        # a run saved before the peak was recorded
        return h, net

    monkeypatch.setattr(variants, "run_variant", fake_run_variant)
    lines = []
    _, nets = variants.run_comparison(run=None, seeds=(0, 1), methods=("LoRA",),
                                      keep=[("LoRA", 0)], say=lines.append)
    assert alive_at_start == [[], [True]]                 # seed 0's net: kept
    _, nets = variants.run_comparison(run=None, seeds=(0, 1), methods=("LoRA",),
                                      say=lines[:0].append)
    assert alive_at_start[2:] == [[True, False], [True, False, False]]   # none kept
    assert "peak RSS 0.1 GB" in lines[0] and lines[1].endswith("peak RSS not recorded")
