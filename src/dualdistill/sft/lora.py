"""LoRA students: train low-rank adapters with ``peft`` through TRL instead of every weight.

``SFTConfig.peft`` (``LoraSettings``) switches it on with ``r > 0``. Training then saves the adapter to
``OUT/adapter`` (``adapter_config.json``, ``adapter_model.safetensors``; ``peft.PeftModel.from_pretrained``
loads it on the initial model) and, with ``merge: true`` (the default), the merged weights to ``OUT/model``:
a plain model directory that ``eval``, ``solve``, self-distillation and vLLM load like any other. With
``merge: false``, ``OUT/model`` holds the adapter (transformers loads it when ``peft`` is installed).

Guarantees: the share of trained parameters reported (training summary, model card) is peft's own count
(``get_nb_trainable_parameters``). Not guaranteed: QLoRA's 4-bit loading (that needs bitsandbytes and a
GPU; ``load_in_4bit`` is passed through to the model loader when set, and refused on a CPU).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from dualdistill.core.config import ConfigError, check_bounds, setting

QWEN_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSettings:
    r: int = setting(0, ge=0, help="LoRA rank; 0: full fine-tuning.")
    alpha: float = setting(16.0, gt=0, help="LoRA scaling alpha.")
    dropout: float = setting(0.0, ge=0, lt=1, help="Dropout on the LoRA path.")
    target_modules: list[str] = field(default_factory=lambda: list(QWEN_MODULES))
    merge: bool = setting(True, help="Also write the merged weights (a plain model) to OUT/model.")
    load_in_4bit: bool = setting(False, help="QLoRA: load the frozen base in 4 bits (GPU, bitsandbytes).")

    def __post_init__(self) -> None:
        check_bounds(self)

    @property
    def enabled(self) -> bool:
        return self.r > 0


def peft_config(settings: LoraSettings):
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules), task_type="CAUSAL_LM",
    )  # fmt: skip


def check_targets(model, settings: LoraSettings) -> None:
    """``ConfigError`` naming the setting and the modules the model has, before peft's traceback would:
    an empty ``target_modules``, or an entry that matches no module of the model."""

    leaves = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if not list(m.children())})
    if not settings.target_modules:
        raise ConfigError(f"peft.target_modules is empty; the model's modules: {', '.join(leaves)}")
    missing = [t for t in settings.target_modules if t not in leaves]
    if missing:
        raise ConfigError(
            f"peft.target_modules: {', '.join(missing)} not in the model; its modules: {', '.join(leaves)}"
        )


def trainable_share(model) -> tuple[int, int]:
    """(trained, all) parameters as peft counts them."""
    return tuple(model.get_nb_trainable_parameters())  # type: ignore[return-value]


def save(trainer, output_dir: Path, model_dir: Path, settings: LoraSettings) -> dict:
    """Save the adapter (and, with merge, the merged weights in ``model_dir``); returns the facts for the
    summary and the model card."""
    trained, total = trainable_share(trainer.model)
    adapter_dir = output_dir / "adapter"
    trainer.save_model(str(adapter_dir))
    if settings.merge:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(model_dir))
    else:
        trainer.save_model(str(model_dir))
    return {"lora": {**dataclasses.asdict(settings), "trained_parameters": trained, "all_parameters": total,
                     "trained_share": trained / total, "adapter": str(adapter_dir)}}  # fmt: skip


def card_lines(facts: dict) -> list[str]:
    lora = facts["lora"]
    kind = "merged into the weights here" if lora["merge"] else "this directory holds the adapter only"
    return [
        f"- LoRA r={lora['r']}, alpha={lora['alpha']:g} on {', '.join(lora['target_modules'])}: "
        f"{lora['trained_parameters']:,} of {lora['all_parameters']:,} parameters trained "
        f"({100 * lora['trained_share']:.2f}%, peft's count); {kind}; the adapter is in `{lora['adapter']}`."
    ]
