"""A stage's cache key is its command: the argv and the speed-free settings of the config files it writes.

A finished run is simulated (every stage's outputs written and recorded, in order), then the recipe is
changed and each stage asked whether it must run again: what the change reaches re-runs, nothing else.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dualdistill.pipeline.recipe import load_recipe
from dualdistill.pipeline.run import build_stages
from dualdistill.pipeline.stages import Manifest, why_run


def finish(recipe, workdir: Path) -> None:
    """Record every stage of ``recipe`` as finished, with placeholder outputs."""
    manifest = Manifest(workdir)
    for stage in build_stages(recipe, workdir):
        for out in stage.outputs:
            out = Path(out)
            out.parent.mkdir(parents=True, exist_ok=True)
            if not out.exists():
                if out.suffix:
                    out.write_text(f"{stage.name} made {out.name}\n")
                else:
                    out.mkdir(parents=True)
                    (out / "weights").write_text(f"{stage.name}\n")
        reason, inputs = why_run(stage, manifest)
        assert reason == "not run yet", stage.name
        manifest.record(stage, inputs, 0.0)


def rerun(recipe, workdir: Path) -> set[str]:
    manifest = Manifest(workdir)
    return {s.name for s in build_stages(recipe, workdir) if why_run(s, manifest)[0] is not None}


@pytest.fixture()
def paper_run(tmp_path):
    finish(load_recipe("paper"), tmp_path)
    return tmp_path


def test_a_finished_run_reruns_nothing(paper_run):
    assert rerun(load_recipe("paper"), paper_run) == set()


@pytest.mark.parametrize("change", ["world.eval_benches=[math500,aime2025]", "world.seed=7"])
def test_eval_benchmarks_and_seed_rerun_the_eval_stages_and_only_them(paper_run, change):
    stages = rerun(load_recipe("paper", [change]), paper_run)
    assert stages == {"eval-dualdistill", "eval-dualdistill_sd"}


def test_a_benchmark_file_is_an_input_of_the_eval_stages(tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text('{"id": "1", "question": "q", "answer": "1"}\n')
    recipe = load_recipe("paper", [f"world.eval_benches=[{bench}]"])
    finish(recipe, tmp_path / "run")
    bench.write_text('{"id": "1", "question": "q", "answer": "2"}\n')  # the file changed, its name did not
    assert rerun(recipe, tmp_path / "run") == {"eval-dualdistill", "eval-dualdistill_sd"}


@pytest.mark.parametrize(
    "change",
    [
        "eval.max_batch=8",
        "teach.concurrency=3",
        "eval.agent.concurrency=5",
        "sft.logging_steps=3",
        "teach.code_teacher.generation.sandbox_concurrency=2",
    ],
)
def test_a_speed_setting_reruns_nothing(paper_run, change):
    assert rerun(load_recipe("paper", [change]), paper_run) == set()


def test_a_setting_that_changes_results_reruns_its_stage_and_what_follows(paper_run):
    stages = rerun(load_recipe("paper", ["sft.lr=2e-5"]), paper_run)
    assert "train-dual" in stages and "teach" not in stages and "compose" not in stages


def test_a_moved_workdir_keeps_its_keys(paper_run, tmp_path_factory):
    import shutil

    moved = tmp_path_factory.mktemp("moved") / "run"
    shutil.copytree(paper_run, moved)
    assert rerun(load_recipe("paper"), moved) == set()
