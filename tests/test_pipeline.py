"""The pipeline: recipes load and validate, dry runs print real commands, and the quick demo runs end to end
(killed mid-way and resumed, then re-run with every stage skipped)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dualdistill.core.config import ConfigError
from dualdistill.pipeline.recipe import SHIPPED, load_recipe, recipe_path
from dualdistill.pipeline.run import build_stages, dry_run, seed_overrides, student_names

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipes_load_and_build_stages(name, tmp_path):
    recipe = load_recipe(name)
    stages = build_stages(recipe, tmp_path)
    names = [s.name for s in stages]
    assert names[0] == "world"
    assert "teach" in names and "compose" in names and "train-dual" in names
    assert [n for n in names if n.startswith("eval-")] == [f"eval-{s}" for s in student_names(recipe)]


def test_embedded_recipe_has_all_four_students_and_the_paper_repair_ablation():
    recipe = load_recipe("embedded")
    assert recipe.selfdistill.build.repair != "text"  # departs from the paper, so the paper row is shown
    assert student_names(recipe) == [
        "text_only",
        "code_only",
        "code_from_text",
        "union",
        "dualdistill_paper",
        "dualdistill",
        "dualdistill_more",
        "dualdistill_sd",
        "dualdistill_sd_text",
    ]
    assert student_names(load_recipe("embedded", ["controls=false"])) == [
        "text_only", "code_only", "dualdistill", "dualdistill_sd", "dualdistill_sd_text"
    ]  # fmt: skip
    # The paper's rule is both the text repair and the paper's selection; either departure shows its row.
    paper = ["selfdistill.build.repair=text", "selfdistill.build.select=paper"]
    assert student_names(load_recipe("embedded", paper))[-1] == "dualdistill_sd"
    assert student_names(load_recipe("embedded", paper[:1]))[-1] == "dualdistill_sd_text"
    (_, ablation) = load_recipe("embedded").selfdistill.variants()[1]
    assert (ablation.repair, ablation.select) == ("text", "paper")


def test_controls_train_the_dualdistill_stages_steps_from_the_text_only_student(tmp_path):
    """Each control starts where DualDistill starts and trains as many steps (``--steps-of``); the
    self-distillation control trains on from DualDistill as many steps as the retrain, at its settings."""
    recipe = load_recipe("embedded")
    stages = {s.name: s for s in build_stages(recipe, tmp_path)}
    text, dual = tmp_path / "models" / "text_only" / "model", tmp_path / "models" / "dualdistill" / "model"
    data = {"train-code-from-text": "code_only.jsonl", "train-union": "union.jsonl",
            "train-dualdistill-paper": "composed_paper.jsonl"}  # fmt: skip
    for name, file in data.items():
        argv = stages[name].run.argv
        assert argv[argv.index("--model") + 1] == str(text) and argv[argv.index("--steps-of") + 1] == str(
            dual
        )
        assert argv[argv.index("--data") + 1] == str(tmp_path / "data" / file)
        assert dual in stages[name].inputs
        (config,) = stages[name].run.files.values()
        assert config == recipe.sft  # the DualDistill stage's settings: batch, schedule, rate
    (paper,) = stages["compose-paper"].run.files.values()
    assert paper.right_right == "paper" and recipe.compose.right_right != "paper"
    more = stages["train-dual-more"].run.argv
    sd = tmp_path / "models" / "dualdistill_sd" / "model"
    assert more[more.index("--model") + 1] == str(dual) and more[more.index("--steps-of") + 1] == str(sd)
    assert more[more.index("--data") + 1] == str(tmp_path / "data" / "composed.jsonl")
    assert list(stages["train-dual-more"].run.files.values()) == [recipe.selfdistill.sft]
    with pytest.raises(Exception, match="controls: true needs baselines"):
        load_recipe("embedded", ["baselines=false"])


def test_paper_repair_ablation_stages_share_the_samples(tmp_path):
    stages = {s.name: s for s in build_stages(load_recipe("embedded"), tmp_path)}
    samples = tmp_path / "selfdistill" / "samples" / "samples.jsonl"
    assert samples in stages["sd-build"].inputs and samples in stages["sd-build-text"].inputs
    assert tmp_path / "teach" / "pairs.jsonl" in stages["sd-build"].inputs  # best: the teachers' records
    assert stages["sd-train-text"].outputs == [tmp_path / "models" / "dualdistill_sd_text" / "model"]
    assert stages["sd-build"].key(tmp_path) != stages["sd-build-text"].key(tmp_path)


@pytest.mark.parametrize("base", ["text_only", "code_only"])
def test_teacher_distillation_starts_from_the_chosen_baseline(base, tmp_path):
    recipe = load_recipe("embedded", [f"dual_init={base}", "controls=false"])
    stage = next(s for s in build_stages(recipe, tmp_path) if s.name == "train-dual")
    assert tmp_path / "models" / base / "model" in stage.inputs
    line = next(
        x for x in dry_run(recipe, tmp_path) if " --out " in x and "dualdistill" in x.split("--out")[1]
    )
    assert f"--model {tmp_path}/models/{base}/model" in line


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe_path("embedded").read_text() + "\nsft_typo: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*sft_typo"):
        load_recipe(bad)


def test_nested_type_error_names_the_dotted_key(tmp_path):
    with pytest.raises(ConfigError, match=r"sft\.epochs"):
        load_recipe("embedded", ["sft.epochs=many"])


def test_overrides_win_over_the_file():
    recipe = load_recipe("embedded", ["sft.lr=1e-4", "selfdistill.sample.k=8", "eval.agent.tools=false"])
    assert recipe.sft.lr == 1e-4
    assert recipe.selfdistill.sample.k == 8
    assert recipe.eval.agent.tools is False
    assert recipe.text_sft.lr == 2e-3  # the YAML anchor's other users keep the file's value


def test_files_world_needs_a_training_file():
    with pytest.raises(ConfigError, match="train_file"):
        load_recipe("paper", ["world.train_file="])


def test_paper_dry_run_prints_accelerate_and_vllm_commands(tmp_path):
    import yaml

    lines = dry_run(load_recipe("paper"), tmp_path)
    text = "\n".join(lines)
    from dualdistill.pipeline.recipe import shipped_file

    shipped = shipped_file("deepspeed_zero3")
    assert shipped.is_file() and shipped.is_relative_to(Path(__import__("dualdistill").__file__).parent)
    assert f"accelerate launch --config_file {shipped}" in text
    assert "--model deepseek-ai/DeepSeek-R1-Distill-Qwen-7B" in text
    assert "--model vllm:" in text
    assert "dualdistill bench export deepmath" in text
    # the settings the commands do not spell out are in the config files they read, written by the dry run
    configs = tmp_path / "configs"
    assert yaml.safe_load((configs / "sd-sample.yaml").read_text())["k"] == 16
    eval_cfg = yaml.safe_load((configs / "eval.yaml").read_text())
    assert (eval_cfg["agent"]["top_p"], eval_cfg["agent"]["template"]) == (0.95, "paper")
    for token in text.split():
        if token.endswith(".yaml") and str(tmp_path) in token:
            assert Path(token).exists(), token
    assert not (tmp_path / "manifest.json").exists()  # nothing ran


@pytest.mark.parametrize("name", SHIPPED)
def test_every_printed_command_is_a_real_cli_command(name, tmp_path):
    """Each printed ``dualdistill`` line parses under the CLI: the command exists and takes every option
    given (``--help`` is eager, so parsing stops before anything runs)."""
    import shlex

    from dualdistill.cli import app

    lines = [x for x in dry_run(load_recipe(name), tmp_path) if not x.startswith("#")]
    assert lines
    for line in lines:
        argv = shlex.split(line)
        if argv[0] == "accelerate":
            argv = ["dualdistill", *argv[argv.index("dualdistill.cli") + 1 :]]
        assert argv[0] == "dualdistill", line  # no `python -c`, no shell tricks
        code = app(args=[*argv[1:], "--help"], prog_name="dualdistill", standalone_mode=False)
        assert code in (None, 0), line


def test_dry_run_matches_the_recipe_where_it_had_drifted(tmp_path):
    """The world command writes the per-group test files the evals read; the seed, limit and top_p reach
    the eval and sampling configs; the tiny student's vocabulary is the recipe's."""
    import yaml

    recipe = load_recipe("embedded_quick", ["student.init=tiny", "eval.agent.top_p=0.9", "world.seed=3",
                                            "selfdistill.problems_limit=30"])  # fmt: skip
    text = "\n".join(dry_run(recipe, tmp_path))
    assert "--vocab-size 512" in text and "--corpus-seed 3" in text
    assert "--limit 30" in text and recipe.selfdistill.problems_limit == 30
    every = "\n".join(dry_run(load_recipe("embedded_quick"), tmp_path / "all"))
    sample = next(x for x in every.splitlines() if x.startswith("dualdistill self-distill sample"))
    assert "--limit" not in sample  # the shipped recipes sample every training problem
    eval_cfg = yaml.safe_load((tmp_path / "configs" / "eval.yaml").read_text())
    assert (eval_cfg["seed"], eval_cfg["limit"], eval_cfg["agent"]["top_p"]) == (3, recipe.eval.limit, 0.9)
    assert eval_cfg["benches"] == [
        str(tmp_path / "world" / f"test_{g}.jsonl") for g in ("tool", "text", "mixed")
    ]
    world = next(x for x in text.splitlines() if x.startswith("dualdistill synthetic make"))
    out = tmp_path / "w"
    subprocess.run(
        [*world.replace(str(tmp_path / "world"), str(out)).split()], check=True, capture_output=True
    )
    for group in ("tool", "text", "mixed"):
        assert (out / f"test_{group}.jsonl").stat().st_size > 0
    assert sum(1 for _ in (out / "train.jsonl").open()) == recipe.world.train_limit


def test_tiny_model_options_are_the_student_configs_fields():
    from dualdistill.cli.synthetic import tiny_model
    from dualdistill.pipeline.recipe import StudentConfig

    # Derived from the fields: defaults and bounds cannot drift (tests/test_cli_options.py checks bounds).
    assert {(cls, o.key) for cls, o in tiny_model.derived_options} == {
        (StudentConfig, k) for k in ("size", "vocab_size", "corpus_n", "seed")
    }


def test_dry_run_cli(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "dualdistill.cli", "run", "paper", "--workdir", str(tmp_path), "--dry-run"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "# train-dual: teacher distillation" in out.stdout


def test_cli_config_error_is_clean(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "dualdistill.cli", "run", "embedded", "--workdir", str(tmp_path), "sft.nope=1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2
    assert "unknown key 'sft.nope'" in out.stderr
    assert "Traceback" not in out.stderr


def _wait_for_lines(path: Path, n: int, proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and sum(1 for _ in path.open()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before {path} had {n} lines")
        time.sleep(0.2)
    raise AssertionError(f"{path} did not reach {n} lines in {timeout}s")


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.timeout(3600)  # five runs of the quick demo (kill, resume, skip, fresh under load, shell)
def test_quick_demo_end_to_end_with_kill_and_resume(tmp_path):
    workdir = tmp_path / "demo"
    cmd = [sys.executable, "-m", "dualdistill.cli", "demo", "--quick", "--workdir", str(workdir)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # 1. Kill the run while the teachers are writing records.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)  # fmt: skip
    teach_records = workdir / "teach" / "records.jsonl"
    try:
        _wait_for_lines(teach_records, 40, proc, timeout=300)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = len(_records(teach_records))
    # 2. Run again: it resumes and finishes.
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "teach: running" in done.stdout
    # no record of the teachers is lost or duplicated
    keys = [(r["id"], r["role"]) for r in _records(teach_records) if r.get("status") == "ok"]
    assert len(keys) == len(set(keys))
    assert len(_records(teach_records)) >= killed_at
    train = _records(workdir / "world" / "train.jsonl")
    pairs = _records(workdir / "teach" / "pairs.jsonl")
    assert {p["id"] for p in pairs} <= {p["id"] for p in train}
    assert len(pairs) >= 0.9 * len(train)
    # every stage produced its outputs, and the report holds all four students
    manifest = json.loads((workdir / "manifest.json").read_text())
    n_stages = len(build_stages(load_recipe("embedded_quick"), workdir))
    assert len(manifest["stages"]) == n_stages == 26
    for stage in manifest["stages"].values():
        for output in stage["outputs"]:
            assert not Path(output).is_absolute(), output  # named relative to the workdir
            assert (workdir / output).exists(), output
    results = json.loads((workdir / "results.json").read_text())["results"]
    assert list(results) == student_names(load_recipe("embedded_quick"))
    assert "code_from_text" in results and "dualdistill_more" in results
    for by_split in results.values():
        assert set(by_split) == {"test_tool", "test_text", "test_mixed", "overall", "budget"}
        overall = by_split["overall"]
        assert overall["records"] == sum(
            by_split[s]["records"] for s in ("test_tool", "test_text", "test_mixed")
        )
        for split in ("test_tool", "test_text", "test_mixed", "overall"):
            assert by_split[split]["problems"] > 0 and 0.0 <= by_split[split]["accuracy"] <= 1.0
    # the controls' budgets: DualDistill's start and steps; the SD control the retrain's steps
    budget = {name: r["budget"] for name, r in results.items()}
    for control in ("code_from_text", "union", "dualdistill_paper"):
        assert (budget[control]["start"], budget[control]["steps"]) == (
            "text_only",
            budget["dualdistill"]["steps"],
        )
    assert (
        budget["dualdistill_more"]["steps"]
        == budget["dualdistill_sd"]["steps"]
        > budget["dualdistill"]["steps"]
    )
    assert budget["text_only"]["start"] == "base" and budget["dualdistill"]["start"] == "text_only"
    for name in ("report.md", "accuracy.png", "tool_use.png"):
        assert (workdir / name).stat().st_size > 0
    assert "DualDistill student" in done.stdout  # the table is printed
    # every model directory the demo wrote has a model card, with that student's measured accuracy
    from huggingface_hub import ModelCard

    for model in [workdir / "models" / "init", *(workdir / "models" / s / "model" for s in results)]:
        card = ModelCard.load(model / "README.md")
        assert card.data.library_name == "transformers", model
    for student, by_split in results.items():
        card = ModelCard.load(workdir / "models" / student / "model" / "README.md")
        assert (
            f"| test_tool | {by_split['test_tool']['problems']} | {100 * by_split['test_tool']['accuracy']:.1f} |"
            in card.text
        )
    eval_records = _records(workdir / "eval" / "dualdistill" / "records.jsonl")
    keys = [(r["source"], r["problem_id"], r["sample_index"]) for r in eval_records]
    assert len(keys) == len(set(keys))
    # 3. A third run skips every stage.
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("up to date, skipped") == n_stages
    # 4. The dry run is the run, and it is deterministic with load beside it: its printed commands, executed
    # in order in a plain shell next to a busy process, give the same evaluation records and reports
    # (executor limits count CPU time, not wall time). One run checks both, to keep CI short; it leaves
    # out the controls, whose command lines are the full plan's with more of them (asserted).
    shell = tmp_path / "shell"
    overrides = seed_overrides(0)  # what `demo --seed 0` adds to the recipe
    dry = [sys.executable, "-m", "dualdistill.cli", "run", "embedded_quick", "--workdir", str(shell), "--dry-run",
           *overrides]  # fmt: skip
    plan = subprocess.run([*dry, "controls=false"], capture_output=True, text=True, check=True)
    full = subprocess.run(dry, capture_output=True, text=True, check=True)
    assert set(plan.stdout.splitlines()) < set(full.stdout.splitlines())
    script = tmp_path / "run.sh"
    script.write_text("set -euo pipefail\n" + plan.stdout)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=1500)
    finally:
        hog.kill()
        hog.wait()
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (shell / "manifest.json").exists()  # the commands alone, no pipeline
    shell_students = sorted(d.name for d in (shell / "eval").iterdir())
    assert {"text_only", "code_only", "dualdistill", "dualdistill_sd"} <= set(shell_students) < set(results)
    for student in shell_students:
        a, b = (_without_timings(json.loads((w / "eval" / student / "report.json").read_text())["benchmarks"])
                for w in (workdir, shell))  # fmt: skip
        assert a["test_tool"]["accuracy"] is not None
        assert a == b, student
        a, b = (_records(w / "eval" / student / "records.jsonl") for w in (workdir, shell))
        key = lambda r: (r["source"], r["problem_id"], r["sample_index"])  # noqa: E731
        assert {key(r): r["response"] for r in a} == {key(r): r["response"] for r in b}, student


TIMING_KEYS = ("stage_seconds", "gen_time_s", "tool_time_s", "tool_time_share")


def _without_timings(node):
    if isinstance(node, dict):
        return {k: _without_timings(v) for k, v in node.items() if k not in TIMING_KEYS}
    return node
