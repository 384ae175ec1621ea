"""Interop: `dualdistill solve`, model cards, export/import in three formats, the released data's shape,
and the logs people read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualdistill.cli import app
from dualdistill.core.records import DataError, read_jsonl, write_jsonl
from dualdistill.format.trajectory import ALSO_TEXT, CODE_TO_TEXT, executor_block
from dualdistill.sft import export
from fake_openai_server import FakeOpenAIServer, Outcome

runner = CliRunner()

# Three composition cases, written as compose writes them, plus a non-canonical gap before <executor>.
WRONG_RIGHT = (
    "<code>\nprint(2 ** 100 % 7\n</code>" + executor_block("SyntaxError: '(' was never closed")
    + f"<think>\n{CODE_TO_TEXT}\n2^3 = 1 mod 7, 100 = 3*33 + 1, so 2.\n</think>\n<answer>\n\\boxed{{2}}\n</answer>"
)  # fmt: skip
RIGHT_RIGHT = (
    "<code>\nprint(12 * 34)\n</code>" + executor_block("408")
    + f"<think>\n{ALSO_TEXT}\n12 * 34 = 408.\n</think>\n<answer>\n\\boxed{{408}}\n</answer>"
)  # fmt: skip
ODD_GAP = (
    "<think>\nlet me compute\n</think> <code>x = 3\nprint(x)</code>  \n<executor>3</executor>done \\boxed{3}"
)
EXAMPLES = [
    {"id": "a", "problem": "What is 2^100 mod 7?", "answer": "2", "text": WRONG_RIGHT, "case": "wrong_right"},
    {"id": "b", "problem": "Compute 12 * 34.", "answer": "408", "text": RIGHT_RIGHT, "case": "right_right"},
    {
        "id": "c",
        "problem": "x?",
        "answer": "3",
        "text": ODD_GAP,
        "case": "right_only",
        "grades": {"g1": True},
    },
    {
        "id": "d",
        "problem": "No code.",
        "answer": "1",
        "text": "<think>\n1\n</think>\n\\boxed{1}",
        "case": "single",
    },
]


def _write(tmp_path: Path) -> Path:
    path = tmp_path / "composed.jsonl"
    write_jsonl(path, EXAMPLES)
    return path


# ----------------------------------------------------------------------------- export and import
def test_messages_put_executor_results_in_tool_messages_after_tool_calls():
    row = export.to_messages(EXAMPLES[1])
    roles = [m["role"] for m in row["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant"]
    call = row["messages"][1]["tool_calls"][0]
    assert call["function"]["name"] == "python"
    assert json.loads(call["function"]["arguments"]) == {"code": "\nprint(12 * 34)\n"}
    assert row["messages"][2] == {"role": "tool", "tool_call_id": call["id"], "content": "\n408\n"}
    assert "<executor>" not in json.dumps(row["messages"])  # the output lives only in the tool message
    assert ALSO_TEXT in row["messages"][3]["content"]


@pytest.mark.parametrize("fmt", ["messages", "sharegpt"])
def test_export_then_import_gives_back_the_same_examples(fmt, tmp_path):
    out = tmp_path / f"x.{fmt}.jsonl"
    r = runner.invoke(app, ["export", str(_write(tmp_path)), "--format", fmt, "--out", str(out)])
    assert r.exit_code == 0, r.output
    back = tmp_path / "back.jsonl"
    r = runner.invoke(app, ["import", str(out), "--format", fmt, "--out", str(back)])
    assert r.exit_code == 0, r.output
    assert [rec for _, rec in read_jsonl(back)] == EXAMPLES


@pytest.mark.parametrize("name", ["composed_hf", "composed.parquet"])
def test_hf_export_loads_with_datasets_and_round_trips(name, tmp_path):
    import datasets

    out = tmp_path / name
    r = runner.invoke(app, ["export", str(_write(tmp_path)), "--format", "hf", "--out", str(out)])
    assert r.exit_code == 0, r.output
    if out.suffix == ".parquet":
        ds = datasets.load_dataset("parquet", data_files=str(out), split="train")
        card = out.with_suffix(".md").read_text()
    else:
        ds = datasets.load_from_disk(str(out))
        card = (out / "README.md").read_text()
    assert ds.num_rows == 4 and ds[1]["text"] == RIGHT_RIGHT
    assert json.loads(ds[1]["messages"])[2]["role"] == "tool"
    assert "| wrong_right | 1 |" in card and card.startswith("---\n")
    assert export.import_file(out, "hf") == EXAMPLES


def test_an_hf_dataset_directory_appears_only_when_complete(tmp_path, monkeypatch):
    """A kill while the dataset is written leaves nothing under the final name (and a rerun replaces an
    earlier export whole)."""
    import datasets

    out = tmp_path / "composed_hf"

    def killed(self, path, **kw):
        (Path(path) / "data-00000-of-00001.arrow").parent.mkdir(parents=True, exist_ok=True)
        raise KeyboardInterrupt  # the kill, mid-write

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", killed)
    with pytest.raises(KeyboardInterrupt):
        export.export_examples(EXAMPLES, "hf", out)
    assert not out.exists()
    monkeypatch.undo()
    export.export_examples(EXAMPLES, "hf", out)
    export.export_examples(EXAMPLES[:2], "hf", out)
    assert datasets.load_from_disk(str(out)).num_rows == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".composed_hf.replaced")] == []


def test_import_names_the_bad_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(export.to_messages(EXAMPLES[0])) + "\n" + json.dumps({"messages": []}) + "\n")
    with pytest.raises(DataError, match=r"m\.jsonl:2: not a messages row"):
        export.import_file(path, "messages")
    r = runner.invoke(app, ["export", str(path), "--format", "messages", "--out", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 2 and "m.jsonl:1: missing or empty string field 'problem'" in r.output


# ----------------------------------------------------------------------------- the released data
def test_released_rows_become_examples_with_the_same_masks(tmp_path, tiny_tokenizer):
    """Rows in the released shape ({problem, synthetic_data}, as VanishD/DualDistill and its
    sft/dataloader.py have them) train with exactly the masks of our own composed data."""
    from dualdistill.format.examples import SFTExample
    from dualdistill.sft.masking import MaskConfig, encode_example

    released = tmp_path / "released.jsonl"
    write_jsonl(released, [{"problem": e["problem"], "synthetic_data": e["text"]} for e in EXAMPLES[:3]])
    out = tmp_path / "ours.jsonl"
    r = runner.invoke(app, ["import-released", str(released), "--out", str(out)])
    assert r.exit_code == 0, r.output
    imported = [rec for _, rec in read_jsonl(out)]
    assert [e["case"] for e in imported] == ["wrong_right", "right_right", "right_only"]
    for ours, theirs in zip(EXAMPLES[:3], imported, strict=True):
        a, b = (encode_example(SFTExample.from_dict(x), tiny_tokenizer, MaskConfig(), template="paper", tools=True,
                               max_length=4096, truncation="drop")
                for x in (ours, theirs))  # fmt: skip
        assert (a.input_ids, a.labels) == (b.input_ids, b.labels)
        assert a.n_trained < len(a.input_ids)  # something is masked: prompt, executor, failed attempt


def test_released_rows_without_a_trajectory_are_named(tmp_path):
    bad = tmp_path / "r.jsonl"
    bad.write_text('{"problem": "p", "synthetic_data": "ok"}\n{"problem": "q"}\n')
    with pytest.raises(DataError, match=r"r\.jsonl:2: field 'synthetic_data'"):
        export.import_released(bad)


def test_imported_released_data_trains(tmp_path, tiny_model_dir):
    released = tmp_path / "released.jsonl"
    write_jsonl(released, [{"problem": e["problem"], "synthetic_data": e["text"]} for e in EXAMPLES])
    data = tmp_path / "ours.jsonl"
    write_jsonl(data, export.import_released(released))
    r = runner.invoke(app, ["train", "--config", "sft_tiny", "--data", str(data), "--model", str(tiny_model_dir),
                            "--out", str(tmp_path / "run"), "max_steps=2", "report_to=[]"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "kept 4/4" in r.output


# ----------------------------------------------------------------------------- model cards
def test_train_writes_a_model_card_that_huggingface_hub_parses(tmp_path, tiny_model_dir):
    from huggingface_hub import ModelCard

    from dualdistill.sft.modelcard import add_results

    data = _write(tmp_path)
    r = runner.invoke(app, ["train", "--config", "sft_tiny", "--data", str(data), "--model", str(tiny_model_dir),
                            "--out", str(tmp_path / "run"), "max_steps=2", "report_to=[]"])  # fmt: skip
    assert r.exit_code == 0, r.output
    model = tmp_path / "run" / "model"
    card = ModelCard.load(model / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert card.data.base_model == str(tiny_model_dir)
    assert "right_right 1" in card.text and "wrong_right 1" in card.text and "2 optimizer steps" in card.text
    assert f"dualdistill solve --model {model}" in card.text and "AutoModelForCausalLM" in card.text
    summary = {
        "records": 10,
        "problems": 10,
        "accuracy": 0.7,
        "accuracy_ci95": [0.4, 0.9],
        "tool_use_rate": 0.5,
    }
    add_results(model, {"test_tool": summary})
    card = ModelCard.load(model / "README.md")
    assert "| test_tool | 10 | 70.0 | 40.0–90.0 | 50.0 |" in card.text
    assert "right_right 1" in card.text  # the training facts stay


def test_the_cards_tool_loop_snippet_runs(tmp_path, tiny_model_dir):
    """The plain-transformers snippet in a card is real code: it runs on a model directory."""
    import re

    from dualdistill.sft.modelcard import write_card

    write_card(tiny_model_dir, title="t", made=["- test"])
    text = (Path(tiny_model_dir) / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    exec(compile(snippet.replace("max_new_tokens=512", "max_new_tokens=8"), "snippet", "exec"), {})


# ----------------------------------------------------------------------------- solve
def test_solve_streams_a_trajectory_with_an_executed_block_from_a_server(tmp_path):
    """Against an OpenAI-compatible server (scripted: a tiny model cannot be made to write code), the
    block really runs in the sandbox, and its printed output reaches the model's next request."""
    script = [
        Outcome(text="<think>\nmultiply\n</think>\n<code>\nprint(12 * 34)\n", stop_reason="</code>"),
        Outcome(text="<answer>\n\\boxed{408}\n", stop_reason="</answer>"),
    ]
    with FakeOpenAIServer(script) as srv:
        r = runner.invoke(app, ["solve", "--model", srv.url, "--temperature", "0", "--template", "plain",
                                "Compute 12 * 34."])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "print(12 * 34)" in r.output and "<executor>\n408\n</executor>" in r.output
    assert "answer: 408" in r.output and "1 code blocks run" in r.output
    assert srv.requests[-1].body["prompt"].endswith("<executor>\n408\n</executor>\n")


def test_solve_on_a_tiny_model_reads_stdin_and_prints_json(tiny_model_dir):
    r = runner.invoke(app, ["solve", "--model", str(tiny_model_dir), "--budget", "24", "--json"],
                      input="What is 2 + 2?\n")  # fmt: skip
    assert r.exit_code == 0, r.output
    record = json.loads(r.stdout.strip().splitlines()[-1])
    assert record["problem_id"] == "question" and "What is 2 + 2?" in record["prompt"]
    assert 0 < record["n_tokens"] <= 24 + 200  # the budget counts generated + executor tokens


def test_solve_without_a_question_is_a_clear_error(tiny_model_dir):
    r = runner.invoke(app, ["solve", "--model", str(tiny_model_dir)], input="")
    assert r.exit_code == 2 and "question is empty" in r.output


# ----------------------------------------------------------------------------- logs
def _scalars(log_dir: Path) -> dict[str, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for events in log_dir.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out[tag] = acc.Scalars(tag)[-1].value
    return out


def test_training_writes_tensorboard_by_default(tmp_path, tiny_model_dir):
    pytest.importorskip("tensorboard")  # in the test extra; "auto" logs nothing without it
    r = runner.invoke(app, ["train", "--config", "sft_tiny", "--data", str(_write(tmp_path)), "--model",
                            str(tiny_model_dir), "--out", str(tmp_path / "run"), "max_steps=2", "logging_steps=1"])  # fmt: skip
    assert r.exit_code == 0, r.output
    scalars = _scalars(tmp_path / "run" / "runs")
    assert "train/loss" in scalars and scalars["train/loss"] > 0


def test_eval_writes_its_summary_to_the_log_dir(tmp_path, tiny_model_dir):
    from dualdistill.format.problems import Problem, write_problems

    bench = tmp_path / "toy.jsonl"
    write_problems(bench, [Problem("t0", "What is 1 + 1?", "2"), Problem("t1", "What is 2 + 2?", "4")])
    r = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--bench", str(bench), "--budget", "16",
                            "--no-tools", "--out", str(tmp_path / "ev"), "--log-dir", str(tmp_path / "logs"),
                            "--no-progress"])  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "ev" / "report.json").read_text())["benchmarks"]["toy"]
    scalars = _scalars(tmp_path / "logs")
    assert scalars["eval/toy/accuracy"] == pytest.approx(report["accuracy"])
    assert scalars["eval/toy/mean_tokens"] == pytest.approx(report["mean_tokens"])
