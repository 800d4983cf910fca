"""The prose of notebooks 04-06 against their committed outputs (the cpu-profile runs).

Each summary sentence that states a result must agree with the numbers the notebook printed
from its runs; these tests read the executed notebooks in ``notebooks/`` and fail when a
re-execution changes a number so that a sentence no longer holds. Numbers printed by the
notebooks come from the seed study's saved runs (`d2l_helpers.study`).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

NB = Path(__file__).resolve().parent.parent / "notebooks"


def _load(name: str) -> dict:
    return json.loads((NB / name).read_text())


def _text(nb: dict) -> str:
    """Every text output of the notebook, in order."""
    out = []
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            t = o.get("text") or o.get("data", {}).get("text/plain")
            if t:
                out.append("".join(t))
    return "\n".join(out)


def _markdown(nb: dict, heading: str) -> str:
    return next("".join(c["source"]) for c in nb["cells"]
                if c["cell_type"] == "markdown" and "".join(c["source"]).startswith(heading))


def _number(pattern: str, text: str) -> tuple[float, ...]:
    m = re.search(pattern, text)
    assert m, f"output not found: {pattern}"
    return tuple(float(g) for g in m.groups())


def _executed_in_cpu(nb: dict) -> None:
    executed = nb["metadata"].get("d2l", {}).get("executed", {})
    if executed.get("profile") != "cpu":
        pytest.fail("the committed outputs must come from the cpu profile (bash scripts/module.sh "
                    f"--in-place); this notebook's say {executed or 'nothing'}")


def test_notebook_05_summary_agrees_with_its_runs():
    nb = _load("05_scratch_baseline.ipynb")
    _executed_in_cpu(nb)
    out, summary = _text(nb), _markdown(nb, "## Summary")
    wins, seeds = _number(r"Fine-tuning beat the fair scratch run on (\d+) of (\d+) seeds", out)
    assert seeds >= 5
    assert "holds on every seed" in summary and wins == seeds
    (last,) = _number(r"loss on that batch, every 5th step: \[.*\] -> ([0-9.]+)", out)
    assert "its loss falls to less than half of ln 2 within 30 steps" in summary
    assert last < math.log(2) / 2
    (best_acc,) = _number(r"Highest final training accuracy: ([0-9.]+)", out)
    assert "at any rate of the sweep" in summary and best_acc < 0.6
    stale, fresh = _number(r"test accuracy ([0-9.]+) with the running statistics, ([0-9.]+) with "
                           r"statistics recomputed", out)
    assert "exactly one half" in summary and stale == 0.5
    assert "still near chance" in summary and fresh != stale and abs(fresh - 0.5) < 0.1


def test_notebook_06_summary_agrees_with_its_runs():
    nb = _load("06_ablations.ipynb")
    _executed_in_cpu(nb)
    out, summary = _text(nb), _markdown(nb, "## Summary")
    start, rule = _number(r"row-934 head before training: test acc ([0-9.]+) \(logit rule: ([0-9.]+)\)",
                          out)
    assert "begins with the logit rule's accuracy" in summary and start == rule
    (copy0,) = _number(r"row 934 copied: +([0-9.]+)", out)
    assert "the book's copy of the row begins near chance" in summary and copy0 <= 0.6
    zero_shot = _number(r"row 934 probability \(zero-shot rule\) +[0-9.e-]+ +[0-9.]+ +([0-9.]+)", out)[0]
    assert "scores well above chance" in summary and zero_shot >= 0.75
    # pandas prints the table in two blocks: accuracy columns, then the zero-shot column
    (ft160,) = _number(r"fine-tune, 160 px \(the cpu profile\) +\d+ +([0-9.]+)", out)
    (ft224,) = _number(r"fine-tune, 224 px \(the book's crop\) +\d+ +([0-9.]+)", out)
    (zs160,) = _number(r"(?m)fine-tune, 160 px \(the cpu profile\) +([0-9.]+) *$", out)
    (zs224,) = _number(r"(?m)fine-tune, 224 px \(the book's crop\) +([0-9.]+) *$", out)
    assert "the fine-tune gains (one seed) while the zero-shot rule stays where it was" in summary
    assert ft224 > ft160 and abs(zs224 - zs160) <= 0.005


def test_notebook_04_puts_its_accuracy_beside_the_zero_shot_rule():
    nb = _load("04_fine_tuning.ipynb")
    _executed_in_cpu(nb)
    out, summary = _text(nb), _markdown(nb, "## Summary")
    acc, before, zero_shot = _number(r"test accuracy ([0-9.]+) on \d+ photos \(before training: "
                                     r"([0-9.]+); ImageNet's hot-dog row alone, no training: "
                                     r"([0-9.]+)\)", out)
    assert "already scores far above chance" in summary and zero_shot >= 0.75
    assert before < acc   # the fine-tune learned something beyond its random head
