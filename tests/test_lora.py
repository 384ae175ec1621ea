"""LoRA students: trained through `dualdistill train` and `accelerate launch`, the adapter loadable with
peft, the merged weights a plain model that evaluates through the tool loop, the trained share peft's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_sft_train import _records, accelerate_train

CLI = [sys.executable, "-c", "from dualdistill.cli import main; main()"]
LORA = ["peft.r=4", "peft.alpha=8", "max_steps=6", "progress=false", "report_to=[]"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lora-data") / "composed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, data) -> Path:
    out = tmp_path_factory.mktemp("lora") / "run"
    r = subprocess.run([*CLI, "train", "--config", "sft_tiny", "--data", str(data), "--model", str(tiny_model_dir),
                        "--out", str(out), *LORA], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_the_adapter_loads_with_peft_and_the_share_is_peft_count(trained, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = trained / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter, is_trainable=True
    )
    trained_n, total = model.get_nb_trainable_parameters()
    summary = json.loads((trained / "model" / "train_summary.json").read_text())["lora"]
    assert (summary["trained_parameters"], summary["all_parameters"]) == (trained_n, total)
    assert 0 < summary["trained_share"] < 0.5 and summary["r"] == 4
    card = (trained / "model" / "README.md").read_text()
    assert "LoRA r=4" in card and f"{trained_n:,} of {total:,}" in card and "merged" in card


def test_the_merged_weights_are_a_plain_model_that_evaluates_with_tools(trained, tmp_path):
    model_dir = trained / "model"
    assert (model_dir / "config.json").is_file() and not (model_dir / "adapter_config.json").exists()
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"id": "1", "question": "Combine 3 and 4.", "answer": "7"}) + "\n")
    r = subprocess.run([*CLI, "eval", "--model", str(model_dir), "--bench", str(bench), "--template", "compact",
                        "--budget", "64", "--temperature", "0", "--max-tool-calls", "1", "--out", str(tmp_path / "e"),
                        "--no-progress"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    (record,) = [json.loads(x) for x in (tmp_path / "e" / "records.jsonl").read_text().splitlines()]
    assert record["finish_reason"] in ("answer", "budget", "stop") and record["n_generated"] > 0


@pytest.mark.slow
def test_lora_under_accelerate_launch_on_one_cpu_process(tmp_path, tiny_model_dir, data):
    accelerate_train(data, tiny_model_dir, tmp_path / "acc", *LORA, timeout=600)
    assert (tmp_path / "acc" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "acc" / "model" / "config.json").is_file()


@pytest.mark.slow
def test_a_lora_run_of_the_quick_recipe_completes(tmp_path):
    work = tmp_path / "quick-lora"
    r = subprocess.run([*CLI, "run", "embedded_quick", "--workdir", str(work), "sft.peft.r=8", "sft.peft.alpha=16",
                        "controls=false"],
                       capture_output=True, text=True, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    lora = json.loads((work / "models" / "dualdistill" / "model" / "train_summary.json").read_text())["lora"]
    assert lora["r"] == 8 and lora["merge"] is True
    # Self-distillation retrained from the merged student, and every student was evaluated.
    assert (work / "models" / "dualdistill_sd" / "model" / "config.json").is_file()
    assert (work / "eval" / "dualdistill_sd" / "report.json").is_file()


def test_an_adapter_only_run_saves_a_loadable_adapter(tmp_path, tiny_model_dir, data):
    """peft.merge: false (the common case) ends with the adapter in OUT/model, not a crash, and eval loads
    that directory directly, on the base model its adapter_config.json names."""
    out = tmp_path / "run"
    r = subprocess.run([*CLI, "train", "--config", "sft_tiny", "--data", str(data), "--model", str(tiny_model_dir),
                        "--out", str(out), *LORA, "peft.merge=false"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "model" / "adapter_config.json").exists() and not (out / "model" / "config.json").exists()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out / "model")
    # eval (and so solve and self-distillation, which open models the same way) takes the adapter directory
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"id": "1", "question": "Combine 3 and 4.", "answer": "7"}) + "\n")
    r = subprocess.run([*CLI, "eval", "--model", str(out / "model"), "--bench", str(bench), "--template", "compact",
                        "--budget", "64", "--temperature", "0", "--max-tool-calls", "1", "--out", str(tmp_path / "e"),
                        "--no-progress"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    (record,) = [json.loads(x) for x in (tmp_path / "e" / "records.jsonl").read_text().splitlines()]
    assert record["n_generated"] > 0


@pytest.mark.parametrize(
    ("targets", "says"), [("[]", "is empty"), ("[q_proj,nope_proj]", "nope_proj not in")]
)
def test_bad_target_modules_are_one_line_naming_the_setting(tmp_path, tiny_model_dir, data, targets, says):
    r = subprocess.run([*CLI, "train", "--config", "sft_tiny", "--data", str(data), "--model", str(tiny_model_dir),
                        "--out", str(tmp_path / "o"), *LORA, f"peft.target_modules={targets}"],
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "peft.target_modules" in r.stderr and says in r.stderr and "q_proj" in r.stderr
