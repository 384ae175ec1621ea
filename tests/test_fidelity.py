"""Issue 14: faithful to the released DualDistill code where it matters, correct where it was not."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from dualdistill.cli.app import app
from dualdistill.records import write_jsonl

CHAT = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


# ----------------------------------------------------------------------------- 7. template chat everywhere
def test_template_chat_works_in_view_and_inspect_masks(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    model = tmp_path / "chat-model"
    shutil.copytree(tiny_model_dir, model)
    tok = AutoTokenizer.from_pretrained(model)
    tok.chat_template = CHAT
    tok.save_pretrained(model)
    data = tmp_path / "d.jsonl"
    write_jsonl(
        data, [{"id": "a", "problem": "What is 2+2?", "text": "<think>4</think><answer>\\boxed{4}</answer>"}]
    )
    res = CliRunner().invoke(
        app, ["inspect-masks", str(data), "--tokenizer", str(model), "--json", "template=chat"]
    )
    assert res.exit_code == 0, res.output
    row = json.loads(res.output.splitlines()[0])
    assert row["trained_tokens"] > 0 and "\\boxed{4}" in "".join(t["text"] for t in row["trained"])
    res = CliRunner().invoke(
        app,
        ["view", str(data), "--tokenizer", str(model), "--out", str(tmp_path / "v.html"), "template=chat"],
    )
    assert res.exit_code == 0, res.output
    import html
    import re

    shown = html.unescape(re.sub(r"<[^>]+>", "", (tmp_path / "v.html").read_text()))
    assert "<|system|>A conversation between User and Assistant" in shown
    res = CliRunner().invoke(
        app, ["inspect-masks", str(data), "--tokenizer", str(tiny_model_dir), "template=chat"]
    )
    assert res.exit_code == 2 and "chat template" in res.output


# ----------------------------------------------------------------------------- 8. shipped accelerate configs
def test_accelerate_configs_ship_in_the_package_and_resolve_by_name(tmp_path):
    import dualdistill
    from dualdistill.config import ConfigError
    from dualdistill.recipe import load_recipe, shipped_file

    package = shipped_file("paper").parent.parent
    assert package == type(shipped_file("paper"))(dualdistill.__file__).parent
    for name in ("deepspeed_zero3", "fsdp", "sft_tiny", "sft_r1_distill_qwen7b"):
        path = shipped_file(name)
        assert path.is_file() and path.is_relative_to(package), name
    assert load_recipe("paper").launch.accelerate_config == "deepspeed_zero3"
    res = CliRunner().invoke(app, ["config-path", "fsdp"])
    assert res.exit_code == 0 and res.output.strip() == str(shipped_file("fsdp"))
    with pytest.raises(ConfigError, match=r"launch\.accelerate_config"):
        load_recipe("paper", ["launch.accelerate_config=recipes/accelerate/nope.yaml"])
    (tmp_path / "mine.yaml").write_text("compute_environment: LOCAL_MACHINE\n")
    assert load_recipe("paper", [f"launch.accelerate_config={tmp_path / 'mine.yaml'}"])
