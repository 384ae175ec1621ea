"""Generation at scale (``dualdistill teach``): y1 and y2 for every problem, concurrent and resumable.

For each problem a seeded binary indicator (a hash of ``first_teacher_seed`` and the problem id, so it
never depends on order or on which problems ran before) picks whether the code teacher or the text
teacher goes first. The first teacher writes y1; the other writes y2 conditioned on the problem and y1.

Files in the output directory:

- ``records.jsonl``: one flushed line per attempt of one (problem, role): ``status`` ``ok`` with the
  response, or ``failed`` with ``reason`` (``api_error``, ``timeout``, ``empty``, ``refusal``, …) and
  ``detail``. A rerun reads it back: finished roles are reused, failed ones are retried until
  ``max_attempts`` attempts in total (across runs) have failed. So a killed run continues and loses
  nothing but the attempts in flight. Finished roles are reused as they are even if the rerun's config
  names other teachers: use a new directory for new teachers.
- ``pairs.jsonl``: ``id, problem, answer, first: {teacher, strategy, response}, second: {…}`` for every
  problem with both attempts, in problem order: the input of ``compose --pairs``. Rewritten at the end
  of each run.
- ``teach.json``: the resolved config, the project version and the counts of the run.

Guarantees: attempt records are appended only from the event-loop thread; a failure detail never
contains the value of an API-key environment variable named in the config (it is masked).
Not guaranteed: the same y1/y2 text on a rerun of a failed attempt (hosted models sample).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dualdistill.agent.driver import run_all
from dualdistill.agent.loop import make_pool
from dualdistill.backends import BackendError, RefusalError
from dualdistill.backends.usage import usage_scope
from dualdistill.core.config import check_bounds, identity, setting, to_dict
from dualdistill.core.records import DataError, JsonlAppender, locked, provenance, read_jsonl, write_jsonl
from dualdistill.core.resume import check_identity
from dualdistill.core.shards import (
    check_shard,
    mark,
    merge,
    merge_records,
    position,
    same_settings,
    shard_setting,
    take,
)
from dualdistill.format.pairs import Attempt, Pair
from dualdistill.format.problems import Problem
from dualdistill.teachers.build import build_teacher, secrets_of
from dualdistill.teachers.protocol import Teacher, TeacherError
from dualdistill.teachers.spec import TeacherSpec, unread

Role = Literal["first", "second"]


@dataclass
class TeachConfig:
    """The two teachers of DualDistill and how a run is driven. The default is the synthetic world."""

    code_teacher: TeacherSpec = field(default_factory=lambda: TeacherSpec(kind="programmatic"))
    text_teacher: TeacherSpec = field(default_factory=lambda: TeacherSpec(kind="programmatic"))
    first_teacher_seed: int = setting(0, help="Seed of the who-goes-first coin.")
    shard: str = shard_setting()
    concurrency: int = setting(8, ge=1, identity=False, help="Problems in flight at once.")
    max_attempts: int = setting(
        3, ge=1, identity=False, help="Attempts per (problem, role), counted across reruns."
    )
    retry_backoff_s: float = setting(
        1.0, ge=0, identity=False, help="Seconds before a retry, doubled after each failed attempt."
    )
    attempt_timeout_s: float = setting(
        1800.0,
        gt=0,
        identity=False,
        help="Seconds one teacher call may take; hosted reasoning models can be slow.",
    )

    # The code teacher's sandbox is shaped by its own generation settings (one path, agent.loop.make_pool).
    MOVED = {
        "sandbox_timeout_s": "code_teacher.generation.executor_timeout_s",
        "sandbox_concurrency": "code_teacher.generation.sandbox_concurrency",
    }

    def __post_init__(self) -> None:
        check_bounds(self)
        check_shard(self.shard)
        for role, spec in (("code", self.code_teacher), ("text", self.text_teacher)):
            unused = unread(spec, role)
            if unused:
                raise ValueError(
                    f"{role}_teacher.{unused[0]}: a {spec.kind} {role} teacher does not read it; remove it "
                    "(it would change the teach stage's key without changing what the teacher does)"
                )


def code_goes_first(problem_id: str, seed: int) -> bool:
    """The seeded binary indicator: a fair coin from (seed, problem id) alone."""
    return hashlib.sha256(f"{seed}\x00{problem_id}".encode()).digest()[0] & 1 == 1


# ----------------------------------------------------------------------------- response checks
_REFUSAL = re.compile(r"^\s*(I'm sorry|I am sorry|I can(?:no|')t help|I cannot|I can't|I won't)", re.I)


def response_problem(text: str) -> str | None:
    """Why a response is unusable before grading (``empty``/``refusal``), or None when it is usable."""
    if not text.strip():
        return "empty"
    if _REFUSAL.match(text) and "\\boxed" not in text and "<code>" not in text:
        return "refusal"
    return None


def _classify(exc: BaseException) -> tuple[str, str]:

    if isinstance(exc, TeacherError):
        return exc.reason, exc.detail
    if isinstance(exc, RefusalError):
        return "refusal", str(exc)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout", "the attempt ran past attempt_timeout_s"

    if isinstance(exc, BackendError | ConnectionError | OSError):
        return "api_error", f"{type(exc).__name__}: {exc}"
    return "error", f"{type(exc).__name__}: {exc}"


# ----------------------------------------------------------------------------- resume state
@dataclass
class TeacherAttempt:
    """One line of ``records.jsonl``: one call of one teacher, ``ok`` with its response or ``failed``
    with a short reason (and a detail with secrets masked)."""

    id: str
    role: Role
    teacher: str
    strategy: str
    attempt: int
    status: Literal["ok", "failed"]
    time_s: float
    response: str | None = None
    reason: str | None = None
    detail: str | None = None
    tokens: dict | None = None  # {requests, prompt_tokens, completion_tokens}, as the server reported them

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def read(cls, path: Path) -> Iterator[TeacherAttempt]:
        """Every record of a ``records.jsonl``; a line that is not one is named with its number."""
        for line, data in read_jsonl(path, allow_torn_tail=True):
            if not isinstance(data.get("id"), str) or data.get("role") not in ("first", "second"):
                raise DataError(
                    path, "not a teacher record (needs an id and role first or second)", line=line
                )
            yield cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls)})


class _State:
    """What ``records.jsonl`` already holds: responses and failure counts per (id, role)."""

    def __init__(self, path: Path):
        self.ok: dict[tuple[str, str], TeacherAttempt] = {}
        self.failures: Counter[tuple[str, str]] = Counter()
        if path.exists():
            for r in TeacherAttempt.read(path):
                if r.status == "ok":
                    self.ok[(r.id, r.role)] = r
                else:
                    self.failures[(r.id, r.role)] += 1


@dataclass
class TeachReport:
    problems: int
    pairs: int
    failed: dict[str, int]  # reason -> attempts that failed with it (this run and earlier ones)
    gave_up: int  # problems without a pair after max_attempts
    code_first: int
    seconds: float
    spent: dict = field(default_factory=dict)  # this run's prompt_tokens, completion_tokens, usd

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class _Run:
    def __init__(self, code: Teacher, text: Teacher, config: TeachConfig, appender: JsonlAppender,
                 state: _State, secrets: Sequence[str]):  # fmt: skip
        self.code, self.text, self.config = code, text, config
        self.appender, self.state = appender, state
        self.secrets = [s for s in secrets if s]
        self.spent: Counter = Counter()  # prompt_tokens, completion_tokens, usd of this run's attempts

    def _account(self, teacher: Teacher, usage: Counter) -> dict | None:
        if not usage["requests"]:
            return None
        spec = self.config.code_teacher if teacher is self.code else self.config.text_teacher
        self.spent["prompt_tokens"] += usage["prompt_tokens"]
        self.spent["completion_tokens"] += usage["completion_tokens"]
        self.spent["usd"] += (usage["prompt_tokens"] * spec.price_in_per_mtok
                              + usage["completion_tokens"] * spec.price_out_per_mtok) / 1e6  # fmt: skip
        return dict(usage)

    def spend_line(self) -> str:
        s = self.spent
        parts = []
        if s["prompt_tokens"] or s["completion_tokens"]:
            parts.append(
                f"{s['prompt_tokens']:,} in / {s['completion_tokens']:,} out tokens, ${s['usd']:.2f}"
            )
        waited = sum(lim.waiting_s for lim in self.limiters())
        if waited:
            parts.append(f"waited {waited:.0f}s on rate limits")
        return "; ".join(parts)

    def limiters(self) -> list:
        """The rate limiters of the teachers' backends (for the progress line)."""
        out = []
        for teacher in (self.code, self.text):
            limiter = getattr(getattr(teacher, "backend", None), "limiter", None)
            if limiter is not None:
                out.append(limiter)
        return out

    def _mask(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text

    def order(self, problem: Problem) -> tuple[Teacher, Teacher]:
        if code_goes_first(problem.id, self.config.first_teacher_seed):
            return self.code, self.text
        return self.text, self.code

    async def attempt(self, teacher: Teacher, problem: Problem, role: Role, previous: str | None):
        """Solve with bounded retries; every attempt is recorded. Returns the response or None."""
        key = (problem.id, role)
        if key in self.state.ok:
            return self.state.ok[key].response
        c = self.config
        while self.state.failures[key] < c.max_attempts:
            number = self.state.failures[key] + 1
            base = {"id": problem.id, "role": role, "teacher": teacher.name, "strategy": teacher.strategy,
                    "attempt": number}  # fmt: skip
            t0 = time.perf_counter()
            with usage_scope() as usage:
                try:
                    text = await asyncio.wait_for(teacher.solve(problem, previous), c.attempt_timeout_s)
                    reason, detail = response_problem(text), ""
                except Exception as e:  # any teacher failure is recorded and retried, never fatal
                    text, (reason, detail) = "", _classify(e)
            took = round(time.perf_counter() - t0, 3)
            base["tokens"] = self._account(teacher, usage)
            if reason is None:
                record = TeacherAttempt(**base, status="ok", time_s=took, response=text)
                self.appender.write(record.to_dict())
                self.state.ok[key] = record
                return text
            failed = TeacherAttempt(
                **base, status="failed", time_s=took, reason=reason, detail=self._mask(detail)[:500]
            )
            self.appender.write(failed.to_dict())
            self.state.failures[key] += 1
            if self.state.failures[key] < c.max_attempts:
                await asyncio.sleep(c.retry_backoff_s * 2 ** (number - 1))
        return None

    async def problem(self, problem: Problem) -> None:
        first, second = self.order(problem)
        y1 = await self.attempt(first, problem, "first", None)
        if y1 is not None:
            await self.attempt(second, problem, "second", y1)


def _pairs(problems: Sequence[Problem], state: _State) -> list[Pair]:
    out = []
    for p in problems:
        a, b = state.ok.get((p.id, "first")), state.ok.get((p.id, "second"))
        if a is None or b is None:
            continue
        first, second = (Attempt(r.teacher, r.strategy, r.response) for r in (a, b))
        out.append(Pair(p.id, p.question, p.answer, first, second))
    return out


async def teach(
    problems: Sequence[Problem], code_teacher: Teacher, text_teacher: Teacher, out_dir: str | Path,
    config: TeachConfig, *, progress: bool = True, secrets: Sequence[str] = (),
    whole_set: Sequence[Problem] | None = None,
) -> TeachReport:  # fmt: skip
    """Run both teachers over ``problems`` into ``out_dir`` (resuming what is there); write pairs.jsonl.
    With ``config.shard``, ``problems`` are the shard's and ``whole_set`` the set it was taken from
    (its order goes into ``shard.json``, written once the resume checks passed)."""
    if code_teacher.strategy != "code" or text_teacher.strategy != "text":
        raise ValueError("teach needs a code teacher and a text teacher (check their strategy)")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError("problem ids must be unique")
    out_dir = Path(out_dir)
    with locked(out_dir, "teach"):
        check_identity(
            out_dir, "teach", teach_identity(config), "records.jsonl", teach_identity(TeachConfig())
        )
        mark(out_dir, config.shard, problems if whole_set is None else whole_set)
        return await _teach(problems, code_teacher, text_teacher, out_dir, config, progress, secrets)


IDENTITY_FILE = ".teach-identity.json"  # what check_identity(out_dir, "teach", ...) writes


def teach_identity(config: TeachConfig) -> dict:
    """Settings that decide what a record holds; the rest (concurrency, retries, prices, rate limits)
    only how fast or how dear it comes (fields marked identity=False)."""

    return identity(config)


async def _teach(
    problems: Sequence[Problem], code_teacher: Teacher, text_teacher: Teacher, out_dir: Path,
    config: TeachConfig, progress: bool, secrets: Sequence[str],
) -> TeachReport:  # fmt: skip
    ids = [p.id for p in problems]
    records = out_dir / "records.jsonl"
    state = _State(records)
    t0 = time.perf_counter()
    limit = asyncio.Semaphore(config.concurrency)
    with JsonlAppender(records) as appender, _progress(progress, len(problems)) as advance:
        run = _Run(code_teacher, text_teacher, config, appender, state, secrets)

        async def one(p: Problem) -> None:
            async with limit:
                await run.problem(p)
            advance(run.spend_line())

        await run_all([asyncio.create_task(one(p)) for p in problems])
    pairs = _pairs(problems, state)
    write_jsonl(out_dir / "pairs.jsonl", [pair.to_dict() for pair in pairs])
    wanted = set(ids)
    failed = Counter()
    for r in TeacherAttempt.read(records):
        if r.status == "failed" and r.id in wanted:
            failed[r.reason] += 1
    report = TeachReport(
        problems=len(problems), pairs=len(pairs), failed=dict(failed), gave_up=len(problems) - len(pairs),
        code_first=sum(code_goes_first(i, config.first_teacher_seed) for i in ids),
        seconds=round(time.perf_counter() - t0, 2), spent=dict(run.spent),
    )  # fmt: skip
    _write_meta(out_dir / "teach.json", config, report)
    return report


def _write_meta(path: Path, config: TeachConfig, report: TeachReport) -> None:

    meta = provenance("teach", config=to_dict(config), **report.to_dict())
    path.write_text(json.dumps(meta, indent=1), encoding="utf-8")


class _progress:
    """A rich progress bar over problems (or nothing); the context value advances it by one."""

    def __init__(self, enabled: bool, total: int):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]teach"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
            )
            self.task = self.bar.add_task("", total=total)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()

        def advance(note: str = "") -> None:  # note: tokens and spend so far
            if self.bar is not None:
                self.bar.update(self.task, advance=1, description=note)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


# ----------------------------------------------------------------------------- building teachers
async def teach_from_config(
    problems: Sequence[Problem], config: TeachConfig, out_dir: str | Path, *, progress: bool = True
) -> TeachReport:
    """Build the configured teachers (one sandbox pool, shaped by the code teacher's generation
    settings: executor timeout and limit, output limit, sessions at once) and run ``teach``."""

    everything, problems = problems, take(problems, config.shard)
    pool = make_pool(config.code_teacher.generation)
    async with pool:
        code = build_teacher(config.code_teacher, "code", pool)
        text = build_teacher(config.text_teacher, "text", pool)
        return await teach(problems, code, text, out_dir, config, progress=progress,
                           secrets=secrets_of(config.code_teacher, config.text_teacher), whole_set=everything)  # fmt: skip


# ----------------------------------------------------------------------------- shards
def merge_shards(dirs: Sequence[str | Path], out: str | Path, *, allow_incomplete: bool = False) -> int:
    """Join the output directories of a sharded ``teach`` into ``out`` (``core.shards.merge``); returns
    the pairs. Teach shards are never "incomplete": a teacher may give up on a problem by design."""

    def settings(d: Path) -> dict:
        return json.loads((d / IDENTITY_FILE).read_text(encoding="utf-8"))  # teach_identity: no shard

    def write(dirs: list[Path], out: Path, index: dict[str, int]) -> int:
        identity = same_settings(dirs, settings)
        pairs = merge_records(dirs, "pairs.jsonl", lambda r: str(r["id"]), lambda r: position(index, r["id"]))
        attempts = merge_records(dirs, "records.jsonl", lambda r: (str(r["id"]), r["role"], r.get("attempt")),
                                 lambda r: (position(index, r["id"]), r["role"], r.get("attempt", 0)))  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(out / "records.jsonl", attempts)
        write_jsonl(out / "pairs.jsonl", pairs)
        (out / IDENTITY_FILE).write_text(json.dumps(identity, indent=1, sort_keys=True), encoding="utf-8")
        return len(pairs)

    return merge(dirs, out, write, allow_incomplete=allow_incomplete)
