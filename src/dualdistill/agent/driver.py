"""The one generation driver: many trajectories (``agent.loop.run_agent``) as concurrent asyncio tasks,
each graded and appended to a JSONL file; shared by ``dualdistill eval`` and self-distillation sampling.

Guarantees: no barrier between trajectories (one waiting on its sandbox never delays another's
generation; the backend batches whatever requests are waiting); one flushed line per finished
trajectory, keyed by (source, problem_id, sample_index), so a rerun skips what is done and a run killed
at any moment resumes without losing or duplicating a record; seeds derive from (seed, problem id,
sample index), not from scheduling order.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from dualdistill.agent.loop import AgentConfig, Pool, run_agent
from dualdistill.agent.progress import Tracker
from dualdistill.agent.record import AgentRecord, read_agent_records, record_key
from dualdistill.backends import Backend
from dualdistill.core.records import JsonlAppender, done_keys, unique_records
from dualdistill.format.problems import Problem
from dualdistill.grading.grader import GRADE_TIMEOUT_S, grade


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


def trajectory_seed(seed: int, problem_id: str, sample_index: int) -> int:
    """A seed that depends only on its inputs (never on scheduling order)."""
    digest = hashlib.sha256(f"{seed}\x00{problem_id}\x00{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def grade_record(record: AgentRecord, *, timeout: float = GRADE_TIMEOUT_S) -> AgentRecord:
    """Fill the verdict fields of ``record`` with the current grader."""

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
