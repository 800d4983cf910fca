"""The seed study: arms, recipes and reuse, the tables, and one real run at ci size."""
from __future__ import annotations

import pytest
from mxnet.gluon import nn

from d2l_helpers import replay, runs, study
from d2l_helpers.head_init import ZeroShot
from d2l_helpers.training import History


def _history(final, seed=0, loss=0.5, initial=0.5):
    return History(epoch=[0, 1], train_loss=[None, loss], train_acc=[None, 0.8],
                   test_acc=[initial, final], examples_per_sec=[None, 10.0],
                   seconds=[1.0, 2.0], config={"seed": seed})


def _zero_shot(acc=0.8):
    return ZeroShot(row=934, row_name="hotdog", positive_class="hotdog", prob_threshold=0.1,
                    prob_train_acc=acc, prob_test_acc=acc, logit_threshold=20.0,
                    logit_train_acc=acc, logit_test_acc=acc, logit_sd=2.0, n_train=10, n_test=10)


def test_arms_names_and_errors():
    assert study.arm_spec("scratch-lr0.1").label.endswith("(the book's)")
    assert study.arm_spec("finetune-224-warmup").warmup_epochs == 10
    assert study.run_name("head-row934", 2) == "head-row934-seed2"
    with pytest.raises(ValueError, match="scratch-lr<rate per batch of 128>"):
        study.arm_spec("scratch-lrfast")
    with pytest.raises(ValueError, match="Unknown study arm 'bogus'"):
        study.arm_spec("bogus")


def test_an_arms_profile_changes_only_the_crop_and_never_upsamples():
    from d2l_helpers.profiles import get_profile

    cpu = get_profile("cpu")
    p = study.arm_spec("finetune-224").profile(cpu)
    assert (p.image_size, p.resize, p.decode_size) == (224, 256, 256)
    assert (p.name, p.batch_size, p.num_epochs) == (cpu.name, cpu.batch_size, cpu.num_epochs)
    assert study.arm_spec("finetune").profile(cpu) is cpu
    assert get_profile("ci").seeds == 2 and cpu.seeds == 5


def test_the_scratch_rate_is_chosen_by_training_loss_not_test_accuracy():
    sweep = {0.3: _history(0.9, loss=0.80), 0.1: _history(0.5, loss=0.70),
             0.01: _history(0.6, loss=0.69)}
    assert study.choose_scratch_rate(sweep) == 0.01
    with pytest.raises(ValueError):
        study.choose_scratch_rate({})


def test_table_wins_and_markdown():
    result = study.StudyResult(
        sweep={0.1: _history(0.5, loss=0.7)}, fair_rate=0.1,
        runs={"finetune": {0: _history(0.88), 1: _history(0.90, seed=1)},
              "scratch-lr0.1": {0: _history(0.5), 1: _history(0.9, seed=1, initial=0.5)}},
        zero_shot=_zero_shot(0.86), seconds=12.0)
    rows = {r["arm"]: r for r in result.table()}
    assert rows["finetune"]["test acc mean"] == pytest.approx(0.89)
    assert rows["finetune"]["before training"] == 0.5 and rows["zero-shot"]["test acc mean"] == 0.86
    assert result.wins("finetune", "scratch-lr0.1") == {"seeds": 2, "wins": 1, "ties": 1, "losses": 0}
    text = study.format_table(result)
    assert "| 0.1 (chosen) | 0.700 |" in text
    assert "Fine-tune beat the fair scratch run on 1 of 2 seeds (1 ties)." in text


def _tiny():
    net = nn.Dense(2, in_units=3)
    net.initialize()
    return net


def test_a_run_with_the_same_recipe_and_code_is_reused_not_retrained(monkeypatch, capsys):
    calls = []

    def train():
        calls.append(1)
        return _history(0.8)

    recipe = {"arm": "x", "sizes": (160, 183), "seed": 0}
    net = _tiny()
    replay.train_or_replay("x", net, train, replay=False, recipe=recipe)
    fresh = _tiny()
    h = replay.train_or_replay("x", fresh, train, replay=False, recipe=dict(recipe))
    assert len(calls) == 1 and h.test_acc == [0.5, 0.8]
    assert (fresh.weight.data() == net.weight.data()).asnumpy().all()
    assert "Reusing saved run 'x': same recipe and code version" in capsys.readouterr().out
    replay.train_or_replay("x", _tiny(), train, replay=False, recipe={**recipe, "seed": 1})
    assert len(calls) == 2                                    # another recipe: trained
    monkeypatch.setattr(runs, "code_version", lambda: "other-code")
    replay.train_or_replay("x", _tiny(), train, replay=False, recipe={**recipe, "seed": 1})
    assert len(calls) == 3                                    # other code: trained
    replay.train_or_replay("x", _tiny(), train, replay=False)
    assert len(calls) == 4                                    # no recipe: always trained


@pytest.mark.slow
def test_the_study_at_ci_size_starts_the_row_934_head_at_the_logit_rule(monkeypatch, shared_hotdog,
                                                                        capsys):
    import d2l_helpers

    monkeypatch.setenv("HOTDOG_DIR", str(shared_hotdog))
    run = d2l_helpers.setup(seed=0, profile="ci", backbone="efficientnet_lite0")
    arms = ["finetune", "head-row934", "head-copy934"]
    result = study.run_study(run, [0], rates=(0.1,), arms=arms, analysis_runs=False)
    zs = result.zero_shot
    row = result.runs["head-row934"][0]
    # Before any update the thresholded head makes the logit rule's decisions exactly.
    assert row.epoch[0] == 0 and row.initial_test_acc == pytest.approx(zs.logit_test_acc)
    assert zs.row_name.startswith("hotdog") and 0.5 < zs.prob_test_acc <= 1.0
    assert all(h.epoch[0] == 0 for a in arms for h in result.runs[a].values())
    capsys.readouterr()
    again = study.run_study(run, [0], rates=(0.1,), arms=arms, analysis_runs=False)
    assert capsys.readouterr().out.count("Reusing saved run") == 4   # nothing trained again
    assert again.finals("finetune") == result.finals("finetune")
