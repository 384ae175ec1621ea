"""``dualdistill eval`` against a real OpenAI-compatible server: ``transformers serve`` on 127.0.0.1.

The served model is a real Hugging Face model: the shipped tiny base, fine-tuned here for a few seconds
until it writes one tool trajectory by heart (a ``<code>`` block, then, after the executor's output,
the answer), so the tool loop really runs over HTTP. The same directory is evaluated in-process
(``HFBackend``) for comparison. Skipped when ``transformers[serving]`` (fastapi, uvicorn) is missing.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

QUESTION = "Compute 12 * 34."
# What the student learns to write; the executor block between is what our sandbox prints.
BEFORE_EXECUTOR = "<code>\nprint(12 * 34)\n</code>"
AFTER_EXECUTOR = "\n<answer>\n\\boxed{408}\n</answer>"
THOUGHT = "12 * 34 = 408"
# A Qwen-style chat template: transformers serve then parses <think> out as reasoning_content, as
# vLLM's --reasoning-parser and hosted R1 do.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _lessons(tok) -> list[tuple[str, str]]:
    """(prompt, response) pairs: the compact prompt with tools as the completions path sends it, and
    the chat-rendered prompts (user turn = the compact prompt up to its marker) with and without tools."""
    from dualdistill.format.prompts import assistant_marker, build_prompt
    from dualdistill.format.trajectory import executor_block

    def chat(tools: bool) -> str:
        user = build_prompt(QUESTION, template="compact", tools=tools).partition(assistant_marker("compact"))[
            0
        ]
        return tok.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )

    trajectory = BEFORE_EXECUTOR + executor_block("408\n") + AFTER_EXECUTOR
    return [
        (build_prompt(QUESTION, template="compact", tools=True), trajectory),
        (chat(True), trajectory),
        (chat(False), f"<think>\n{THOUGHT}\n</think>" + AFTER_EXECUTOR),
    ]


def _memorize(model_dir: Path) -> None:
    """Fine-tune ``model_dir`` in place on the lessons (prompts masked) until greedy decoding repeats them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = CHAT_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(0)
    batch = []
    for prompt, response in _lessons(tok):
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        ids = p_ids + tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        batch.append((torch.tensor([ids]), torch.tensor([[-100] * len(p_ids) + ids[len(p_ids) :]])))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(400):
        loss = sum(model(input_ids=x, labels=y).loss for x, y in batch) / len(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.005:
            break
    model.eval()
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(model_dir: Path, log_path: Path):
    """``transformers serve`` hosting ``model_dir`` on a free port; yields ``(url, process)``."""
    port = _free_port()
    exe = Path(sys.executable).with_name("transformers")
    cmd = [str(exe), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    log = open(log_path, "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not come up: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``(model_dir, url)``: the memorizing student, and ``transformers serve`` hosting it."""
    from dualdistill.base.pretrain import shipped_base

    model_dir = tmp_path_factory.mktemp("served") / "student"
    shutil.copytree(shipped_base(), model_dir)
    _memorize(model_dir)
    with _serve(model_dir, model_dir.parent / "serve.log") as (url, _):
        yield model_dir, url


def _eval(tmp_path: Path, name: str, model: str, *extra: str) -> tuple[int, str, list[dict]]:
    from dualdistill.cli import app

    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps({"id": "p0", "question": QUESTION, "answer": "408"}) + "\n")
    out = tmp_path / name
    args = ["eval", "--model", model, "--bench", str(problems), "--template", "compact", "--temperature", "0",
            "--budget", "96", "--out", str(out), "--no-progress", *extra]  # fmt: skip
    res = CliRunner().invoke(app, args)
    path = out / "records.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return res.exit_code, res.output, records


def test_the_completions_tool_loop_over_transformers_serve_matches_in_process(served, tmp_path):
    model_dir, url = served
    code, output, local = _eval(tmp_path, "local", str(model_dir))
    assert code == 0, output
    code, output, remote = _eval(tmp_path, "served", url, "--tokenizer", str(model_dir))
    assert code == 0, output
    (a,), (b,) = local, remote
    # The block really ran in our sandbox between two HTTP requests, and the model read its output.
    from dualdistill.format.trajectory import executor_block

    assert b["response"] == BEFORE_EXECUTOR + executor_block("408\n") + AFTER_EXECUTOR
    assert "<executor>\n408\n</executor>" in b["response"]
    assert b["correct"] is True and [c["status"] for c in b["tool_calls"]] == ["ok"]
    assert a["response"] == b["response"]
    # Generated tokens come from the server's usage; with the tokenizer, executor text counts exactly.
    assert (a["n_generated"], a["n_tokens"]) == (b["n_generated"], b["n_tokens"])


def test_the_chat_path_over_transformers_serve(served, tmp_path):
    _, url = served
    # One chat turn: the server's parser splits <think> out into reasoning_content (as vLLM's reasoning
    # parser and hosted R1 do); the backend puts it back as the trajectory's <think> block.
    code, output, records = _eval(tmp_path, "chat", url, "--no-tools", "--api", "chat")
    assert code == 0, output
    (record,) = records
    assert record["response"] == f"<think>\n{THOUGHT}\n</think>\n" + AFTER_EXECUTOR.lstrip("\n")
    # ... and it did come apart on the wire: the same request, sent by hand, has the reasoning field.
    body = {"messages": [{"role": "user", "content": "Problem (no tools): " + QUESTION}], "max_tokens": 96,
            "temperature": 0, "stop": ["</answer>"]}  # fmt: skip
    request = urllib.request.Request(f"{url}/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as r:
        message = json.load(r)["choices"][0]["message"]
    assert message["reasoning_content"].strip() == THOUGHT and "<think>" not in message["content"]
    assert record["correct"] is True and record["n_generated"] > 0
    # With tools, the loop must continue the response after the executor block; this server cannot,
    # and the run stops with an error that says so instead of writing a wrong trajectory.
    code, output, records = _eval(tmp_path, "chat-tools", url, "--api", "chat")
    assert code != 0 and records == []
    assert "continue_final_message" in output and "api completions" in output


def test_two_servers_serve_one_eval_and_one_can_die_mid_run(served, tmp_path):
    """Two real servers behind one --model: requests spread over both; killing one mid-run leaves the
    other to finish, with the records of a one-server run and no duplicates."""
    model_dir, url_a = served
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"id": f"p{i}", "question": QUESTION, "answer": "408"}) + "\n"
                                for i in range(16)))  # fmt: skip
    common = ["eval", "--bench", problems, "--template", "compact", "--temperature", "0", "--budget", "96",
              "--concurrency", "2", "--tokenizer", model_dir, "--no-progress"]  # fmt: skip
    cli = [sys.executable, "-c", "from dualdistill.cli import main; main()"]
    one = subprocess.run([*cli, *map(str, common), "--model", url_a, "--out", tmp_path / "one"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    log_b = tmp_path / "serve-b.log"
    with _serve(model_dir, log_b) as (url_b, proc_b):
        run = subprocess.Popen([*cli, *map(str, common), "--model", f"{url_a},{url_b}", "--out", tmp_path / "two"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        records = tmp_path / "two" / "records.jsonl"
        deadline = time.monotonic() + 300
        while not (records.exists() and len(records.read_text().splitlines()) >= 4):
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()[1][-2000:]
            time.sleep(0.2)
        served_by_b = log_b.read_text().count("/v1/completions")
        proc_b.kill()  # mid-run: its requests in flight fail and go to the other server
        _, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-2000:]
    assert served_by_b > 0  # both servers took requests
    served_by_a = (model_dir.parent / "serve.log").read_text().count("/v1/completions")
    assert served_by_a > 0

    def rows(d):
        return [json.loads(x) for x in (d / "records.jsonl").read_text().splitlines()]

    two, single = rows(tmp_path / "two"), rows(tmp_path / "one")
    keys = [(r["problem_id"], r["sample_index"]) for r in two]
    assert len(keys) == len(set(keys)) == 16  # nothing lost, nothing twice
    by_id = {r["problem_id"]: r["response"] for r in single}
    assert all(r["response"] == by_id[r["problem_id"]] and r["correct"] for r in two)
