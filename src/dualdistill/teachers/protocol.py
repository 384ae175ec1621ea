"""What a teacher is: ``Teacher`` (a name, a strategy, ``solve(problem, previous)``), the error a teacher
raises with a reason teach records (``TeacherError``), and how the second teacher sees the first one's
attempt (``conditioned``, ``PREVIOUS_TEMPLATE``). The programmatic teachers in ``synthetic/teachers.py``
implement the same protocol.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from dualdistill.format.problems import Problem
from dualdistill.format.trajectory import Strategy

PREVIOUS_TEMPLATE = (
    "{question}\n\n"
    "Another solver has already attempted this problem. Their attempt:\n"
    "<<<\n{previous}\n>>>\n"
    "Solve the problem yourself, using your own approach. The attempt above may be wrong."
)


class Teacher(Protocol):
    name: str
    strategy: Strategy

    async def solve(self, problem: Problem, previous: str | None = None) -> str: ...


class TeacherError(RuntimeError):
    """A teacher produced no usable response. ``reason`` is a short code teach records."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def conditioned(problem: Problem, previous: str | None, template: str = PREVIOUS_TEMPLATE) -> Problem:
    """The problem as the second teacher sees it (unchanged when there is no previous attempt)."""
    if previous is None:
        return problem
    question = template.replace("{question}", problem.question).replace("{previous}", previous.strip())
    return replace(problem, question=question)
