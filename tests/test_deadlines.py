"""Every wait has a deadline, every loop a bound, every bad input a clear error (issue 29's probe).

Each test failed on the code before the fix: a slow-loris server hung eval, a zero-token stray
``</code>`` looped without end, ``train`` resumed another run's checkpoint, 100,000 unclosed boxes took
minutes, a YAML alias bomb took gigabytes, and bad values and bad places ended in tracebacks.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import tracemalloc

import pytest

from dualdistill.agent.loop import AgentConfig, run_agent
from dualdistill.backends import BackendError
from dualdistill.backends.openai_api import OpenAIBackend
from dualdistill.core.config import ConfigError
from dualdistill.core.records import LockedError, locked
from dualdistill.format.problems import Problem
from dualdistill.grading.grader import grade_many
from dualdistill.pipeline.recipe import load_recipe
from fake_openai_server import FakeOpenAIServer, Outcome
from scripted_backend import ScriptedBackend
from test_sft_train import _records

CLI = [sys.executable, "-c", "from dualdistill.cli import main; main()"]


def run_cli(*args, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)


# ----------------------------------------------------------------------------- deadlines
def test_a_slow_loris_server_fails_within_the_request_timeout_and_retries():
    trickle = Outcome(text="x" * 400, trickle_s=0.2)  # about 90 s for the whole body, byte by byte
    with FakeOpenAIServer([trickle, trickle]) as srv:
        backend = OpenAIBackend(srv.url, "fake-model", request_timeout=1.0, max_retries=1, backoff_s=0.05,
                                max_backoff_s=0.1)  # fmt: skip
        start = time.monotonic()
        with pytest.raises(BackendError, match=r"gave up after 2 attempts.*within 1 s"):
            asyncio.run(backend.complete("p", max_new_tokens=5, stop=[], temperature=0.0))
        # (max_retries + 1) x request_timeout + backoff, with room for a loaded machine
        assert time.monotonic() - start < 4.0
        assert len(srv.requests) == 2


def test_eval_against_a_slow_loris_server_ends_with_a_clear_error(tmp_path):
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"id": "1", "question": "What is 1 + 1?", "answer": "2"}) + "\n")
    with FakeOpenAIServer(lambda body: Outcome(text="x" * 400, trickle_s=0.2)) as srv:
        start = time.monotonic()
        r = run_cli("eval", "--model", srv.url, "--bench", bench, "--out", tmp_path / "out", "--no-tools",
                    "--request-timeout", "1", "--max-retries", "1", "--no-progress")  # fmt: skip
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert srv.url.removesuffix("/v1") in r.stderr + r.stdout
    assert time.monotonic() - start < 30  # before the fix it ran for ever


class StrayCodeEnd:
    """A server that answers a stray ``</code>`` to everything and reports 0 tokens for it."""

    def __init__(self):
        self.calls = 0

    def count_tokens(self, text: str) -> int:
        return len(text) // 4

    async def complete(self, prompt, *, max_new_tokens, stop, temperature, top_p=1.0, seed=None):
        from dualdistill.backends import Completion

        self.calls += 1
        return Completion(text="</code>", n_tokens=0, finish_reason="stop", stop="</code>")


def test_a_server_answering_only_a_stray_code_end_ends_the_trajectory_at_once():
    backend = StrayCodeEnd()
    cfg = AgentConfig(tools=True, template="compact", budget=4096)
    record = asyncio.run(run_agent(Problem("p", "q?", "1"), backend, pool=object(), config=cfg))
    # Before the fix this made ~1,000 requests (one per counted token of the budget).
    assert record.finish_reason == "empty" and backend.calls == 1 and record.tool_calls == []


class StrayWithText(StrayCodeEnd):
    """Text, then a stray ``</code>``, to every request: each completion adds something."""

    async def complete(self, prompt, *, max_new_tokens, stop, temperature, top_p=1.0, seed=None):
        from dualdistill.backends import Completion

        self.calls += 1
        return Completion(text="more </code>", n_tokens=0, finish_reason="stop", stop="</code>")


@pytest.mark.parametrize("max_tool_calls", [0, 3])
def test_the_tool_loop_makes_at_most_max_tool_calls_plus_two_model_calls(max_tool_calls):
    backend = StrayWithText()
    cfg = AgentConfig(tools=True, template="compact", budget=100_000, max_tool_calls=max_tool_calls)
    record = asyncio.run(run_agent(Problem("p", "q?", "1"), backend, pool=object(), config=cfg))
    assert backend.calls == max_tool_calls + 2
    if max_tool_calls:  # stray ends cost a call each, up to the bound
        assert record.finish_reason == "calls" and record.response.count("more </code>") == max_tool_calls + 2
    else:  # the first "</code>" hits the cap: the note, then "</code>" is text and the model's end stops it
        assert record.finish_reason == "stop" and record.tool_cap_hit


def test_an_empty_completion_ends_the_trajectory_with_a_reason():
    backend = ScriptedBackend(lambda prompt, seed: "")
    cfg = AgentConfig(tools=False, template="compact", budget=100)
    record = asyncio.run(run_agent(Problem("p", "q?", "1"), backend, pool=None, config=cfg))
    assert record.finish_reason == "empty" and len(backend.calls) == 1


# ----------------------------------------------------------------------------- training resumes only itself
def test_train_refuses_a_checkpoint_of_another_run_unless_restarted(tmp_path, tiny_model_dir):
    data = tmp_path / "composed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    out = tmp_path / "run"
    base = ["train", "--config", "sft_tiny", "--data", data, "--model", tiny_model_dir, "--out", out,
            "max_steps=4", "save_steps=2", "save_total_limit=1", "report_to=[]", "progress=false"]  # fmt: skip
    first = run_cli(*base, timeout=300)
    assert first.returncode == 0, first.stderr
    assert list(out.glob("checkpoint-*"))
    other = run_cli(*base, "lr=1e-5", timeout=300)
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert "lr=" in other.stderr and "--restart" in other.stderr
    again = run_cli(*base, "lr=1e-5", "--restart", timeout=300)
    assert again.returncode == 0, again.stderr
    assert list((out / "superseded").glob("*/checkpoint-*"))  # moved aside, not deleted
    summary = json.loads((out / "model" / "train_summary.json").read_text())
    assert summary["resumed_from"] is None


def test_train_refuses_to_replace_a_finished_model_made_with_other_settings(tmp_path, tiny_model_dir):
    data = tmp_path / "composed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    out = tmp_path / "run"
    base = ["train", "--config", "sft_tiny", "--data", data, "--model", tiny_model_dir, "--out", out,
            "max_steps=2", "report_to=[]", "progress=false"]  # fmt: skip
    assert run_cli(*base, timeout=300).returncode == 0
    assert not list(out.glob("checkpoint-*"))  # no checkpoints: only the finished model binds
    made = (out / "model" / "model.safetensors").read_bytes()
    other = run_cli(*base, "lr=1e-5", timeout=300)
    assert other.returncode == 2 and "lr=" in other.stderr and "--restart" in other.stderr
    assert (out / "model" / "model.safetensors").read_bytes() == made  # untouched
    assert run_cli(*base, "lr=1e-5", "--restart", timeout=300).returncode == 0
    assert (next((out / "superseded").glob("*")) / "model" / "model.safetensors").read_bytes() == made


# ----------------------------------------------------------------------------- bounded extraction
def test_a_hundred_thousand_unclosed_boxes_grade_within_the_timeout():
    degenerate = "<answer>" + r"\boxed{" * 100_000 + "</answer>"
    start = time.monotonic()
    verdict = grade_many([(degenerate, "1"), (r"\boxed{1} " * 50_000, "1")], timeout=2.0)
    assert time.monotonic() - start < 2.0
    assert [v.correct for v in verdict] == [False, True]


# ----------------------------------------------------------------------------- safe recipes
BOMB = "".join(
    f"{a}: &{a} [{', '.join([f'*{p}' if p else 'x'] * 10)}]\n"
    for p, a in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


def test_a_yaml_alias_bomb_fails_fast_and_small(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    tracemalloc.start()
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"bomb.yaml.*expands to more than"):
        load_recipe(path, ["sft.lr=1e-3"])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.monotonic() - start < 2.0 and peak < 300 * 2**20


def test_a_self_referencing_anchor_is_refused_by_name(tmp_path):
    path = tmp_path / "cycle.yaml"
    path.write_text("name: &n [1, *n]\n")
    with pytest.raises(ConfigError, match=r"cycle.yaml: key 'name.1' contains itself"):
        load_recipe(path, ["sft.lr=1e-3"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sft.lr=.inf", "key 'sft.lr': must be a finite number"),
        ("sft.lr=nan", "must be a finite number"),
        ("sft.lr=[1,", "override 'sft.lr': value '[1,' is not valid YAML"),
    ],
)
def test_bad_values_are_clear_errors(override, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_recipe("embedded", [override])
    r = run_cli("run", "embedded", "--workdir", tmp_path / "w", "--dry-run", override)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "sft.lr" in r.stderr


def test_bad_recipe_files_name_themselves(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: caf\xe9\n")
    for path, message in ((tmp_path, "is a directory"), (latin, "not UTF-8")):
        r = run_cli("run", path, "--workdir", tmp_path / "w", "--dry-run")
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert str(path) in r.stderr and message in r.stderr


# ----------------------------------------------------------------------------- disks and paths
def test_bad_output_places_fail_before_the_work(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"response": r"\boxed{1}", "answer": "1"}) + "\n")
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, cause in ((afile / "x.jsonl", "is a file, not a directory"), (tmp_path, "is a directory")):
        r = run_cli("grade", "--input", inp, "--output", out)
        assert r.returncode == 2 and "Traceback" not in r.stderr and cause in r.stderr, r.stderr
    r = run_cli("synthetic", "make", "--n", 20, "--out", afile)
    assert r.returncode == 2 and "the output directory is a file" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs needs root")
def test_a_full_disk_is_one_line_and_nothing_is_lost(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    try:
        inp = tmp_path / "in.jsonl"
        rows = [
            {"id": str(i), "response": rf"\boxed{{{i}}} " + "y" * 2000, "answer": str(i)} for i in range(200)
        ]
        inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        r = run_cli("grade", "--input", inp, "--output", disk / "out.jsonl")
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert "no space left on the device" in r.stderr
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_the_lock_error_names_the_holders_command(tmp_path):
    out = tmp_path / "shared"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom dualdistill.core.records import locked\n"
         f"with locked({str(out)!r}, 'eval'):\n    print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(
                LockedError, match=rf"another command \(eval\) is writing here \(pid {holder.pid}\)"
            ),
            locked(out, "teach"),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_a_library_reporting_a_full_disk_becomes_an_oserror_naming_the_place(tmp_path):
    import errno

    from dualdistill.core.records import disk_errors

    torch_says = "[enforce fail at inline_container.cc:664] PytorchStreamWriter failed writing file data/0: file write failed"
    safetensors_says = 'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
    for message in (torch_says, safetensors_says):
        with pytest.raises(OSError) as e, disk_errors(tmp_path / "run"):
            raise RuntimeError(message)
        assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "run")
    with pytest.raises(RuntimeError, match="another failure"), disk_errors(tmp_path):
        raise RuntimeError("another failure")  # anything else passes through unchanged


def test_a_full_disk_during_a_checkpoint_save_is_one_line(tmp_path, tiny_model_dir):
    """The output directory on a 96 KiB tmpfs: the first checkpoint cannot be written. One line, exit 2,
    no traceback; the same command with room trains to the end."""
    small = tmp_path / "small"
    small.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(small)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mount.stderr.decode().strip()}")
    try:
        data = tmp_path / "composed.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in _records()))
        base = ["train", "--config", "sft_tiny", "--data", data, "--model", tiny_model_dir, "--out", small / "run",
                "max_steps=2", "save_steps=1", "report_to=[]", "progress=false"]  # fmt: skip
        full = run_cli(*base, timeout=300)
        assert full.returncode == 2, full.stderr
        assert "Traceback" not in full.stderr and "no space left on the device" in full.stderr
    finally:
        subprocess.run(["umount", str(small)], check=True)
    roomy = run_cli(*[str(a).replace(str(small), str(tmp_path / "roomy")) for a in base], timeout=300)
    assert roomy.returncode == 0, roomy.stderr
