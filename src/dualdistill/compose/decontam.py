"""Decontamination: training questions too close to a benchmark question (the paper's fuzzy ratio).

Guarantees: a question is flagged when its ``rapidfuzz.fuzz.ratio`` to some benchmark question is above
the threshold, scored over every pair in C with bounded memory. Not guaranteed: catching paraphrases
that share few characters (no embedding similarity).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dualdistill.format.problems import load_benchmark


@dataclass(frozen=True)
class Contamination:
    id: str
    problem: str
    benchmark: str
    benchmark_id: str
    score: float

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def find_contaminated(
    questions: Sequence[str],
    benchmarks: Sequence[str],
    *,
    threshold: float = 90.0,
    ids: Sequence[str] | None = None,
) -> list[Contamination]:
    """Questions whose ``rapidfuzz.fuzz.ratio`` to some benchmark question is above ``threshold``.

    ``fuzz.ratio`` without preprocessing is what ``thefuzz.fuzz.ratio`` computes (the reference
    rounds it to an int; we compare the float). ``process.cdist`` scores all pairs in C over every
    core, with ``score_cutoff`` so pairs below the threshold cost nothing to store; rows go in chunks so
    memory stays bounded for large training sets.
    """
    import numpy as np
    from rapidfuzz import fuzz, process

    ids = list(ids) if ids is not None else [str(i) for i in range(len(questions))]
    bench_q: list[str] = []
    bench_ref: list[tuple[str, str]] = []
    for name in benchmarks:
        for p in load_benchmark(name):
            bench_q.append(p.question)
            bench_ref.append((name, p.id))
    found: list[Contamination] = []
    if not bench_q or not questions:
        return found
    chunk = 2048
    for start in range(0, len(questions), chunk):
        rows = list(questions[start : start + chunk])
        scores = process.cdist(
            rows, bench_q, scorer=fuzz.ratio, score_cutoff=threshold, dtype=np.float32, workers=-1
        )
        for i in np.flatnonzero(scores.max(axis=1) > threshold):
            j = int(scores[i].argmax())
            name, bid = bench_ref[j]
            found.append(Contamination(ids[start + i], rows[i], name, bid, round(float(scores[i, j]), 2)))
    return found
