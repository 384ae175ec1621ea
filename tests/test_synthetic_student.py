"""`dualdistill tiny-model`: a real HF model directory whose tokenizer keeps the world's trajectories short."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from dualdistill.cli.app import app
from dualdistill.format.trajectory import executor_block
from dualdistill.synthetic.families import FAMILIES, generate, parse_question
from dualdistill.synthetic.student import TAG_TOKENS
from dualdistill.synthetic.teachers import ProgrammaticTextTeacher, naive_programs


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-synthetic")
    result = CliRunner().invoke(
        app, ["tiny-model", "--out", str(out), "--size", "tiny", "--vocab-size", "1024"]
    )
    assert result.exit_code == 0, result.output
    return out


def test_tiny_model_saves_loads_and_generates(model_dir):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.model_type == "qwen2" and model.config.hidden_size == 64
    for tag in TAG_TOKENS:
        assert len(tok.encode(tag, add_special_tokens=False)) == 1
    pieces = [tok.decode([i]) for i in tok.encode("7^123456 mod 10", add_special_tokens=False)]
    assert [p for p in pieces if p.isdigit()] == list("712345610")
    inputs = tok(["Compute 12 * 34."], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4
    manifest = json.loads((model_dir / "dualdistill.json").read_text())
    assert manifest["size"] == "tiny" and manifest["version"]


def test_teacher_trajectories_stay_short(model_dir):
    """The demo's budget (512 tokens): every teacher trajectory is at most ~210 tokens with this tokenizer
    (the text teacher restates its exponent on the text families: docs/SYNTHETIC.md)."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    teacher = ProgrammaticTextTeacher()
    timeout = executor_block("Error: Code execution timed out. (limit: 3 s)")
    longest: dict[str, int] = {}
    for p in generate(350, seed=5):
        parsed = parse_question(p.question)
        text = teacher.solve_sync(p)
        first, retry = naive_programs(parsed)
        if p.metadata["group"] == "text":  # both programs time out, then a guess
            code = f"<code>\n{first}\n</code>{timeout}<code>\n{retry}\n</code>{timeout}"
            code += "<answer>\nThe code did not finish; a guess: \\boxed{7}\n</answer>"
        else:
            code = f"<code>\n{first}\n</code>{executor_block(p.answer)}<answer>\n\\boxed{{{p.answer}}}\n</answer>"
        n = max(len(tok.encode(text)), len(tok.encode(code)))
        longest[p.metadata["family"]] = max(longest.get(p.metadata["family"], 0), n)
    assert set(longest) == set(FAMILIES)
    assert max(longest.values()) <= 240, longest
