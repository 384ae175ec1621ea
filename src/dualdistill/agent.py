"""The tool loop of the student: generate → ``</code>`` → run → ``<executor>`` → continue, and its driver.

One trajectory (``run_agent``) is::

    prompt = build_prompt(question, template, tools)
    loop: complete(model_input(prompt, response), stop=["</code>", "</answer>"], max_new_tokens=budget - used)
          "</code>"   → run the block in this trajectory's sandbox session, append executor_block(output)
          "</answer>" → done ("answer")
          budget used → done ("budget");  any other end (EOS) → done ("stop")

``run_many`` runs many trajectories as concurrent asyncio tasks, grades each and appends it to a JSONL
file. It is the one generation driver, shared by ``dualdistill eval`` and self-distillation sampling.

Guarantees:
- The executor text is always ``trajectory.executor_block(output)``; the injected text is part of the
  response and its tokens (``backend.count_tokens``) count towards ``budget``.
- At most ``max_tool_calls`` blocks run. The first ``</code>`` beyond the cap is not executed:
  ``prompts.TOOL_CAP_NOTE`` is injected once in place of the executor block, and from then on
  ``</code>`` is no longer a stop string, so the model goes on to answer in text.
- One sandbox session per trajectory (state persists across its blocks), opened at its first code block,
  so text-only trajectories hold no sandbox. With ``tools=False`` no sandbox is used at all.
- No barrier between trajectories: one waiting on its sandbox never delays another's generation; the
  backend batches whatever requests are waiting. Time awaiting the backend (``gen_time_s``) and time
  running code (``tool_time_s``) are counted apart.
- ``run_many`` appends one flushed line per finished trajectory, keyed by (source, problem_id,
  sample_index); on a rerun it skips keys already in the file, so a run killed at any moment resumes
  without losing or duplicating a record. Seeds derive from (seed, problem id, sample index), not
  from scheduling order.

Not guaranteed: ``n_tokens <= budget`` exactly — the last injected executor block (at most
``executor_output_limit`` characters) may take it past the budget, after which the trajectory stops.
Token counts of injected text are counted separately and may differ by a token from a re-tokenisation
of the whole response at a block boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Literal, Protocol

from dualdistill.backends import Backend
from dualdistill.config import bounded, check_bounds, setting
from dualdistill.problems import Problem
from dualdistill.prompts import TOOL_CAP_NOTE, PromptTemplate, build_prompt, generation_prefix, model_input
from dualdistill.records import DataError, JsonlAppender, done_keys, unique_records
from dualdistill.trajectory import executor_block

CODE_STOP = "</code>"
ANSWER_STOP = "</answer>"
# "empty": the backend answered nothing at all, so asking again would loop without end.
FinishReason = Literal["answer", "budget", "stop", "skipped", "empty"]


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
    executor_output_limit: int = setting(
        2000, ge=1, help="Characters of executor output kept (head and tail)."
    )
    executor_timeout_s: float = setting(
        3.0, gt=0, help="Seconds per code block (wall or CPU, by executor_limit)."
    )
    # What executor_timeout_s counts: "wall" seconds (the paper's), or "cpu" seconds of the block's
    # processes, with a wall-clock backstop; "cpu" gives the same results with or without machine load.
    executor_limit: Literal["wall", "cpu"] = setting(
        "wall",
        help="What executor_timeout_s counts: wall seconds (the paper), or CPU seconds (load-independent).",
    )
    concurrency: int = setting(
        256, ge=1, speed=True, help="Trajectories in flight at once (the backend batches across them)."
    )
    sandbox_concurrency: int = setting(
        16, ge=1, speed=True, help="Code blocks running at once in the sandbox."
    )
    grade_timeout_s: float = bounded(5.0, gt=0)
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
    from dualdistill.sandbox import SandboxConfig, SandboxPool, Session

    sandbox = SandboxConfig(timeout_s=config.executor_timeout_s, limit=config.executor_limit,
                            output_limit=config.executor_output_limit)  # fmt: skip
    # Start the shared template process from this (long-lived) thread: bwrap's --die-with-parent kills
    # it when the thread that started it exits, and the pool's worker threads exit on pool.close().
    Session(sandbox).close()
    return SandboxPool(sandbox, max_concurrency=config.sandbox_concurrency)


# ----------------------------------------------------------------------------- one trajectory
@dataclass
class AgentRecord:
    problem_id: str
    sample_index: int
    prompt: str
    response: str
    n_tokens: int  # generated + injected
    n_generated: int = 0
    tool_calls: list[dict] = field(default_factory=list)  # [{status, duration_s}] of executed blocks
    gen_time_s: float = 0.0
    tool_time_s: float = 0.0
    finish_reason: FinishReason = "stop"
    tool_cap_hit: bool = False
    source: str = ""
    gold: str = ""
    seed: int | None = None
    skip_reason: str | None = None  # set with finish_reason "skipped": why nothing was generated
    # verdict, filled by grading (run_many / evaluate)
    correct: bool | None = None
    extracted: str | None = None
    grade_status: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, *, path: str | Path = "<record>", line: int | None = None) -> AgentRecord:
        """The record of one JSON line; a missing field is named with the file and line."""
        for key in ("problem_id", "sample_index", "prompt", "response", "n_tokens", "gold"):
            if key not in data:
                raise DataError(path, f"record has no '{key}' field (not an agent record?)", line=line)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def read_agent_records(
    path: str | Path, *, allow_torn_tail: bool = False
) -> Iterator[tuple[int, AgentRecord]]:
    """``(line, record)`` for each line of an eval or sampling file (``records.jsonl``, ``samples.jsonl``)."""
    from dualdistill.records import read_jsonl

    for line, data in read_jsonl(path, allow_torn_tail=allow_torn_tail):
        yield line, AgentRecord.from_dict(data, path=path, line=line)


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

        Found by tag position, not ``trajectory.parse``, so a block the model opened inside an
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
    finish: FinishReason = "stop"
    async with contextlib.AsyncExitStack() as stack:
        session: SandboxSession | None = None
        for round_index in itertools.count():
            if t.n_tokens >= config.budget:
                finish = "budget"
                break
            stop = await t.generate(prompt, None if seed is None else seed + round_index)
            if stop == "":
                finish = "empty"
                break
            if stop == ANSWER_STOP:
                finish = "answer"
                break
            if stop != CODE_STOP:
                finish = "budget" if t.n_tokens >= config.budget else "stop"
                break
            if t.n_tokens >= config.budget:
                finish = "budget"  # no budget left to read the output: do not run the block
                break
            if len(t.tool_calls) >= config.max_tool_calls:
                t.cap_hit = True  # this block is not run; the note replaces its executor output
                t.inject(TOOL_CAP_NOTE, "note")
                continue
            code = t.last_code()
            if code is None:
                continue  # a "</code>" that closes no block is text; the model goes on
            if session is None:
                session = await stack.enter_async_context(pool.session())  # type: ignore[union-attr]
            await t.execute(session, code)
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


# ----------------------------------------------------------------------------- many trajectories
async def run_all(tasks: list[asyncio.Task]) -> None:
    """Await every task; on the first failure cancel the others and wait for them, then raise it, so
    nothing keeps running (or writing) behind a failed job."""
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def record_key(record: dict) -> tuple[str, str, int]:
    """The resume key of a record: benchmark/source, problem id, sample index."""
    return (str(record.get("source", "")), str(record["problem_id"]), int(record["sample_index"]))


def trajectory_seed(seed: int, problem_id: str, sample_index: int) -> int:
    """A seed that depends only on its inputs (never on scheduling order)."""
    digest = hashlib.sha256(f"{seed}\x00{problem_id}\x00{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def grade_record(record: AgentRecord, *, timeout: float = 5.0) -> AgentRecord:
    """Fill the verdict fields of ``record`` with the current grader."""
    from dualdistill.grading import grade

    verdict = grade(record.response, record.gold, timeout=timeout)
    record.correct = bool(verdict.correct)
    record.extracted = verdict.extracted
    record.grade_status = verdict.status
    return record


async def run_many(
    problems: Sequence[Problem],
    backend: Backend,
    pool: Pool | None,
    config: AgentConfig,
    *,
    samples: int,
    out_path: str | Path,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Run ``samples`` trajectories per problem, grade and append each to ``out_path`` (JSONL).

    Keys already in ``out_path`` are skipped, so a rerun after a kill resumes. Returns every record of
    these problems in the file (old and new), ordered by problem then sample index. An exception in one
    trajectory (e.g. a backend that stays down) cancels the rest and propagates; finished records stay.
    """
    seen: set[tuple[str, str]] = set()
    for p in problems:
        if (p.source, p.id) in seen:
            raise ValueError(f"duplicate problem id {p.id!r} in source {p.source!r}")
        seen.add((p.source, p.id))
    out_path = Path(out_path)
    done = done_keys(out_path, record_key)
    todo = [(p, i) for p in problems for i in range(samples) if (p.source, p.id, i) not in done]
    from dualdistill.agent_progress import Tracker

    tracker = Tracker(problems, samples, done, enabled=progress)
    # One grading thread: the grader need not be thread-safe, and generation goes on meanwhile.
    grader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grade")
    limit = asyncio.Semaphore(config.concurrency)

    async def one(problem: Problem, index: int, appender: JsonlAppender) -> None:
        async with limit:
            record = await run_agent(
                problem, backend, pool, config, sample_index=index,
                seed=trajectory_seed(seed, problem.id, index),
            )  # fmt: skip
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(grader, partial(grade_record, record, timeout=config.grade_timeout_s))
        appender.write(record.to_dict())  # one flushed line; only the event-loop thread writes
        tracker.finished(record)

    with JsonlAppender(out_path) as appender, tracker:
        try:
            await run_all([asyncio.create_task(one(p, i, appender)) for p, i in todo])
        finally:
            grader.shutdown(wait=True)
    wanted = {(p.source, p.id) for p in problems}
    order = {(p.source, p.id): n for n, p in enumerate(problems)}
    records = unique_records(
        [r.to_dict() for _, r in read_agent_records(out_path, allow_torn_tail=True)],
        record_key,
        path=out_path,
    )
    records = [r for r in records if record_key(r)[:2] in wanted]
    records = [r for r in records if r["sample_index"] < samples]
    return sorted(records, key=lambda r: (order[record_key(r)[:2]], r["sample_index"]))


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
