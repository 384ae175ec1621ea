"""One trajectory of the tool loop: generate → ``</code>`` → run → ``<executor>`` → continue.

One trajectory (``run_agent``) is::

    prompt = build_prompt(question, template, tools)
    loop: complete(model_input(prompt, response), stop=["</code>", "</answer>"], max_new_tokens=budget - used)
          "</code>"   → run the block in this trajectory's sandbox session, append executor_block(output)
          "</answer>" → done ("answer")
          budget used → done ("budget");  any other end (EOS) → done ("stop")
          max_tool_calls + 2 calls made → done ("calls")

Many trajectories at once, graded and appended: ``agent.driver.run_many``.

Guarantees:
- The executor text is always ``format.trajectory.executor_block(output)``; the injected text is part of the
  response and its tokens (``backend.count_tokens``) count towards ``budget``.
- At most ``max_tool_calls`` blocks run. The first ``</code>`` beyond the cap is not executed:
  ``format.prompts.TOOL_CAP_NOTE`` is injected once in place of the executor block, and from then on
  ``</code>`` is no longer a stop string, so the model goes on to answer in text.
- At most ``max_tool_calls + 2`` model calls per trajectory (``finish_reason: "calls"``), whatever a server
  answers: a ``</code>`` that closes no block is text the model goes on from, but it costs a call, and one
  that comes with no other text ends the trajectory (``"empty"``), as an empty completion does.
- One sandbox session per trajectory (state persists across its blocks), opened at its first code block,
  so text-only trajectories hold no sandbox. With ``tools=False`` no sandbox is used at all.
- Time awaiting the backend (``gen_time_s``) and time running code (``tool_time_s``) are counted apart.

Not guaranteed: ``n_tokens <= budget`` exactly — the last injected executor block (at most
``executor_output_limit`` characters) may take it past the budget, after which the trajectory stops.
Token counts of injected text are counted separately and may differ by a token from a re-tokenisation
of the whole response at a block boundary.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Protocol

from dualdistill.agent.record import AgentRecord, FinishReason
from dualdistill.backends import Backend
from dualdistill.core.config import bounded, check_bounds, field_of, setting
from dualdistill.format.problems import Problem
from dualdistill.format.prompts import (
    TOOL_CAP_NOTE,
    PromptTemplate,
    build_prompt,
    generation_prefix,
    model_input,
)
from dualdistill.format.trajectory import executor_block
from dualdistill.grading.grader import GradeConfig
from dualdistill.sandbox import SandboxConfig, SandboxPool, Session

CODE_STOP = "</code>"
ANSWER_STOP = "</answer>"


@dataclass
class AgentConfig:
    """How one trajectory is generated. Defaults are the paper's evaluation settings."""

    tools: bool = setting(True, help="Let the model run code.")
    template: PromptTemplate = setting(
        "paper",
        help="Prompt template: paper (the released prompts), plain, compact, or chat (the tokenizer's).",
    )
    # template "chat": the tokenizer (dir or hub id) whose chat template renders the prompt; default:
    # the backend's own tokenizer (HFBackend, VLLMBackend)
    chat_tokenizer: str | None = setting(
        None, help="With template chat and a server URL: the tokenizer (dir or hub id) whose template to use."
    )
    max_tool_calls: int = setting(10, ge=0, help="Code blocks run per trajectory; later ones get a note.")
    budget: int = setting(4096, ge=1, help="Total response tokens, executor output included.")
    temperature: float = setting(0.6, ge=0, help="Sampling temperature (0: greedy).")
    top_p: float = setting(0.95, gt=0, le=1, help="Nucleus sampling mass.")
    # The executor's defaults are the sandbox's own (SandboxConfig), stated there once.
    executor_output_limit: int = setting(
        SandboxConfig.output_limit, ge=1, help="Characters of executor output kept (head and tail)."
    )
    executor_timeout_s: float = setting(
        SandboxConfig.timeout_s, gt=0, help="Seconds per code block (wall or CPU, by executor_limit)."
    )
    # What executor_timeout_s counts: "wall" seconds (the paper's), or "cpu" seconds of the block's
    # processes, with a wall-clock backstop; "cpu" gives the same results with or without machine load.
    executor_limit: Literal["wall", "cpu"] = setting(
        SandboxConfig.limit,
        help="What executor_timeout_s counts: wall seconds (the paper), or CPU seconds (load-independent).",
    )
    concurrency: int = setting(
        256, ge=1, identity=False, help="Trajectories in flight at once (the backend batches across them)."
    )
    sandbox_concurrency: int = setting(
        16, ge=1, identity=False, help="Code blocks running at once in the sandbox."
    )
    grade_timeout_s: float = field_of(GradeConfig, "timeout_s")
    # A longer prompt is recorded as skipped without tokenizing it (a 50 MB question must not take the
    # machine's memory); a prompt over the model's context (when the backend knows it) is skipped too.
    max_prompt_chars: int = bounded(500_000, ge=1)

    def __post_init__(self) -> None:
        check_bounds(self)


# ----------------------------------------------------------------------------- plug-in points
class ExecResult(Protocol):
    status: str
    output: str
    duration_s: float


class SandboxSession(Protocol):
    async def run(self, code: str) -> ExecResult: ...


class Pool(Protocol):
    """``dualdistill.sandbox.SandboxPool``: ``async with pool.session() as s: await s.run(code)``."""

    def session(self) -> contextlib.AbstractAsyncContextManager[SandboxSession]: ...


def make_pool(config: AgentConfig) -> Any:
    """The real sandbox pool for ``config`` (output limit and timeout passed to the sandbox)."""

    sandbox = SandboxConfig(timeout_s=config.executor_timeout_s, limit=config.executor_limit,
                            output_limit=config.executor_output_limit)  # fmt: skip
    # Start the shared template process from this (long-lived) thread: bwrap's --die-with-parent kills
    # it when the thread that started it exits, and the pool's worker threads exit on pool.close().
    Session(sandbox).close()
    return SandboxPool(sandbox, max_concurrency=config.sandbox_concurrency)


def _first_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    hits = [(i, s) for s in stops if (i := text.find(s)) != -1]
    return min(hits) if hits else None


class _Trajectory:
    """Mutable state of one trajectory; ``run_agent`` drives it."""

    def __init__(
        self, backend: Backend, config: AgentConfig, on_text: Callable[[str, str], None] | None = None
    ):
        self.backend, self.config, self.on_text = backend, config, on_text
        self.response = ""
        self.n_tokens = self.n_generated = 0
        self.gen_time = self.tool_time = 0.0
        self.tool_calls: list[dict] = []
        self.cap_hit = False

    @property
    def stops(self) -> list[str]:
        code_allowed = self.config.tools and not self.cap_hit
        return [CODE_STOP, ANSWER_STOP] if code_allowed else [ANSWER_STOP]

    async def generate(self, prompt: str, seed: int | None) -> str | None:
        """One completion; returns the stop string it ended at (``None`` for EOS or length), or ``""``
        when the backend answered no text at all. Tokens are what the backend reports, or counted here
        when it reports none for text it did send (a budget that counts zero never runs out)."""
        stops = self.stops
        t0 = time.perf_counter()
        c = await self.backend.complete(
            model_input(prompt, self.response),
            max_new_tokens=self.config.budget - self.n_tokens,
            stop=stops,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            seed=seed,
        )
        self.gen_time += time.perf_counter() - t0
        if not c.text:
            return ""
        text, n, hit = c.text, c.n_tokens, _first_stop(c.text, stops)
        if not n or n < 0:
            n = max(1, self.backend.count_tokens(text))
        if hit is not None and hit[0] + len(hit[1]) < len(text):
            # A backend that ran past its stop string: keep the protocol's contract ourselves.
            text = text[: hit[0] + len(hit[1])]
            n = min(n, self.backend.count_tokens(text))
        self.response += text
        self.n_tokens += n
        self.n_generated += n
        if self.on_text is not None:
            self.on_text("model", text)
        return hit[1] if hit is not None else None

    def inject(self, text: str, kind: str = "executor") -> None:
        self.response += text
        self.n_tokens += self.backend.count_tokens(text)
        if self.on_text is not None:
            self.on_text(kind, text)

    def last_code(self) -> str | None:
        """The body of the code block the response ends with; None for a stray ``</code>``.

        Found by tag position, not ``format.trajectory.parse``, so a block the model opened inside an
        unclosed ``<think>`` still runs, as in the reference implementation.
        """
        start = self.response.rfind("<code>")
        end = len(self.response) - len(CODE_STOP)
        if start == -1 or self.response.find(CODE_STOP, start) != end:
            return None
        return self.response[start + len("<code>") : end].strip("\n")

    async def execute(self, session: SandboxSession, code: str) -> None:
        t0 = time.perf_counter()
        result = await session.run(code)
        self.tool_time += time.perf_counter() - t0
        self.tool_calls.append({"status": result.status, "duration_s": round(result.duration_s, 4)})
        self.inject(executor_block(result.output))


def prompt_problem(prompt: str, backend: Backend, config: AgentConfig) -> str | None:
    """Why ``prompt`` cannot be generated from (too long), or None. Characters are checked before
    tokens, so an absurd input costs no memory; the context is checked when the backend reports one."""
    if len(prompt) > config.max_prompt_chars:
        return f"prompt of {len(prompt):,} characters > max_prompt_chars {config.max_prompt_chars:,}"
    context = getattr(backend, "context_length", None)
    # A token covers at least one byte, so a prompt with fewer bytes than positions fits untokenized.
    if context and len(prompt.encode()) >= context:
        n = backend.count_tokens(prompt)
        if n >= context:
            return f"prompt of {n:,} tokens does not fit the model's context of {context:,}"
    return None


async def run_agent(
    problem: Problem,
    backend: Backend,
    pool: Pool | None,
    config: AgentConfig,
    *,
    sample_index: int = 0,
    seed: int | None = None,
    on_text: Callable[[str, str], None] | None = None,
) -> AgentRecord:
    """Generate one tool-integrated trajectory for ``problem`` (ungraded).

    ``on_text(kind, text)``, when given, sees each piece as it is appended: ``"prefill"`` (the template's
    prefilled start), ``"model"`` (one completion), ``"executor"`` (an executor block), ``"note"``.
    """
    if config.tools and pool is None:
        raise ValueError("tools are on but no sandbox pool was given (pass a SandboxPool or tools=False)")
    prompt = build_prompt(
        problem.question,
        template=config.template,
        tools=config.tools,
        tokenizer=_chat_tokenizer(backend, config),
    )
    t = _Trajectory(backend, config, on_text)
    t.response = generation_prefix(config.template)  # the released "<think>\n" prefill (paper template)
    skip = prompt_problem(prompt, backend, config)
    if skip is not None:
        return AgentRecord(
            problem_id=problem.id, sample_index=sample_index, prompt=prompt[:1000], response="", n_tokens=0,
            finish_reason="skipped", source=problem.source, gold=problem.answer, seed=seed, skip_reason=skip,
        )  # fmt: skip
    if on_text is not None and t.response:
        on_text("prefill", t.response)
    finish = await _drive(t, prompt, pool, seed)
    return AgentRecord(
        problem_id=problem.id,
        sample_index=sample_index,
        prompt=prompt,
        response=t.response,
        n_tokens=t.n_tokens,
        n_generated=t.n_generated,
        tool_calls=t.tool_calls,
        gen_time_s=round(t.gen_time, 4),
        tool_time_s=round(t.tool_time, 4),
        finish_reason=finish,
        tool_cap_hit=t.cap_hit,
        source=problem.source,
        gold=problem.answer,
        seed=seed,
    )


async def _drive(t: _Trajectory, prompt: str, pool: Pool | None, seed: int | None) -> FinishReason:
    """Generate, run and inject until the trajectory ends; returns why it ended."""
    config = t.config
    async with contextlib.AsyncExitStack() as stack:
        session: SandboxSession | None = None
        for round_index in itertools.count():
            if t.n_tokens >= config.budget:
                return "budget"
            if round_index == config.max_tool_calls + 2:
                return "calls"  # a server that keeps answering "</code>" cannot loop for ever
            before = len(t.response)
            stop = await t.generate(prompt, None if seed is None else seed + round_index)
            if stop == "":
                return "empty"
            if stop == ANSWER_STOP:
                return "answer"
            if stop != CODE_STOP:
                return "budget" if t.n_tokens >= config.budget else "stop"
            if t.n_tokens >= config.budget:
                return "budget"  # no budget left to read the output: do not run the block
            if len(t.tool_calls) >= config.max_tool_calls:
                t.cap_hit = True  # this block is not run; the note replaces its executor output
                t.inject(TOOL_CAP_NOTE, "note")
                continue
            code = t.last_code()
            if code is None:
                if not t.response[before:].removesuffix(CODE_STOP).strip():
                    return "empty"  # only a stray "</code>": nothing new to go on from
                continue  # a "</code>" that closes no block is text; the model goes on
            if session is None:
                session = await stack.enter_async_context(pool.session())  # type: ignore[union-attr]
            await t.execute(session, code)
    raise AssertionError("unreachable: the loop returns")


def _chat_tokenizer(backend: Any, config: AgentConfig) -> Any:
    """The tokenizer that renders a ``chat`` prompt; None for the other templates."""
    if config.template != "chat":
        return None
    if config.chat_tokenizer:
        return _load_tokenizer(config.chat_tokenizer)
    return getattr(backend, "tokenizer", None)


@lru_cache(maxsize=4)
def _load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)
