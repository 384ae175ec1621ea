"""Teacher solutions for self-distillation: one correct, well-formed text solution per problem.

Solutions come from a JSONL file (``{"id", "response"}`` lines) or from a ``Teacher`` object. Every
candidate is graded against the gold answer before use; malformed, non-text, wrong and unknown-problem
ones are counted by reason and never used. The choice among several correct ones is seeded per problem.

Not guaranteed: that a solution agrees with the student reasoning it will follow.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dualdistill.problems import Problem
from dualdistill.records import DataError, read_jsonl
from dualdistill.trajectory import check_format, parse


class Teacher(Protocol):
    name: str
    strategy: str

    async def solve(self, problem: Problem, previous: str | None = None) -> str: ...


@dataclass
class TeacherSolutions:
    by_id: dict[str, str] = field(default_factory=dict)  # problem id -> a correct text solution
    counts: Counter = field(default_factory=Counter)


def _solution_problem(solution: str) -> str | None:
    """Why a teacher solution cannot be used as text feedback, or ``None`` when it can."""
    fmt = check_format(solution)
    if not fmt:
        return "teacher_malformed"
    if any(s.kind in ("code", "executor") for s in parse(solution)):
        return "teacher_not_text"  # the repair sentence promises text reasoning
    return None


def grade_solutions(
    candidates: list[tuple[str, str]], gold: Mapping[str, str], seed: int
) -> TeacherSolutions:
    """Keep, per problem, one correct, well-formed text solution from ``(problem_id, response)``."""
    from dualdistill.grading import grade_many

    out = TeacherSolutions()
    usable: list[tuple[str, str]] = []
    for pid, text in candidates:
        out.counts["teacher_read"] += 1
        reason = _solution_problem(text)
        if reason:
            out.counts[reason] += 1
        else:
            usable.append((pid, text))
    verdicts = grade_many([(text, gold[pid]) for pid, text in usable])
    correct: dict[str, list[str]] = {}
    for (pid, text), v in zip(usable, verdicts, strict=True):
        if v.correct:
            correct.setdefault(pid, []).append(text)
        else:
            out.counts["teacher_wrong"] += 1
    for pid, texts in correct.items():
        out.by_id[pid] = random.Random(f"{seed}|{pid}|teacher").choice(texts)
    return out


def read_solutions_file(path: str | Path, gold: Mapping[str, str], seed: int = 0) -> TeacherSolutions:
    """Teacher solutions from JSONL lines ``{"id": ..., "response": ...}``; graded, bad ones counted."""
    candidates = []
    unknown = 0
    for line, r in read_jsonl(path):
        for key in ("id", "response"):
            if not isinstance(r.get(key), str | int) or (key == "response" and not isinstance(r[key], str)):
                raise DataError(path, f"record needs a string '{key}' field", line=line)
        if str(r["id"]) in gold:
            candidates.append((str(r["id"]), r["response"]))
        else:
            unknown += 1
    out = grade_solutions(candidates, gold, seed)
    out.counts["teacher_unknown_problem"] += unknown
    return out


async def solve_with(teacher: Teacher, problems: list[Problem], seed: int, concurrency: int = 8):
    """Ask a Teacher object for one solution per problem (bounded concurrency), then grade them."""
    gate = asyncio.Semaphore(concurrency)

    async def one(p: Problem) -> tuple[str, str]:
        async with gate:
            return p.id, await teacher.solve(p)

    candidates = await asyncio.gather(*(one(p) for p in problems))
    return grade_solutions(list(candidates), {p.id: p.answer for p in problems}, seed)
