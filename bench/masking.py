"""Span-based loss masking vs the reference's per-token method, on 1K, 4K and 16K-token trajectories.

The reference (re-implemented here as the baseline) decodes the response one token at a time, appends
each piece to a growing string, and re-counts the tags over that string after every token to know whether
the token is inside an executor block or a code block; it is quadratic in the length. Ours
(``dualdistill.sft.masking.labels_from_offsets``) parses the text once into character spans and looks the
tokens' offsets up against them.

Both are timed on an already tokenized response (ids + offsets -> labels); the end-to-end figure adds the
tokenization, which both need. The masks are compared token by token on every token that does not
straddle a mask boundary (where the reference's rule, which looks at whole decoded pieces, is defined).

Run: python bench/masking.py            (prints one JSON line; see docs/BENCHMARKS.md "## Masking")
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time

from dualdistill.format.trajectory import CODE_TO_TEXT, SWITCH_PHRASES, executor_block, is_executor_error
from dualdistill.sft.masking import IGNORE, MaskConfig, labels_from_offsets, masked_spans
from dualdistill.synthetic.student import build_student

WORDS = [
    "so",
    "we",
    "need",
    "the",
    "sum",
    "of",
    "all",
    "residues",
    "modulo",
    "seven",
    "then",
    "check",
    "each",
    "case",
    "carefully",
    "and",
    "count",
]


def make_trajectory(rng: random.Random, tokenizer, target_tokens: int) -> str:
    """A long composed trajectory: a failed code attempt (with errors), a transition, a text attempt."""
    parts: list[str] = []

    def n_tokens() -> int:
        return len(tokenizer("".join(parts))["input_ids"])

    def prose(n: int) -> str:
        return " ".join(
            rng.choice(WORDS) if rng.random() < 0.8 else str(rng.randint(0, 9999)) for _ in range(n)
        )

    while not parts or n_tokens() < target_tokens * 0.55:
        parts.append(f"<think>{prose(40)}</think>\n")
        code = f"x = {rng.randint(1, 999)}\nprint(sum(i * x for i in range({rng.randint(2, 99)})))"
        out = (
            "Traceback (most recent call last):\nNameError: y"
            if rng.random() < 0.3
            else str(rng.randint(0, 10**6))
        )
        parts.append(f"<code>\n{code}\n</code>" + executor_block(out))
    parts.append(CODE_TO_TEXT + "\n")
    while n_tokens() < target_tokens - 30:
        parts.append(f"<think>{prose(60)}</think>\n")
    parts.append("<answer>\\boxed{42}</answer>")
    return "".join(parts)


def reference_labels(ids: list[int], tokenizer, config: MaskConfig) -> list[int]:
    """The per-token method: decode token by token, re-count tags over the growing string."""
    s, prev_piece = "", ""
    ends: list[int] = []
    exec_mask: list[bool] = []
    code_of: list[int] = []  # index of the code block a token is in, or -1
    error_blocks: set[int] = set()
    prev_open = prev_close = prev_code_close = 0
    just_closed = False
    cut = None  # character where the first transition sentence starts, once seen
    for i, t in enumerate(ids):
        piece = tokenizer.decode([t])
        s += piece
        ends.append(len(s))
        opens, closes = s.count("<executor>"), s.count("</executor>")
        code_opens, code_closes = s.count("<code>"), s.count("</code>")
        inside = opens > prev_close or (just_closed and piece == "\n")  # the block, and its newline after
        if opens > prev_open and i > 1 and not prev_piece.strip() and s[: ends[i - 2]].endswith("</code>"):
            exec_mask[-1] = True  # the injected whitespace between </code> and <executor>
        exec_mask.append(inside)
        code_of.append(code_opens - 1 if code_opens > prev_code_close else -1)
        just_closed = closes > prev_close
        if just_closed:
            output = s[s.rfind("<executor>") + len("<executor>") : s.rfind("</executor>")]
            if is_executor_error(output):
                error_blocks.add(code_opens - 1)
        if cut is None:
            found = [s.find(p) for p in SWITCH_PHRASES if p in s]
            cut = min(found) if found else None
        prev_open, prev_close, prev_code_close, prev_piece = opens, closes, code_closes, piece
    labels = []
    for i, t in enumerate(ids):
        masked = (config.executor and exec_mask[i]) or (config.error_code and code_of[i] in error_blocks)
        masked = masked or (config.first_attempt and cut is not None and ends[i] <= cut)
        labels.append(IGNORE if masked else t)
    return labels


def straddlers(offsets: list[tuple[int, int]], text: str, config: MaskConfig) -> set[int]:
    spans = masked_spans(text, config)
    edges = sorted({p for s, e in spans for p in (s, e)})
    return {i for i, (s, e) in enumerate(offsets) if any(s < p < e for p in edges)}


def best_of(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    rng = random.Random(0)
    config = MaskConfig()
    with tempfile.TemporaryDirectory() as d:
        from transformers import AutoTokenizer

        corpus = [make_trajectory(random.Random(i), AutoTokenizer.from_pretrained(build_student(f"{d}/t0")), 300)
                  for i in range(3)]  # fmt: skip
        tokenizer = AutoTokenizer.from_pretrained(
            build_student(f"{d}/tok", corpus=corpus * 20, vocab_size=2048)
        )
    result: dict = {"bench": "masking", "tokenizer": "byte-level BPE, vocab 2048, tags as added tokens"}
    compared = excluded = mismatches = 0
    for label, n in (("1k", 1024), ("4k", 4096), ("16k", 16384)):
        text = make_trajectory(rng, tokenizer, n)
        enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        ours = labels_from_offsets(ids, offsets, text, config)
        ref = reference_labels(ids, tokenizer, config)
        skip = straddlers(offsets, text, config)
        diff = [i for i in range(len(ids)) if i not in skip and ours[i] != ref[i]]
        compared += len(ids) - len(skip)
        excluded += len(skip)
        mismatches += len(diff)
        reps_ref = 3 if n >= 16384 else 5
        t_ours = best_of(
            lambda ids=ids, offsets=offsets, text=text: labels_from_offsets(ids, offsets, text, config), 20
        )
        t_ref = best_of(lambda ids=ids: reference_labels(ids, tokenizer, config), reps_ref)
        t_tok = best_of(
            lambda text=text: tokenizer(text, return_offsets_mapping=True, add_special_tokens=False), 10
        )
        result[label] = {
            "tokens": len(ids),
            "chars": len(text),
            "ours_ms": round(t_ours * 1e3, 3),
            "reference_ms": round(t_ref * 1e3, 2),
            "tokenize_ms": round(t_tok * 1e3, 3),
            "speedup": round(t_ref / t_ours, 1),
            "speedup_end_to_end": round((t_ref + t_tok) / (t_ours + t_tok), 1),
            "trained_tokens": sum(x != IGNORE for x in ours),
            "mismatches": len(diff),
        }
    result["speedup_16k"] = result["16k"]["speedup"]
    result["speedup_16k_end_to_end"] = result["16k"]["speedup_end_to_end"]
    result["identical"] = mismatches == 0
    result["compared_tokens"] = compared
    result["excluded_straddling_tokens"] = excluded
    print(json.dumps(result))
    if mismatches:
        sys.exit(1)


if __name__ == "__main__":
    main()
