"""The pipeline's stage bookkeeping: skip when unchanged, re-run on config/input/output change."""

import json

import pytest

from dualdistill.core.resume import hash_path
from dualdistill.pipeline.stages import Stage, run_stages


def _stages(tmp_path, calls, scale=2):
    src = tmp_path / "in.txt"
    mid = tmp_path / "mid.txt"
    out = tmp_path / "out.txt"

    def double():
        calls.append("double")
        mid.write_text(str(int(src.read_text()) * scale))

    def inc():
        calls.append("inc")
        out.write_text(str(int(mid.read_text()) + 1))

    return [
        Stage("double", double, inputs=[src], outputs=[mid], config={"scale": scale}),
        Stage("inc", inc, inputs=[mid], outputs=[out], config={}),
    ]


def test_second_run_skips_everything(tmp_path):
    (tmp_path / "in.txt").write_text("3")
    calls = []
    run_stages(_stages(tmp_path, calls), tmp_path, log=lambda s: None)
    run_stages(_stages(tmp_path, calls), tmp_path, log=lambda s: None)
    assert calls == ["double", "inc"]
    assert (tmp_path / "out.txt").read_text() == "7"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"double", "inc"}


def test_config_change_reruns_stage_and_downstream(tmp_path):
    (tmp_path / "in.txt").write_text("3")
    calls = []
    run_stages(_stages(tmp_path, calls), tmp_path, log=lambda s: None)
    calls.clear()
    run_stages(_stages(tmp_path, calls, scale=3), tmp_path, log=lambda s: None)
    assert calls == ["double", "inc"]
    assert (tmp_path / "out.txt").read_text() == "10"


def test_unchanged_output_of_rerun_stage_keeps_downstream_skipped(tmp_path):
    (tmp_path / "in.txt").write_text("3")
    calls = []
    run_stages(_stages(tmp_path, calls), tmp_path, log=lambda s: None)
    calls.clear()
    run_stages(_stages(tmp_path, calls), tmp_path, log=lambda s: None, force={"double"})
    assert calls == ["double"]  # same mid.txt content, so "inc" stays up to date


def test_deleted_output_reruns(tmp_path):
    (tmp_path / "in.txt").write_text("3")
    calls = []
    run_stages(_stages(tmp_path, calls), tmp_path, log=lambda s: None)
    (tmp_path / "out.txt").unlink()
    calls.clear()
    run_stages(_stages(tmp_path, calls), tmp_path, log=lambda s: None)
    assert calls == ["inc"]


def test_stage_killed_midway_is_not_recorded(tmp_path):
    (tmp_path / "in.txt").write_text("3")
    calls = []
    stages = _stages(tmp_path, calls)

    def boom():
        raise KeyboardInterrupt

    stages[1].run = boom
    with pytest.raises(KeyboardInterrupt):
        run_stages(stages, tmp_path, log=lambda s: None)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"double"}
    calls.clear()
    run_stages(_stages(tmp_path, calls), tmp_path, log=lambda s: None)
    assert calls == ["inc"]


def test_missing_input_names_the_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"stage 'double'.*in\.txt"):
        run_stages(_stages(tmp_path, []), tmp_path, log=lambda s: None)


def test_hash_path_directory_changes_with_content(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_text("1")
    h1 = hash_path(d)
    (d / "a").write_text("2")
    assert hash_path(d) != h1
    assert hash_path(tmp_path / "nope") is None


def _resumable(tmp_path, calls, scale):
    """A stage that appends one record per input line and resumes from the lines already written."""
    src, state = tmp_path / "in.txt", tmp_path / "work"
    out = state / "records.txt"

    def run():
        state.mkdir(exist_ok=True)
        done = out.read_text().splitlines() if out.exists() else []
        todo = src.read_text().splitlines()[len(done) :]
        calls.extend(todo)
        with out.open("a") as f:
            f.writelines(f"{int(x) * scale}\n" for x in todo)

    return [Stage("scale", run, inputs=[src], outputs=[out], config={"scale": scale}, state=[state])]


def test_rerun_after_a_change_starts_over_but_a_killed_first_run_resumes(tmp_path):
    (tmp_path / "in.txt").write_text("1\n2\n3\n")
    out = tmp_path / "work" / "records.txt"
    out.parent.mkdir()
    out.write_text("10\n")  # a first run killed after one record: resumed, not redone
    calls = []
    run_stages(_resumable(tmp_path, calls, 10), tmp_path, log=lambda s: None)
    assert calls == ["2", "3"] and out.read_text() == "10\n20\n30\n"
    calls.clear()
    run_stages(_resumable(tmp_path, calls, 100), tmp_path, log=lambda s: None)
    assert calls == ["1", "2", "3"], "records made under the old config must not be resumed"
    assert out.read_text() == "100\n200\n300\n"


def test_clearing_state_never_leaves_the_workdir(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "in.txt").write_text("1")

    def stage(cfg):  # writes its output only when it is missing
        run = lambda: outside.exists() or outside.write_text("new")  # noqa: E731
        return Stage("s", run, inputs=[workdir / "in.txt"], outputs=[outside], config=cfg)

    run_stages([stage({"a": 1})], workdir, log=lambda s: None)
    outside.write_text("user data")
    run_stages([stage({"a": 2})], workdir, log=lambda s: None)
    assert outside.read_text() == "user data"


def test_a_model_card_is_documentation_not_output(tmp_path):
    """Adding evaluation results to a finished model's card must not make its stage run again."""
    from dualdistill.core.resume import hash_path

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    before = hash_path(model)
    (model / "README.md").write_text("# card with results")
    (model / "eval_results.json").write_text("{}")
    assert hash_path(model) == before
    (model / "model.safetensors").write_bytes(b"other weights")
    assert hash_path(model) != before
