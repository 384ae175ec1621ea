"""Evaluation: metric math, report files, resume checks, regrading, and `dualdistill eval` end to end."""

from __future__ import annotations

import itertools
import json
import math

import pytest
from typer.testing import CliRunner

from dualdistill.agent.loop import AgentConfig
from dualdistill.backends import BackendConfig
from dualdistill.cli.app import app
from dualdistill.core.config import ConfigError
from dualdistill.core.records import read_jsonl, write_jsonl
from dualdistill.evaluate.metrics import k_values, maj_at_k, pass_at_k, summarize, summarize_by_source
from dualdistill.evaluate.report import write_report
from dualdistill.evaluate.run import EvalConfig, regrade, run_eval
from dualdistill.format.problems import Problem, write_problems
from dualdistill.format.trajectory import TEXT_TO_CODE, executor_block
from scripted_backend import ScriptedBackend


# ----------------------------------------------------------------------------- metric math
def brute_pass_at_k(n: int, c: int, k: int) -> float:
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_matches_brute_force(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k)), (n, c, k)


def test_pass_at_1_is_the_share_correct_and_k_above_n_is_refused():
    assert pass_at_k(16, 5, 1) == pytest.approx(5 / 16)
    with pytest.raises(ValueError, match="at least 3"):
        pass_at_k(2, 1, 3)


def test_k_values():
    assert k_values(1) == [1]
    assert k_values(5) == [1, 2, 4, 5]
    assert k_values(16) == [1, 2, 4, 8, 16]


def rec(pid, i, correct, extracted, response="<answer>x</answer>", **kw):
    return {
        "problem_id": pid, "sample_index": i, "correct": correct, "extracted": extracted,
        "response": response, "n_tokens": 10, "tool_calls": [], "gen_time_s": 1.0, "tool_time_s": 0.0,
        "finish_reason": "answer", "source": "b", "gold": "1", **kw,
    }  # fmt: skip


def test_maj_at_k_majority_ties_and_missing_answers():
    rs = [rec("p", 0, False, "2"), rec("p", 1, True, "1"), rec("p", 2, True, " 1"), rec("p", 3, False, "2")]
    assert maj_at_k(rs, 3) == 1.0  # "1" twice (whitespace ignored) beats "2" once
    assert maj_at_k(rs, 4) == 0.5  # a 2-2 tie: expected score of a random pick
    assert maj_at_k(rs, 1) == 0.0
    assert maj_at_k([rec("p", 0, False, None), rec("p", 1, True, "1")], 2) == 1.0  # no answer: no vote
    assert maj_at_k([rec("p", 0, False, None)], 1) == 0.0


def test_summarize_hand_computed():
    code = "<code>\nprint(1)\n</code>" + executor_block("1")
    switch = f"<think>t</think>{TEXT_TO_CODE}{code}<answer>\\boxed{{1}}</answer>"
    records = [
        rec("a", 0, True, "1", response=code + "<answer>\\boxed{1}</answer>",
            tool_calls=[{"status": "ok", "duration_s": 0.1}], tool_time_s=1.0),
        rec("a", 1, True, "1"),
        rec("b", 0, False, "3", response=switch, tool_calls=[{"status": "error", "duration_s": 0.1}],
            tool_time_s=2.0),
        rec("b", 1, True, "1"),
    ]  # fmt: skip
    s = summarize(records)
    assert s["problems"] == 2 and s["records"] == 4 and s["samples_per_problem"] == 2
    assert s["accuracy"] == pytest.approx(0.75)  # problem scores 1.0 and 0.5
    half = 1.96 * math.sqrt(((0.25**2) * 2) / 1 / 2)  # sample sd over problems / sqrt(N)
    assert s["accuracy_ci95"] == pytest.approx([0.75 - half, 1.0])  # clipped at 1
    assert s["pass_at_k"] == {"1": pytest.approx(0.75), "2": 1.0}
    assert s["maj_at_k"]["1"] == pytest.approx(0.5) and s["maj_at_k"]["2"] == pytest.approx(0.75)
    assert s["tool_use_rate"] == 0.5 and s["strategy_switch_rate"] == 0.25
    assert s["executor_status_counts"] == {"error": 1, "ok": 1}
    assert s["tool_time_share"] == pytest.approx(3.0 / 7.0)
    assert s["mean_tokens"] == 10


def test_summarize_counts_problems_without_records():
    s = summarize([rec("a", 0, True, "1")], {"a": None, "b": None})
    assert s["missing_problems"] == 1 and s["problems"] == 1
    assert summarize([])["records"] == 0


def test_write_report_files(tmp_path):
    summaries = summarize_by_source([rec("a", 0, True, "1"), {**rec("a", 0, False, "2"), "source": "c"}])
    assert list(summaries) == ["b", "c"]
    write_report(tmp_path, summaries, meta={"model": "m"})
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["benchmarks"]["b"]["accuracy"] == 1.0 and data["model"] == "m"
    md = (tmp_path / "report.md").read_text()
    assert "| b | 1 | 1 | 100.0" in md and "| c | 1 | 1 | 0.0" in md
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- runs
def toy_benchmark(path, n=4):
    problems = [Problem(f"t{i}", f"Toy {i}: what is {i} + {i}?", str(2 * i)) for i in range(n)]
    write_problems(path, problems)
    return path


def toy_responder(prompt, seed):
    i = int(prompt.split("Toy ")[1].split(":")[0])
    value = 2 * i if i % 2 == 0 else -1  # even problems right, odd wrong
    return f"<think>add</think><answer>\\boxed{{{value}}}</answer>"


def toy_config(bench, **agent):
    return EvalConfig(
        backend=BackendConfig(model="scripted"),
        benches=[str(bench)],
        samples=2,
        agent=AgentConfig(tools=False, **agent),
    )


def test_run_eval_writes_everything_and_resumes(tmp_path):
    bench = toy_benchmark(tmp_path / "toy.jsonl")
    out = tmp_path / "run"
    summaries = run_eval(toy_config(bench), out, backend=ScriptedBackend(toy_responder), progress=False)
    assert summaries["toy"]["accuracy"] == 0.5 and summaries["toy"]["records"] == 8
    for name in ("records.jsonl", "config.yaml", "report.json", "report.md", "report.png"):
        assert (out / name).exists(), name
    again = ScriptedBackend(toy_responder)
    assert run_eval(toy_config(bench), out, backend=again, progress=False) == summaries
    assert again.calls == []
    with pytest.raises(ConfigError, match=r"agent.budget"):
        run_eval(toy_config(bench, budget=17), out, backend=again, progress=False)


def test_regrade_rewrites_verdicts_without_generating(tmp_path):
    bench = toy_benchmark(tmp_path / "toy.jsonl")
    out = tmp_path / "run"
    run_eval(toy_config(bench), out, backend=ScriptedBackend(toy_responder), progress=False)
    rows = [r for _, r in read_jsonl(out / "records.jsonl")]
    write_jsonl(out / "records.jsonl", [{**r, "correct": not r["correct"], "extracted": None} for r in rows])
    summaries = regrade(out)
    assert summaries["toy"]["accuracy"] == 0.5
    assert [r for _, r in read_jsonl(out / "records.jsonl")] == rows
    assert json.loads((out / "report.json").read_text())["regraded"] is True


def test_cli_errors_are_clear(tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        app, ["eval", "--model", str(tmp_path), "--bench", "nope", "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2 and "unknown benchmark 'nope'" in res.output
    res = runner.invoke(
        app, ["eval", "--model", str(tmp_path / "missing"), "--bench", "amc", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "model not found" in res.output
    res = runner.invoke(app, ["eval", "--regrade", str(tmp_path / "none")])
    assert res.exit_code == 2 and "no records" in res.output
    assert "Example:" in runner.invoke(app, ["eval", "--help"]).output


def test_cli_eval_on_the_tiny_model_over_every_benchmark(tiny_model_dir, tmp_path):
    out = tmp_path / "eval"
    args = ["eval", "--model", str(tiny_model_dir), "--bench", "math500,aime2025,amc,combinatorics300",
            "--limit", "3", "--samples", "1", "--budget", "64", "--template", "compact", "--no-progress",
            "--out", str(out)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = [r for _, r in read_jsonl(out / "records.jsonl")]
    assert len(rows) == 12 and {r["source"] for r in rows} == {
        "math500",
        "aime2025",
        "amc",
        "combinatorics300",
    }
    for r in rows:
        assert 0 < r["n_tokens"] <= 64 + 2000 and r["finish_reason"] in ("budget", "stop", "answer")
        assert r["grade_status"] in ("ok", "no_answer", "timeout", "error")
    report = json.loads((out / "report.json").read_text())
    assert set(report["benchmarks"]) == {"math500", "aime2025", "amc", "combinatorics300"}
    assert all(s["problems"] == 3 for s in report["benchmarks"].values())
    assert (out / "report.png").exists() and "math500" in (out / "report.md").read_text()


def test_cli_eval_over_a_server_that_goes_down_keeps_finished_records(tmp_path):
    from fake_openai_server import FakeOpenAIServer, Outcome

    bench = toy_benchmark(tmp_path / "toy.jsonl", n=6)
    out = tmp_path / "run"
    answer = Outcome(text="<answer>\\boxed{0}", stop_reason="</answer>")
    args = ["eval", "--bench", str(bench), "--no-tools", "--concurrency", "1", "--max-retries", "1",
            "--no-progress", "--out", str(out)]  # fmt: skip
    with FakeOpenAIServer([answer] * 3) as srv:  # three answers, then 500 for ever
        url = srv.url
        res = CliRunner().invoke(app, ["eval", "--model", f"{url}#fake-model", *args[1:]])
    assert res.exit_code == 2, res.output
    assert url in res.output and "500" in res.output
    assert len(list(read_jsonl(out / "records.jsonl"))) == 3
    with FakeOpenAIServer([answer] * 3) as srv:  # back up: only the missing three are asked for
        res = CliRunner().invoke(app, ["eval", "--model", f"{srv.url}#fake-model", *args[1:]])
        assert res.exit_code == 0, res.output
        assert len([r for r in srv.requests if r.path.endswith("/completions")]) == 3
    rows = [r for _, r in read_jsonl(out / "records.jsonl")]
    assert sorted(r["problem_id"] for r in rows) == [f"t{i}" for i in range(6)]
    assert sum(r["correct"] for r in rows) == 1  # only t0 has the answer 0


def test_regrade_names_a_record_without_its_field(tmp_path):
    bench = toy_benchmark(tmp_path / "toy.jsonl", n=2)
    out = tmp_path / "run"
    run_eval(toy_config(bench), out, backend=ScriptedBackend(toy_responder), progress=False)
    rows = [r for _, r in read_jsonl(out / "records.jsonl")]
    del rows[1]["gold"]
    write_jsonl(out / "records.jsonl", rows)
    res = CliRunner().invoke(app, ["eval", "--regrade", str(out)])
    assert res.exit_code == 2 and "records.jsonl:2" in res.output and "'gold'" in res.output


def test_summary_does_not_depend_on_record_order():
    import random

    from dualdistill.evaluate.metrics import summarize

    rng = random.Random(0)
    records = [
        {"problem_id": f"p{i}", "sample_index": j, "correct": rng.random() < 0.3, "response": "x"}
        for i in range(97)
        for j in range(3)
    ]
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    assert summarize(records) == summarize(shuffled)
