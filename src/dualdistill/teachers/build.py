"""Teachers: who writes y1 and y2. One protocol, four kinds (the programmatic ones live in synthetic/).

``Teacher.solve(problem, previous=None) -> str`` returns a response in the trajectory format.

- ``AgenticTeacher``: any ``Backend`` driving the tool loop (``agent.loop.run_agent``) with the real sandbox;
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
from typing import Any, Literal

from dualdistill.backends import open_backend
from dualdistill.backends.ratelimit import RateLimitedBackend, RateLimiter
from dualdistill.core.config import ConfigError
from dualdistill.synthetic import teachers as synthetic
from dualdistill.teachers.kinds import AgenticTeacher, DatasetTeacher, TextTeacher
from dualdistill.teachers.protocol import Teacher
from dualdistill.teachers.spec import TeacherSpec
from dualdistill.teachers.tool import NativeToolTeacher


# ----------------------------------------------------------------------------- teachers from specs
def build_teacher(spec: TeacherSpec, strategy: Literal["code", "text"], pool: Any) -> Teacher:
    """The teacher a spec names, for the given role's strategy."""

    model = spec.backend.served_model_name
    name = spec.name or f"{spec.kind}-{strategy}" + (f":{model}" if model else "")
    if spec.kind == "programmatic":
        if strategy == "code":
            return synthetic.ProgrammaticAgenticTeacher(pool=pool, name=spec.name or "synthetic-agentic")
        return synthetic.ProgrammaticTextTeacher(name=spec.name or "synthetic-text")
    if spec.kind == "dataset":
        if not spec.path:
            raise ValueError(f"{strategy}_teacher.path: a dataset teacher needs a file")
        return DatasetTeacher(spec.path, spec.field, name=spec.name or None, strategy=strategy)
    if strategy == "code" and spec.backend.api == "chat" and spec.tool_calls != "native":
        raise ConfigError(
            "code_teacher.backend.api: chat cannot continue a trajectory after a <code> block; use tool_calls: "
            "native (the chat tools API) or backend.api: completions"
        )
    backend = spec_backend(spec)
    if strategy == "code" and spec.tool_calls == "native":
        if not spec.is_api:
            raise ConfigError(
                f"code_teacher.tool_calls: native needs kind openai or anthropic, not {spec.kind}"
            )

        return NativeToolTeacher(backend, pool, spec.generation, name=name)
    if strategy == "code":
        return AgenticTeacher(backend, pool, replace(spec.generation, tools=True), name=name)
    return TextTeacher(backend, replace(spec.generation, tools=False), name=name)


def spec_backend(spec: TeacherSpec) -> Any:
    """The spec's backend, behind its rate limits when it sets any."""
    backend = _open_backend(spec)
    if spec.max_requests_per_minute or spec.max_tokens_per_minute:
        if spec.max_tokens_per_minute and spec.generation.budget > spec.max_tokens_per_minute:
            raise ConfigError(
                f"max_tokens_per_minute {spec.max_tokens_per_minute:g} is below one request's token budget "
                f"(generation.budget {spec.generation.budget}): no request could ever be sent in full"
            )

        limiter = RateLimiter(spec.max_requests_per_minute, spec.max_tokens_per_minute)
        return RateLimitedBackend(backend, limiter)
    return backend


def _open_backend(spec: TeacherSpec) -> Any:
    backend = spec.backend_config()
    if spec.kind == "openai" and not backend.is_server:
        raise ConfigError(
            "an openai teacher needs backend.model: the server's …/v1 base URL (or several, comma-separated)"
        )
    if backend.api_key_env and not os.environ.get(backend.api_key_env):
        raise ConfigError(
            f"environment variable {backend.api_key_env} is not set (API key of {spec.kind} teacher)"
        )
    # Local servers (vLLM, SGLang) need no key: OpenAIBackend then sends a placeholder.
    return open_backend(backend, spec.generation.template)


def secrets_of(*specs: TeacherSpec) -> list[str]:
    """Values of the API-key variables the teachers read (masked out of failure details)."""
    names = {spec.backend_config().key_env for spec in specs if spec.is_api}
    return [os.environ[n] for n in sorted(names) if os.environ.get(n)]
