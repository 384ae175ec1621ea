"""What one trajectory of the tool loop writes: ``AgentRecord`` (prompt, response, tokens, tool calls and
their times, why it finished, the grade), read back by ``read_agent_records``, keyed by ``record_key``.

Guarantees: a record survives ``to_dict`` / ``read_agent_records`` unchanged; a malformed line is a
``DataError`` naming the file and line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dualdistill.core.records import DataError, read_jsonl

# "empty": the backend answered nothing at all, or nothing but a ``</code>`` that closes no block, so asking
# again would loop without end. "calls": the trajectory made its ``max_tool_calls + 2`` model calls (one per
# code block, one for the cap note, one to answer) and stopped there.
FinishReason = Literal["answer", "budget", "stop", "skipped", "empty", "calls"]


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

    for line, data in read_jsonl(path, allow_torn_tail=allow_torn_tail):
        yield line, AgentRecord.from_dict(data, path=path, line=line)


def record_key(record: dict) -> tuple[str, str, int]:
    """The resume key of a record: benchmark/source, problem id, sample index."""
    return (str(record.get("source", "")), str(record["problem_id"]), int(record["sample_index"]))
