"""SFT training throughput: padding-free packing vs padded batches, through the very trainer ``dualdistill
train`` builds (``sft.train.build_trainer``).

Both runs train one epoch over the same variable-length sequences (labels as masking makes them: prompt
masked) with the same number of sequences per step on average (padded batches are drawn grouped by
length, as ``train`` does without packing); tokens/s counts real tokens only (no
padding). On a GPU it also reports model FLOPs utilisation, 6 * parameters * tokens/s over the peak.

Run (CPU, small model): python bench/sft_throughput.py --size small --seqs 300 --threads 1
Run (GPU, ~100M Qwen2): python bench/sft_throughput.py --size 100m --seqs 3000 --min-len 256 --max-len 4096
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from dualdistill.core.config import load_config
from dualdistill.sft.masking import IGNORE
from dualdistill.sft.train import SFTConfig, build_trainer
from dualdistill.synthetic.student import SIZES, default_corpus, make_hf_tokenizer, train_tokenizer

SIZES_BENCH = {
    **SIZES,
    # ~107M parameters with a 32K vocabulary (as in docs/CALIBRATION.md)
    "100m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                 intermediate_size=2048),
}  # fmt: skip


def make_rows(n: int, lo: int, hi: int, vocab: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        length = rng.randint(lo, hi)
        ids = [rng.randrange(2, vocab) for _ in range(length)]
        prompt = min(32, length // 4)
        rows.append({"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]})
    return rows


def run(packing: bool, rows: list[dict], args, tokenizer, out: Path) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    mean_len = sum(len(r["input_ids"]) for r in rows) / len(rows)
    # Same sequences per step on average: a packed row of max_length holds about max_length/mean_len of them.
    per_row = max(1, int(args.max_length // mean_len))
    batch = max(1, args.seqs_per_step // per_row) if packing else args.seqs_per_step
    cfg = load_config(
        SFTConfig,
        overrides=[f"packing={str(packing).lower()}", f"max_length={args.max_length}", f"batch_size={batch}",
                   "epochs=1", "lr=1e-4", "progress=false", "logging_steps=1000000", "schedule=constant",
                   f"gradient_checkpointing={str(args.grad_ckpt).lower()}"],
    )  # fmt: skip
    torch.manual_seed(0)
    bf16 = torch.cuda.is_available()
    qcfg = Qwen2Config(
        vocab_size=args.vocab,
        max_position_embeddings=max(4096, args.max_length),
        use_cache=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        **SIZES_BENCH[args.size],
    )
    model = Qwen2ForCausalLM(qcfg)
    model.config._attn_implementation = cfg.attn_implementation
    if bf16:
        model = model.to(torch.bfloat16)
    trainer = build_trainer(cfg, rows, model, tokenizer, out / f"packing-{packing}", bf16=bf16)
    t0 = time.perf_counter()
    trainer.train()
    if bf16:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    tokens = sum(len(r["input_ids"]) for r in rows)
    params = sum(p.numel() for p in model.parameters())
    res = {"steps": trainer.state.global_step, "batch_size": batch, "seconds": round(seconds, 2),
           "tokens_per_s": round(tokens / seconds), "params": params}  # fmt: skip
    if bf16:
        res["mfu"] = round(6 * params * tokens / seconds / (args.peak_tflops * 1e12), 4)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny", choices=sorted(SIZES_BENCH))
    ap.add_argument("--seqs", type=int, default=600)
    ap.add_argument("--min-len", type=int, default=150)
    ap.add_argument("--max-len", type=int, default=300)
    ap.add_argument("--max-length", type=int, default=1024, help="packed row length")
    ap.add_argument("--seqs-per-step", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--grad-ckpt", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM: 989)")
    args = ap.parse_args()
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    if args.size == "100m" and args.vocab == 512:
        args.vocab = 32000
    tokenizer = make_hf_tokenizer(train_tokenizer(default_corpus(), 300))
    rows = make_rows(args.seqs, args.min_len, args.max_len, min(args.vocab, 30000), seed=0)
    with tempfile.TemporaryDirectory() as d:
        padded = run(False, rows, args, tokenizer, Path(d))
        packed = run(True, rows, args, tokenizer, Path(d))
    print(json.dumps({"bench": "sft_throughput", "size": args.size, "seqs": args.seqs,
                      "lengths": [args.min_len, args.max_len], "padded": padded, "packed": packed,
                      "speedup_packed": round(packed["tokens_per_s"] / padded["tokens_per_s"], 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
