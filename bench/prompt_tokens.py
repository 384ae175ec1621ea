"""Tokenizing the prompts of the tool loop: the tokenizer on the whole prompt, against
``SegmentEncoder`` (pieces between added tokens remembered), on the same prompts in one run.

    python bench/prompt_tokens.py                       # the tiny student's tokenizer
    python bench/prompt_tokens.py --tokenizer DIR       # another (a fast one with the tags added)

Every trajectory sends its whole text again at each tool call, longer by a completion and an executor
block, as the agent driver does, with ``--trajectories`` of them interleaved. The text is words of
this repository's README (so it holds tags, digits, Unicode). Prints one JSON line: milliseconds a
call for each way, their ratio, and the mean prompt length; the ids of both ways are checked equal.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from transformers import AutoTokenizer

from dualdistill.backends.segment_tokens import SegmentEncoder
from dualdistill.format.trajectory import executor_block


def trajectories(n: int, calls: int, tokens_per_call: int, seed: int = 0) -> list[str]:
    """The prompts of ``n`` trajectories of ``calls`` tool calls each, in the order a driver sends them."""
    rng = random.Random(seed)
    words = (Path(__file__).resolve().parents[1] / "README.md").read_text().split()
    text = lambda k: " ".join(rng.choice(words) for _ in range(k))  # noqa: E731
    words_per_call = max(2, tokens_per_call // 4)  # about 4 tokens a word with the 512-token vocabulary
    sent = [[] for _ in range(n)]
    for prompts in sent:
        p = "Problem: " + text(100) + "\n<think>\n"
        for _ in range(calls):
            prompts.append(p)
            p += text(words_per_call * 2 // 3) + "\n<code>\n" + text(words_per_call // 3) + "\n</code>\n"
            p += executor_block(str(rng.randint(0, 10**6)))
    return [sent[t][k] for k in range(calls) for t in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", help="tokenizer directory (default: the tiny student's)")
    ap.add_argument("--trajectories", type=int, default=16)
    ap.add_argument("--calls", type=int, nargs="+", default=[4, 10, 20])
    ap.add_argument("--tokens-per-call", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.tokenizer:
            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        else:
            from dualdistill.synthetic.student import build_student

            tokenizer = AutoTokenizer.from_pretrained(build_student(Path(tmp) / "m", size="tiny", seed=0))
    rows = []
    for calls in args.calls:
        prompts = trajectories(args.trajectories, calls, args.tokens_per_call)
        encoder = SegmentEncoder(tokenizer)
        t0 = time.perf_counter()
        whole = [tokenizer.encode(p) for p in prompts]
        t1 = time.perf_counter()
        pieces = [encoder.encode(p) for p in prompts]
        t2 = time.perf_counter()
        if pieces != whole:
            raise SystemExit("SegmentEncoder gave other ids than the tokenizer")
        rows.append(
            {
                "calls": calls,
                "mean_prompt_tokens": round(sum(map(len, whole)) / len(whole)),
                "whole_ms": round((t1 - t0) / len(prompts) * 1e3, 3),
                "segments_ms": round((t2 - t1) / len(prompts) * 1e3, 3),
                "whole_vs_segments": round((t1 - t0) / (t2 - t1), 2),
            }
        )
    print(
        json.dumps({"trajectories": args.trajectories, "tokens_per_call": args.tokens_per_call, "rows": rows})
    )


if __name__ == "__main__":
    main()
