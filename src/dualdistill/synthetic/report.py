"""Teacher report: per-family and per-group accuracy of the two programmatic teachers.

``run_teachers`` solves every problem with each teacher (the agentic one through a ``SandboxPool``
that it opens and closes itself, concurrently), grades with ``grading.grader.grade``, and returns one
``Outcome`` per (teacher, problem). ``summarize`` and ``complementary_violations`` turn them into
the table of docs/SYNTHETIC.md and the check that the world is complementary: each teacher at least
``high`` on its favoured group and at most ``low`` on the other teacher's favoured group.

Guarantees: outcomes are in problem order per teacher; optional JSONL output is appended and
flushed per record. Not guaranteed: identical figures on another machine when the sandbox timeout
is so long that a naive program could finish (with huge exponents none can).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass

from dualdistill.format.problems import Problem
from dualdistill.grading.grader import grade
from dualdistill.sandbox import SandboxConfig, SandboxPool
from dualdistill.synthetic.families import FAMILIES, GROUPS, problem_meta
from dualdistill.synthetic.teachers import (
    ProgrammaticAgenticConfig,
    ProgrammaticAgenticTeacher,
    ProgrammaticTextTeacher,
)

FAVOURED = {"synthetic-agentic": "tool", "synthetic-text": "text"}


@dataclass(frozen=True)
class Outcome:
    teacher: str
    problem_id: str
    family: str
    group: str
    correct: bool
    extracted: str | None
    response: str


async def _solve_all(teacher, problems: list[Problem], on_done: Callable[[Outcome], None]) -> list[Outcome]:
    async def one(p: Problem) -> Outcome:
        response = await teacher.solve(p)
        verdict = grade(response, p.answer)
        meta = problem_meta(p)
        out = Outcome(
            teacher.name, p.id, meta.get("family", "?"), meta.get("group", "?"),
            verdict.correct, verdict.extracted, response,
        )  # fmt: skip
        on_done(out)
        return out

    return list(await asyncio.gather(*(one(p) for p in problems)))


def run_teachers(
    problems: list[Problem],
    *,
    agentic: ProgrammaticAgenticConfig | None = None,
    text_teacher: ProgrammaticTextTeacher | None = None,
    on_done: Callable[[Outcome], None] = lambda o: None,
) -> list[Outcome]:
    """Both teachers on every problem; the agentic teacher runs its programs in the real sandbox."""

    cfg = agentic or ProgrammaticAgenticConfig()
    text = text_teacher or ProgrammaticTextTeacher()

    async def main() -> list[Outcome]:
        sandbox = SandboxConfig(timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb)
        async with SandboxPool(sandbox, max_concurrency=cfg.max_concurrency) as pool:
            code = ProgrammaticAgenticTeacher(cfg, pool=pool)
            outs = await _solve_all(text, problems, on_done)
            return outs + await _solve_all(code, problems, on_done)

    return asyncio.run(main())


def summarize(outcomes: list[Outcome]) -> dict[str, dict[str, tuple[int, int]]]:
    """``{teacher: {family or "group:<g>": (correct, total)}}``."""
    table: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for o in outcomes:
        for key in (o.family, f"group:{o.group}"):
            table[o.teacher][key][0] += int(o.correct)
            table[o.teacher][key][1] += 1
    return {t: {k: (c, n) for k, (c, n) in rows.items()} for t, rows in table.items()}


def accuracy(cell: tuple[int, int] | None) -> float | None:
    return cell[0] / cell[1] if cell and cell[1] else None


def complementary_violations(
    summary: dict[str, dict[str, tuple[int, int]]], *, high: float = 0.8, low: float = 0.4
) -> list[str]:
    """Why the complementary pattern fails (empty when it holds), checked per family."""
    problems: list[str] = []
    for teacher, favoured in FAVOURED.items():
        rows = summary.get(teacher, {})
        other = "text" if favoured == "tool" else "tool"
        for fam in FAMILIES.values():
            acc = accuracy(rows.get(fam.name))
            if acc is None:
                continue
            if fam.group == favoured and acc < high:
                problems.append(f"{teacher} on {fam.name} ({favoured}-favoured): {acc:.0%} < {high:.0%}")
            if fam.group == other and acc > low:
                problems.append(f"{teacher} on {fam.name} ({other}-favoured): {acc:.0%} > {low:.0%}")
    return problems


def markdown_table(summary: dict[str, dict[str, tuple[int, int]]]) -> str:
    teachers = [t for t in FAVOURED if t in summary] + [t for t in summary if t not in FAVOURED]
    head = "| family | group | " + " | ".join(teachers) + " |"
    lines = [head, "|---|---|" + "---|" * len(teachers)]

    def cell(t: str, key: str) -> str:
        c = summary[t].get(key)
        return f"{c[0] / c[1]:.0%} ({c[0]}/{c[1]})" if c and c[1] else "–"

    for fam in FAMILIES.values():
        if any(fam.name in summary[t] for t in teachers):
            lines.append(
                f"| {fam.name} | {fam.group} | " + " | ".join(cell(t, fam.name) for t in teachers) + " |"
            )
    for g in GROUPS:
        key = f"group:{g}"
        if any(key in summary[t] for t in teachers):
            lines.append(f"| **all {g}** | {g} | " + " | ".join(cell(t, key) for t in teachers) + " |")
    return "\n".join(lines)


def outcome_record(o: Outcome) -> dict:
    return asdict(o)
