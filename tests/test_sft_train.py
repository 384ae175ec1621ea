"""SFT training on CPU with a tiny Qwen2: loss goes down, the saved model loads and generates, packing does
not leak attention, checkpoints carry their config and resume, and the CLI commands work."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dualdistill.cli import app
from dualdistill.core.config import load_config
from dualdistill.format.prompts import build_prompt
from dualdistill.format.trajectory import CODE_TO_TEXT, executor_block
from dualdistill.pipeline.recipe import shipped_file
from dualdistill.sft.masking import IGNORE, MaskConfig, encode
from dualdistill.sft.train import CONFIG_FILE, SFTConfig, build_trainer, load_examples, load_model, train_run

RECIPES = shipped_file("sft_tiny").parent


def accelerate_train(data: Path, model: Path, out: Path, *overrides: str, timeout: int = 300):
    """`accelerate launch -m dualdistill.cli train` with the tiny SFT recipe on one CPU process."""
    import shutil
    import subprocess

    if shutil.which("accelerate") is None:
        pytest.skip("needs the accelerate CLI")
    cmd = ["accelerate", "launch", "--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "dualdistill.cli", "train", "--config", str(RECIPES / "sft_tiny.yaml"),
           "--data", str(data), "--model", str(model), "--out", str(out), *overrides]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


def _records(n: int = 16) -> list[dict]:
    rng = random.Random(0)
    out = []
    for i in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if i % 3 == 0:
            text = (
                f"<code>\nprint({a}*{b})\n</code>"
                + executor_block(str(a * b))
                + f"<answer>\\boxed{{{a * b}}}</answer>"
            )
            case, teacher = "right", "code"
        elif i % 3 == 1:
            text = f"<think>{a}+{b}={a + b}</think>\n<answer>\\boxed{{{a + b}}}</answer>"
            case, teacher = "right", "text"
        else:
            text = (
                f"<code>\nprint({a}/0)\n</code>"
                + executor_block("Traceback (most recent call last):\nZeroDivisionError")
                + CODE_TO_TEXT
                + f"\n<think>{a}-{b}={a - b}</think>\n<answer>\\boxed{{{a - b}}}</answer>"
            )
            case, teacher = "wrong-right", "code"
        out.append({"id": f"p{i}", "problem": f"Combine {a} and {b}.", "text": text, "case": case,
                    "first_teacher": teacher})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def data_path(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("sftdata") / "composed.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    return p


def _cfg(*overrides: str) -> SFTConfig:
    base = [
        "template=compact",
        "max_length=512",
        "lr=1e-2",
        "batch_size=4",
        "logging_steps=1",
        "progress=false",
    ]
    return load_config(SFTConfig, overrides=base + list(overrides))


def _fixed_batch_loss(model, tokenizer, cfg: SFTConfig, path: Path) -> float:
    rows, _ = load_examples(cfg, path, tokenizer)
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for r in rows[:8]:
            labels = torch.tensor([r["labels"]])
            out = model(input_ids=torch.tensor([r["input_ids"]]), labels=labels)
            k = int((labels[0, 1:] != IGNORE).sum())
            total, n = total + out.loss.item() * k, n + k
    return total / n


def test_two_steps_lower_loss_and_save_a_generating_model(
    tmp_path, tiny_model_dir, tiny_tokenizer, data_path
):
    from transformers import AutoModelForCausalLM

    cfg = _cfg("max_steps=2")
    before = _fixed_batch_loss(load_model(cfg, str(tiny_model_dir)), tiny_tokenizer, cfg, data_path)
    result = train_run(cfg, data_path, tmp_path / "run", init_model=str(tiny_model_dir))
    assert result.steps == 2 and result.stats.kept == 16
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    after = _fixed_batch_loss(model, tiny_tokenizer, cfg, data_path)
    assert after < before - 0.05, (before, after)

    assert model.config.use_cache is True, "the saved config is for generation"
    saved = load_config(SFTConfig, result.model_dir / CONFIG_FILE)
    assert saved == cfg
    summary = json.loads((result.model_dir / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["stats"]["kept"] == 16

    tok = type(tiny_tokenizer).from_pretrained(result.model_dir)
    prompt = tok(build_prompt("Combine 12 and 34.", template="compact"), return_tensors="pt")
    gen = model.generate(**prompt, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] > prompt["input_ids"].shape[1]


def _packed_batch(tiny_model_dir, tiny_tokenizer, tmp_path):
    """Two sequences packed by the very trainer training uses, and the model it trains."""
    cfg = _cfg()
    recs = _records(2)
    rows = []
    for r in recs:
        ex = encode(build_prompt(r["problem"], template="compact"), r["text"], tiny_tokenizer, MaskConfig())
        rows.append({"input_ids": ex.input_ids, "labels": ex.labels})
    model = load_model(cfg, str(tiny_model_dir))
    trainer = build_trainer(cfg, rows, model, tiny_tokenizer, tmp_path / "pk")
    batch = next(iter(trainer.get_train_dataloader()))
    return trainer.model, batch


def test_packed_logits_equal_unpacked_under_training_settings(tiny_model_dir, tiny_tokenizer, tmp_path):
    model, batch = _packed_batch(tiny_model_dir, tiny_tokenizer, tmp_path)
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1, "padding-free packing"
    pos = batch["position_ids"][0]
    starts = (pos == 0).nonzero().flatten().tolist()
    assert len(starts) == 2, "both sequences are in one packed row"
    model.train()  # as in training (Qwen2 has no dropout by default, so outputs are deterministic)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        packed = model(**inputs).logits[0]
        bounds = [*starts, len(pos)]
        for s, e in itertools.pairwise(bounds):
            alone = model(input_ids=batch["input_ids"][:, s:e]).logits[0]
            torch.testing.assert_close(packed[s:e], alone, atol=1e-4, rtol=1e-4)


def test_packing_with_cache_would_leak(tiny_model_dir, tiny_tokenizer, tmp_path):
    """Shows the equality test above can fail: with a KV cache, packed sequences attend to each other."""
    model, batch = _packed_batch(tiny_model_dir, tiny_tokenizer, tmp_path)
    pos = batch["position_ids"][0]
    second = (pos == 0).nonzero().flatten().tolist()[1]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        cached = model(**inputs, use_cache=True).logits[0, second:]
        alone = model(input_ids=batch["input_ids"][:, second:]).logits[0]
    if torch.allclose(cached, alone, atol=1e-4):
        pytest.skip("this transformers version no longer leaks with use_cache=True")
    assert not torch.allclose(cached, alone, atol=1e-4)


def test_checkpoints_carry_config_and_resume(tmp_path, tiny_model_dir, data_path):
    out = tmp_path / "run"
    first = train_run(_cfg("max_steps=2", "save_steps=1"), data_path, out, init_model=str(tiny_model_dir))
    assert first.resumed_from is None
    for step in (1, 2):
        assert (out / f"checkpoint-{step}" / CONFIG_FILE).is_file()
    second = train_run(_cfg("max_steps=3", "save_steps=1"), data_path, out, init_model=str(tiny_model_dir))
    assert second.resumed_from is not None and second.resumed_from.endswith("checkpoint-2")
    assert second.steps == 3
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3


def test_time_budget_stops_early(tmp_path, tiny_model_dir, data_path):
    result = train_run(
        _cfg("max_steps=1000", "max_time_s=0.0"), data_path, tmp_path / "b", init_model=str(tiny_model_dir)
    )
    assert result.steps == 1 and (result.model_dir / "model.safetensors").is_file()


def test_missing_logger_is_a_clear_error(tmp_path, tiny_model_dir, data_path):
    import importlib.util

    from dualdistill.core.config import ConfigError

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here; the error path needs it absent")
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        train_run(_cfg("report_to=[tensorboard]"), data_path, tmp_path / "tb", init_model=str(tiny_model_dir))


def test_every_shipped_recipe_loads():
    recipes = sorted(RECIPES.glob("sft_*.yaml"))
    assert len(recipes) >= 2
    for r in recipes:
        cfg = load_config(SFTConfig, r)
        assert cfg.masking == MaskConfig(), "shipped recipes use every masking rule"
    paper = load_config(SFTConfig, RECIPES / "sft_r1_distill_qwen7b.yaml")
    assert (paper.epochs, paper.lr, paper.max_length, paper.bf16) == (4, 1e-5, 16384, True)
    import yaml

    for acc in ("deepspeed_zero3.yaml", "fsdp.yaml"):
        assert yaml.safe_load((RECIPES / "accelerate" / acc).read_text())["mixed_precision"] == "bf16"


def test_cli_train_and_inspect(tmp_path, tiny_model_dir, data_path):
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["train", "--config", str(RECIPES / "sft_tiny.yaml"), "--data", str(data_path), "--model",
         str(tiny_model_dir), "--out", str(tmp_path / "cli"), "max_steps=1", "progress=false"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "after 1 steps" in res.output and (tmp_path / "cli" / "model" / CONFIG_FILE).is_file()

    res = runner.invoke(app, ["inspect-masks", str(data_path), "--tokenizer", str(tiny_model_dir), "--json",
                              "template=compact"])  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in res.output.splitlines()]
    assert len(rows) == 16
    for row, rec in zip(rows, _records(), strict=True):
        trained = "".join(s["text"] for s in row["trained"])
        assert row["eos_trained"] and trained.endswith("</answer>")
        assert "<executor>" not in trained and "Traceback" not in trained
        for s in row["trained"]:
            assert rec["text"][s["start"] : s["end"]] == s["text"]
        if rec["case"] == "wrong-right":
            assert trained.startswith(CODE_TO_TEXT)


def test_cli_errors_are_clean(tmp_path, tiny_model_dir, data_path):
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--config", str(RECIPES / "sft_tiny.yaml"), "--data", str(data_path),
                              "--model", str(tiny_model_dir), "--out", str(tmp_path), "lr_rate=1"])  # fmt: skip
    assert res.exit_code == 2 and "unknown key 'lr_rate'" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "q", "text": "x"}\n{"problem": 3}\n')
    res = runner.invoke(app, ["inspect-masks", str(bad), "--tokenizer", str(tiny_model_dir)])
    assert res.exit_code == 2 and "bad.jsonl:2" in res.output
    assert "Traceback" not in res.output


@pytest.mark.slow
def test_accelerate_launch_single_process(tmp_path, tiny_model_dir, data_path):
    """The multi-GPU entry point (accelerate launch -m dualdistill.cli) runs the same code on one CPU process."""
    res = accelerate_train(data_path, tiny_model_dir, tmp_path / "acc", "max_steps=2", "progress=false")
    assert "after 2 steps" in res.stdout
    assert (tmp_path / "acc" / "model" / CONFIG_FILE).is_file()


def test_resume_skips_a_checkpoint_that_a_kill_left_half_written(tmp_path):
    from dualdistill.sft.train import last_checkpoint

    assert last_checkpoint(tmp_path / "missing") is None
    for step, complete in ((2, True), (10, True), (12, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"")
        if complete:
            (d / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")  # not 12 (no trainer state), not 2
