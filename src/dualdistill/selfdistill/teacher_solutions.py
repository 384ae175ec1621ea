"""Teacher solutions for self-distillation: one correct, well-formed solution per problem.

Solutions come from a JSONL file (``{"id", "response"}`` lines), from a ``Teacher`` object, or from the
teachers' own records (``teach``'s pairs file, ``from_pairs``). Every candidate is graded against the
gold answer before use; malformed, wrong and unknown-problem ones, and ones of a strategy the repair
source does not allow, are counted by reason and never used. The choice among several correct ones
follows the source's preference order, then a seeded draw per problem.

Repair sources (``RepairSource``):
- ``text``: text-teacher solutions only, the paper's choice "given the student's limited code ability";
- ``agentic``: agentic-teacher (code) solutions only;
- ``best``: per problem, the graded-correct solution of the teacher whose strategy suits it: the code
  one when the agentic teacher's program ran to the right answer (not a guess), else the text one.

A solution whose answer is a guess after failed code (``format.trajectory.guessed_after_failed_code``, the one
rule that composition and sampling share) is never used: it is right by luck, not by its strategy.

Not guaranteed: that a solution agrees with the student reasoning it will follow.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dualdistill.core.records import DataError, read_jsonl
from dualdistill.format.pairs import read_pairs
from dualdistill.format.problems import Problem
from dualdistill.format.trajectory import check_format, guessed_after_failed_code, parse
from dualdistill.grading.grader import grade_many
from dualdistill.teachers.protocol import Teacher

RepairSource = Literal["text", "agentic", "best"]
# Strategies a source accepts, most preferred first.
PREFERENCE: dict[str, tuple[str, ...]] = {"text": ("text",), "agentic": ("code",), "best": ("code", "text")}


@dataclass
class TeacherSolutions:
    by_id: dict[str, str] = field(default_factory=dict)  # problem id -> a correct solution
    counts: Counter = field(default_factory=Counter)


def solution_strategy(solution: str) -> str:
    """``code`` when the solution runs code, else ``text``."""
    return "code" if any(s.kind in ("code", "executor") for s in parse(solution)) else "text"


def _solution_problem(solution: str, source: RepairSource) -> str | None:
    """Why a teacher solution cannot be used by ``source``, or ``None`` when it can."""
    fmt = check_format(solution)
    if not fmt:
        return "teacher_malformed"
    strategy = solution_strategy(solution)
    if strategy not in PREFERENCE[source]:
        # the repair sentence promises the other strategy
        return "teacher_not_text" if source == "text" else "teacher_not_code"
    if guessed_after_failed_code(solution):
        return "teacher_guessed"
    return None


def grade_solutions(
    candidates: list[tuple[str, str]], gold: Mapping[str, str], seed: int, source: RepairSource = "text"
) -> TeacherSolutions:
    """Keep, per problem, one correct, well-formed solution of ``source`` from ``(problem_id, response)``."""

    out = TeacherSolutions()
    usable: list[tuple[str, str]] = []
    for pid, text in candidates:
        out.counts["teacher_read"] += 1
        reason = _solution_problem(text, source)
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
        best = next(s for s in PREFERENCE[source] if any(solution_strategy(t) == s for t in texts))
        texts = [t for t in texts if solution_strategy(t) == best]
        out.by_id[pid] = random.Random(f"{seed}|{pid}|teacher").choice(texts)
        out.counts[f"teacher_used_{best}"] += 1
    return out


def from_pairs(
    pairs_path: str | Path, gold: Mapping[str, str], seed: int, source: RepairSource
) -> TeacherSolutions:
    """Solutions from the teachers' records (``teach``'s pairs file): both attempts of each known problem."""

    candidates = [
        (p.id, a.response) for p in read_pairs(pairs_path) if p.id in gold for a in (p.first, p.second)
    ]
    return grade_solutions(candidates, gold, seed, source)


def read_solutions_file(
    path: str | Path, gold: Mapping[str, str], seed: int = 0, source: RepairSource = "text"
) -> TeacherSolutions:
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
    out = grade_solutions(candidates, gold, seed, source)
    out.counts["teacher_unknown_problem"] += unknown
    return out


async def solve_with(
    teacher: Teacher, problems: list[Problem], seed: int, concurrency: int = 8, source: RepairSource = "text"
):
    """Ask a Teacher object for one solution per problem (bounded concurrency), then grade them."""
    gate = asyncio.Semaphore(concurrency)

    async def one(p: Problem) -> tuple[str, str]:
        async with gate:
            return p.id, await teacher.solve(p)

    candidates = await asyncio.gather(*(one(p) for p in problems))
    return grade_solutions(list(candidates), {p.id: p.answer for p in problems}, seed, source)
