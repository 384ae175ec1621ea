"""The demo's statistics: paired differences with t-intervals, sample SDs, budgets and targets."""

from __future__ import annotations

import json

import pytest

from dualdistill.pipeline.demo import OVERALL, SPLITS, budget, comparisons, spread, targets
from dualdistill.pipeline.paired import paired, sample_sd, t975


def test_the_t_interval_of_the_fair_experiments_example():
    """Gaps to code-only of 16.8, 6.5 and 10.3: mean 11.2, interval about [-1.7, 24.1]."""
    p = paired([16.8, 6.5, 10.3], [0.0, 0.0, 0.0])
    lo, hi = p.interval
    assert p.mean == pytest.approx(11.2, abs=0.01)
    assert lo == pytest.approx(-1.7, abs=0.1) and hi == pytest.approx(24.1, abs=0.1)
    assert p.positive == 3 and "(includes 0)" in p.describe()
    assert "(includes 0)" not in paired([5.0, 6.0, 7.0], [0.0, 0.0, 0.0]).describe()


def test_sample_sd_divides_by_n_minus_one_and_t_needs_two_seeds():
    assert sample_sd([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert t975(2) == pytest.approx(4.303) and t975(4) == pytest.approx(2.776) and t975(100) == 1.96
    with pytest.raises(ValueError, match="2 seeds"):
        t975(0)
    assert paired([3.0], [1.0]).interval is None
    with pytest.raises(ValueError, match="same seeds"):
        paired([1.0, 2.0], [1.0])


def _summary(acc: float, tool: float = 1.0) -> dict:
    return {"accuracy": acc / 100, "accuracy_ci95": [0, 1], "tool_use_rate": tool, "records": 10,
            "problems": 10, "strategy_switch_rate": 0.0}  # fmt: skip


def _run(tmp_path, seed: int, overall: dict[str, float]) -> str:
    results = {}
    for name, acc in overall.items():
        by = {s: _summary(acc, tool=0.05 if s == "test_text" else 1.0) for s, _ in SPLITS}
        results[name] = {**by, OVERALL: _summary(acc)}
    d = tmp_path / f"seed{seed}"
    d.mkdir()
    (d / "results.json").write_text(
        json.dumps({"seed": seed, "results": results, "stage_seconds": {"a": 60}})
    )
    return str(d)


def test_spread_reports_every_paired_comparison_and_the_issue_targets(tmp_path):
    rows = [
        {
            "code_only": 70,
            "code_from_text": 75,
            "dualdistill": 80,
            "dualdistill_more": 80,
            "dualdistill_sd": 83,
        },
        {
            "code_only": 68,
            "code_from_text": 74,
            "dualdistill": 79,
            "dualdistill_more": 81,
            "dualdistill_sd": 82,
        },
        {
            "code_only": 72,
            "code_from_text": 73,
            "dualdistill": 81,
            "dualdistill_more": 80,
            "dualdistill_sd": 80,
        },
    ]
    dirs = [_run(tmp_path, s, r) for s, r in enumerate(rows)]
    runs = [json.loads((tmp_path / f"seed{s}" / "results.json").read_text()) for s in range(3)]
    got = {(a, b): p for a, b, _, p in comparisons(runs)}
    assert got["dualdistill", "code_only"].diffs == (10, 11, 9)
    assert got["dualdistill_sd", "dualdistill_more"].diffs == (3, 1, 0)
    assert ("union", "dualdistill") not in got  # no union student in these runs: no row
    met = {name: ok for name, ok, _ in targets(runs)}
    assert met["mean: dualdistill >= code_from_text + 3"] and met["every seed: dualdistill > code_only"]
    assert not met["mean: dualdistill_sd >= dualdistill + 2"]  # +1.67
    assert met["every seed: dualdistill_sd >= dualdistill"] is False  # seed 2: 80 < 81
    text = spread(dirs)
    assert "sample standard deviation" in text and "| dualdistill − code_only |" in text
    assert "+10.0 [+7.5, +12.5], 3 of 3 seeds > 0" in text


def test_budget_follows_the_chain_of_training_runs(tmp_path):
    def trained(name: str, init: str, steps: int, kept: int, tokens: int, epochs: float) -> None:
        d = tmp_path / "models" / name / "model"
        d.mkdir(parents=True)
        summary = {"init_model": init, "steps": steps, "stats": {"kept": kept, "trained_tokens": tokens},
                   "log_history": [{"epoch": epochs / 2}, {"epoch": epochs}]}  # fmt: skip
        (d / "train_summary.json").write_text(json.dumps(summary))

    (tmp_path / "models" / "init").mkdir(parents=True)
    trained("text_only", str(tmp_path / "models" / "init"), 100, 50, 1000, 4.0)
    trained("dualdistill", "elsewhere/models/text_only/model", 30, 20, 500, 2.0)  # relative, other cwd
    b = budget(tmp_path / "models" / "dualdistill" / "model")
    assert b == {"start": "text_only", "steps": 130, "example_passes": 240, "trained_tokens": 5000}
    assert budget(tmp_path / "models" / "text_only" / "model")["start"] == "base"
    assert budget(tmp_path / "models" / "init")["steps"] == 0


def test_steps_of_reads_a_trained_models_step_count_or_names_the_file(tmp_path):
    from dualdistill.core.records import DataError
    from dualdistill.sft.train import trained_steps

    (tmp_path / "train_summary.json").write_text(json.dumps({"steps": 568}))
    assert trained_steps(tmp_path) == 568
    with pytest.raises(DataError, match=r"train_summary\.json: not found"):
        trained_steps(tmp_path / "nope")
    (tmp_path / "train_summary.json").write_text(json.dumps({"steps": 0}))
    with pytest.raises(DataError, match="'steps' must be a positive integer"):
        trained_steps(tmp_path)
