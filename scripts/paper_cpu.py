"""Run the paper recipe end to end on a CPU: `dualdistill run paper` with overrides (docs/PAPER.md).

What stands in for what cannot run here:
- the student: the shipped pretrained tiny base (`dualdistill base copy`, 0.46M parameters) instead of
  DeepSeek-R1-Distill-Qwen-7B;
- the teachers: two scripted servers on 127.0.0.1 (tests/fake_openai_server.py) that speak the hosted
  APIs' chat JSON. The agentic teacher answers with native tool calls (a `python` call that prints the
  answer, then a boxed answer); the text teacher answers with `reasoning_content` plus a boxed answer.
  Both read the gold answer of the shipped DeepMath problem, so composition sees right-right pairs;
- training: `accelerate launch` with one CPU process (an accelerate config written here);
- evaluation and sampling: transformers in-process instead of vLLM, on the first problems of each
  built-in benchmark, with small budgets.

Everything else is the paper recipe as shipped. Example:

    python scripts/paper_cpu.py --workdir runs/paper-cpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fake_openai_server import FakeOpenAIServer, Outcome  # noqa: E402

ACCELERATE_CPU = """compute_environment: LOCAL_MACHINE
distributed_type: 'NO'
use_cpu: true
num_machines: 1
num_processes: 1
mixed_precision: 'no'
"""


def _gold(problems, text: str) -> str:
    for p in problems:
        if p.question[:200] in text:
            return p.answer
    return "0"


def responders(problems):
    def code(body):  # native tool calls: one python call, then the answer
        messages = body.get("messages", [])
        gold = _gold(problems, messages[0]["content"])
        if any(m.get("role") == "tool" for m in messages):
            return Outcome(text=f"The code printed it, so the answer is \\boxed{{{gold}}}.")
        call = {"name": "python", "arguments": json.dumps({"code": f"print({gold!r})"})}
        return Outcome(text="Let me compute this with code.", tool_calls=[call])

    def text(body):  # a reasoning model: reasoning_content, then the answer
        gold = _gold(problems, body.get("messages", [{}])[0].get("content", ""))
        return Outcome(text=f"The answer is \\boxed{{{gold}}}.", reasoning="Working through the problem.")

    return code, text


def overrides(code_url: str, text_url: str, student: Path, accelerate: Path, n_train: int) -> list[str]:
    # A tiny random student must learn the format before self-distillation has samples to keep: many
    # epochs at a larger lr than the paper's 1e-5 (which is for a pretrained 7B model).
    sft = ["max_length=2048", "bf16=false", "gradient_checkpointing=false", "epochs=60", "lr=1e-3",
           "report_to=[]", "save_steps=0", "packing=false"]  # fmt: skip
    return [
        f"world.train_limit={n_train}", f"student.init={student}",
        f"teach.code_teacher.url={code_url}", "teach.code_teacher.api=chat", "teach.code_teacher.tool_calls=native",
        f"teach.text_teacher.url={text_url}", "teach.text_teacher.api=chat",
        "teach.concurrency=2", "teach.sandbox_concurrency=2",
        *(f"sft.{o}" for o in sft), *(f"selfdistill.sft.{o}" for o in sft),
        "eval.samples=1", "eval.limit=2", "eval.backend='{model}'", "eval.agent.budget=192", "eval.agent.sandbox_concurrency=2",
        f"selfdistill.problems_limit={n_train}", "selfdistill.sample.k=2", "selfdistill.sample.agent.budget=192",
        "selfdistill.sample.agent.sandbox_concurrency=2",
        f"launch.accelerate_config={accelerate}", "launch.num_processes=1",
    ]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--train", type=int, default=4, help="DeepMath training problems to teach on")
    ap.add_argument(
        "--no-sd",
        action="store_true",
        help="selfdistill.enabled=false: a student this small, trained on a handful of problems, rarely "
        "writes a well-formed sample, and an empty self-distillation set stops the run at sd-train",
    )
    args = ap.parse_args()
    from dualdistill.problems import load_training_problems

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    student, accelerate = work / "tiny-student", work / "accelerate_cpu.yaml"
    if not (student / "config.json").exists():
        subprocess.run([sys.executable, "-m", "dualdistill.cli", "base", "copy", "--out", str(student)],
                       check=True)  # fmt: skip
    accelerate.write_text(ACCELERATE_CPU)
    code, text = responders(load_training_problems()[: args.train])
    env = {**os.environ, "TEACHER_API_KEY": os.environ.get("TEACHER_API_KEY", "sk-fixture-key")}
    with FakeOpenAIServer(code, model="claude-3-5-sonnet-20241022") as code_srv, \
            FakeOpenAIServer(text, model="deepseek-reasoner") as text_srv:  # fmt: skip
        cmd = [sys.executable, "-m", "dualdistill.cli", "run", "paper", "--workdir", str(work / "run"),
               *overrides(code_srv.url, text_srv.url, student, accelerate, args.train),
               *(["selfdistill.enabled=false"] if args.no_sd else [])]  # fmt: skip
        print("$", " ".join(cmd), flush=True)
        return subprocess.run(cmd, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
