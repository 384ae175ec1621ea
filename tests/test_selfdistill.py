"""Self-distillation: scoring, every selection branch and β boundary, cut points, provenance, resume."""

from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction

import pytest

from dualdistill import selfdistill as sd
from dualdistill.agent.loop import AgentConfig
from dualdistill.agent.record import AgentRecord
from dualdistill.compose.run import cut_after_reasoning, cut_before_answer
from dualdistill.core.records import DataError, JsonlAppender
from dualdistill.format.problems import Problem, write_problems
from dualdistill.format.trajectory import ALSO_TEXT, CODE_TO_TEXT, check_format

# ----------------------------------------------------------------------------- crafted trajectories
CODE_RIGHT = "<code>\nprint(6*7)\n</code>\n<executor>\n42\n</executor>\n<answer>\\boxed{42}</answer>"
TEXT_RIGHT = "<think>6*7 = 42</think>\nSo it is 42.\n<answer>\\boxed{42}</answer>"
TEXT_WRONG = "<think>6*7 = 41</think>\nSo it is 41.\n<answer>\\boxed{41}</answer>"
CODE_WRONG = (
    "<code>\nprint(6*7-1)\n</code>\n<executor>\n41\n</executor>\nHence:\n<answer>\\boxed{41}</answer>"
)
THINK_THEN_CODE_WRONG = (
    "<think>plan: multiply</think>\n<code>\nprint(6+7)\n</code>\n<executor>\n13\n</executor>\n"
    "<answer>\\boxed{13}</answer>"
)
ANSWER_ONLY_WRONG = "<answer>\\boxed{40}</answer>"
UNCLOSED_WRONG = "<think>6*7 is about 40"  # ran out of budget: not format-valid
ALREADY_SWITCHED_WRONG = (
    f"<code>\nprint(1)\n</code>\n<executor>\n1\n</executor>\n{CODE_TO_TEXT}\n{TEXT_WRONG}"
)
TEACHER = "<think>Six sevens are 42.</think>\n<answer>\\boxed{42}</answer>"


def make_dir(tmp_path, table: dict[str, list[tuple[str, bool]]], *, k: int | None = None, name="samples"):
    """A sampling directory as ``sample`` writes it, from {problem id: [(response, correct), ...]}."""
    out = tmp_path / name
    out.mkdir()
    problems = [Problem(pid, f"What is 6*7? ({pid})", "42", source="t") for pid in table]
    write_problems(out / sd.PROBLEMS_FILE, problems)
    k = k or max(len(v) for v in table.values())
    from dualdistill.core.config import save_config

    save_config(sd.SampleConfig(k=k), out / sd.CONFIG_FILE)
    with JsonlAppender(out / sd.SAMPLES_FILE) as app:
        for pid, rows in table.items():
            for i, (response, correct) in enumerate(rows):
                app.write(AgentRecord(pid, i, "prompt", response, n_tokens=1, correct=correct).to_dict())
    return out


def solutions(*pids: str) -> sd.TeacherSolutions:
    return sd.TeacherSolutions(by_id={p: TEACHER for p in pids})


def run(tmp_path, table, config=None, **kw) -> sd.BuildResult:
    scores = sd.load_samples(make_dir(tmp_path, table, **kw))
    return sd.select(scores, solutions(*table), config or sd.BuildConfig())


def kinds(result: sd.BuildResult) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in result.records:
        out.setdefault(r["problem_id"], set()).add(r["kind"])
    return out


def mix(n_correct: int, k: int, right=CODE_RIGHT, wrong=TEXT_WRONG) -> list[tuple[str, bool]]:
    return [(right, True)] * n_correct + [(wrong, False)] * (k - n_correct)


# ----------------------------------------------------------------------------- scoring and branches
def test_s_bar_is_exact_and_15_of_16_takes_part(tmp_path):
    # The released code incremented its counter twice, so only <= 14/16 took part. 15/16 < 1 here.
    result = run(tmp_path, {"all": mix(16, 16), "fifteen": mix(15, 16), "fourteen": mix(14, 16)})
    by_id = {s.problem.id: s.s_bar for s in result.scores}
    assert by_id == {"all": 1, "fifteen": Fraction(15, 16), "fourteen": Fraction(14, 16)}
    assert kinds(result) == {"fifteen": {"kept_correct"}, "fourteen": {"kept_correct", "repaired_wrong"}}
    assert result.counts["skipped_all_correct"] == 1 and result.counts["eligible"] == 2


def test_beta1_boundary_is_strict(tmp_path):
    # s̄ = β1 exactly: no kept_correct (s̄ > β1 is required); just above: kept.
    cfg = sd.BuildConfig(beta1=0.25, beta2=0.9)
    result = run(tmp_path, {"at": mix(1, 4), "above": mix(2, 4), "zero": mix(0, 4)}, cfg)
    assert kinds(result) == {
        "at": {"repaired_wrong"},
        "above": {"kept_correct", "repaired_wrong"},
        "zero": {"repaired_wrong"},
    }


def test_default_beta1_zero_keeps_any_single_correct(tmp_path):
    result = run(tmp_path, {"none": mix(0, 16), "one": mix(1, 16)})
    assert kinds(result) == {"none": {"repaired_wrong"}, "one": {"kept_correct", "repaired_wrong"}}


def test_beta2_boundary_is_inclusive(tmp_path):
    # s̄ = 18/20 = β2 exactly: included (s̄ <= β2); 19/20 is above it.
    result = run(tmp_path, {"at": mix(18, 20), "above": mix(19, 20), "below": mix(17, 20)})
    assert kinds(result) == {
        "at": {"kept_correct", "repaired_wrong"},
        "above": {"kept_correct"},
        "below": {"kept_correct", "repaired_wrong"},
    }


def test_one_of_each_kind_per_problem_and_last_problem_present(tmp_path):
    table = {f"p{i}": mix(3, 8) for i in range(5)}
    result = run(tmp_path, table)
    assert Counter((r["problem_id"], r["kind"]) for r in result.records) == Counter(
        {(f"p{i}", k): 1 for i in range(5) for k in ("kept_correct", "repaired_wrong")}
    )
    assert result.records[-1]["problem_id"] == "p4"  # the released code never flushed the last one


def test_no_candidates_are_counted_not_invented(tmp_path):
    table = {
        "invalid_wrongs": [(CODE_RIGHT, True), (UNCLOSED_WRONG, False), (ANSWER_ONLY_WRONG, False)],
        "switched_wrongs": [(CODE_RIGHT, True), (ALREADY_SWITCHED_WRONG, False), (ALREADY_SWITCHED_WRONG, False)],
        "invalid_right": [("<answer>\\boxed{42}</answer> trailing", True), (TEXT_WRONG, False), (TEXT_WRONG, False)],
    }  # fmt: skip
    result = run(tmp_path, table)
    assert kinds(result) == {
        "invalid_wrongs": {"kept_correct"},
        "switched_wrongs": {"kept_correct"},
        "invalid_right": {"repaired_wrong"},
    }
    assert result.counts["no_candidate_repaired_wrong"] == 2
    assert result.counts["no_candidate_kept_correct"] == 1


def test_missing_teacher_solution_is_counted(tmp_path):
    scores = sd.load_samples(make_dir(tmp_path, {"a": mix(1, 2), "b": mix(1, 2)}))
    result = sd.select(scores, solutions("a"), sd.BuildConfig())
    assert {r["problem_id"] for r in result.records} == {"a"}
    assert result.counts["no_teacher_solution_kept_correct"] == 1
    assert result.counts["no_teacher_solution_repaired_wrong"] == 1


# ----------------------------------------------------------------------------- cut points
def test_kept_correct_is_cut_before_answer_then_also_text_then_teacher(tmp_path):
    result = run(tmp_path, {"p": mix(1, 2)})
    (kept,) = [r for r in result.records if r["kind"] == "kept_correct"]
    # the released join: attempt.strip() + "\n<think>\n" + sentence + "\n\n" + solution (in its think)
    attempt = CODE_RIGHT.split("<answer>")[0].strip()
    assert kept["text"] == attempt + "\n<think>\n" + ALSO_TEXT + "\n\n" + TEACHER.removeprefix("<think>")
    assert check_format(kept["text"])


@pytest.mark.parametrize(
    ("wrong", "kept_until"),
    [
        (TEXT_WRONG, "<think>6*7 = 41</think>"),  # after the last </think>: the wrong conclusion goes
        (CODE_WRONG, "</executor>"),  # pure code, no </think>: after the last executor block
        (THINK_THEN_CODE_WRONG, "</executor>"),  # code after the last think block is kept
    ],
)
def test_repaired_wrong_cut_points(tmp_path, wrong, kept_until):
    result = run(tmp_path, {"p": [(wrong, False), (wrong, False)]})
    (rep,) = result.records
    prefix = wrong[: wrong.index(kept_until) + len(kept_until)]
    # the released join: attempt + "</think>\n" + "\n<think>\n" + sentence + "\n\n" + solution
    assert rep["text"] == prefix + "\n" + "\n<think>\n" + CODE_TO_TEXT + "\n\n" + TEACHER.removeprefix(
        "<think>"
    )
    assert "41" not in rep["text"].split(CODE_TO_TEXT)[1]
    assert check_format(rep["text"])


def test_cut_helpers_directly():
    assert cut_after_reasoning(ANSWER_ONLY_WRONG) is None
    assert cut_after_reasoning(TEXT_WRONG) == "<think>6*7 = 41</think>"
    assert cut_before_answer("no answer here") == "no answer here"


# ----------------------------------------------------------------------------- provenance, determinism
def test_provenance_fields(tmp_path):
    table = {"p": [(TEXT_WRONG, False), (CODE_RIGHT, True), (CODE_WRONG, False), (TEXT_WRONG, False)]}
    result = run(tmp_path, table)
    by_kind = {r["kind"]: r for r in result.records}
    kept, rep = by_kind["kept_correct"], by_kind["repaired_wrong"]
    assert kept["sample_index"] == 1 and kept["first_strategy"] == "code"
    assert rep["sample_index"] in (0, 2, 3)
    assert rep["first_strategy"] == ("code" if rep["sample_index"] == 2 else "text")
    for r in (kept, rep):
        assert r["problem_id"] == "p" and r["id"] == f"p#{r['kind']}"
        assert r["problem"] == "What is 6*7? (p)" and r["answer"] == "42"
        assert r["s_bar"] == 0.25 and (r["n_correct"], r["n_samples"]) == (1, 4)
        assert r["case"] == r["kind"]


def test_choice_is_seeded_and_order_independent(tmp_path):
    rows = [(f"<think>try {i}</think>\n<answer>\\boxed{{{i}}}</answer>", False) for i in range(16)]
    table = {f"p{i}": rows for i in range(12)}
    a = run(tmp_path, table)
    scores = sd.load_samples(tmp_path / "samples")
    b = sd.select(list(reversed(scores)), solutions(*table), sd.BuildConfig())
    pick = lambda res: {r["problem_id"]: r["sample_index"] for r in res.records}  # noqa: E731
    assert pick(a) == pick(b)
    other = sd.select(scores, solutions(*table), sd.BuildConfig(seed=1))
    assert pick(other) != pick(a)
    assert len(set(pick(a).values())) > 1  # not always the first sample


# ----------------------------------------------------------------------------- input errors
def test_incomplete_sampling_is_refused(tmp_path):
    d = make_dir(tmp_path, {"a": mix(1, 4), "b": mix(1, 3)}, k=4)
    with pytest.raises(DataError, match="'b' has 3 of 4 samples"):
        sd.load_samples(d)


def test_duplicate_and_unknown_records_name_the_line(tmp_path):
    d = make_dir(tmp_path, {"a": mix(1, 2)})
    with JsonlAppender(d / sd.SAMPLES_FILE) as app:
        app.write(AgentRecord("a", 1, "prompt", "x", n_tokens=1, correct=False).to_dict())
    with pytest.raises(DataError, match=r"samples.jsonl:3: duplicate sample 1 of problem 'a'"):
        sd.load_samples(d)
    d2 = make_dir(tmp_path, {"a": mix(1, 2)}, name="s2")
    with JsonlAppender(d2 / sd.SAMPLES_FILE) as app:
        app.write(AgentRecord("zzz", 0, "prompt", "x", n_tokens=1, correct=False).to_dict())
    d3 = make_dir(tmp_path, {"a": mix(1, 2)}, name="s3")
    with JsonlAppender(d3 / sd.SAMPLES_FILE) as app:
        app.write({"problem_id": "a", "sample_index": 2, "response": "x", "correct": False})  # no prompt
    with pytest.raises(DataError, match=r"samples\.jsonl:3: record has no 'prompt' field"):
        sd.load_samples(d3)
    with pytest.raises(DataError, match=r"'zzz' is not in problems\.jsonl"):
        sd.load_samples(d2)


# ----------------------------------------------------------------------------- report
def test_report_buckets_kinds_and_strategy_mix(tmp_path):
    table = {"zero": mix(0, 4, wrong=CODE_WRONG), "half": mix(2, 4), "all": mix(4, 4), "most": mix(3, 4)}
    result = run(tmp_path, table)
    rep = sd.report(result.records, result.scores, result.counts)
    assert rep["by_s_bar"]["0"] == {"problems": 1, "kept_correct": 0, "repaired_wrong": 1}
    assert rep["by_s_bar"]["(1/4, 1/2]"] == {"problems": 1, "kept_correct": 1, "repaired_wrong": 1}
    assert rep["by_s_bar"]["(1/2, 3/4]"] == {"problems": 1, "kept_correct": 1, "repaired_wrong": 1}
    assert rep["by_s_bar"]["1"]["problems"] == 1
    assert rep["by_kind"] == {"kept_correct": 2, "repaired_wrong": 3}
    assert rep["strategy_mix"]["kept_correct"] == {"code": 2, "text": 0, "none": 0}
    assert rep["strategy_mix"]["repaired_wrong"] == {"code": 1, "text": 2, "none": 0}
    json.dumps(rep)  # JSON-able


# ----------------------------------------------------------------------------- retraining
def _tiny_sft_config(**kw):
    from dualdistill.sft.train import SFTConfig

    base = dict(template="compact", max_length=256, max_steps=3, lr=1e-2, batch_size=2, logging_steps=1,
                schedule="constant", progress=False, seed=0)  # fmt: skip
    return SFTConfig(**{**base, **kw})


def _weights(model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_retrain_runs_steps_and_changes_weights(tmp_path, tiny_model_dir):
    result = run(tmp_path, {f"p{i}": mix(1, 4, wrong=CODE_WRONG) for i in range(4)})
    data = tmp_path / "sd.jsonl"
    from dualdistill.core.records import write_jsonl

    write_jsonl(data, result.records)
    out = tmp_path / "retrained"
    model_dir = sd.retrain(tiny_model_dir, data, out, _tiny_sft_config())
    summary = json.loads((model_dir / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["stats"]["kept"] == len(result.records) == 8
    # The student's own part is context (before the first transition); the teacher's part is trained.
    assert 0 < summary["stats"]["trained_tokens"] < summary["stats"]["tokens"]
    before, after = _weights(tiny_model_dir), _weights(model_dir)
    changed = [k for k in before if not torch_equal(before[k], after[k])]
    assert len(changed) > len(before) // 2
    # A rerun of the finished retrain returns it instead of training zero steps or starting over.
    assert sd.retrain(tiny_model_dir, data, out, _tiny_sft_config()) == model_dir


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_retrain_refuses_another_runs_checkpoints(tmp_path, tiny_model_dir):
    # The released second stage resumed the finished first stage's trainer state: zero epochs left.
    first_stage = tmp_path / "sft1"
    (first_stage / "checkpoint-40").mkdir(parents=True)
    data = tmp_path / "sd.jsonl"
    data.write_text('{"problem": "q", "text": "t"}\n')
    with pytest.raises(DataError, match="checkpoints of another run"):
        sd.retrain(tiny_model_dir, data, first_stage, _tiny_sft_config())
    with pytest.raises(DataError, match="holds the initial model"):
        sd.retrain(tiny_model_dir, data, tiny_model_dir.parent, _tiny_sft_config())


def test_retrain_with_zero_epochs_is_refused_when_configured():
    with pytest.raises(ValueError, match="epochs must be > 0"):
        _tiny_sft_config(max_steps=-1, epochs=0.0)


# ----------------------------------------------------------------------------- sampling and resume
def sd_problems(n=4) -> list[Problem]:
    return [Problem(f"q{i}", f"What is 6*7? ({i})", "42", source="toy") for i in range(n)]


def sd_responder(prompt: str, seed) -> str:
    """A student that writes code for even seeds (right) and wrong text for odd ones."""
    if prompt.endswith("</executor>\n"):
        return "<answer>\\boxed{42}</answer>"
    if seed % 2 == 0:
        return "<code>\nprint(6*7)\n</code>"
    return "<think>6*7 = 41</think>\n<answer>\\boxed{41}</answer>"


SAMPLE_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_selfdistill import sd_problems, sd_responder
from scripted_backend import ScriptedBackend
from dualdistill import selfdistill as sd
from dualdistill.compose.run import cut_after_reasoning, cut_before_answer
from dualdistill.agent import AgentConfig, AgentRecord
cfg = sd.SampleConfig(k=4, agent=AgentConfig(budget=200, template="compact", sandbox_concurrency=2))
sd.sample(sd_problems(), ScriptedBackend(sd_responder, delay_s=0.05), {out!r}, cfg, progress=False)
"""


def test_sample_resumes_after_sigkill_and_builds(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from scripted_backend import ScriptedBackend

    out = tmp_path / "sd"
    script = SAMPLE_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script])
    records = out / sd.SAMPLES_FILE
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (not records.exists() or records.read_text().count("\n") < 3):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = records.read_text().count("\n")
    assert 3 <= written < 16, written
    with records.open("a") as f:
        f.write('{"problem_id": "q3", "sampl')  # a line torn by the kill

    backend = ScriptedBackend(sd_responder)
    cfg = sd.SampleConfig(k=4, agent=AgentConfig(budget=200, template="compact", sandbox_concurrency=2))
    sd.sample(sd_problems(), backend, out, cfg, progress=False)
    scores = sd.load_samples(out)  # refuses duplicates and missing samples
    assert [len(s.samples) for s in scores] == [4, 4, 4, 4]
    assert len(backend.calls) <= 2 * (16 - written) + 2  # only missing trajectories were generated
    from dualdistill.agent.driver import trajectory_seed

    # Seeds come from (seed, problem, sample index); even seeds write (right) code, odd ones wrong text.
    even = {f"q{p}": [trajectory_seed(0, f"q{p}", i) % 2 == 0 for i in range(4)] for p in range(4)}
    assert {s.problem.id: [x.correct for x in s.samples] for s in scores} == even
    for s in scores:
        for x in s.samples:
            assert x.correct == ("<code>" in x.response)
    assert all(c.temperature == 0.6 and c.top_p == 0.95 for c in backend.calls)

    teacher = tmp_path / "teacher.jsonl"
    teacher.write_text("".join(json.dumps({"id": f"q{i}", "response": TEACHER}) + "\n" for i in range(4)))
    result = sd.build(out, teacher, tmp_path / "sd.jsonl")
    want = {(p, "kept_correct") for p, c in even.items() if 0 < sum(c) < 4}
    want |= {(p, "repaired_wrong") for p, c in even.items() if sum(c) < 4}
    assert {(r["problem_id"], r["kind"]) for r in result.records} == want
    assert len(want) >= 4  # the seeds give both branches
    for r in result.records:
        assert r["first_strategy"] == ("code" if r["kind"] == "kept_correct" else "text")


def test_sample_refuses_a_different_problem_set(tmp_path):
    from scripted_backend import ScriptedBackend

    cfg = sd.SampleConfig(k=1, agent=AgentConfig(tools=False, template="compact"))
    sd.sample(sd_problems(2), ScriptedBackend(sd_responder), tmp_path, cfg, progress=False)
    with pytest.raises(DataError, match="different problem set"):
        sd.sample(sd_problems(3), ScriptedBackend(sd_responder), tmp_path, cfg, progress=False)


# ----------------------------------------------------------------------------- teacher solutions
def test_teacher_file_is_graded_and_bad_solutions_counted(tmp_path):
    d = make_dir(tmp_path, {"a": mix(1, 2), "b": mix(1, 2), "c": mix(1, 2), "d": mix(1, 2)})
    lines = [
        {"id": "a", "response": TEACHER},
        {"id": "b", "response": "<think>6*7 = 43</think>\n<answer>\\boxed{43}</answer>"},  # wrong
        {"id": "c", "response": CODE_RIGHT},  # right, but code: not text feedback
        {"id": "d", "response": "<think>42"},  # malformed
        {"id": "zz", "response": TEACHER},  # a problem that was not sampled
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = sd.build(d, path, tmp_path / "out.jsonl")
    assert {r["problem_id"] for r in result.records} == {"a"}
    c = result.counts
    assert (c["teacher_read"], c["teacher_wrong"], c["teacher_not_text"], c["teacher_malformed"]) == (
        4,
        1,
        1,
        1,
    )
    assert c["teacher_unknown_problem"] == 1
    written = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert written == result.records
    side = json.loads((tmp_path / "out.jsonl.report.json").read_text())
    assert side["by_kind"] == {"kept_correct": 1, "repaired_wrong": 1}
    assert side["config"]["beta2"] == 0.9


def test_teacher_file_errors_name_the_line(tmp_path):
    d = make_dir(tmp_path, {"a": mix(1, 2)})
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": "a", "response": TEACHER}) + "\n" + json.dumps({"id": "a"}) + "\n")
    with pytest.raises(DataError, match=r"t\.jsonl:2: record needs a string 'response' field"):
        sd.build(d, path, tmp_path / "out.jsonl")


class ScriptedTextTeacher:
    """A Teacher (protocol) that is right except on problem ids listed in ``wrong``."""

    name, strategy = "scripted-text", "text"

    def __init__(self, wrong=()):
        self.wrong, self.asked = set(wrong), []

    async def solve(self, problem, previous=None):
        self.asked.append(problem.id)
        value = 0 if problem.id in self.wrong else problem.answer
        return f"<think>By hand: {value}.</think>\n<answer>\\boxed{{{value}}}</answer>"


def test_teacher_object_is_asked_only_where_needed_and_graded(tmp_path):
    d = make_dir(tmp_path, {"solved": mix(4, 4), "a": mix(1, 4), "b": mix(0, 4)})
    teacher = ScriptedTextTeacher(wrong={"b"})
    result = sd.build(d, teacher, tmp_path / "out.jsonl")
    assert sorted(teacher.asked) == ["a", "b"]
    assert {(r["problem_id"], r["kind"]) for r in result.records} == {
        ("a", "kept_correct"),
        ("a", "repaired_wrong"),
    }
    assert result.counts["teacher_wrong"] == 1 and result.counts["no_teacher_solution_repaired_wrong"] == 1
    assert all(r["text"].endswith("<answer>\\boxed{42}</answer>") for r in result.records)


# ----------------------------------------------------------------------------- CLI
def test_cli_build_report_and_errors(tmp_path):
    from typer.testing import CliRunner

    from dualdistill.cli import app

    d = make_dir(tmp_path, {"a": mix(1, 4), "b": mix(0, 4), "c": mix(4, 4)})
    teacher = tmp_path / "t.jsonl"
    teacher.write_text("".join(json.dumps({"id": p, "response": TEACHER}) + "\n" for p in "abc"))
    out = tmp_path / "sd.jsonl"
    runner = CliRunner()
    args = [
        "self-distill",
        "build",
        "--samples",
        str(d),
        "--teacher-solutions",
        str(teacher),
        "--out",
        str(out),
    ]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["by_kind"] == {"kept_correct": 1, "repaired_wrong": 2}
    res = runner.invoke(app, ["self-distill", "report", str(out), "--samples", str(d)])
    assert res.exit_code == 0 and "repaired_wrong" in res.output and "by s̄ bucket" in res.output
    res = runner.invoke(app, ["self-distill", "report", str(out), "--json"])
    assert json.loads(res.output)["counts"]["skipped_all_correct"] == 1
    (tmp_path / "bad.jsonl").write_text("{nope\n")
    res = runner.invoke(app, ["self-distill", "report", str(tmp_path / "bad.jsonl")])
    assert res.exit_code == 2 and "bad.jsonl:1: malformed JSON" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, [*args[:-1], str(tmp_path / "x.jsonl"), "--beta1", "2"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["self-distill", "train", "--help"])
    assert res.exit_code == 0 and "Example:" in res.output


def test_cli_sample_then_train_on_the_tiny_model(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from dualdistill.cli import app

    problems = tmp_path / "problems.jsonl"
    write_problems(problems, sd_problems(2))
    runner = CliRunner()
    out = tmp_path / "sd"
    res = runner.invoke(app, [
        "self-distill", "sample", "--model", str(tiny_model_dir), "--problems", str(problems), "--k", "2",
        "--budget", "12", "--no-tools", "--template", "compact", "--out", str(out), "--no-progress",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "2 problems × 2 samples" in res.output
    assert [len(s.samples) for s in sd.load_samples(out)] == [2, 2]  # a random model: graded, all wrong

    data = tmp_path / "sd.jsonl"
    result = run(tmp_path, {"p": mix(1, 2)})
    from dualdistill.core.records import write_jsonl

    write_jsonl(data, result.records)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("template: compact\nmax_length: 256\nmax_steps: 2\nlr: 0.01\nprogress: false\n")
    res = runner.invoke(app, [
        "self-distill", "train", "--model", str(tiny_model_dir), "--data", str(data), "--config", str(recipe),
        "--out", str(tmp_path / "retrained"), "batch_size=2",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "retrained" / "model" / "train_summary.json").read_text())
    assert summary["steps"] == 2
    res = runner.invoke(app, [
        "self-distill", "train", "--model", str(tiny_model_dir), "--data", str(data), "--config", str(recipe),
        "--out", str(tmp_path / "r2"), "no_such_key=1",
    ])  # fmt: skip
    assert res.exit_code == 2 and "no_such_key" in res.output


# ----------------------------------------------------------------------------- repair sources
def _pairs_file(tmp_path, attempts: dict[str, tuple[str, str]]):
    """A teach pairs file: {problem id: (code teacher's response, text teacher's response)}."""
    path = tmp_path / "pairs.jsonl"
    with JsonlAppender(path) as app:
        for pid, (code, text) in attempts.items():
            app.write({
                "id": pid, "problem": f"What is 6*7? ({pid})", "answer": "42",
                "first": {"teacher": "agentic", "strategy": "code", "response": code},
                "second": {"teacher": "text", "strategy": "text", "response": text},
            })  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("repair", "expected"),
    [
        # tool: only the code teacher was right; text: only the text one; both: both were
        ("text", {"text": "text", "both": "text"}),
        ("agentic", {"tool": "code", "both": "code"}),
        ("best", {"tool": "code", "text": "text", "both": "code"}),
    ],
)
def test_repair_source_picks_the_teacher_that_solved_it(tmp_path, repair, expected):
    from dualdistill.format.trajectory import TEXT_TO_CODE

    table = {pid: [(TEXT_WRONG, False), (TEXT_WRONG, False)] for pid in ("tool", "text", "both")}
    samples = make_dir(tmp_path, table)
    pairs = _pairs_file(
        tmp_path,
        {
            "tool": (CODE_RIGHT, TEXT_WRONG),
            "text": (CODE_WRONG, TEXT_RIGHT),
            "both": (CODE_RIGHT, TEXT_RIGHT),
        },
    )
    result = sd.build(samples, None, tmp_path / "out.jsonl", sd.BuildConfig(repair=repair), pairs=pairs)
    got = {r["problem_id"]: r["repair_strategy"] for r in result.records}
    assert got == expected
    for r in result.records:
        sentence = TEXT_TO_CODE if r["repair_strategy"] == "code" else CODE_TO_TEXT
        assert sentence in r["text"] and check_format(r["text"])
        solution = r["text"].split(sentence, 1)[1]
        assert ("print(6*7)" in solution) == (r["repair_strategy"] == "code")
    assert result.counts["no_teacher_solution_repaired_wrong"] == 3 - len(expected)


def test_a_code_solution_that_timed_out_and_guessed_right_is_not_used(tmp_path):
    lucky = (
        "<code>\nprint(7**10**15 % 9)\n</code>\n<executor>\nError: Code execution timed out.\n</executor>\n"
        "<answer>\nThe code did not finish; a guess: \\boxed{42}\n</answer>"
    )
    samples = make_dir(tmp_path, {"p": [(TEXT_WRONG, False), (TEXT_WRONG, False)]})
    pairs = _pairs_file(tmp_path, {"p": (lucky, TEXT_WRONG)})
    result = sd.build(samples, None, tmp_path / "o.jsonl", sd.BuildConfig(repair="best"), pairs=pairs)
    assert result.records == [] and result.counts["teacher_guessed"] == 1


def test_code_repair_verifies_a_kept_sample_with_also_code(tmp_path):
    from dualdistill.format.trajectory import ALSO_CODE

    samples = make_dir(tmp_path, {"p": mix(1, 2, right=TEXT_RIGHT, wrong=TEXT_WRONG)})
    pairs = _pairs_file(tmp_path, {"p": (CODE_RIGHT, TEXT_WRONG)})
    result = sd.build(samples, None, tmp_path / "o.jsonl", sd.BuildConfig(repair="best"), pairs=pairs)
    kept = next(r for r in result.records if r["kind"] == "kept_correct")
    assert ALSO_CODE in kept["text"] and ALSO_TEXT not in kept["text"]


def test_build_without_any_solutions_source_is_an_error(tmp_path):
    samples = make_dir(tmp_path, {"p": mix(1, 2)})
    with pytest.raises(ValueError, match="needs teacher solutions"):
        sd.build(samples, None, tmp_path / "o.jsonl")


def test_sample_over_a_chat_server(tmp_path):
    import sys
    from pathlib import Path

    from typer.testing import CliRunner

    from dualdistill.cli import app

    sys.path.insert(0, str(Path(__file__).parent))
    from fake_openai_server import FakeOpenAIServer, Outcome

    problems = tmp_path / "problems.jsonl"
    write_problems(problems, sd_problems(1))
    answer = Outcome(text="<answer>\n\\boxed{0}\n</answer>", reasoning="thinking")
    with FakeOpenAIServer([answer, answer]) as srv:
        res = CliRunner().invoke(app, [
            "self-distill", "sample", "--model", srv.url, "--api", "chat", "--problems", str(problems),
            "--k", "2", "--no-tools", "--template", "compact", "--out", str(tmp_path / "sd"), "--no-progress",
        ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert [r.path for r in srv.requests if r.path != "/v1/models"] == ["/v1/chat/completions"] * 2
    (score,) = sd.load_samples(tmp_path / "sd")
    assert all(s.response.startswith("<think>\nthinking\n</think>") for s in score.samples)
