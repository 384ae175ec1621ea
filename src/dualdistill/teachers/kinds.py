"""The teachers a recipe can name besides the programmatic ones: ``AgenticTeacher`` (the tool loop with a
real sandbox over any backend), ``TextTeacher`` (one call; R1-style ``<think>`` output becomes a
trajectory, ``r1_to_trajectory``) and ``DatasetTeacher`` (precomputed responses from a file).

Guarantees: an empty or unusable response raises ``TeacherError`` with a reason, never passes as an
answer; a dataset teacher finds a problem by its id or its normalised question text, and one it lacks
raises ``TeacherError`` (``missing``) naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dualdistill.agent.loop import AgentConfig, run_agent
from dualdistill.core.records import DataError
from dualdistill.format.problems import FieldMap, Problem, load_problems
from dualdistill.format.prompts import build_prompt, generation_prefix
from dualdistill.format.trajectory import Strategy
from dualdistill.teachers.protocol import PREVIOUS_TEMPLATE, TeacherError, conditioned


# ----------------------------------------------------------------------------- agentic teacher
class AgenticTeacher:
    """Drives ``agent.loop.run_agent`` (tools on) with any backend and a real ``SandboxPool``."""

    strategy: Strategy = "code"

    def __init__(
        self, backend: Any, pool: Any, agent_config: Any = None, *, name: str = "agentic",
        previous_template: str = PREVIOUS_TEMPLATE,
    ):  # fmt: skip

        self.backend, self.pool = backend, pool
        self.config = agent_config or AgentConfig()
        if not self.config.tools:
            raise ValueError("AgenticTeacher needs tools=True in its AgentConfig")
        self.name = name
        self.previous_template = previous_template

    async def solve(self, problem: Problem, previous: str | None = None) -> str:
        record = await run_agent(conditioned(problem, previous, self.previous_template), self.backend,
                                 self.pool, self.config)  # fmt: skip
        if not record.response.strip():
            raise TeacherError("empty", "the backend returned no text")
        return record.response


# ----------------------------------------------------------------------------- text teacher
def r1_to_trajectory(text: str) -> str:
    """Convert R1-style ``<think>…</think> rest`` into ``<think>…</think>\\n<answer>\\nrest\\n</answer>``.

    A missing opening ``<think>`` (chat templates often put it in the prompt) is restored. A ``rest``
    already wrapped in ``<answer>`` is kept as it is.
    """
    head, sep, tail = text.partition("</think>")
    if not sep:
        raise TeacherError("format", "no </think> in the output (truncated reasoning?)")
    body = head.split("<think>", 1)[1] if "<think>" in head else head
    tail = tail.strip()
    if not tail:
        raise TeacherError("empty", "nothing after </think>")
    answer = (
        tail if tail.startswith("<answer>") and tail.endswith("</answer>") else f"<answer>\n{tail}\n</answer>"
    )
    return f"<think>{body}</think>\n{answer}"


class TextTeacher:
    """Long chain of thought from any backend, no tools; R1 output converted by ``r1_to_trajectory``."""

    strategy: Strategy = "text"

    def __init__(
        self, backend: Any, generation: Any = None, *, name: str = "text", convert_r1: bool = True,
        previous_template: str = PREVIOUS_TEMPLATE,
    ):  # fmt: skip
        """``generation``: an ``agent.loop.AgentConfig`` (template, budget per call, temperature, top_p);
        ``convert_r1`` wraps the text after ``</think>`` in ``<answer>``."""

        self.backend = backend
        self.config = generation or AgentConfig(tools=False)
        self.name, self.convert_r1 = name, convert_r1
        self.previous_template = previous_template

    async def solve(self, problem: Problem, previous: str | None = None) -> str:
        c = self.config
        question = conditioned(problem, previous, self.previous_template).question
        prompt = build_prompt(question, template=c.template, tools=False)
        out = await self.backend.complete(
            prompt, max_new_tokens=c.budget, stop=[], temperature=c.temperature, top_p=c.top_p
        )
        if not out.text.strip():
            raise TeacherError("empty", "the backend returned no text")
        if out.finish_reason == "length" and "</think>" not in out.text:
            raise TeacherError("length", f"reasoning cut at the budget of {c.budget} tokens")
        # The prompt's prefill starts the response, unless the server sent its own <think> (hosted R1).
        text = (
            out.text if out.text.lstrip().startswith("<think>") else generation_prefix(c.template) + out.text
        )
        return r1_to_trajectory(text) if self.convert_r1 else text


# ----------------------------------------------------------------------------- dataset teacher
class DatasetTeacher:
    """Precomputed responses from a JSONL/JSON/Parquet file, looked up by problem id, then question.

    DeepMath-103K rows have ``question``, ``final_answer`` and ``r1_solution_1..3``; pass
    ``field="r1_solution_2"`` for another one. R1 solutions are converted with ``r1_to_trajectory``
    unless ``convert_r1=False``.
    """

    def __init__(
        self, path: str | os.PathLike, field: str = "r1_solution_1", *, name: str | None = None,
        strategy: Strategy = "text", fields: FieldMap | None = None, convert_r1: bool = True,
    ):  # fmt: skip
        self.path = Path(path)
        self.field = field
        self.name = name or f"dataset:{self.path.stem}:{field}"
        self.strategy = strategy
        self.convert_r1 = convert_r1
        self._by_id: dict[str, str] = {}
        self._by_question: dict[str, str] = {}
        for p in load_problems(self.path, fields=fields):
            value = p.metadata.get(field)
            if value is None:
                continue
            if not isinstance(value, str):
                raise DataError(self.path, f"field '{field}' of problem {p.id!r} is not a string")
            self._by_id[p.id] = value
            self._by_question[_norm(p.question)] = value
        if not self._by_id:
            raise DataError(self.path, f"no record has the field '{field}'")

    def __len__(self) -> int:
        return len(self._by_id)

    async def solve(self, problem: Problem, previous: str | None = None) -> str:
        text = self._by_id.get(problem.id) or self._by_question.get(_norm(problem.question))
        if text is None:
            raise TeacherError("missing", f"no '{self.field}' for problem {problem.id!r} in {self.path}")
        if self.convert_r1 and "</think>" in text:
            return r1_to_trajectory(text)
        return text


def _norm(question: str) -> str:
    return " ".join(question.split())
