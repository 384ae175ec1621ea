"""The grader: equivalent forms accepted, near misses rejected, timeouts clean, batches, and the CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualdistill.cli.app import app
from dualdistill.grading import grader as grading
from dualdistill.grading.grader import Verdict, answers_match, fast_match, grade, grade_many

ROOT = Path(__file__).resolve().parents[1]
PATHOLOGICAL = "9^{9^{9^{9}}}"  # sympy tries to evaluate this tower and never finishes

# (gold, final answer): the same value written another way. Each must be accepted.
EQUIVALENT = [
    ("\\frac{1}{2}", "1/2"), ("\\frac{1}{2}", "0.5"), ("1/2", "\\dfrac{1}{2}"), ("0.5", "\\tfrac12"),
    ("1234", "1,234"), ("1,234", "1234"), ("1234567", "1,234,567"), ("1234", "1\\,234"),
    ("1234", "1 234"), ("-\\frac{3}{4}", "\\frac{-3}{4}"), ("-0.75", "-\\frac{3}{4}"), ("142", "142.0"),
    ("7", "07"), ("5", "x = 5"), ("x=5", "5"), ("x = 5", "x=5"), ("5", "5 \\text{ cm}"),
    ("12", "12 dollars"), ("12", "\\$12"), ("30", "30^\\circ"), ("30^\\circ", "30°"), ("45", "45^{\\circ}"),
    ("(1,2)", "(1, 2)"), ("(3, \\frac{\\pi}{2})", "\\left(3, \\frac{\\pi}{2}\\right)"),
    ("(1,234)", "(1, 234)"), ("[1,2)", "[1, 2)"), ("(-\\infty, 3]", "(-\\infty,3]"),
    ("\\{1,2\\}", "\\{2,1\\}"), ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"), ("2\\sqrt{2}", "\\sqrt{8}"),
    ("p - q", "-q + p"), ("\\text{Evelyn}", "Evelyn"), ("\\text{(C)}", "C"), ("10\\%", "10\\%"),
    ("1/3", "0.333333"), ("2", "\\sqrt{4}"), ("\\frac{14}{3}", "\\frac{28}{6}"),
]  # fmt: skip

# (gold, final answer): close to the gold but wrong. Each must be rejected.
NEAR_MISS = [
    ("1", "10"), ("12", "2012"), ("0.5", "0.05"), ("10", "1"), ("2012", "12"), ("1", "11"), ("100", "1000"),
    ("3", "-3"), ("-3", "3"), ("12", "12.5"), ("12", "12.0001"), ("1/2", "1/3"),
    ("\\frac{1}{2}", "\\frac{2}{1}"), ("0.25", "25"), ("1,234", "1,235"), ("1234", "123"), ("1", "1,000"),
    ("(1,2)", "(2,1)"), ("[1,2)", "[1,2]"), ("(1,2)", "(1,3)"), ("x = 5", "x = -5"), ("5", "x = 6"),
    ("\\sqrt{2}", "2"), ("2\\sqrt{2}", "\\sqrt{2}"), ("\\pi", "3.14"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt{2}}{2}"), ("30", "3"), ("30^\\circ", "300"), ("5", "5 thousand"),
    ("5", "5\\pi"), ("0.3333", "1/3"), ("\\text{(C)}", "D"), ("12", "12 \\text{ and } 13"),
    ("p - q", "q - p"), ("\\{1,2\\}", "\\{1,2,3\\}"),
]  # fmt: skip


def response(answer: str) -> str:
    return f"<think>\nWork.\n</think>\n<answer>\nSo the answer is \\boxed{{{answer}}}.\n</answer>"


def test_case_counts() -> None:
    assert len(EQUIVALENT) >= 30 and len(NEAR_MISS) >= 30


@pytest.mark.parametrize(("gold", "pred"), EQUIVALENT)
def test_equivalent_forms_pass(gold: str, pred: str) -> None:
    v = grade(response(pred), gold)
    assert (v.status, v.correct, v.extracted) == ("ok", True, pred)


@pytest.mark.parametrize(("gold", "pred"), NEAR_MISS)
def test_near_misses_fail(gold: str, pred: str) -> None:
    v = grade(response(pred), gold)
    assert (v.status, v.correct, v.extracted) == ("ok", False, pred)


@pytest.mark.parametrize(("gold", "pred"), EQUIVALENT[:12] + NEAR_MISS[:12])
def test_answers_match_agrees_with_grade(gold: str, pred: str) -> None:
    assert answers_match(pred, gold) == ((gold, pred) in EQUIVALENT)


def test_fast_path_decides_plain_numbers_and_defers_the_rest() -> None:
    assert fast_match("1,234", "1234") is True
    assert fast_match("10", "1") is False
    assert fast_match("0.05", "0.5") is False
    assert fast_match("0.333333", "1/3") is None  # rounding question: math-verify's call
    assert fast_match("\\sqrt{2}", "2") is None
    assert fast_match("y = 5", "x = 5") is None  # different variables: not decided by clean-up
    assert fast_match("5 m", "5") is None  # a single bare letter may be a product, not a unit
    assert fast_match("1" * 5000, "1" * 5000) is True  # past int()'s digit limit, still exact
    assert fast_match("1" * 5000, "1" * 4999 + "2") is None


def test_integer_batch_never_imports_math_verify() -> None:
    code = (
        "import sys\n"
        "from dualdistill.grading import grade_many\n"
        "v = grade_many([('\\\\boxed{%d}' % i, str(i % 7)) for i in range(300)])\n"
        "assert sum(x.correct for x in v) == sum(1 for i in range(300) if i == i % 7)\n"
        "assert 'math_verify' not in sys.modules, 'math-verify was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_statuses_for_missing_answer_and_bad_input() -> None:
    assert grade("I give up.", "3") == Verdict(False, None, "no_answer")
    assert grade("<answer>\\boxed{ }</answer>", "3").status == "no_answer"
    assert grade(response("142"), 142.0).correct  # a non-string gold is compared as text
    assert grade(response("3"), "  ").status == "error"
    with pytest.raises(ValueError, match="timeout"):
        grade(response("3"), "3", timeout=0)


def test_extraction_order_is_used() -> None:
    tool_only = "<code>\nprint(6 * 7)\n</code>\n<executor>\n42\n</executor>\n"
    assert grade(tool_only, "42").correct
    boxed_outside = "Thus \\boxed{7}. <answer>\nit is \\boxed{8}\n</answer>"
    assert grade(boxed_outside, "8").correct and not grade(boxed_outside, "7").correct


def test_pathological_input_times_out_cleanly_and_the_pool_recovers() -> None:
    start = time.monotonic()
    v = grade(response(PATHOLOGICAL), "1", timeout=1.0)
    elapsed = time.monotonic() - start
    assert v.status == "timeout" and not v.correct and v.extracted == PATHOLOGICAL
    assert 1.0 <= v.duration_s < 3.0 and elapsed < 30  # the worker is killed at its deadline
    after = grade(response("\\frac{\\sqrt{3}}{2}"), "\\frac{1}{2}\\sqrt{3}")  # a fresh worker serves
    assert (after.status, after.correct, after.method) == ("ok", True, "math_verify")


def test_batch_keeps_order_uses_workers_and_isolates_a_timeout() -> None:
    pairs = [(response(p), g) for g, p in EQUIVALENT[:20]] + [(response(PATHOLOGICAL), "1")]
    pairs += [(response(p), g) for g, p in NEAR_MISS[:20]] + [("no answer", "2")]
    seen: list[int] = []
    verdicts = grade_many(pairs, timeout=2.0, workers=2, progress=seen.append)
    assert [v.correct for v in verdicts] == [True] * 20 + [False] * 22
    assert [v.status for v in verdicts].count("timeout") == 1 and verdicts[20].status == "timeout"
    assert verdicts[-1].status == "no_answer"
    assert {v.method for v in verdicts[:20]} == {"exact", "math_verify"}  # both paths exercised
    assert sum(seen) == len(pairs)
    assert max(v.duration_s for v in verdicts) < 2.0 + 1.5


def test_grading_from_a_worker_thread() -> None:
    # The agent grades from a thread, where math-verify's signal alarm cannot work; ours must.
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(grade, response(PATHOLOGICAL), "1", timeout=1.0).result(timeout=60)
        ok = pool.submit(grade, response("(1, 2)"), "(1,2)").result(timeout=60)
        direct = pool.submit(answers_match, "\\sqrt{8}", "2\\sqrt{2}").result(timeout=60)
    assert slow.status == "timeout" and ok.correct and direct


def test_a_worker_killed_from_outside_is_an_error_not_a_hang() -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(grade, response(PATHOLOGICAL), "1", timeout=60.0)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            busy = [w for w in grading._shared._live if w.job] if grading._shared else []
            if busy:
                os.kill(busy[0].proc.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        v = future.result(timeout=30)  # long before the 60 s item timeout
    assert (v.status, v.message, v.correct) == ("error", "worker died", False)
    assert grade(response("(1, 2)"), "(1,2)").correct  # the pool replaced the dead worker


def test_duplicate_comparisons_run_once() -> None:
    pairs = [(response("\\sqrt{8}"), "2\\sqrt{2}")] * 5
    verdicts = grade_many(pairs)
    assert all(v is verdicts[0] for v in verdicts) and verdicts[0].correct


# ----------------------------------------------------------------------------- reference rule
def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_grading", ROOT / "bench" / "grading.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_rule_accepts_near_misses_that_we_reject() -> None:
    bench = _bench_module()
    for gold, pred in [("1", "10"), ("12", "2012"), ("2", "-2")]:
        assert bench.reference_correct(response(pred), gold)
        assert not grade(response(pred), gold).correct
    assert bench.reference_correct(response("1,234"), "1234") and grade(response("1,234"), "1234").correct


# ----------------------------------------------------------------------------- CLI
def _write_jsonl(path: Path, rows: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_cli_grades_a_file_end_to_end(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "response": response("1/2"), "answer": "0.5"},
        {"id": "b", "response": response("10"), "answer": 1},
        {"id": "c", "response": "no box here", "answer": "4"},
        {"id": "d", "response": response("142"), "answer": 142.0},
    ]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_jsonl(src, rows)
    result = CliRunner().invoke(app, ["grade", "--input", str(src), "--output", str(out), "--timeout", "5"])
    assert result.exit_code == 0, result.output
    graded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(g["id"], g["correct"], g["status"]) for g in graded] == [
        ("a", True, "ok"), ("b", False, "ok"), ("c", False, "no_answer"), ("d", True, "ok"),
    ]  # fmt: skip
    assert graded[0]["extracted"] == "1/2" and graded[2]["extracted"] is None
    assert "grading summary" in result.output and "no_answer" in result.output
    assert "correct" in result.output and "50.0%" in result.output


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "in.jsonl:2: malformed JSON"),
        (json.dumps({"answer": "3"}), "in.jsonl:2: field 'response' is missing"),
        (json.dumps({"response": "x"}), "in.jsonl:2: field 'answer' is missing or empty"),
        (json.dumps({"response": 5, "answer": "3"}), "in.jsonl:2: field 'response' is not a string"),
    ],
)
def test_cli_bad_input_names_file_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    src = tmp_path / "in.jsonl"
    _write_jsonl(src, [{"response": response("3"), "answer": "3"}, line])
    result = CliRunner().invoke(app, ["grade", "--input", str(src), "--output", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.jsonl").exists()
