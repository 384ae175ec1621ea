"""The report of a self-distillation set: counts by s̄ bucket and kind, and the strategy mix of the kept
samples (``self-distill build`` prints it, ``self-distill report`` reads a built file back).

Guarantees: every record of a built file is counted once, by its kind; replayed teacher-distillation
records (kind ``replay``) have no s̄ and count only by kind. Not guaranteed: s̄ over problems the file
does not name (pass the sampling directory's scores for that).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path

from dualdistill.core.config import to_dict
from dualdistill.core.records import DataError, read_jsonl
from dualdistill.selfdistill.scores import ProblemScore
from dualdistill.selfdistill.select import BuildConfig

BUCKETS: tuple[tuple[str, Fraction, Fraction], ...] = (
    ("0", Fraction(0), Fraction(0)),
    ("(0, 1/4]", Fraction(0), Fraction(1, 4)),
    ("(1/4, 1/2]", Fraction(1, 4), Fraction(1, 2)),
    ("(1/2, 3/4]", Fraction(1, 2), Fraction(3, 4)),
    ("(3/4, 1)", Fraction(3, 4), Fraction(1)),
    ("1", Fraction(1), Fraction(1)),
)


def bucket_of(s_bar: Fraction) -> str:
    if s_bar in (0, 1):
        return str(s_bar)
    return next(name for name, lo, hi in BUCKETS[1:-1] if lo < s_bar <= hi)


def report(
    records: list[dict],
    scores: list[ProblemScore] | None = None,
    counts: Mapping[str, int] | None = None,
    config: BuildConfig | None = None,
) -> dict:
    """Counts by s̄ bucket and kind, and the strategy mix of the kept samples, as a JSON-able dict."""
    # teacher_solution records come only from select "strategy"
    names = (
        "kept_correct",
        "repaired_wrong",
        *sorted({r["kind"] for r in records} - {"kept_correct", "repaired_wrong"}),
    )
    buckets = {name: {"problems": 0, **dict.fromkeys(names, 0)} for name, *_ in BUCKETS}
    for s in scores or []:
        buckets[bucket_of(s.s_bar)]["problems"] += 1
    kinds: dict[str, Counter] = {k: Counter() for k in names}
    for r in records:
        if r["kind"] == "replay":  # the teacher-distillation data, replayed: no s̄
            kinds["replay"][r.get("first_strategy", "none")] += 1
            continue
        buckets[bucket_of(Fraction(r["n_correct"], r["n_samples"]))][r["kind"]] += 1
        kinds[r["kind"]][r.get("first_strategy", "none")] += 1
    out = {
        "records": len(records),
        "by_kind": {k: sum(c.values()) for k, c in kinds.items()},
        "strategy_mix": {k: {s: c[s] for s in ("code", "text", "none")} for k, c in kinds.items()},
        "by_s_bar": buckets if scores is not None else None,
        "counts": dict(sorted((counts or {}).items())),
    }
    if config is not None:
        out["config"] = to_dict(config)
    return out


def load_built(path: str | Path) -> list[dict]:
    records = []
    for line, r in read_jsonl(path):
        for key in ("kind", "n_correct", "n_samples", "problem", "text"):
            if key not in r and not (r.get("kind") == "replay" and key.startswith("n_")):
                raise DataError(path, f"record has no '{key}' field (not a self-distill build?)", line=line)
        records.append(r)
    return records
