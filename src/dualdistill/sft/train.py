"""Supervised fine-tuning of a student on composed trajectories, with TRL's ``SFTTrainer``.

Workflow (``train``): read the composed JSONL -> build each prompt with ``format.prompts.build_prompt`` (the
function evaluation uses) -> tokenize and label with ``sft.masking`` -> hand the pre-tokenized
``input_ids``/``labels`` to ``trl.SFTTrainer`` (best-fit packing without padding, position ids restart per
sequence) -> save a normal Hugging Face model directory (weights, tokenizer, ``sft_config.yaml``).

Packing (``packing: true``) is padding-free: each batch is one flattened row whose position ids restart
per sequence. That is linear only with a varlen attention kernel (``flash_attention_2`` on GPU); with
``sdpa``/``eager`` the row is attended with a block-diagonal mask, quadratic in the whole batch's tokens.
On CPU use ``packing: false``: padded batches drawn grouped by length waste little padding
(docs/BENCHMARKS.md "## SFT training" has the figures).

Single- and multi-process runs share this one path: under ``accelerate launch`` (see
the shipped ``accelerate`` configs (``dualdistill config-path fsdp``)) the Trainer picks up the distributed environment.

Guarantees:
- Training runs with ``model.config.use_cache = False``: with padding-free packing a KV cache makes the
  tokens of one packed sequence attend to the one before it. The saved model has ``use_cache = True`` again
  for generation. ``tests/test_sft_train.py`` checks packed and unpacked logits agree under these settings.
- The resolved ``SFTConfig`` is saved next to every checkpoint and in the final model directory.
- An existing ``checkpoint-*`` in the output directory is resumed (``resume: true``, the default).
- ``max_time_s`` stops training at the first step past the budget and still saves the model.

Not guaranteed: bit-identical results across resumes, and GPU throughput (measure it with the bench).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dualdistill.backends import check_model_dir
from dualdistill.core.config import (
    ConfigError,
    bounded,
    check_bounds,
    identity,
    save_config,
    setting,
    to_dict,
)
from dualdistill.core.records import DataError, disk_errors, provenance
from dualdistill.core.resume import ResumeMismatch, check_identity, hash_path, model_fingerprint
from dualdistill.format.examples import read_examples
from dualdistill.format.prompts import PromptTemplate
from dualdistill.sft import lora
from dualdistill.sft.lora import LoraSettings, card_lines, check_targets, peft_config
from dualdistill.sft.loss import sequence_mean_trainer
from dualdistill.sft.masking import MaskConfig, MaskStats, encode_example
from dualdistill.sft.modelcard import training_facts, write_card

CONFIG_FILE = "sft_config.yaml"


@dataclass
class SFTConfig:
    """Everything that shapes an SFT run. A recipe YAML is this dataclass serialised."""

    # Paths: the identity holds the data's content and the initial model's weights instead (train_identity).
    data: str | None = setting(None, identity=False, help="Composed JSONL (the CLI's --data overrides).")
    model: str | None = setting(None, identity=False, help="Initial model dir or hub id (--model overrides).")
    output_dir: str | None = setting(
        None, identity=False, help="Where checkpoints and the model go (--out overrides)."
    )
    template: PromptTemplate = "paper"
    tools: bool = True
    masking: MaskConfig = field(default_factory=MaskConfig)
    peft: LoraSettings = field(default_factory=LoraSettings)  # r > 0: a LoRA student (sft/lora.py)
    max_length: int = bounded(16384, ge=8)
    truncation: Literal["drop", "truncate"] = "drop"
    # How long to train: a resume may train longer (scope), not differently.
    epochs: float = setting(4.0, gt=0, scope=True, help="Passes over the data.")
    max_steps: int = setting(-1, scope=True, help="Optimizer steps; > 0 overrides epochs.")
    max_time_s: float | None = setting(
        None, ge=0, scope=True, help="Stop (and save) after this many seconds of training."
    )
    lr: float = bounded(1e-5, gt=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    # "token": every trained token weighs the same (TRL); "sequence": every trajectory weighs the same,
    # as the released training's one trajectory per step (sft/loss.py)
    loss_normalization: Literal["token", "sequence"] = "token"
    warmup: float = bounded(0.0, ge=0)  # a fraction of the steps when < 1, else a number of steps
    weight_decay: float = bounded(0.0, ge=0)
    batch_size: int = bounded(1, ge=1)  # sequences (packed rows when packing) per device per step
    grad_accum: int = bounded(1, ge=1)
    packing: bool = True  # padding-free best-fit packing; false: padded, length-grouped batches
    bf16: bool | Literal["auto"] = "auto"  # auto: bf16 when a CUDA device supports it
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"
    # CPU intra-op threads; 0: torch's default (see the shipped sft_tiny.yaml for why 1)
    threads: int = setting(0, ge=0, identity=False)
    seed: int = 42
    logging_steps: int = setting(10, ge=1, identity=False)
    # Loggers: "tensorboard", "wandb"; "auto" (the default) is tensorboard when it is installed, else none.
    # TensorBoard events go to OUTPUT_DIR/runs/<time>_<host> (tensorboard --logdir OUTPUT_DIR/runs).
    report_to: list[str] = setting(default_factory=lambda: ["auto"], identity=False)
    save_steps: int = setting(0, ge=0, identity=False)  # 0: save only at the end
    save_total_limit: int = setting(2, ge=1, identity=False)
    resume: bool = setting(True, identity=False)
    progress: bool = setting(True, identity=False)

    def __post_init__(self) -> None:
        check_bounds(self)
        for r in self.report_to:
            if r not in ("auto", "tensorboard", "wandb"):
                raise ValueError(f"report_to: unknown logger {r!r} (choose auto, tensorboard or wandb)")


def loggers(config: SFTConfig) -> list[str]:
    """``report_to`` resolved: ``auto`` is tensorboard when installed (else nothing)."""
    out = []
    for r in config.report_to:
        if r == "auto":
            r = "tensorboard" if importlib.util.find_spec("tensorboard") is not None else ""
        if r and r not in out:
            out.append(r)
    return out


@dataclass
class TrainResult:
    model_dir: Path
    steps: int
    train_loss: float | None
    stats: MaskStats
    seconds: float
    resumed_from: str | None = None


def trained_steps(model_dir: str | Path) -> int:
    """The optimizer steps the model in ``model_dir`` was trained, from its ``train_summary.json``."""
    path = Path(model_dir) / "train_summary.json"
    try:
        steps = json.loads(path.read_text(encoding="utf-8"))["steps"]
    except FileNotFoundError:
        raise DataError(path, "not found: the model was not trained by `dualdistill train`") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(path, f"no step count ({type(e).__name__}: {e})") from None
    if not isinstance(steps, int) or steps < 1:
        raise DataError(path, f"key 'steps' must be a positive integer, got {steps!r}")
    return steps


def load_examples(config: SFTConfig, data_path: str | Path, tokenizer) -> tuple[list[dict], MaskStats]:
    """Tokenize and label every record; bad records raise DataError naming file and line."""
    stats = MaskStats()
    rows: list[dict] = []
    for _, example in read_examples(data_path):
        ex = encode_example(
            example, tokenizer, config.masking, template=config.template, tools=config.tools,
            max_length=config.max_length, truncation=config.truncation,
        )  # fmt: skip
        stats.examples += 1
        if ex is None:
            stats.dropped_too_long += 1
            continue
        n_trained = ex.n_trained
        if n_trained == 0:
            stats.dropped_no_target += 1
            continue
        stats.truncated += ex.truncated
        stats.kept += 1
        stats.tokens += len(ex.input_ids)
        stats.trained_tokens += n_trained
        case = example.case or "unknown"
        stats.per_case[case] = stats.per_case.get(case, 0) + 1
        rows.append({"input_ids": ex.input_ids, "labels": ex.labels})
    if not rows:
        raise DataError(data_path, f"no usable examples (stats: {to_dict(stats)})")
    return rows, stats


def _use_bf16(config: SFTConfig) -> bool:
    import torch

    gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if config.bf16 == "auto":
        return gpu_bf16
    if config.bf16 and not gpu_bf16:
        raise ConfigError("bf16: true needs a CUDA device with bf16 support (set bf16: auto on CPU)")
    return bool(config.bf16)


def _check_loggers(config: SFTConfig) -> None:
    for r in loggers(config):
        if importlib.util.find_spec(r) is None:
            raise ConfigError(f"report_to: {r} is not installed (pip install {r})")


def _trl_args(config: SFTConfig, output_dir: Path, bf16: bool):
    import torch
    from trl import SFTConfig as TRLConfig

    names = {f.name for f in dataclasses.fields(TRLConfig)}
    # TRL's own default is gradient_checkpointing=True (recompute every activation in backward), and
    # its "activation_checkpointing" is a different, FSDP-only switch: always pass ours explicitly.
    extra = {"gradient_checkpointing": config.gradient_checkpointing}
    if not config.packing and "train_sampling_strategy" in names:
        extra["train_sampling_strategy"] = "group_by_length"  # padded batches of similar lengths pad little
    with warnings.catch_warnings():
        # transformers 5 calls the field deprecated, but it is the one TRL reads (see above).
        warnings.filterwarnings(
            "ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning
        )
        return TRLConfig(
            **extra,
            output_dir=str(output_dir),
            num_train_epochs=config.epochs,
            max_steps=config.max_steps,
            learning_rate=config.lr,
            lr_scheduler_type=config.schedule,
            warmup_steps=config.warmup,
            weight_decay=config.weight_decay,
            per_device_train_batch_size=config.batch_size,
            gradient_accumulation_steps=config.grad_accum,
            max_length=config.max_length,
            packing=config.packing,
            packing_strategy="bfd",  # padding-free: position ids restart per sequence, no attention mask
            padding_free=config.packing,
            bf16=bf16,
            seed=config.seed,
            data_seed=config.seed,
            logging_steps=config.logging_steps,
            logging_first_step=True,
            report_to=loggers(config) or "none",
            save_strategy="steps" if config.save_steps > 0 else "no",
            save_steps=config.save_steps if config.save_steps > 0 else 500,
            save_total_limit=config.save_total_limit,
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=True,  # our rich bar instead
            dataset_num_proc=None,
        )


def _callbacks(config: SFTConfig):
    from transformers import TrainerCallback

    class Provenance(TrainerCallback):
        """Writes the resolved config next to each checkpoint (on_save runs after the save)."""

        def on_save(self, args, state, control, **kw):
            if state.is_world_process_zero:
                save_config(config, Path(args.output_dir) / f"checkpoint-{state.global_step}" / CONFIG_FILE)

    class Budget(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.started = time.monotonic()

        def on_step_end(self, args, state, control, **kw):
            if config.max_time_s is not None and time.monotonic() - self.started > config.max_time_s:
                control.should_training_stop = True

    class RichProgress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            from rich.progress import Progress

            self.bar = None
            if state.is_world_process_zero and config.progress:
                self.bar = Progress(*Progress.get_default_columns(), "{task.fields[loss]}")
                self.task = self.bar.add_task(
                    "sft", total=state.max_steps, loss="", completed=state.global_step
                )
                self.bar.start()

        def on_step_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kw):
            if self.bar is not None and logs and "loss" in logs:
                self.bar.update(self.task, loss=f"loss {logs['loss']:.4f}")

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.stop()

    return [Provenance(), Budget(), RichProgress()]


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest *complete* checkpoint: a kill during a save leaves a directory without its trainer
    state (written last), which transformers' ``get_last_checkpoint`` would return and then fail on."""
    if not output_dir.is_dir():
        return None
    done = [c for c in output_dir.glob("checkpoint-*") if c.name.split("-")[-1].isdigit()]
    done = [c for c in done if (c / "trainer_state.json").exists()]
    return str(max(done, key=lambda c: int(c.name.split("-")[-1]))) if done else None


IDENTITY_FILE = ".train-identity.json"


def train_identity(config: SFTConfig, data_path: str | Path, init_model: str) -> dict:
    """What a resumable training run depends on: the data's content, the initial model, the settings."""

    return {
        "data_sha": hash_path(Path(data_path)),
        "init_model": model_fingerprint(init_model),
        **identity(config),
    }


def check_resume(output_dir: Path, identity: dict, *, restart: bool = False) -> None:
    """Checkpoints in ``output_dir``, and a finished model in ``output_dir/model``, belong to the run that
    made them: another run's are refused, naming the first differing key, or with ``restart`` moved to
    ``output_dir/superseded/<time>/`` (a finished model is never silently replaced by other settings)."""

    checkpoints = sorted(output_dir.glob("checkpoint-*")) if output_dir.is_dir() else []
    finished = output_dir / "model" / "train_summary.json"
    made = [*checkpoints, *([finished.parent] if finished.exists() else [])]
    marker = output_dir / IDENTITY_FILE
    if made and restart:
        aside = output_dir / "superseded" / time.strftime("%Y%m%d-%H%M%S")
        aside.mkdir(parents=True, exist_ok=True)
        for c in made:
            c.rename(aside / c.name)
        marker.unlink(missing_ok=True)
        made = []
    elif made and not marker.exists():
        raise DataError(
            output_dir, "holds checkpoints or a model of unknown origin; pass --restart to move them aside"
        )
    try:
        # The marker binds as soon as a checkpoint or the model exists; before that a rerun starts over.
        check_identity(output_dir, "train", identity, marker.name if made else "checkpoint-0")
    except ResumeMismatch as e:
        why = str(e).removeprefix(f"{marker}: ")
        raise ResumeMismatch(marker, f"{why}; or pass --restart to move what is there aside") from None


def train(config: SFTConfig, data_path: str | Path, output_dir: str | Path, *, init_model: str) -> Path:
    """Fine-tune ``init_model`` on ``data_path``; returns the saved model directory (``output_dir/model``)."""
    return train_run(config, data_path, output_dir, init_model=init_model).model_dir


def load_model(config: SFTConfig, init_model: str, *, bf16: bool = False):
    """The model as training uses it: cache off, or packed sequences attend to each other."""
    import torch
    from transformers import AutoModelForCausalLM

    extra = {}
    if config.peft.load_in_4bit:  # QLoRA: the frozen base in 4 bits
        if not torch.cuda.is_available():
            raise ConfigError("peft.load_in_4bit (QLoRA) needs a CUDA GPU and bitsandbytes")
        from transformers import BitsAndBytesConfig

        extra["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    model = AutoModelForCausalLM.from_pretrained(
        init_model,
        dtype=torch.bfloat16 if bf16 else torch.float32,
        attn_implementation=config.attn_implementation,
        **extra,
    )
    model.config.use_cache = False
    return model


def build_trainer(
    config: SFTConfig, rows: list[dict], model, tokenizer, output_dir: Path, *, bf16: bool = False
):
    """TRL's SFTTrainer on our pre-tokenized rows: TRL only packs (best fit, padding-free) and collates."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTTrainer

    trainer_class = SFTTrainer
    if config.loss_normalization == "sequence":
        trainer_class = sequence_mean_trainer()
    lora = {}
    if config.peft.enabled:
        check_targets(model, config.peft)
        lora = {"peft_config": peft_config(config.peft)}
    trainer = trainer_class(
        model=model,
        args=_trl_args(config, output_dir, bf16),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=_callbacks(config),
        **lora,
    )
    if config.progress:
        trainer.remove_callback(PrinterCallback)  # the rich bar shows progress and loss
    return trainer


def train_run(
    config: SFTConfig,
    data_path: str | Path,
    output_dir: str | Path,
    *,
    init_model: str,
    restart: bool = False,
) -> TrainResult:
    """``train`` with the run's figures (steps, loss, mask statistics). Resumes its own checkpoints only
    (``check_resume``); ``restart`` moves another run's aside and starts over."""
    from transformers import AutoTokenizer

    output_dir = Path(output_dir)
    check_model_dir(init_model, allow_hub_id=True)
    _check_loggers(config)
    if config.resume:
        check_resume(output_dir, train_identity(config, data_path, init_model), restart=restart)
    bf16 = _use_bf16(config)
    if config.threads > 0:
        import torch

        torch.set_num_threads(config.threads)
    tokenizer = AutoTokenizer.from_pretrained(init_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows, stats = load_examples(config, data_path, tokenizer)
    model = load_model(config, init_model, bf16=bf16)
    trainer = build_trainer(config, rows, model, tokenizer, output_dir, bf16=bf16)

    started = time.monotonic()
    resume = last_checkpoint(output_dir) if config.resume else None
    with disk_errors(output_dir):  # checkpoints and the model: a full disk is one line, not a traceback
        out = trainer.train(resume_from_checkpoint=resume)
        seconds = time.monotonic() - started
        model_dir = output_dir / "model"
        lora_facts: dict = {}
        if config.peft.enabled:
            lora_facts = lora.save(trainer, output_dir, model_dir, config.peft)
        else:
            trainer.save_model(str(model_dir))
    if trainer.is_world_process_zero():
        _write_outputs(config, trainer, tokenizer, model_dir, data_path=data_path, init_model=init_model,
                       resume=resume, loss=out.training_loss, seconds=seconds, stats=stats,
                       lora_facts=lora_facts)  # fmt: skip
    return TrainResult(model_dir, trainer.state.global_step, out.training_loss, stats, seconds, resume)


def _write_outputs(config: SFTConfig, trainer, tokenizer, model_dir: Path, *, data_path, init_model, resume,
                   loss, seconds: float, stats, lora_facts: dict) -> None:  # fmt: skip
    """Beside the saved weights: the tokenizer, the config, ``train_summary.json`` and the model card."""
    tokenizer.save_pretrained(model_dir)
    cfg_path = model_dir / "config.json"
    if cfg_path.exists():  # an adapter-only directory (peft.merge: false) has adapter_config.json
        cfg = json.loads(cfg_path.read_text())
        cfg["use_cache"] = True  # generation wants the cache back
        cfg_path.write_text(json.dumps(cfg, indent=2))
    save_config(config, model_dir / CONFIG_FILE)
    summary = provenance(
        "train",
        init_model=str(init_model),
        data=str(data_path),
        resumed_from=resume,
        steps=trainer.state.global_step,
        train_loss=loss,
        seconds=round(seconds, 2),
        stats=to_dict(stats),
        log_history=trainer.state.log_history,
        **lora_facts,
    )
    (model_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    _write_card(config, data_path, init_model, model_dir, trainer.state.global_step, loss, stats, lora_facts)


def _write_card(
    config: SFTConfig, data_path, init_model, model_dir: Path, steps: int, loss, stats, lora_facts: dict
) -> None:

    made = training_facts(config, data_path, str(init_model), steps, loss, stats)
    write_card(model_dir, title=f"DualDistill student: {model_dir.parent.name}",
               made=made + (card_lines(lora_facts) if lora_facts else []), base_model=str(init_model))  # fmt: skip
