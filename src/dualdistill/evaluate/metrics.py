"""Metrics over eval records: accuracy with a 95% interval, unbiased pass@k, maj@k, tool-use and
strategy-switch rates (``format.trajectory.strategy_facts``), token and time means; per benchmark
(``summarize_by_source``) and over all (``summarize``).

Guarantees: pure functions of the records (and the problems, for counting unanswered ones); the same
records give the same numbers in any order.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

from dualdistill.format.problems import Problem
from dualdistill.format.trajectory import strategy_facts


# ----------------------------------------------------------------------------- metrics
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples of which ``c`` are correct (Chen et al., 2021)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def maj_at_k(records: list[dict], k: int) -> float:
    """Majority-vote score over the first ``k`` samples (by sample index) of one problem."""
    first = sorted(records, key=lambda r: r["sample_index"])[:k]
    votes: dict[str, list[bool]] = defaultdict(list)
    for r in first:
        if r.get("extracted") is not None:
            votes["".join(str(r["extracted"]).split())].append(bool(r.get("correct")))
    if not votes:
        return 0.0
    top = max(len(v) for v in votes.values())
    tied = [v for v in votes.values() if len(v) == top]
    return sum(1.0 for v in tied if any(v)) / len(tied)


def k_values(n: int) -> list[int]:
    """1, 2, 4, ... up to ``n``, and ``n`` itself."""
    ks = [1 << i for i in range(n.bit_length()) if (1 << i) <= n]
    return sorted({*ks, n})


def _interval(scores: list[float]) -> tuple[float, float, float]:
    mean = sum(scores) / len(scores)
    if len(scores) < 2:
        return mean, mean, mean
    var = sum((s - mean) ** 2 for s in scores) / (len(scores) - 1)
    half = 1.96 * math.sqrt(var / len(scores))
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def summarize(records: list[dict], problems_by_id: dict[str, Problem] | None = None) -> dict[str, Any]:
    """Metrics for the records of ONE benchmark. ``problems_by_id`` adds problems that have no record."""
    by_problem: dict[str, list[dict]] = defaultdict(list)
    # Sorted by problem and sample, so the float sums do not depend on the order records were appended
    # in (concurrent generation and resume change it).
    for r in sorted(records, key=lambda r: (str(r["problem_id"]), int(r.get("sample_index", 0)))):
        by_problem[str(r["problem_id"])].append(r)
    missing = sorted(set(problems_by_id or ()) - set(by_problem))
    if not by_problem:
        return {"problems": 0, "records": 0, "missing_problems": len(missing)}
    n_min = min(len(v) for v in by_problem.values())
    scores = [sum(bool(r.get("correct")) for r in v) / len(v) for v in by_problem.values()]
    acc, low, high = _interval(scores)
    ks = k_values(n_min)
    facts = [strategy_facts(r["response"]) for r in records]
    statuses = Counter(c["status"] for r in records for c in r.get("tool_calls", []))
    gen = sum(float(r.get("gen_time_s", 0.0)) for r in records)
    tool = sum(float(r.get("tool_time_s", 0.0)) for r in records)
    return {
        "problems": len(by_problem),
        "records": len(records),
        "samples_per_problem": n_min,
        "missing_problems": len(missing),
        "accuracy": acc,
        "accuracy_ci95": [low, high],
        "pass_at_k": {
            str(k): _mean([pass_at_k(len(v), _correct(v), k) for v in by_problem.values()]) for k in ks
        },
        "maj_at_k": {str(k): _mean([maj_at_k(v, k) for v in by_problem.values()]) for k in ks},
        "tool_use_rate": _mean([f.used_tools for f in facts]),
        "strategy_switch_rate": _mean([f.switched for f in facts]),
        "mean_tokens": _mean([r.get("n_tokens", 0) for r in records]),
        "mean_tool_calls": _mean([len(r.get("tool_calls", [])) for r in records]),
        "executor_status_counts": dict(sorted(statuses.items())),
        "finish_reasons": dict(sorted(Counter(r.get("finish_reason", "?") for r in records).items())),
        "tool_time_share": tool / (gen + tool) if gen + tool > 0 else 0.0,
        "gen_time_s": gen,
        "tool_time_s": tool,
    }


def _mean(values: list) -> float:
    return sum(float(v) for v in values) / len(values) if values else 0.0


def _correct(records: list[dict]) -> int:
    return sum(bool(r.get("correct")) for r in records)


def summarize_by_source(records: list[dict], problems: dict[str, list[Problem]] | None = None) -> dict:
    """``summarize`` per benchmark (the records' ``source``), in the order of ``problems`` if given."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[str(r.get("source", ""))].append(r)
    names = list(problems or {}) + [g for g in groups if g not in (problems or {})]
    return {
        name: summarize(groups.get(name, []), {p.id: p for p in (problems or {}).get(name, [])})
        for name in names
    }
