"""Decontamination speed (compose's costly step), ours against the reference's per-pair loop, one run.

    python bench/compose.py                  # the paper's 985 training problems vs all 913 benchmark questions
    python bench/compose.py --scale 10       # also 10x as many training questions (perturbed copies)

The reference compares every training question with every benchmark question using ``thefuzz``'s
``fuzz.ratio`` in a Python double loop. The baseline here is that loop with ``rapidfuzz.fuzz.ratio``
(what ``thefuzz`` calls underneath, minus its wrapper overhead, so the baseline is if anything
flattered). Ours is ``compose.decontam.find_contaminated``: ``rapidfuzz.process.cdist`` with ``score_cutoff`` on
every core. Both must flag the same questions; a mismatch is an error. Prints one JSON line each.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from rapidfuzz import fuzz

from dualdistill.compose.run import find_contaminated
from dualdistill.format.problems import BENCHMARKS, load_benchmark, load_training_problems


def baseline(questions: list[str], bench: list[str], threshold: float) -> set[int]:
    flagged = set()
    for i, q in enumerate(questions):
        for b in bench:
            if fuzz.ratio(q, b) > threshold:
                flagged.add(i)
                break
    return flagged


def perturbed(questions: list[str], bench: list[str], scale: int, seed: int = 0) -> list[str]:
    """``scale`` copies of the training questions with a word dropped, plus 1% near-copies of benchmarks."""
    rng = random.Random(seed)
    out = []
    for _ in range(scale):
        for q in questions:
            words = q.split()
            if len(words) > 3:
                del words[rng.randrange(len(words))]
            out.append(" ".join(words))
    out += [b[:-2] for b in rng.sample(bench, max(1, len(out) // 100))]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threshold", type=float, default=90.0)
    ap.add_argument("--scale", type=int, default=0, help="also run ours on SCALE x the training set")
    args = ap.parse_args()
    train = [p.question for p in load_training_problems()]
    bench = [p.question for name in BENCHMARKS for p in load_benchmark(name)]
    # 1% planted near-copies so both methods have something to find
    questions = train + [b[:-2] for b in random.Random(1).sample(bench, len(train) // 100)]

    t0 = time.perf_counter()
    ref = baseline(questions, bench, args.threshold)
    base_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = find_contaminated(questions, list(BENCHMARKS), threshold=args.threshold)
    ours_s = time.perf_counter() - t0
    flagged = {int(c.id) for c in ours}
    if flagged != ref:
        raise SystemExit(f"mismatch: baseline flagged {sorted(ref)}, ours {sorted(flagged)}")
    pairs = len(questions) * len(bench)
    print(json.dumps({
        "bench": "decontaminate", "train": len(questions), "benchmark_questions": len(bench),
        "pairs": pairs, "flagged": len(flagged), "baseline_s": round(base_s, 3), "ours_s": round(ours_s, 3),
        "speedup": round(base_s / ours_s, 1), "ours_pairs_per_s": round(pairs / ours_s),
    }))  # fmt: skip
    if args.scale:
        big = perturbed(train, bench, args.scale)
        t0 = time.perf_counter()
        found = find_contaminated(big, list(BENCHMARKS), threshold=args.threshold)
        s = time.perf_counter() - t0
        print(json.dumps({
            "bench": "decontaminate_scaled", "train": len(big), "pairs": len(big) * len(bench),
            "flagged": len(found), "ours_s": round(s, 3), "ours_pairs_per_s": round(len(big) * len(bench) / s),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
