"""Composition: the four cases, transitions both ways, the answer cut, cleaning, decontamination, balancing."""

from __future__ import annotations

import json
import re

import pytest

from dualdistill.compose.run import (
    BalanceConfig,
    ComposeConfig,
    Composed,
    Transitions,
    balance,
    cell_counts,
    compose,
    compose_file,
    compose_pair,
    cut_before_answer,
    find_contaminated,
)
from dualdistill.core.records import DataError
from dualdistill.format import trajectory as tj
from dualdistill.format.pairs import Attempt, Pair, read_pairs
from dualdistill.format.problems import load_benchmark

CODE = "<code>\nprint(6*7)\n</code>\n<executor>\n42\n</executor>\n<answer>\n\\boxed{42}\n</answer>"
CODE_WRONG = "<code>\nprint(6*8)\n</code>\n<executor>\n48\n</executor>\n<answer>\n\\boxed{48}\n</answer>"
TEXT = "<think>\n6 times 7 is 42.\n</think>\n<answer>\nSo \\boxed{42}\n</answer>"
TEXT_WRONG = "<think>\n6 times 7 is 41.\n</think>\n<answer>\nSo \\boxed{41}\n</answer>"


def exact_grader(items):
    """Compare the extracted answer with the gold string (the real grader is tested elsewhere)."""
    return [tj.extract_answer(r) == g for r, g in items]


def pair(y1, y2, s1="code", s2="text", pid="p1", t1="agentic", t2="r1", question="What is 6 times 7?"):
    return Pair(pid, question, "42", Attempt(t1, s1, y1), Attempt(t2, s2, y2))


# ----------------------------------------------------------------------------- the four cases
def test_wrong_right_code_to_text():
    c = compose_pair(pair(CODE_WRONG, TEXT), g1=False, g2=True)
    assert c.case == "wrong_right"
    assert c.transition == tj.CODE_TO_TEXT
    assert c.text == cut_before_answer(CODE_WRONG).rstrip() + "\n\n" + tj.CODE_TO_TEXT + "\n\n" + TEXT
    assert "\\boxed{48}" not in c.text  # the wrong answer block is cut
    assert c.text.count("<answer>") == 1 and tj.extract_answer(c.text) == "42"
    assert tj.check_format(c.text).valid
    assert tj.strategy_facts(c.text).first_strategy == "code"


def test_wrong_right_text_to_code():
    c = compose_pair(pair(TEXT_WRONG, CODE, s1="text", s2="code", t1="r1", t2="agentic"), g1=False, g2=True)
    assert c.case == "wrong_right" and c.transition == tj.TEXT_TO_CODE
    assert c.text.startswith("<think>\n6 times 7 is 41.\n</think>\n\n" + tj.TEXT_TO_CODE + "\n\n<code>")
    assert tj.check_format(c.text).valid and tj.extract_answer(c.text) == "42"
    assert c.first_teacher == "r1" and c.second_teacher == "agentic" and c.first_strategy == "text"


@pytest.mark.parametrize(
    ("s1", "s2", "y1", "y2", "expected"),
    [("code", "text", CODE, TEXT, tj.ALSO_TEXT), ("text", "code", TEXT, CODE, tj.ALSO_CODE)],
)
def test_right_right_uses_verification_sentence(s1, s2, y1, y2, expected):
    c = compose_pair(pair(y1, y2, s1=s1, s2=s2), g1=True, g2=True)
    assert c.case == "right_right" and c.transition == expected
    assert expected in c.text and c.text.count("<answer>") == 1
    assert tj.check_format(c.text).valid


@pytest.mark.parametrize("code_first", [True, False])
def test_right_right_modes(code_first):
    """paper: y1 + also + y2; first: y1 alone; tool_last: text, ALSO_CODE, code whatever the teachers'
    order (the tool has the last word); code: the code attempt alone. The case stays right_right."""
    p = pair(CODE, TEXT) if code_first else pair(TEXT, CODE, s1="text", s2="code", t1="r1", t2="agentic")
    texts = {
        mode: compose_pair(p, True, True, right_right=mode)
        for mode in ("paper", "first", "tool_last", "code")
    }
    assert all(c.case == "right_right" for c in texts.values())
    assert texts["first"].text == p.first.response and texts["first"].transition is None
    assert texts["code"].text == CODE and texts["code"].transition is None
    last = texts["tool_last"]
    assert last.transition == tj.ALSO_CODE
    assert last.text == cut_before_answer(TEXT).rstrip() + "\n\n" + tj.ALSO_CODE + "\n\n" + CODE
    assert tj.check_format(last.text).valid and tj.extract_answer(last.text) == "42"
    # The paper's order follows the teachers': a code-first pair ends in the text check.
    assert texts["paper"].transition == (tj.ALSO_TEXT if code_first else tj.ALSO_CODE)
    assert (texts["paper"].text == last.text) == (not code_first)


@pytest.mark.parametrize("code_first", [True, False])
def test_first_strategy_names_what_the_text_opens_with(code_first):
    """After tool_last puts the text attempt first, the record says so (it named the teachers' y1)."""
    p = pair(CODE, TEXT) if code_first else pair(TEXT, CODE, s1="text", s2="code", t1="r1", t2="agentic")
    for mode in ("paper", "first", "tool_last", "code"):
        c = compose_pair(p, True, True, right_right=mode)
        opens = tj.strategy_facts(c.text).first_strategy
        assert c.first_strategy == opens, mode
        assert c.first_teacher == ("agentic" if opens == "code" else "r1"), mode
        assert (c.g1, c.g2) == (True, True)


def test_a_right_guess_after_failed_code_is_wrong_in_compose_and_singles(tmp_path):
    """One rule: a code attempt whose answer is a guess after a timeout is not a right attempt."""
    from dualdistill.compose.run import singles

    guess = (
        "<code>\nwhile 1: pass\n</code>\n<executor>\nError: Code execution timed out.\n</executor>\n"
        "<answer>\nThe code did not finish; a guess: \\boxed{42}\n</answer>"
    )
    pairs = [pair(guess, TEXT, pid="a"), pair(guess, TEXT_WRONG, pid="b"), pair(CODE, TEXT, pid="c")]
    records, report = compose(pairs, ComposeConfig(decontaminate=False), exact_grader)
    assert report.guessed == 2
    by_id = {r.id: r for r in records}
    assert by_id["a"].case == "wrong_right" and by_id["a"].g1 is False  # the guess is y1, switched from
    assert "b" not in by_id  # a guess and a wrong text: dropped
    assert by_id["c"].case == "right_right"
    sets = singles(
        pairs,
        exact_grader([(q.first.response, "42") for q in pairs] + [(q.second.response, "42") for q in pairs]),
    )
    assert [e.id for e in sets["code"]] == ["c"]
    assert sorted(e.id for e in sets["union"]) == ["a", "c", "c"]
    assert all(guess not in e.text for e in sets["union"])


def test_right_right_mode_is_a_compose_setting():
    pairs = [pair(CODE, TEXT, pid="a"), pair(CODE_WRONG, TEXT, pid="b")]
    records, _ = compose(pairs, ComposeConfig(decontaminate=False, right_right="tool_last"), exact_grader)
    by_id = {r.id: r for r in records}
    assert by_id["a"].text.endswith(CODE) and tj.ALSO_CODE in by_id["a"].text
    assert (
        by_id["b"].case == "wrong_right" and by_id["b"].transition == tj.CODE_TO_TEXT
    )  # other cases as the paper


def test_right_only_keeps_y1_whole_and_dropped_is_empty():
    c = compose_pair(pair(CODE, TEXT_WRONG), g1=True, g2=False)
    assert (c.case, c.text, c.transition) == ("right_only", CODE, None)
    d = compose_pair(pair(CODE_WRONG, TEXT_WRONG), g1=False, g2=False)
    assert (d.case, d.text) == ("dropped", "")


def test_custom_transitions_are_used():
    t = Transitions(code_to_text="SWITCH-CT", also_code="ALSO-C")
    assert "SWITCH-CT" in compose_pair(pair(CODE_WRONG, TEXT), False, True, t).text
    c = compose_pair(pair(TEXT, CODE, s1="text", s2="code"), True, True, t)
    assert c.transition == "ALSO-C"


# ----------------------------------------------------------------------------- answer-block cut
def test_cut_before_answer_drops_answer_and_what_follows():
    assert cut_before_answer(TEXT) == "<think>\n6 times 7 is 42.\n</think>\n"
    no_answer = "<code>\nprint(1)\n</code>\n<executor>\n1\n</executor>\n"
    assert cut_before_answer(no_answer) == no_answer  # nothing to cut: kept whole
    assert cut_before_answer("<think>a</think><answer>\\boxed{1}</answer> trailing") == "<think>a</think>"


# ----------------------------------------------------------------------------- reading pairs
def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_read_pairs_infers_strategy_and_names_bad_lines(tmp_path):
    ok = {"id": "a", "problem": "q", "answer": "1",
          "first": {"teacher": "t1", "response": CODE}, "second": {"teacher": "t2", "response": TEXT}}  # fmt: skip
    (p,) = read_pairs(_write(tmp_path / "ok.jsonl", [ok]))
    assert (p.first.strategy, p.second.strategy) == ("code", "text")
    bad = dict(ok, second={"teacher": "t2"})
    with pytest.raises(DataError, match=r"bad\.jsonl:2: key 'second\.response'"):
        read_pairs(_write(tmp_path / "bad.jsonl", [ok | {"id": "b"}, bad]))
    same = dict(ok, first={**ok["first"], "strategy": "text"}, second={**ok["second"], "strategy": "text"})
    with pytest.raises(DataError, match="both attempts use strategy 'text'"):
        read_pairs(_write(tmp_path / "same.jsonl", [same]))
    with pytest.raises(DataError, match="duplicate id 'a'"):
        read_pairs(_write(tmp_path / "dup.jsonl", [ok, ok]))


# ----------------------------------------------------------------------------- decontamination
def test_decontamination_catches_near_copies_only():
    bench = load_benchmark("aime2025")[0]
    near = bench.question.replace(".", "!", 1)[:-3]  # a couple of edits: ratio well above 90
    unrelated = "How many ways are there to tile a 2 by 10 strip with dominoes?"
    found = find_contaminated([unrelated, near, bench.question], ["aime2025", "math500"], ids=["u", "n", "x"])
    assert [f.id for f in found] == ["n", "x"]
    assert all(f.benchmark == "aime2025" and f.benchmark_id == bench.id for f in found)
    assert found[1].score == 100.0 and 90 < found[0].score < 100
    # the threshold is respected: a high threshold lets the near copy through
    strict = find_contaminated([near], ["aime2025"], threshold=found[0].score + 0.5)
    assert strict == []


# ----------------------------------------------------------------------------- balancing
def _composed(teacher, case, strategy, i):
    return Composed(f"{teacher}-{case}-{i}", "q", "1", "t", case, teacher, "x", strategy, None, True, True)


def _population():
    recs = []
    spec = {("agentic", "wrong_right", "code"): 10, ("agentic", "right_right", "code"): 30,
            ("r1", "wrong_right", "text"): 6, ("r1", "right_only", "text"): 40}  # fmt: skip
    for (teacher, case, strategy), n in spec.items():
        recs += [_composed(teacher, case, strategy, i) for i in range(n)]
    return recs


def test_balance_over_cells_meets_shares():
    recs = _population()
    shares = {"agentic/wrong_right": 1, "agentic/right_right": 1, "r1/wrong_right": 1, "r1/right_only": 2}
    out = balance(recs, BalanceConfig(cell_shares=shares, seed=3))
    counts = cell_counts(out)
    # the scarcest cell (r1/wrong_right: 6 at share 1) limits the scale: 6, 6, 6, 12
    assert counts["agentic/wrong_right"] == 6 and counts["agentic/right_right"] == 6
    assert counts["r1/wrong_right"] == 6 and counts["r1/right_only"] == 12
    assert len({r.id for r in out}) == len(out) == 30
    assert out == balance(recs, BalanceConfig(cell_shares=shares, seed=3))  # seeded
    assert [r.id for r in out] == [r.id for r in recs if r in out]  # original order kept


def test_balance_over_strategy_and_unnamed_cells():
    recs = _population()  # 40 code-first, 46 text-first
    out = balance(recs, BalanceConfig(strategy_shares={"code": 1, "text": 1}))
    assert cell_counts(out)["code-first"] == cell_counts(out)["text-first"] == 40
    with_empty = balance(recs, BalanceConfig(cell_shares={"r1/wrong_right": 1, "nobody/right_only": 1}))
    assert len(with_empty) == 6  # an empty named cell does not empty the set
    only = balance(recs, BalanceConfig(cell_shares={"r1/right_only": 1}))
    assert {r.case for r in only} == {"right_only"} and len(only) == 40
    assert balance(recs, BalanceConfig()) == recs  # no shares: untouched
    with pytest.raises(ValueError, match="bad cell 'r1'"):
        BalanceConfig(cell_shares={"r1": 1})


# ----------------------------------------------------------------------------- the workflow
def test_compose_counts_cleans_and_decontaminates():
    bench_q = load_benchmark("math500")[0].question
    broken = "<code>\nprint(42)\n</code>\n<answer>\\boxed{42}"  # unclosed answer: grades right, bad format
    pairs = [
        pair(CODE_WRONG, TEXT, pid="wr"),
        pair(TEXT, CODE, s1="text", s2="code", pid="rr", t1="r1", t2="agentic"),
        pair(CODE, TEXT_WRONG, pid="ro"),
        pair(CODE_WRONG, TEXT_WRONG, pid="dd"),
        pair(broken, TEXT_WRONG, pid="bad"),
        pair(CODE, TEXT, pid="leak", question=bench_q),
    ]
    recs, report = compose(pairs, ComposeConfig(), grader=exact_grader)
    assert report.cases == {"wrong_right": 1, "right_right": 2, "right_only": 2, "dropped": 1}
    assert [c["id"] for c in report.cleaned] == ["bad"]
    assert [c["id"] for c in report.contaminated] == ["leak"]
    assert [r.id for r in recs] == ["wr", "rr", "ro"] and report.written == 3
    assert report.balance_before == report.balance_after
    assert report.balance_before["agentic/wrong_right"] == 1 and report.balance_before["text-first"] == 1


def test_compose_file_writes_records_and_report(tmp_path):
    rows = [
        {"id": "a", "problem": "What is 6 times 7?", "answer": "42",
         "first": {"teacher": "agentic", "strategy": "code", "response": CODE_WRONG},
         "second": {"teacher": "r1", "strategy": "text", "response": TEXT}},
        {"id": "b", "problem": "What is 6 times 7, again?", "answer": "42",
         "first": {"teacher": "r1", "strategy": "text", "response": TEXT_WRONG},
         "second": {"teacher": "agentic", "strategy": "code", "response": CODE_WRONG}},
    ]  # fmt: skip
    out = tmp_path / "out.jsonl"
    report = compose_file(_write(tmp_path / "pairs.jsonl", rows), out, ComposeConfig(), grader=exact_grader)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 1 and report.cases["dropped"] == 1
    rec = lines[0]
    assert set(rec) >= {"id", "problem", "answer", "text", "case", "first_teacher", "second_teacher",
                        "transition", "grades"}  # fmt: skip
    assert rec["grades"] == {"g1": False, "g2": True} and rec["transition"] == tj.CODE_TO_TEXT
    meta = json.loads((tmp_path / "out.jsonl.report.json").read_text())
    assert meta["version"] and meta["config"]["decontam_threshold"] == 90.0 and meta["written"] == 1


# ============================================================================= teach
class FakeTeacher:
    """A teacher that answers from a table; ``fail`` lists outcomes to produce first (exceptions/texts)."""

    def __init__(self, name, strategy, response, fail=(), gate=None):
        self.name, self.strategy, self.response = name, strategy, response
        self.fail = list(fail)
        self.calls: list[tuple[str, str | None]] = []
        self.gate = gate

    async def solve(self, problem, previous=None):
        self.calls.append((problem.id, previous))
        if self.gate is not None:
            await self.gate(problem)
        if self.fail:
            outcome = self.fail.pop(0)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        return self.response


def _problems(n):
    from dualdistill.format.problems import Problem

    return [Problem(f"q{i}", f"What is 6 times 7 (variant {i})?", "42") for i in range(n)]


def _teach(problems, code, text, out, **cfg):
    import asyncio

    from dualdistill.teachers.teach import TeachConfig, teach

    config = TeachConfig(retry_backoff_s=0.0, **cfg)
    return asyncio.run(teach(problems, code, text, out, config, progress=False))


def test_seeded_first_teacher_indicator():
    from dualdistill.teachers.teach import code_goes_first

    ids = [f"id{i}" for i in range(400)]
    a = [code_goes_first(i, 0) for i in ids]
    assert a == [code_goes_first(i, 0) for i in ids]  # a pure function of (seed, id)
    assert 160 < sum(a) < 240  # a fair coin
    assert a != [code_goes_first(i, 1) for i in ids]  # the seed matters


def test_teach_writes_pairs_with_y2_conditioned_on_y1(tmp_path):
    from dualdistill.teachers.teach import code_goes_first

    code, text = FakeTeacher("agentic", "code", CODE), FakeTeacher("r1", "text", TEXT)
    report = _teach(_problems(12), code, text, tmp_path, first_teacher_seed=7)
    pairs = read_pairs(tmp_path / "pairs.jsonl")
    assert report.pairs == len(pairs) == 12 and report.failed == {}
    for p in pairs:
        expected_first = "agentic" if code_goes_first(p.id, 7) else "r1"
        assert p.first.teacher == expected_first and p.second.teacher != expected_first
    # the second teacher was given the first's response; the first was given nothing
    for teacher, other in ((code, TEXT), (text, CODE)):
        for pid, previous in teacher.calls:
            assert previous in (None, other)
            assert (previous is None) == code_goes_first(pid, 7) ^ (teacher is text)
    meta = json.loads((tmp_path / "teach.json").read_text())
    assert meta["config"]["first_teacher_seed"] == 7 and meta["pairs"] == 12


def test_teach_retries_records_reasons_and_gives_up(tmp_path):
    from dualdistill.backends import BackendError
    from dualdistill.teachers.protocol import TeacherError
    from dualdistill.teachers.teach import code_goes_first

    seed = next(s for s in range(100) if code_goes_first("q0", s))  # the code teacher goes first
    flaky = [BackendError("HTTP 429 (RateLimitError)"), "", "I'm sorry, I can't help with that."]
    code = FakeTeacher("agentic", "code", CODE, fail=flaky)
    text = FakeTeacher("r1", "text", TEXT, fail=[TeacherError("format", "no </think>")] * 20)
    problems = _problems(1)
    report = _teach(problems, code, text, tmp_path, max_attempts=4, first_teacher_seed=seed)
    records = [json.loads(x) for x in (tmp_path / "records.jsonl").read_text().splitlines()]
    got = [(r["role"], r["attempt"], r["status"], r.get("reason")) for r in records]
    assert got == [
        ("first", 1, "failed", "api_error"), ("first", 2, "failed", "empty"),
        ("first", 3, "failed", "refusal"), ("first", 4, "ok", None),
        *[("second", i, "failed", "format") for i in range(1, 5)],
    ]  # fmt: skip
    assert "429" in records[0]["detail"]
    assert report.pairs == 0 and report.gave_up == 1
    assert report.failed == {"api_error": 1, "empty": 1, "refusal": 1, "format": 4}
    _teach(problems, code, text, tmp_path, max_attempts=4, first_teacher_seed=seed)
    assert (len(code.calls), len(text.calls)) == (4, 4)  # a rerun does not go past the bound
    # a higher bound on a rerun tries again; y1 is reused, not regenerated
    text.fail.clear()
    assert _teach(problems, code, text, tmp_path, max_attempts=5, first_teacher_seed=seed).pairs == 1
    assert (len(code.calls), len(text.calls)) == (4, 5) and text.calls[-1] == ("q0", CODE)


def test_teach_killed_midway_resumes_without_loss(tmp_path):
    import asyncio

    from dualdistill.teachers.teach import TeachConfig, teach

    problems = _problems(10)
    records = tmp_path / "records.jsonl"

    async def stall_after_five(problem):
        if records.exists() and len(records.read_text().splitlines()) >= 5:
            await asyncio.sleep(3600)  # the "kill" comes while these hang

    async def killed_run():
        code = FakeTeacher("agentic", "code", CODE, gate=stall_after_five)
        text = FakeTeacher("r1", "text", TEXT, gate=stall_after_five)
        task = asyncio.create_task(
            teach(problems, code, text, tmp_path, TeachConfig(concurrency=2), progress=False)
        )
        while not records.exists() or len(records.read_text().splitlines()) < 5:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(killed_run())
    done_before = {(r["id"], r["role"]) for r in map(json.loads, records.read_text().splitlines())}
    assert 5 <= len(done_before) < 20 and not (tmp_path / "pairs.jsonl").exists()
    with records.open("a") as f:
        f.write('{"id": "q9", "role": "fir')  # a torn line, as a SIGKILL mid-write leaves
    code, text = FakeTeacher("agentic", "code", CODE), FakeTeacher("r1", "text", TEXT)
    report = _teach(problems, code, text, tmp_path)
    assert report.pairs == 10
    assert len(code.calls) + len(text.calls) == 20 - len(done_before)  # nothing redone, nothing lost
    lines = [json.loads(x) for x in records.read_text().splitlines()]
    assert len(lines) == 20 and len({(r["id"], r["role"]) for r in lines}) == 20


@pytest.mark.slow
def test_cli_teach_then_compose_on_synthetic_train_split(tmp_path):
    """Real CLI, programmatic teachers, real sandbox and grader: killed once, resumed, composed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "teach"
    CLI = [sys.executable, "-c", "from dualdistill.cli import main; main()"]
    cmd = [*CLI, "teach", "--problems", "synthetic", "--synthetic-n", "60",
           "--first-teacher-seed", "3", "--out", str(out), "--no-progress", "--set", "code_teacher.generation.executor_timeout_s=1.0",
           "--set", "concurrency=2"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    records = out / "records.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if records.exists() and len(records.read_text().splitlines()) >= 6:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(records.read_text().splitlines())
    assert partial >= 6 and not (out / "pairs.jsonl").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    from dualdistill.synthetic.families import make_splits

    train = make_splits(60, seed=0)[0]
    pairs = read_pairs(out / "pairs.jsonl")
    assert [p.id for p in pairs] == [p.id for p in train]
    lines = [json.loads(x) for x in records.read_text().splitlines()]
    assert len({(r["id"], r["role"]) for r in lines if r["status"] == "ok"}) == 2 * len(train)
    composed = tmp_path / "composed.jsonl"
    res = subprocess.run([*CLI, "compose", "--pairs", str(out / "pairs.jsonl"),
                          "--out", str(composed)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    for case in ("wrong_right", "right_right", "right_only", "dropped"):
        assert case in res.stdout
    rows = [json.loads(x) for x in composed.read_text().splitlines()]
    report = json.loads((tmp_path / "composed.jsonl.report.json").read_text())
    assert len(rows) == report["written"] > 0
    assert report["cases"]["wrong_right"] > 0 and report["cases"]["right_only"] > 0
    assert all(tj.check_format(r["text"]).valid for r in rows)


# ============================================================================= configs and CLI errors
def test_configs_load_from_yaml_and_overrides(tmp_path):
    from dualdistill.core.config import ConfigError, load_config
    from dualdistill.teachers.teach import TeachConfig

    yaml_path = tmp_path / "teach.yaml"
    yaml_path.write_text(
        "code_teacher: {kind: anthropic, backend: {served_model_name: claude-x, api_key_env: MY_KEY}}\n"
        "text_teacher: {kind: openai, backend: {model: 'http://127.0.0.1:8000/v1', served_model_name: r1}}\n"
        "concurrency: 3\n"
    )
    cfg = load_config(TeachConfig, yaml_path, ["first_teacher_seed=5"])
    assert cfg.code_teacher.kind == "anthropic" and cfg.text_teacher.backend.model.endswith("/v1")
    assert (cfg.concurrency, cfg.first_teacher_seed) == (3, 5)
    with pytest.raises(ConfigError, match=r"code_teacher\.kind"):
        load_config(TeachConfig, None, ["code_teacher.kind=gpt"])
    c = load_config(ComposeConfig, None, ["balance.strategy_shares.code=1", "balance.strategy_shares.text=2",
                                          "transitions.code_to_text=Hmm."])  # fmt: skip
    assert c.balance.strategy_shares == {"code": 1, "text": 2} and c.transitions.code_to_text == "Hmm."
    assert set(c.decontam_benchmarks) == {"math500", "aime2025", "amc", "combinatorics300"}
    with pytest.raises(ConfigError, match="strategy_shares"):
        load_config(ComposeConfig, None, ["balance.strategy_shares.both=1"])


def test_cli_reports_bad_pairs_without_traceback(tmp_path):
    from typer.testing import CliRunner

    from dualdistill.cli import app

    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"id": "a", "problem": "q", "answer": "1", "first": {"teacher": "t"}}\n')
    res = CliRunner().invoke(app, ["compose", "--pairs", str(bad), "--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and "pairs.jsonl:1: key 'first.response'" in res.output
    assert "Traceback" not in res.output
    res = CliRunner().invoke(
        app, ["teach", "--problems", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "nope.jsonl: file not found" in res.output
    res = CliRunner().invoke(app, ["teach", "--out", str(tmp_path), "--set", "concurrency=0"])
    assert res.exit_code == 2 and "concurrency" in res.output


def test_teach_masks_api_keys_in_failure_details(tmp_path):
    import asyncio

    from dualdistill.backends import BackendError
    from dualdistill.teachers.teach import TeachConfig, teach

    key = "sk-live-0123456789abcdef"
    leaky = BackendError(f"server echoed the header: Bearer {key}")
    code = FakeTeacher("agentic", "code", CODE, fail=[leaky])
    text = FakeTeacher("r1", "text", TEXT, fail=[leaky])
    config = TeachConfig(retry_backoff_s=0.0, max_attempts=2)
    report = asyncio.run(teach(_problems(1), code, text, tmp_path, config, progress=False, secrets=[key]))
    assert report.pairs == 1 and report.failed == {"api_error": 2}
    written = (tmp_path / "records.jsonl").read_text()
    assert key not in written and "Bearer ***" in written


@pytest.mark.parametrize(
    ("teachers", "key"),
    [("text_teacher: {kind: programmatic, generation: {grade_timeout_s: 9}}", "text_teacher.generation.grade_timeout_s"),
     ("code_teacher: {kind: openai, backend: {model: 'http://127.0.0.1:8000/v1'}, generation: {concurrency: 3}}",
      "code_teacher.generation.concurrency"),
     ("text_teacher: {kind: openai, backend: {model: 'http://127.0.0.1:8000/v1'}, generation: {max_tool_calls: 3}}",
      "text_teacher.generation.max_tool_calls"),
     ("text_teacher: {kind: dataset, path: r.jsonl, backend: {model: 'http://127.0.0.1:8000/v1'}}", "text_teacher.backend"),
     ("code_teacher: {kind: programmatic, price_in_per_mtok: 3.0}", "code_teacher.price_in_per_mtok")],
)  # fmt: skip
def test_a_setting_the_teacher_does_not_read_is_refused_by_name(tmp_path, teachers, key):
    """A knob that does nothing for the chosen teacher would still change the teach stage's key (and
    re-run paid calls): it is an error naming it, at load."""
    from dualdistill.core.config import ConfigError, load_config
    from dualdistill.teachers.teach import TeachConfig

    path = tmp_path / "teach.yaml"
    path.write_text(teachers + "\n")
    with pytest.raises(ConfigError, match=re.escape(key) + r": a \w+ \w+ teacher does not read it"):
        load_config(TeachConfig, path)


def test_the_settings_a_teacher_reads_load():
    from dualdistill.core.config import from_dict
    from dualdistill.teachers.teach import TeachConfig

    cfg = from_dict(TeachConfig, {
        "code_teacher": {"kind": "programmatic", "generation": {"executor_timeout_s": 2.0, "sandbox_concurrency": 4}},
        "text_teacher": {"kind": "openai", "backend": {"model": "http://127.0.0.1:8000/v1"},
                         "generation": {"budget": 100, "temperature": 0.2}, "price_in_per_mtok": 1.0},
    })  # fmt: skip
    assert cfg.code_teacher.generation.executor_timeout_s == 2.0 and cfg.text_teacher.generation.budget == 100
