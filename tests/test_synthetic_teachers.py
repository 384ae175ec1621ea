"""The programmatic teachers: format, determinism, failure modes, the real sandbox, report, CLI."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import pytest
from typer.testing import CliRunner

from dualdistill.cli.app import app
from dualdistill.format.problems import Problem
from dualdistill.format.trajectory import check_format, extract_answer, is_executor_error, strategy_facts
from dualdistill.grading.grader import grade
from dualdistill.synthetic import report as rep
from dualdistill.synthetic.families import FAMILIES, generate
from dualdistill.synthetic.teachers import (
    ProgrammaticAgenticConfig,
    ProgrammaticAgenticTeacher,
    ProgrammaticTextConfig,
    ProgrammaticTextTeacher,
)


@pytest.fixture(scope="module")
def world():
    return generate(700, seed=11)


def _accuracy_by_family(teacher: ProgrammaticTextTeacher, problems) -> dict[str, float]:
    hits = defaultdict(list)
    for p in problems:
        hits[p.metadata["family"]].append(extract_answer(teacher.solve_sync(p)) == p.answer)
    return {f: sum(v) / len(v) for f, v in hits.items()}


def test_text_teacher_format_and_determinism(world):
    teacher = ProgrammaticTextTeacher()
    for p in world[:140]:
        response = teacher.solve_sync(p)
        assert check_format(response), (response, check_format(response).reason)
        facts = strategy_facts(response)
        assert facts.first_strategy == "text" and facts.code_blocks == 0
        assert response == ProgrammaticTextTeacher().solve_sync(p)
        assert response == asyncio.run(teacher.solve(p, previous="<code>\nprint(1)\n</code>"))
    other_seed = ProgrammaticTextTeacher(ProgrammaticTextConfig(seed=1))
    assert any(other_seed.solve_sync(p) != teacher.solve_sync(p) for p in world[:140])


def test_text_teacher_methods_are_exact_and_failures_come_from_slips(world):
    """With no slips every derivation is right; with slips, long computations fail far more often."""
    assert set(
        _accuracy_by_family(ProgrammaticTextTeacher(ProgrammaticTextConfig(slip_p=0.0)), world).values()
    ) == {1.0}
    acc = _accuracy_by_family(ProgrammaticTextTeacher(), world)
    for name, fam in FAMILIES.items():
        if fam.group == "text":
            assert acc[name] >= 0.8, (name, acc)
        if fam.group == "tool":
            assert acc[name] <= 0.4, (name, acc)
    assert acc["mul_small"] > acc["mul_large"] + 0.4


def test_text_teacher_shows_its_slip_in_the_derivation():
    p = Problem("x", "Compute 4821 * 7395.", str(4821 * 7395), metadata={"family": "mul_large"})
    wrong = [ProgrammaticTextTeacher(ProgrammaticTextConfig(seed=s)).solve_sync(p) for s in range(40)]
    wrong = [r for r in wrong if extract_answer(r) != p.answer]
    assert wrong, "some seed should slip on a 4x4-digit product"
    # The derivation is consistent with its (wrong) answer: the last line of <think> states it.
    for r in wrong:
        assert f"= {extract_answer(r)}\n</think>" in r


def test_teachers_reject_foreign_questions():
    p = Problem("q", "What is the capital of France?", "Paris")
    with pytest.raises(ValueError, match="not a synthetic question"):
        ProgrammaticTextTeacher().solve_sync(p)


def _pick(world, families: list[str]) -> list[Problem]:
    return [next(p for p in world if p.metadata["family"] == f) for f in families]


def test_agentic_teacher_uses_the_real_sandbox(world):
    """Tool and mixed problems: the printed output comes back and is boxed. Huge exponents: two real
    timeouts, then a guess. (1 s timeout keeps this short; the naive programs never finish anyway.)"""
    from dualdistill.sandbox import TIMEOUT_MESSAGE

    teacher = ProgrammaticAgenticTeacher(ProgrammaticAgenticConfig(timeout_s=1.0, max_concurrency=4))
    finishing = ["mul_large", "powmod_large", "count_digits", "mul_small", "powmod_small"]
    problems = _pick(world, [*finishing, "last_digit"])

    async def main():
        try:
            return await asyncio.gather(*(teacher.solve(p) for p in problems))
        finally:
            await teacher.pool.close()

    responses = asyncio.run(main())
    for r in responses:
        assert check_format(r), (r, check_format(r).reason)
        assert strategy_facts(r).first_strategy == "code"
    for p, r in zip(problems[:-1], responses[:-1], strict=True):
        assert f"<executor>\n{p.answer}\n</executor>" in r
        assert grade(r, p.answer).correct
    timed_out = responses[-1]
    assert timed_out.count(TIMEOUT_MESSAGE) == 2 and strategy_facts(timed_out).code_blocks == 2
    assert "a guess" in timed_out and is_executor_error(timed_out)
    statuses = [c["status"] for c in teacher.tool_calls]
    assert statuses.count("ok") == len(finishing) and statuses.count("timeout") == 2
    assert all(c["duration_s"] > 0 for c in teacher.tool_calls)


def test_report_summary_and_violations():
    def o(teacher: str, family: str, ok: bool) -> rep.Outcome:
        return rep.Outcome(teacher, "id", family, FAMILIES[family].group, ok, None, "")

    outcomes = [o("synthetic-agentic", "mul_large", True)] * 9 + [o("synthetic-agentic", "mul_large", False)]
    outcomes += [o("synthetic-text", "mul_large", True)] * 5 + [o("synthetic-text", "mul_large", False)] * 5
    summary = rep.summarize(outcomes)
    assert summary["synthetic-agentic"]["mul_large"] == (9, 10)
    assert summary["synthetic-text"]["group:tool"] == (5, 10)
    violations = rep.complementary_violations(summary)
    assert violations == ["synthetic-text on mul_large (tool-favoured): 50% > 40%"]
    table = rep.markdown_table(summary)
    assert "| mul_large | tool | 90% (9/10) | 50% (5/10) |" in table


def test_cli_teachers_report_runs_both_teachers(tmp_path):
    out = tmp_path / "traj.jsonl"
    args = ["synthetic", "teachers", "--report", "--markdown", "--n", "70", "--seed", "2", "--limit", "7",
            "--timeout-s", "0.5", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| **all tool** | tool |" in result.output
    lines = out.read_text().splitlines()
    assert len(lines) == 14  # 7 problems x 2 teachers


def test_cli_teachers_bad_split_fails_cleanly():
    result = CliRunner().invoke(app, ["synthetic", "teachers", "--split", "dev"])
    assert result.exit_code == 2 and "--split must be" in result.output


def test_teach_shapes_its_sandbox_from_the_code_teachers_generation_settings(tmp_path, monkeypatch):
    """The code teacher's executor limit and session count reach the sandbox that ``teach`` opens (they
    were once ignored for separate teach-level copies): text problems' naive programs run past a 0.05 s
    CPU limit, so each block stops far below the 3 s default."""
    import dualdistill.sandbox as sandbox
    from dualdistill.agent import loop
    from dualdistill.agent.loop import AgentConfig
    from dualdistill.teachers.spec import TeacherSpec
    from dualdistill.teachers.teach import TeachConfig, teach_from_config

    opened = []

    class Recording(sandbox.SandboxPool):
        def __init__(self, config, max_concurrency, **kw):
            opened.append((config, max_concurrency))
            super().__init__(config, max_concurrency=max_concurrency, **kw)

    monkeypatch.setattr(loop, "SandboxPool", Recording)  # make_pool opens the pool
    generation = AgentConfig(executor_timeout_s=0.05, executor_limit="cpu", sandbox_concurrency=3)
    config = TeachConfig(code_teacher=TeacherSpec(kind="programmatic", generation=generation))
    text_problems = [p for p in generate(200, seed=5) if FAMILIES[p.metadata["family"]].group == "text"]
    asyncio.run(teach_from_config(text_problems[:3], config, tmp_path, progress=False))

    [(used, sessions)] = opened
    assert (used.timeout_s, used.limit, sessions) == (0.05, "cpu", 3)
    records = [json.loads(x) for x in (tmp_path / "records.jsonl").open()]
    codes = [r["response"] for r in records if r["strategy"] == "code"]
    assert codes and all("timed out. (limit: 0.05 s of CPU time)" in r for r in codes), codes
