"""Pretrain the tiny base that every embedded student starts from, and the manifest that describes it.

``pretrain(config, out)``: generate ``corpus.pretrain_corpus`` -> train a byte-level BPE tokenizer on
it (digits split one by one, the trajectory tags as single tokens) -> initialise a Qwen2 of
``config.size`` -> concatenate the tokenized documents (separated by EOS) into rows of
``config.block_size`` tokens -> causal-LM training on every token with the SFT trainer's machinery
(``sft.train.build_trainer``: TRL, a rich progress bar, checkpoints every ``save_steps``) -> save a
normal Hugging Face model directory with ``manifest.json``.

``shipped_base()`` is the directory of the base that ships inside the package; ``check_manifest``
verifies a base directory against its manifest (the weights' sha256 and the recorded config).

Guarantees:
- Seeded end to end: the same ``PretrainConfig`` on the same machine gives the same weights.
- Resumable: a killed run restarts from its last checkpoint in ``out`` (``save_steps``), with the
  trainer's optimizer, schedule and data order; a finished run is not repeated.
- The manifest records the corpus seed and size, tokens, steps, final loss, the whole config, the
  weights' sha256 and the command that reproduces them.

Not guaranteed: byte-identical weights on another CPU or torch build (floating point differs);
``check_manifest`` then reports the mismatch instead of passing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from dualdistill.base.corpus import pretrain_corpus
from dualdistill.core.config import save_config, to_dict
from dualdistill.sft.train import SFTConfig, build_trainer, last_checkpoint, load_model
from dualdistill.synthetic.student import make_hf_tokenizer, make_model, train_tokenizer

MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
COMMAND = "dualdistill base pretrain --out DIR"  # the weights do not depend on DIR


@dataclass
class PretrainConfig:
    """What makes the base: the one place its defaults live. The shipped base used these (see its manifest)."""

    corpus_n: int = 100_000  # documents
    corpus_seed: int = 0
    vocab_size: int = 512  # BPE merges plus specials; the eight tags are added on top
    individual_digits: bool = True  # one token per digit; false: BPE merges digit runs on their own
    size: Literal["tiny", "small", "base"] = "small"
    block_size: int = 256  # tokens per training row
    seed: int = 0  # weight initialisation and data order
    steps: int = 3000
    batch_size: int = 32  # rows per step
    lr: float = 3e-3
    warmup: int = 100  # steps, then cosine decay
    save_steps: int = 250  # checkpoints a killed run resumes from
    threads: int = 0  # CPU intra-op threads; 0: torch's default
    logging_steps: int = 25
    progress: bool = True

    def __post_init__(self) -> None:
        for key in ("corpus_n", "steps", "batch_size", "save_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.block_size < 8:
            raise ValueError(f"block_size must be >= 8, got {self.block_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def sft(self) -> SFTConfig:
        """The trainer settings: every token is trained, and rows are equal length (no padding)."""
        return SFTConfig(
            template="compact", max_length=max(self.block_size, 8), max_steps=self.steps, lr=self.lr,
            schedule="cosine", warmup=self.warmup, batch_size=self.batch_size, packing=False,
            save_steps=self.save_steps, save_total_limit=1, logging_steps=self.logging_steps,
            seed=self.seed, threads=self.threads, progress=self.progress,
        )  # fmt: skip


def shipped_base() -> Path:
    """The base inside the installed package (``dualdistill/base/weights``)."""
    return Path(str(resources.files("dualdistill").joinpath("base", "weights")))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def blocks(docs: list[str], tokenizer, block_size: int) -> tuple[list[dict], int]:
    """Rows of exactly ``block_size`` tokens from the EOS-joined token stream (the tail is dropped)."""
    stream: list[int] = []
    for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(tokenizer.eos_token_id)
    rows = [
        {"input_ids": stream[i : i + block_size], "labels": stream[i : i + block_size]}
        for i in range(0, len(stream) - block_size + 1, block_size)
    ]
    return rows, len(stream)


def pretrain(config: PretrainConfig, out: str | Path, *, log=print) -> Path:
    """Make the base in ``out`` (resuming a killed run there); returns ``out``."""

    out = Path(out)
    if (out / MANIFEST).exists() and json.loads((out / MANIFEST).read_text())["config"] == to_dict(config):
        log(f"{out}: already pretrained with this config")
        return out
    work = out / "run"  # checkpoints and the initial model; removed when the run is done
    init = work / "init"
    started = time.monotonic()
    docs = pretrain_corpus(config.corpus_n, config.corpus_seed)
    if not (init / "config.json").exists():
        tokenizer = make_hf_tokenizer(
            train_tokenizer(docs, config.vocab_size, individual_digits=config.individual_digits)
        )
        init.mkdir(parents=True, exist_ok=True)
        make_model(tokenizer, config.size, seed=config.seed).save_pretrained(init)
        tokenizer.save_pretrained(init)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(init)
    rows, n_tokens = blocks(docs, tokenizer, config.block_size)
    log(f"corpus: {len(docs)} documents, {n_tokens} tokens, {len(rows)} rows of {config.block_size}")
    sft = config.sft()
    if sft.threads > 0:
        import torch

        torch.set_num_threads(sft.threads)
    trainer = build_trainer(sft, rows, load_model(sft, str(init)), tokenizer, work)
    result = trainer.train(resume_from_checkpoint=last_checkpoint(work))
    trainer.save_model(str(out))
    (out / "training_args.bin").unlink(missing_ok=True)  # a pickle of trainer arguments; not needed to load
    tokenizer.save_pretrained(out)
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["use_cache"] = True
    cfg_path.write_text(json.dumps(cfg, indent=2))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    manifest = {
        "command": COMMAND,
        "config": to_dict(config),
        "corpus": {"seed": config.corpus_seed, "documents": len(docs), "tokens": n_tokens},
        "steps": trainer.state.global_step,
        "tokens_seen": trainer.state.global_step * config.batch_size * config.block_size,
        "final_loss": losses[-1] if losses else None,
        "mean_loss": result.training_loss,
        "seconds": round(time.monotonic() - started, 1),
        "sha256": {WEIGHTS: sha256_of(out / WEIGHTS)},
    }
    save_config(config, out / "pretrain_config.yaml")
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)
    return out


def check_manifest(base: str | Path) -> list[str]:
    """Mismatches between a base directory and its manifest (empty when it matches)."""
    base = Path(base)
    path = base / MANIFEST
    if not path.exists():
        return [f"{path}: no manifest"]
    manifest = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    for name, digest in manifest.get("sha256", {}).items():
        if not (base / name).exists():
            problems.append(f"{base / name}: missing")
        elif sha256_of(base / name) != digest:
            problems.append(f"{base / name}: sha256 differs from the manifest")
    for key in ("command", "config", "corpus", "steps", "final_loss"):
        if key not in manifest:
            problems.append(f"{path}: no '{key}'")
    return problems
