"""Teachers: who writes y1 and y2. One protocol, four kinds (the programmatic ones live in synthetic/).

``Teacher.solve(problem, previous=None) -> str`` returns a response in the trajectory format.

- ``AgenticTeacher``: any ``Backend`` driving the tool loop (``agent.run_agent``) with the real sandbox;
  it writes ``<code>``/``<executor>`` trajectories (OpenHands with Claude-3.5-Sonnet in the paper).
- ``TextTeacher``: long chain of thought, no tools (DeepSeek-R1 in the paper). R1-style output
  ``<think>…</think> rest`` becomes ``<think>…</think>\\n<answer>\\nrest\\n</answer>``: the text after
  ``</think>`` is wrapped in ``<answer>``, as the released code converts R1 solutions.
- ``DatasetTeacher``: precomputed responses from a file (e.g. DeepMath-103K's ``r1_solution_1``),
  matched by problem id, else by question text.

The Anthropic messages API is a ``Backend`` like the others (``backends.anthropic.AnthropicBackend``).

Conditioning on ``previous`` (y2 given y1): the question the teacher sees becomes
``PREVIOUS_TEMPLATE`` filled with the problem and y1 (tags and all), so the second teacher reads the
first attempt and solves the problem its own way. Only the teacher's prompt changes; the problem
record (and so the student's SFT prompt) keeps the original question. ``DatasetTeacher`` ignores
``previous``: its responses were written before y1 existed.

Guarantees:
- API keys are read from environment variables when a backend is built, passed only to the client,
  and never appear in ``repr``, logs, records or error reasons. The sandbox gets no key: code runs
  under ``SandboxPool``, which starts it with a scrubbed environment (tested with a planted secret).
- A failure (API error after the client's retries, empty output, refusal, truncated reasoning)
  raises ``TeacherError`` with a short ``reason`` that ``teach`` records.

Not guaranteed: that a teacher's answer is right (grading decides), or that a hosted model follows
the format; ``compose`` cleans what does not.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from dualdistill.problems import FieldMap, Problem, load_problems
from dualdistill.prompts import build_prompt, generation_prefix
from dualdistill.records import DataError

Strategy = Literal["code", "text"]

PREVIOUS_TEMPLATE = (
    "{question}\n\n"
    "Another solver has already attempted this problem. Their attempt:\n"
    "<<<\n{previous}\n>>>\n"
    "Solve the problem yourself, using your own approach. The attempt above may be wrong."
)

if TYPE_CHECKING:
    from dualdistill.teach import TeachConfig, TeacherSpec


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


# ----------------------------------------------------------------------------- agentic teacher
class AgenticTeacher:
    """Drives ``agent.run_agent`` (tools on) with any backend and a real ``SandboxPool``."""

    strategy: Strategy = "code"

    def __init__(
        self, backend: Any, pool: Any, agent_config: Any = None, *, name: str = "agentic",
        previous_template: str = PREVIOUS_TEMPLATE,
    ):  # fmt: skip
        from dualdistill.agent import AgentConfig

        self.backend, self.pool = backend, pool
        self.config = agent_config or AgentConfig()
        if not self.config.tools:
            raise ValueError("AgenticTeacher needs tools=True in its AgentConfig")
        self.name = name
        self.previous_template = previous_template

    async def solve(self, problem: Problem, previous: str | None = None) -> str:
        from dualdistill.agent import run_agent

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
        """``generation``: an ``agent.AgentConfig`` (template, budget per call, temperature, top_p);
        ``convert_r1`` wraps the text after ``</think>`` in ``<answer>``."""
        from dualdistill.agent import AgentConfig

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


# ----------------------------------------------------------------------------- teachers from specs
def build_teacher(spec: TeacherSpec, strategy: Literal["code", "text"], pool: Any) -> Teacher:
    """The teacher a spec names, for the given role's strategy."""
    from dualdistill.teachers import AgenticTeacher, DatasetTeacher, TextTeacher

    name = spec.name or f"{spec.kind}-{strategy}" + (f":{spec.model}" if spec.model else "")
    if spec.kind == "programmatic":
        from dualdistill.synthetic import teachers as synthetic

        if strategy == "code":
            return synthetic.ProgrammaticAgenticTeacher(pool=pool, name=spec.name or "synthetic-agentic")
        return synthetic.ProgrammaticTextTeacher(name=spec.name or "synthetic-text")
    if spec.kind == "dataset":
        if not spec.path:
            raise ValueError(f"{strategy}_teacher.path: a dataset teacher needs a file")
        return DatasetTeacher(spec.path, spec.field, name=spec.name or None, strategy=strategy)
    if strategy == "code" and spec.api == "chat" and spec.tool_calls != "native":
        from dualdistill.config import ConfigError

        raise ConfigError(
            "code_teacher.api: chat cannot continue a trajectory after a <code> block; use tool_calls: native "
            "(the chat tools API) or api: completions"
        )
    backend = spec_backend(spec)
    if strategy == "code" and spec.tool_calls == "native":
        if spec.kind not in ("openai", "anthropic"):
            from dualdistill.config import ConfigError

            raise ConfigError(
                f"code_teacher.tool_calls: native needs kind openai or anthropic, not {spec.kind}"
            )
        from dualdistill.tool_teacher import NativeToolTeacher

        return NativeToolTeacher(backend, pool, spec.generation, name=name)
    if strategy == "code":
        return AgenticTeacher(backend, pool, replace(spec.generation, tools=True), name=name)
    return TextTeacher(backend, replace(spec.generation, tools=False), name=name)


def spec_backend(spec: TeacherSpec) -> Any:
    """The spec's backend, behind its rate limits when it sets any."""
    backend = _open_backend(spec)
    if spec.max_requests_per_minute or spec.max_tokens_per_minute:
        from dualdistill.backends.ratelimit import RateLimitedBackend, RateLimiter
        from dualdistill.config import ConfigError

        if spec.max_tokens_per_minute and spec.generation.budget > spec.max_tokens_per_minute:
            raise ConfigError(
                f"max_tokens_per_minute {spec.max_tokens_per_minute:g} is below one request's token budget "
                f"(generation.budget {spec.generation.budget}): no request could ever be sent in full"
            )

        limiter = RateLimiter(spec.max_requests_per_minute, spec.max_tokens_per_minute)
        return RateLimitedBackend(backend, limiter)
    return backend


def _open_backend(spec: TeacherSpec) -> Any:
    from dualdistill.config import ConfigError

    if spec.kind == "anthropic":
        from dualdistill.backends.anthropic import AnthropicBackend, AnthropicConfig
        from dualdistill.prompts import assistant_marker

        marker = assistant_marker(spec.generation.template)
        return AnthropicBackend(AnthropicConfig(
            model=spec.model or AnthropicConfig.model, api_key_env=spec.api_key_env or "ANTHROPIC_API_KEY",
            base_url=spec.url or None, assistant_marker=marker,
        ))  # fmt: skip
    from dualdistill.backends import open_backend

    if not spec.url:
        raise ConfigError(
            "an openai teacher needs 'url' (the server's …/v1 base URL, or several, comma-separated)"
        )
    if spec.api_key_env and not os.environ.get(spec.api_key_env):
        raise ConfigError(f"environment variable {spec.api_key_env} is not set (API key of {spec.url})")
    # Local servers (vLLM, SGLang) need no key: OpenAIBackend then sends a placeholder.
    return open_backend(spec.url, api=spec.api, template=spec.generation.template, served_model_name=spec.model or None,
                        api_key_env=spec.api_key_env or "OPENAI_API_KEY")  # fmt: skip


def secrets_of(config: TeachConfig) -> list[str]:
    """Values of the API-key variables the config names (masked out of failure details)."""
    names = set()
    for spec in (config.code_teacher, config.text_teacher):
        if spec.kind == "anthropic":
            names.add(spec.api_key_env or "ANTHROPIC_API_KEY")
        elif spec.kind == "openai":
            names.add(spec.api_key_env or "OPENAI_API_KEY")
    return [os.environ[n] for n in sorted(names) if os.environ.get(n)]
