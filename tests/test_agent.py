"""The tool loop with a scripted backend and the real sandbox: interleaving, caps, budget, resume."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dualdistill.agent.driver import run_many, trajectory_seed
from dualdistill.agent.loop import AgentConfig, make_pool, run_agent
from dualdistill.agent.record import AgentRecord
from dualdistill.core.records import read_jsonl
from dualdistill.evaluate.metrics import summarize
from dualdistill.format.problems import Problem
from dualdistill.format.prompts import TOOL_CAP_NOTE, build_prompt
from dualdistill.format.trajectory import executor_block
from scripted_backend import ScriptedBackend

PROBLEM = Problem("p0", "What is 6 * 7?", "42", source="unit")


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def pool():
    pool = make_pool(AgentConfig(template="plain", sandbox_concurrency=4))
    yield pool
    asyncio.run(pool.close())


def test_exact_interleaving_prompt_code_executor_answer(pool):
    code = "<think>multiply</think><code>\nprint(6 * 7)\n</code>"
    answer = "<answer>\\boxed{42}</answer>"
    backend = ScriptedBackend([code + "NOT SEEN", answer + " trailing"])
    config = AgentConfig(template="plain", budget=1000)
    rec = run(run_agent(PROBLEM, backend, pool, config, seed=7))
    prompt = build_prompt(PROBLEM.question, template="plain", tools=True)
    assert rec.prompt == prompt
    assert rec.response == code + executor_block("42") + answer
    assert [c.prompt for c in backend.calls] == [prompt, prompt + code + executor_block("42")]
    assert backend.calls[0].stop == ["</code>", "</answer>"]
    assert backend.calls[1].max_new_tokens == 1000 - len(code + executor_block("42"))
    assert [c.seed for c in backend.calls] == [7, 8]  # a fresh seed per round
    assert [c.status for c in map(_Call, rec.tool_calls)] == ["ok"]
    assert rec.finish_reason == "answer"
    assert rec.n_tokens == len(rec.response)  # one char = one token in the scripted backend
    assert rec.n_generated == len(code + answer)
    assert rec.tool_time_s > 0 and rec.gen_time_s >= 0


class _Call:
    def __init__(self, d: dict):
        self.status = d["status"]


def test_session_state_persists_within_a_trajectory(pool):
    backend = ScriptedBackend(
        ["<code>\nx = 20\n</code>", "<code>\nprint(x + 22)\n</code>", "<answer>ok</answer>"]
    )
    rec = run(run_agent(PROBLEM, backend, pool, AgentConfig(template="plain")))
    assert rec.response.count("<executor>") == 2
    assert executor_block("42") in rec.response
    assert [c["status"] for c in rec.tool_calls] == ["ok", "ok"]


def test_tool_cap_injects_note_once_and_skips_the_block(pool):
    blocks = [f"<code>\nprint('RAN{i}')\n</code>" for i in range(4)]
    answer = "<answer>\\boxed{1}</answer>"
    backend = ScriptedBackend([*blocks[:3], blocks[3] + answer])
    rec = run(run_agent(PROBLEM, backend, pool, AgentConfig(template="plain", max_tool_calls=2)))
    assert "RAN0\n</executor>" in rec.response and "RAN1\n</executor>" in rec.response
    assert "RAN2\n</executor>" not in rec.response  # beyond the cap: not executed
    assert rec.response.count(TOOL_CAP_NOTE) == 1
    assert rec.response.index(TOOL_CAP_NOTE) == rec.response.index(blocks[2]) + len(blocks[2])
    assert len(rec.tool_calls) == 2 and rec.tool_cap_hit
    # After the note, </code> no longer stops generation: block 3 is plain text up to the answer.
    assert backend.calls[3].stop == ["</answer>"] and len(backend.calls) == 4
    assert rec.response.endswith(TOOL_CAP_NOTE + blocks[3] + answer)
    assert rec.finish_reason == "answer"


def test_zero_tool_calls_allowed_never_runs_code(pool):
    backend = ScriptedBackend(["<code>\nprint(1)\n</code>", "<answer>x</answer>"])
    rec = run(run_agent(PROBLEM, backend, pool, AgentConfig(template="plain", max_tool_calls=0)))
    assert rec.tool_calls == [] and "<executor>" not in rec.response and rec.tool_cap_hit


def test_budget_counts_injected_executor_tokens(pool):
    code = "<code>\nprint('x' * 30)\n</code>"
    injected = executor_block("x" * 30)
    budget = len(code) + len(injected) + 10
    backend = ScriptedBackend([code, "y" * 50])
    rec = run(run_agent(PROBLEM, backend, pool, AgentConfig(template="plain", budget=budget)))
    assert backend.calls[1].max_new_tokens == 10
    assert rec.response == code + injected + "y" * 10
    assert rec.n_tokens == budget and rec.finish_reason == "budget"


def test_executor_output_past_the_budget_ends_the_trajectory(pool):
    code = "<code>\nprint('z' * 200)\n</code>"
    backend = ScriptedBackend([code, "never asked"])
    rec = run(run_agent(PROBLEM, backend, pool, AgentConfig(template="plain", budget=len(code) + 5)))
    assert len(backend.calls) == 1
    assert rec.finish_reason == "budget" and rec.n_tokens > len(code) + 5


def test_block_ending_exactly_at_the_budget_is_not_run(pool):
    code = "<code>\nprint('late')\n</code>"
    backend = ScriptedBackend([code])
    rec = run(run_agent(PROBLEM, backend, pool, AgentConfig(template="plain", budget=len(code))))
    assert rec.finish_reason == "budget" and rec.tool_calls == [] and rec.response == code


def test_no_tools_uses_no_sandbox_and_never_stops_at_code():
    backend = ScriptedBackend(["<think>t</think><code>\nprint(1)\n</code> then <answer>\\boxed{42}</answer>"])
    rec = run(run_agent(PROBLEM, backend, None, AgentConfig(tools=False, template="compact")))
    assert backend.calls[0].stop == ["</answer>"]
    assert backend.calls[0].prompt == build_prompt(PROBLEM.question, template="compact", tools=False)
    assert "<executor>" not in rec.response and rec.tool_calls == [] and rec.finish_reason == "answer"


def test_tools_without_pool_is_a_clear_error():
    with pytest.raises(ValueError, match="no sandbox pool"):
        run(run_agent(PROBLEM, ScriptedBackend([""]), None, AgentConfig(template="plain")))


def test_end_of_text_without_answer_is_stop():
    rec = run(
        run_agent(PROBLEM, ScriptedBackend(["I give up."]), None, AgentConfig(template="plain", tools=False))
    )
    assert rec.finish_reason == "stop" and rec.response == "I give up."


def test_record_roundtrip():
    rec = AgentRecord("a", 1, "p", "r", 3, tool_calls=[{"status": "ok", "duration_s": 0.1}])
    assert AgentRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec


def test_trajectory_seeds_depend_only_on_inputs():
    assert trajectory_seed(0, "p", 1) == trajectory_seed(0, "p", 1)
    assert len({trajectory_seed(0, "p", i) for i in range(50)}) == 50
    assert trajectory_seed(0, "p", 1) != trajectory_seed(1, "p", 1)


# ----------------------------------------------------------------------------- run_many
def problems(n: int = 6) -> list[Problem]:
    return [
        Problem(f"q{i}", f"Question number {i}: what is {i} * 7?", str(7 * i), source="toy") for i in range(n)
    ]


def toy_responder(prompt: str, seed: int | None) -> str:
    """Deterministic in (prompt, seed): right on even seeds, wrong on odd ones; some trajectories use code."""
    i = int(re.search(r"Question number (\d+)", prompt).group(1))
    if "<code>" in prompt.split("Question number")[-1] or seed is None or (seed // 2) % 3 != 0:
        value = 7 * i if seed is None or seed % 2 == 0 else 7 * i + 1
        return f"<think>easy</think><answer>\\boxed{{{value}}}</answer>"
    return f"<code>\nprint({i} * 7)\n</code>"


def _metrics(records: list[dict]) -> dict:
    s = summarize(records)
    return {k: v for k, v in s.items() if not k.endswith("time_s") and k != "tool_time_share"}


def test_run_many_grades_appends_and_skips_done(tmp_path, pool):
    out = tmp_path / "records.jsonl"
    backend = ScriptedBackend(toy_responder)
    records = run(
        run_many(
            problems(), backend, pool, AgentConfig(template="plain"), samples=3, out_path=out, progress=False
        )
    )
    assert len(records) == 18 and len(list(read_jsonl(out))) == 18
    assert [(r["problem_id"], r["sample_index"]) for r in records] == [
        (f"q{i}", j) for i in range(6) for j in range(3)
    ]
    for r in records:
        assert r["correct"] == (r["extracted"] == r["gold"]), r
        assert r["grade_status"] is not None and r["source"] == "toy"
    assert any(r["tool_calls"] for r in records) and not all(r["correct"] for r in records)
    again = ScriptedBackend(toy_responder)
    records2 = run(
        run_many(
            problems(), again, pool, AgentConfig(template="plain"), samples=3, out_path=out, progress=False
        )
    )
    assert again.calls == [] and records2 == records
    # More samples later: only the new ones are generated.
    run(
        run_many(
            problems(), again, pool, AgentConfig(template="plain"), samples=4, out_path=out, progress=False
        )
    )
    assert len(list(read_jsonl(out))) == 24


def test_resume_after_failure_and_torn_line_gives_the_same_metrics(tmp_path, pool):
    clean = tmp_path / "clean.jsonl"
    cfg = AgentConfig(template="plain")
    reference = run(
        run_many(
            problems(), ScriptedBackend(toy_responder), pool, cfg, samples=3, out_path=clean, progress=False
        )
    )
    broken = tmp_path / "broken.jsonl"
    dying = ScriptedBackend(toy_responder, fail_after=9)
    with pytest.raises(ConnectionError):
        run(run_many(problems(), dying, pool, cfg, samples=3, out_path=broken, progress=False))
    partial = list(read_jsonl(broken))
    assert 0 < len(partial) < 18
    with broken.open("a") as f:
        f.write('{"problem_id": "q5", "sample_ind')  # a write cut by a kill
    resumed = run(
        run_many(
            problems(), ScriptedBackend(toy_responder), pool, cfg, samples=3, out_path=broken, progress=False
        )
    )
    lines = [r for _, r in read_jsonl(broken)]
    keys = [(r["problem_id"], r["sample_index"]) for r in lines]
    assert len(keys) == len(set(keys)) == 18
    assert _metrics(resumed) == _metrics(reference)

    def strip(rs):  # timings differ from run to run; everything else must not
        return [{k: v for k, v in r.items() if not k.endswith("time_s") and k != "tool_calls"} for r in rs]

    assert strip(resumed) == strip(reference)


KILL_SCRIPT = """
import asyncio, sys
sys.path.insert(0, {tests!r})
from scripted_backend import ScriptedBackend
from test_agent import problems, toy_responder
from dualdistill.agent import AgentConfig, run_many
backend = ScriptedBackend(toy_responder, delay_s=0.05)
cfg = AgentConfig(template="plain", tools=False, concurrency=2)
asyncio.run(run_many(problems(), backend, None, cfg, samples=3, out_path={out!r}, progress=False))
"""


def test_resume_after_sigkill(tmp_path):
    out = tmp_path / "records.jsonl"
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 4):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = out.read_text().count("\n")
    assert 4 <= written < 18, written
    cfg = AgentConfig(template="plain", tools=False)
    backend = ScriptedBackend(toy_responder)
    records = run(run_many(problems(), backend, None, cfg, samples=3, out_path=out, progress=False))
    keys = [(r["problem_id"], r["sample_index"]) for _, r in read_jsonl(out)]
    assert len(keys) == len(set(keys)) == 18 and len(records) == 18
    assert len(backend.calls) <= 18 - written + 2  # only the missing trajectories were generated


def test_waiting_on_the_sandbox_does_not_block_other_trajectories(tmp_path, pool):
    slow = Problem("slow", "SLOW", "1", source="toy")
    fast = Problem("fast", "FAST", "1", source="toy")

    def responder(prompt: str, seed):
        # The fast trajectory needs four rounds of quick code; the slow one sleeps in its first block.
        done = prompt.count("<executor>\n")
        if "SLOW" in prompt and done == 0:
            return "<code>\nimport time\ntime.sleep(1.5)\nprint(1)\n</code>"
        if "FAST" in prompt and done < 3:
            return f"<code>\nprint({done})\n</code>"
        return "<answer>\\boxed{1}</answer>"

    out = tmp_path / "r.jsonl"
    backend = ScriptedBackend(responder)
    run(
        run_many(
            [slow, fast],
            backend,
            pool,
            AgentConfig(template="plain"),
            samples=1,
            out_path=out,
            progress=False,
        )
    )
    order = [r["problem_id"] for _, r in read_jsonl(out)]
    assert order == ["fast", "slow"]
    fast_record = next(r for _, r in read_jsonl(out) if r["problem_id"] == "fast")
    slow_record = next(r for _, r in read_jsonl(out) if r["problem_id"] == "slow")
    assert slow_record["tool_time_s"] >= 1.4 and slow_record["gen_time_s"] < slow_record["tool_time_s"]
    assert len(fast_record["tool_calls"]) == 3 and fast_record["finish_reason"] == "answer"


# ----------------------------------------------------------------------------- the real HF backend
def test_hf_backend_generates_after_the_injected_executor_text(tiny_model_dir, pool):
    from dualdistill.backends import Completion, HFBackend

    hf = HFBackend(str(tiny_model_dir), device="cpu", max_batch=4)
    code = "<code>\nprint(6 * 7)\n</code>"

    class FirstBlockScripted:
        """The random model never writes </code> by itself: script its first block, then let HF go on."""

        def __init__(self):
            self.prompts: list[str] = []

        def count_tokens(self, text):
            return hf.count_tokens(text)

        async def complete(self, prompt, **kw):
            self.prompts.append(prompt)
            if len(self.prompts) == 1:
                return Completion(code, hf.count_tokens(code), "stop", "</code>")
            return await hf.complete(prompt, **kw)

    try:
        config = AgentConfig(budget=40, template="compact", temperature=0.0)
        backend = FirstBlockScripted()
        rec = run(run_agent(PROBLEM, backend, pool, config))
        injected = hf.count_tokens(executor_block("42"))
        assert backend.prompts[1] == rec.prompt + code + executor_block("42")
        assert rec.response.startswith(code + executor_block("42"))
        continuation = rec.response[len(code + executor_block("42")) :]
        assert continuation and rec.n_generated > hf.count_tokens(code)
        assert rec.n_tokens == rec.n_generated + injected
        assert rec.finish_reason in ("budget", "stop", "answer") and rec.tool_calls[0]["status"] == "ok"
        if rec.finish_reason == "budget":
            assert rec.n_tokens == 40
        backend.prompts = []
        assert run(run_agent(PROBLEM, backend, pool, config)).response == rec.response  # greedy: repeatable
    finally:
        hf.close()


def test_a_stray_close_tag_is_not_executed(pool):
    first = "<code>\nprint(1)\n</code>"
    backend = ScriptedBackend([first, "so print(2) </code>", "<answer>\\boxed{1}</answer>"])
    rec = run(run_agent(PROBLEM, backend, pool, AgentConfig(template="plain")))
    assert rec.response == first + executor_block("1") + "so print(2) </code><answer>\\boxed{1}</answer>"
    assert len(rec.tool_calls) == 1 and rec.finish_reason == "answer"


def test_a_block_opened_inside_think_still_runs(pool):
    first = "<think>let me check <code>\nprint(3 * 3)\n</code>"
    backend = ScriptedBackend([first, "</think><answer>\\boxed{9}</answer>"])
    rec = run(run_agent(PROBLEM, backend, pool, AgentConfig(template="plain")))
    assert rec.response.startswith(first + executor_block("9")) and len(rec.tool_calls) == 1
