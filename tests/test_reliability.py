"""Issue 17: nothing lost, nothing mixed. Locks, path-independent manifests, identities of partial work,
validation before deletion, bounded memory on huge inputs, and clear errors on bad input."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualdistill.cli.app import app
from dualdistill.core.records import LockedError, locked, read_jsonl
from dualdistill.pipeline.stages import Stage, run_stages
from test_evaluate import toy_benchmark

HOLD = "import sys, time; from dualdistill.core.records import locked\nwith locked(sys.argv[1], 'eval'):\n    print('held', flush=True); time.sleep(60)\n"


def _holder(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# ----------------------------------------------------------------------------- 1. locks
def test_a_second_process_is_refused_at_once_and_a_killed_holder_does_not_block(tmp_path):
    holder = _holder(tmp_path / "out")
    try:
        start = time.monotonic()
        with pytest.raises(LockedError, match=rf"pid {holder.pid}"), locked(tmp_path / "out"):
            pass
        assert time.monotonic() - start < 1.0
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with locked(tmp_path / "out"), locked(tmp_path / "out"):  # stale file, dead holder; nesting is fine
        pass


def _slow_answers(body):
    from fake_openai_server import Outcome

    return Outcome(text="<answer>\\boxed{0}", stop_reason="</answer>", delay_s=0.15)


def _eval_in_background(srv, tmp_path: Path, out: Path) -> tuple[list[str], subprocess.Popen]:
    """A real `dualdistill eval` process over 8 slow answers, returned once its first record is written."""
    bench = toy_benchmark(tmp_path / "toy.jsonl", n=8)
    args = ["eval", "--model", f"{srv.url}#fake-model", "--bench", str(bench), "--no-tools",
            "--concurrency", "1", "--no-progress", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "dualdistill.cli", *args], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not (out / "records.jsonl").exists() or not (out / "records.jsonl").read_text():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    return args, proc


def test_two_evals_on_one_out_keep_one_record_per_key(tmp_path):
    from fake_openai_server import FakeOpenAIServer

    out = tmp_path / "run"
    with FakeOpenAIServer(_slow_answers) as srv:
        args, first = _eval_in_background(srv, tmp_path, out)
        start = time.monotonic()
        second = CliRunner().invoke(app, args)
        assert time.monotonic() - start < 5
        assert second.exit_code == 2 and f"pid {first.pid}" in second.output, second.output
        assert first.wait(timeout=120) == 0, first.stderr.read()
    keys = [(r["problem_id"], r["sample_index"]) for _, r in read_jsonl(out / "records.jsonl")]
    assert len(keys) == len(set(keys)) == 8


def test_regrade_counts_an_old_duplicated_file_once_per_key(tmp_path):
    from dualdistill.evaluate.run import regrade, run_eval
    from scripted_backend import ScriptedBackend
    from test_evaluate import toy_config, toy_responder

    bench = toy_benchmark(tmp_path / "toy.jsonl")
    out = tmp_path / "run"
    before = run_eval(toy_config(bench), out, backend=ScriptedBackend(toy_responder), progress=False)
    lines = (out / "records.jsonl").read_text()
    (out / "records.jsonl").write_text(lines + lines)  # what two concurrent runs used to leave
    after = regrade(out)
    assert after["toy"]["samples_per_problem"] == before["toy"]["samples_per_problem"] == 2
    assert after["toy"]["records"] == before["toy"]["records"]
    assert list(after["toy"]["pass_at_k"]) == list(before["toy"]["pass_at_k"])


# ----------------------------------------------------------------------------- 2. manifests
def _copy_stage(workdir: Path, calls: list, cfg: dict) -> list[Stage]:
    src, out = workdir / "in.txt", workdir / "work" / "out.txt"

    def run():
        calls.append(cfg["n"])
        out.parent.mkdir(exist_ok=True)
        out.write_text(src.read_text() * cfg["n"])

    return [Stage("copy", run, inputs=[src], outputs=[out], config=cfg, state=[out.parent])]


def test_the_same_workdir_spelled_relatively_or_moved_skips_every_stage(tmp_path, monkeypatch):
    work = tmp_path / "a" / "run"
    work.mkdir(parents=True)
    (work / "in.txt").write_text("x")
    calls: list = []
    run_stages(_copy_stage(work, calls, {"n": 2}), work, log=lambda s: None)
    monkeypatch.chdir(tmp_path / "a")
    rel = Path("run")
    run_stages(_copy_stage(rel, calls, {"n": 2}), rel, log=lambda s: None)
    moved = tmp_path / "elsewhere"
    os.rename(work, moved)
    run_stages(_copy_stage(moved, calls, {"n": 2}), moved, log=lambda s: None)
    assert calls == [2]


def test_a_changed_config_moves_finished_work_aside_instead_of_deleting_it(tmp_path):
    (tmp_path / "in.txt").write_text("x")
    calls: list = []
    run_stages(_copy_stage(tmp_path, calls, {"n": 2}), tmp_path, log=lambda s: None)
    logs: list[str] = []
    run_stages(_copy_stage(tmp_path, calls, {"n": 3}), tmp_path, log=logs.append)
    assert calls == [2, 3] and (tmp_path / "work" / "out.txt").read_text() == "xxx"
    kept = list((tmp_path / "superseded").glob("*-copy/work/out.txt"))
    assert [p.read_text() for p in kept] == ["xx"]
    assert any("moved to" in line for line in logs)


def test_a_partial_stage_resumed_under_other_settings_starts_over(tmp_path):
    (tmp_path / "in.txt").write_text("1\n2\n3\n")
    out = tmp_path / "work" / "records.txt"
    calls: list = []

    def stages(scale: int, die_after: int | None = None) -> list[Stage]:
        def run():
            out.parent.mkdir(exist_ok=True)
            done = out.read_text().splitlines() if out.exists() else []
            for x in (tmp_path / "in.txt").read_text().splitlines()[len(done) :]:
                if die_after is not None and len(calls) == die_after:
                    raise KeyboardInterrupt  # a kill mid-way
                calls.append(x)
                with out.open("a") as f:
                    f.write(f"{int(x) * scale}\n")

        return [Stage("scale", run, inputs=[tmp_path / "in.txt"], outputs=[out], config={"s": scale},
                      state=[out.parent])]  # fmt: skip

    with pytest.raises(KeyboardInterrupt):
        run_stages(stages(10, die_after=1), tmp_path, log=lambda s: None)
    assert out.read_text() == "10\n"
    run_stages(stages(100), tmp_path, log=lambda s: None)
    assert out.read_text() == "100\n200\n300\n", "records of the killed seed-10 run must not be mixed in"
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        run_stages(stages(7, die_after=1), tmp_path, log=lambda s: None)
    run_stages(stages(7), tmp_path, log=lambda s: None)  # same settings: resumed, not redone
    assert calls == ["1", "2", "3"] and out.read_text() == "7\n14\n21\n"


def test_a_second_pipeline_run_on_one_workdir_is_refused(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(LockedError, match=rf"pid {holder.pid}"):
            run_stages(_copy_stage(tmp_path, [], {"n": 1}), tmp_path, log=lambda s: None)
    finally:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------- 4. identities
def test_teach_resumed_with_another_seed_is_refused(tmp_path):
    from dualdistill.core.resume import ResumeMismatch
    from test_compose import CODE, TEXT, FakeTeacher, _problems, _teach

    code, text = FakeTeacher("agentic", "code", CODE), FakeTeacher("r1", "text", TEXT)
    _teach(_problems(6), code, text, tmp_path, first_teacher_seed=0)
    before = (tmp_path / "records.jsonl").read_bytes()
    with pytest.raises(ResumeMismatch, match="first_teacher_seed=0"):
        _teach(_problems(6), code, text, tmp_path, first_teacher_seed=1)
    assert (tmp_path / "records.jsonl").read_bytes() == before
    _teach(_problems(6), code, text, tmp_path, first_teacher_seed=0, concurrency=2)  # speed is not identity


def test_eval_resume_is_keyed_on_the_weights_not_the_path(tiny_model_dir, tmp_path):
    import shutil

    from dualdistill.core.resume import ResumeMismatch, model_fingerprint

    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    before = model_fingerprint(str(model))
    assert model_fingerprint(str(model)) == before
    weights = next(model.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert model_fingerprint(str(model)) != before

    bench = toy_benchmark(tmp_path / "toy.jsonl", n=2)
    args = ["eval", "--model", str(model), "--bench", str(bench), "--no-tools", "--budget", "8",
            "--no-progress", "--out", str(tmp_path / "o")]  # fmt: skip
    assert CliRunner().invoke(app, args).exit_code == 0
    data[-2] ^= 1
    weights.write_bytes(bytes(data))
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "model_weights" in res.output, res.output
    assert ResumeMismatch.__mro__[1].__name__ == "DataError"


# ----------------------------------------------------------------------------- 3. validation first
@pytest.mark.parametrize(
    "override, key",
    [
        ("eval.samples=0", "eval.samples"),
        ("eval.limit=0", "eval.limit"),
        ("selfdistill.sample.k=0", "selfdistill.sample.k"),
        ("sft.batch_size=0", "sft.batch_size"),
        ("sft.lr=-1", "sft.lr"),
        ("sft.epochs=0", "sft.epochs"),
        ("world.n=0", "world.n"),
        ("eval.agent.temperature=-0.1", "eval.agent.temperature"),
        ("teach.text_teacher.generation.top_p=0", "teach.text_teacher.generation.top_p"),
        ("compose.decontam_threshold=200", "compose.decontam_threshold"),
        ("selfdistill.build.beta2=1.5", "selfdistill.build.beta2"),
        ("compose.decontam_benchmarks=[math500,nope]", "compose.decontam_benchmarks[1]"),
        ("student.init=runs/none/model", "student.init"),
    ],
)
def test_impossible_recipe_values_fail_at_load_naming_key_and_file(override, key):
    from dualdistill.core.config import ConfigError
    from dualdistill.pipeline.recipe import load_recipe

    with pytest.raises(ConfigError, match=rf"embedded\.yaml \+ overrides: key '{re.escape(key)}'"):
        load_recipe("embedded", [override])


def test_a_bad_value_on_a_finished_run_deletes_nothing(tmp_path):
    report = tmp_path / "eval" / "text_only" / "report.json"
    report.parent.mkdir(parents=True)
    report.write_text("{}")
    for extra in ([], ["--dry-run"]):
        res = CliRunner().invoke(
            app, ["run", "embedded", "--workdir", str(tmp_path), "eval.samples=0", *extra]
        )
        assert res.exit_code == 2 and "key 'eval.samples'" in res.output and "embedded.yaml" in res.output
    assert report.read_text() == "{}"


# ----------------------------------------------------------------------------- 5. bounded memory
def test_eval_skips_overlong_prompts_with_a_reason_and_carries_on(tiny_model_dir, tmp_path):
    import resource

    from dualdistill.format.problems import Problem, write_problems

    problems = [
        Problem("ok", "What is 1 + 1?", "2"),
        Problem("huge", "7 " * 3_000_000, "1"),  # 6 MB: over max_prompt_chars, never tokenized
        Problem("wide", "9 " * 5000, "1"),  # about 10,000 tokens for a model of 4,096 positions
        Problem("ok2", "What is 2 + 2?", "4"),
    ]
    bench = tmp_path / "b.jsonl"
    write_problems(bench, problems)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--bench", str(bench), "--no-tools",
                                   "--budget", "4", "--no-progress", "--out", str(tmp_path / "o")])  # fmt: skip
    assert res.exit_code == 0, res.output
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 1500
    rows = {r["problem_id"]: r for _, r in read_jsonl(tmp_path / "o" / "records.jsonl")}
    assert set(rows) == {"ok", "huge", "wide", "ok2"}
    assert rows["huge"]["finish_reason"] == "skipped" and "characters" in rows["huge"]["skip_reason"]
    assert rows["wide"]["finish_reason"] == "skipped" and "context of 4,096" in rows["wide"]["skip_reason"]
    assert rows["ok"]["finish_reason"] != "skipped" and rows["ok"]["n_tokens"] > 0
    assert len(rows["huge"]["prompt"]) <= 1000 and rows["huge"]["correct"] is False


def test_train_drops_a_huge_record_before_tokenizing_it(tiny_model_dir, tmp_path):
    import resource

    from dualdistill.core.records import write_jsonl
    from dualdistill.sft.train import SFTConfig, train_run

    text = "<think>x</think><answer>\\boxed{1}</answer>"
    write_jsonl(
        tmp_path / "d.jsonl", [{"problem": "p", "text": "y" * 30_000_000}, {"problem": "p", "text": text}]
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    config = SFTConfig(max_length=2048, max_steps=1, progress=False, lr=1e-4)
    result = train_run(config, tmp_path / "d.jsonl", tmp_path / "out", init_model=str(tiny_model_dir))
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 2000
    assert result.stats.dropped_too_long == 1 and result.stats.kept == 1


# ----------------------------------------------------------------------------- 7. clear errors
NON_UTF8 = b'{"id": "b", "problem": "caf\xe9"}\n{"id": "a", "problem": "What is 1+1?", "answer": "2"}\n'


@pytest.mark.parametrize(
    "command",
    [
        ["grade", "-i", "{bad}", "-o", "{tmp}/g.jsonl"],
        ["eval", "--model", "{tmp}", "--bench", "{bad}", "--out", "{tmp}/e"],
        ["train", "--config", "{cfg}", "--data", "{bad}", "--model", "{model}", "--out", "{tmp}/t"],
        ["teach", "--problems", "{bad}", "--out", "{tmp}/te"],
        ["compose", "--pairs", "{bad}", "--out", "{tmp}/c.jsonl"],
        ["sandbox", "run", "{bad}"],
    ],
)
def test_non_utf8_input_names_the_file_and_line(command, tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(NON_UTF8)
    (tmp_path / "sft.yaml").write_text("max_steps: 1\n")
    fill = {"bad": bad, "tmp": tmp_path, "cfg": tmp_path / "sft.yaml", "model": tiny_model_dir}
    res = CliRunner().invoke(app, [a.format(**fill) for a in command])
    assert res.exit_code == 2, res.output
    assert "not UTF-8" in res.output and "bad.jsonl" in res.output and "Traceback" not in res.output
    if command[0] != "sandbox":
        assert "bad.jsonl:1" in res.output


@pytest.mark.parametrize(
    "raw, says",
    [
        (b"<html>proxy error</html>", "not the API's JSON"),
        (b"", "not the API's JSON"),
        (b'{"object": "list"}', "no choices"),
        (b"[1, 2]", "no choices"),
        (b'{"choices": [{"text": 5, "index": 0}]}', "not a string"),
    ],
)
def test_a_server_answering_200_with_garbage_is_a_clear_error(raw, says, tmp_path):
    from fake_openai_server import FakeOpenAIServer, Outcome

    bench = toy_benchmark(tmp_path / "toy.jsonl", n=1)
    with FakeOpenAIServer([Outcome(raw=raw)] * 4) as srv:
        res = CliRunner().invoke(app, ["eval", "--model", f"{srv.url}#fake-model", "--bench", str(bench),
                                       "--no-tools", "--no-progress", "--out", str(tmp_path / "o")])  # fmt: skip
    assert res.exit_code == 2 and says in res.output and srv.url in res.output, res.output


def test_a_hung_server_fails_after_the_request_timeout(tmp_path):
    from fake_openai_server import FakeOpenAIServer, Outcome

    bench = toy_benchmark(tmp_path / "toy.jsonl", n=1)
    with FakeOpenAIServer([Outcome(text="x", delay_s=5.0)] * 4) as srv:
        start = time.monotonic()
        res = CliRunner().invoke(app, ["eval", "--model", f"{srv.url}#fake-model", "--bench", str(bench),
                                       "--no-tools", "--no-progress", "--request-timeout", "0.3", "--max-retries", "1",
                                       "--out", str(tmp_path / "o")])  # fmt: skip
    assert res.exit_code == 2 and "gave up after 2 attempts" in res.output and "Timeout" in res.output
    assert time.monotonic() - start < 4.5


def test_model_paths_that_are_not_models_are_named(tmp_path):
    (tmp_path / "sft.yaml").write_text("max_steps: 1\n")
    (tmp_path / "d.jsonl").write_text('{"problem": "p", "text": "t"}\n')
    (tmp_path / "empty").mkdir()
    bench = toy_benchmark(tmp_path / "toy.jsonl", n=1)
    for model, says in (
        (tmp_path / "nothing", "model not found"),
        (tmp_path / "empty", "not a model directory"),
    ):
        train = ["train", "--config", str(tmp_path / "sft.yaml"), "--data", str(tmp_path / "d.jsonl"),
                 "--model", str(model), "--out", str(tmp_path / "t")]  # fmt: skip
        evaluate = ["eval", "--model", str(model), "--bench", str(bench), "--out", str(tmp_path / "e")]
        for args in (train, evaluate):
            res = CliRunner().invoke(app, args)
            assert res.exit_code == 2 and says in res.output and str(model) in res.output, (args, res.output)


def test_grade_output_naming_a_directory_is_refused_and_leaves_nothing(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"response": "\\\\boxed{2}", "answer": "2"}\n')
    (tmp_path / "out").mkdir()
    res = CliRunner().invoke(app, ["grade", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2 and "is a directory" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out"]


def test_sigterm_says_how_to_resume_and_the_rerun_completes(tmp_path):
    from fake_openai_server import FakeOpenAIServer

    out = tmp_path / "run"
    with FakeOpenAIServer(_slow_answers) as srv:
        args, proc = _eval_in_background(srv, tmp_path, out)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 130
        err = proc.stderr.read()
        assert "interrupted; rerun the same command to resume" in err and "Traceback" not in err
        done = len(list(read_jsonl(out / "records.jsonl")))
        assert 1 <= done < 8
        assert CliRunner().invoke(app, args).exit_code == 0
    keys = [r["problem_id"] for _, r in read_jsonl(out / "records.jsonl")]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 8


# ----------------------------------------------------------------------------- 8. silent acceptance
@pytest.mark.parametrize("bad", [{"v": 2}, [2], True])
def test_non_scalar_answers_and_ids_are_refused_alike_everywhere(bad, tmp_path):
    from dualdistill.core.records import DataError, write_jsonl
    from dualdistill.format.pairs import read_pairs
    from dualdistill.format.problems import load_problems

    write_jsonl(
        tmp_path / "p.jsonl",
        [{"id": "a", "question": "q", "answer": "1"}, {"id": "b", "question": "q", "answer": bad}],
    )
    with pytest.raises(DataError, match=r"p\.jsonl:2: field 'answer' must be a string or a number"):
        load_problems(tmp_path / "p.jsonl")
    write_jsonl(tmp_path / "i.jsonl", [{"id": bad, "question": "q", "answer": "1"}])
    with pytest.raises(DataError, match=r"i\.jsonl:1: field 'id' must be a string or a number"):
        load_problems(tmp_path / "i.jsonl")
    attempt = {"teacher": "t", "strategy": "code", "response": "r"}
    text = {**attempt, "strategy": "text"}
    write_jsonl(
        tmp_path / "pairs.jsonl",
        [{"id": "a", "problem": "q", "answer": bad, "first": attempt, "second": text}],
    )
    with pytest.raises(DataError, match=r"pairs\.jsonl:1: field 'answer' must be a string or a number"):
        read_pairs(tmp_path / "pairs.jsonl")
    write_jsonl(tmp_path / "g.jsonl", [{"response": "x", "answer": bad}])
    res = CliRunner().invoke(app, ["grade", "-i", str(tmp_path / "g.jsonl"), "-o", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and "g.jsonl:1: field 'answer' must be a string or a number" in res.output
    # numbers are fine everywhere
    write_jsonl(tmp_path / "n.jsonl", [{"id": 7, "question": "q", "answer": 2.0}])
    assert [(p.id, p.answer) for p in load_problems(tmp_path / "n.jsonl")] == [("7", "2")]


def test_compose_refuses_to_overwrite_its_input_and_empty_inputs_say_so(tmp_path):
    attempt = {"teacher": "t", "strategy": "code", "response": "<answer>\\\\boxed{1}</answer>"}
    from dualdistill.core.records import write_jsonl

    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(
        pairs,
        [
            {
                "id": "a",
                "problem": "q",
                "answer": "1",
                "first": attempt,
                "second": {**attempt, "strategy": "text"},
            }
        ],
    )
    before = pairs.read_bytes()
    res = CliRunner().invoke(app, ["compose", "--pairs", str(pairs), "--out", str(pairs)])
    assert res.exit_code == 2 and "the output is the input" in res.output and pairs.read_bytes() == before
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for args in (["compose", "--pairs", str(empty), "--out", str(tmp_path / "c.jsonl")],
                 ["grade", "-i", str(empty), "-o", str(tmp_path / "g.jsonl")],
                 ["teach", "--problems", str(empty), "--out", str(tmp_path / "t")],
                 ["eval", "--model", str(tmp_path), "--bench", str(empty), "--out", str(tmp_path / "e")]):  # fmt: skip
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2 and "empty.jsonl" in res.output and "holds no" in res.output, (
            args,
            res.output,
        )


def test_a_real_recipe_run_again_with_the_workdir_spelled_relatively_skips_every_stage(tmp_path, monkeypatch):
    args = ["run", "embedded_quick", "--until", "compose", "world.n=40", "compose.decontaminate=false"]
    first = CliRunner().invoke(app, [*args, "--workdir", str(tmp_path / "w")])
    assert first.exit_code == 0, first.output
    monkeypatch.chdir(tmp_path)
    again = CliRunner().invoke(app, [*args, "--workdir", "w"])
    assert again.exit_code == 0, again.output
    ran = [line for line in again.output.splitlines() if ": running" in line]
    assert ran == [] and again.output.count("up to date, skipped") == 4, again.output
