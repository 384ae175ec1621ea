"""The tiny student: a byte-level BPE tokenizer and a from-scratch ``Qwen2ForCausalLM``.

Qwen2 is the architecture family of DeepSeek-R1-Distill-Qwen-7B, the paper's student. The tokenizer
is trained with Hugging Face ``tokenizers``: digits are split one by one (so arithmetic is learnable),
and the trajectory tags are added tokens, so ``</code>`` is always one token and never straddles a
boundary in generated text.

Guarantees: ``save_student`` writes a normal model directory (``config.json``, weights, tokenizer
files) that ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained`` load like any hub model.
Not guaranteed: anything about quality; these models start from random weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from dualdistill.format.trajectory import CODE_TO_TEXT, TEXT_TO_CODE

TAG_TOKENS = [
    "<think>", "</think>", "<code>", "</code>", "<executor>", "</executor>", "<answer>", "</answer>",
]  # fmt: skip
SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]
EOS, PAD = SPECIAL_TOKENS

SIZES: dict[str, dict] = {
    # hidden, layers, heads, kv heads, mlp
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128),
    # the calibrated CPU student (docs/CALIBRATION.md): learns to route and copy in ~2 minutes
    "small": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=384),
    "base": dict(hidden_size=256, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4,
                 intermediate_size=768),
}  # fmt: skip


def default_corpus() -> list[str]:
    """A small corpus covering prompts, tags, code and numbers, for when no data is given."""

    lines = [
        "Compute 1234 * 5678. <think> 1234 * 5678 = 7006652 </think> <answer> \\boxed{7006652} </answer>",
        "<code>\nimport sympy\nprint(sum(i for i in range(100) if i % 7 == 3))\n</code>"
        "<executor>\n679\n</executor>",
        "def f(n):\n    return pow(2, n, 1000)\nprint(f(10**18))",
        "What is the remainder when 7^2024 is divided by 9? Find the number of integers.",
        TEXT_TO_CODE,
        CODE_TO_TEXT,
        "Traceback (most recent call last):\nMemoryError\nError: Code execution timed out.",
    ]
    return lines * 4


def train_tokenizer(
    corpus: Iterable[str], vocab_size: int = 512, *, individual_digits: bool = True
) -> Tokenizer:
    """Byte-level BPE; digits one per token, or (``individual_digits=False``) runs of digits merged by BPE
    on their own, never with the text around them."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=individual_digits),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_tokens(TAG_TOKENS)
    return tok


def make_hf_tokenizer(tok: Tokenizer):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)
    hf.padding_side = "left"  # decoder-only generation pads on the left
    return hf


def make_model(tokenizer, size: Literal["tiny", "small", "base"] = "tiny", *, seed: int = 0):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
        **SIZES[size],
    )
    return Qwen2ForCausalLM(config)


def build_student(
    out: str | Path,
    *,
    corpus: Iterable[str] | None = None,
    size: Literal["tiny", "small", "base"] = "tiny",
    vocab_size: int = 512,
    seed: int = 0,
) -> Path:
    """Train a tokenizer, initialise a model, and save both as one model directory."""
    out = Path(out)
    tokenizer = make_hf_tokenizer(train_tokenizer(corpus or default_corpus(), vocab_size))
    model = make_model(tokenizer, size, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
