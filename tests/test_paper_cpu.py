"""The paper recipe, executed end to end on a CPU (``scripts/paper_cpu.py``, docs/PAPER.md).

``dualdistill run paper`` with only what cannot run here replaced: the shipped tiny base as student, two
scripted servers speaking the hosted chat APIs (native tool calls; ``reasoning_content``) as teachers,
``accelerate launch`` on one CPU process, and the first problems of each built-in benchmark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-paper-cpu-secret-7731"


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_the_paper_recipe_runs_end_to_end_on_a_cpu(tmp_path):
    from dualdistill.format.trajectory import check_format
    from dualdistill.pipeline.recipe import load_recipe
    from dualdistill.pipeline.run import build_stages

    env = {**os.environ, "TEACHER_API_KEY": SECRET}
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "paper_cpu.py"), "--workdir", str(tmp_path)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=2300,
    )  # fmt: skip
    assert res.returncode == 0, (res.stdout[-4000:], res.stderr[-4000:])
    run = tmp_path / "run"

    # Every stage of the shipped recipe ran to its end.
    manifest = json.loads((run / "manifest.json").read_text())
    stages = [s.name for s in build_stages(load_recipe("paper"), run)]
    assert sorted(manifest["stages"]) == sorted(stages) and "sd-train" in stages

    # The agentic teacher's two tool calls ran in one sandbox session: the second printed what the
    # first assigned. The text teacher's reasoning_content stands in <think>. Tokens were counted.
    records = [json.loads(line) for line in (run / "teach" / "records.jsonl").read_text().splitlines()]
    code = [r for r in records if r["strategy"] == "code" and r["status"] == "ok"]
    text = [r for r in records if r["strategy"] == "text" and r["status"] == "ok"]
    assert len(code) == len(text) == 12  # the script's default --train
    for r in code:
        assert r["response"].count("<code>") == 2 and "answer = " in r["response"]
        printed = r["response"].rsplit("<executor>", 1)[1].split("</executor>", 1)[0].strip()
        assert printed and f"\\boxed{{{printed}}}" in r["response"] and r["tokens"]["requests"] == 2
    assert all(r["response"].startswith("<think>\nWorking through the problem.\n</think>") for r in text)
    assert all(check_format(r["response"]) for r in code + text)

    # Self-distillation had something to train on: repairs of the problem the student never saw.
    sd = [json.loads(line) for line in (run / "selfdistill" / "data.jsonl").read_text().splitlines()]
    assert sd and {r["case"] for r in sd} <= {"kept_correct", "repaired_wrong"}
    assert (run / "models" / "dualdistill_sd" / "model" / "config.json").exists()

    # Each student was evaluated on the four built-in benchmarks.
    for student in ("dualdistill", "dualdistill_sd"):
        summary = json.loads((run / "eval" / student / "report.json").read_text())["benchmarks"]
        assert set(summary) >= {"math500", "aime2025", "amc", "combinatorics300"}
        assert all(s["records"] == 2 for s in summary.values())

    # The API key went out as a bearer token only: no file of the run holds it.
    for path in run.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert SECRET.encode() not in path.read_bytes(), path
