"""The teachers' records that cross files: ``Attempt`` (one teacher's response, its strategy and grade)
and ``Pair`` (y1 and y2 of one problem). ``teach`` writes them; compose and self-distillation read them.

Guarantees: ``read_pairs`` names the file, the line and the key of a malformed record; an attempt's
strategy, when a record lacks it, is inferred from its text (``infer_strategy``: code blocks mean code).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dualdistill.core.records import DataError, read_jsonl, scalar_text
from dualdistill.format import trajectory as tj
from dualdistill.format.trajectory import Strategy


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Attempt:
    teacher: str
    strategy: Strategy
    response: str

    def to_dict(self) -> dict:
        return {"teacher": self.teacher, "strategy": self.strategy, "response": self.response}


@dataclass(frozen=True)
class Pair:
    """One problem's y1 and y2: what ``teach`` writes (``pairs.jsonl``) and ``compose`` reads (``read_pairs``)."""

    id: str
    problem: str
    answer: str
    first: Attempt
    second: Attempt

    def to_dict(self) -> dict:
        return {"id": self.id, "problem": self.problem, "answer": self.answer, "first": self.first.to_dict(),
                "second": self.second.to_dict()}  # fmt: skip


def infer_strategy(response: str) -> Strategy:
    return "code" if any(s.kind == "code" for s in tj.parse(response)) else "text"


def _attempt(record: dict, key: str, path: Path, line: int, default: Strategy | None) -> Attempt:
    node = record.get(key)
    if not isinstance(node, dict):
        raise DataError(path, f"key '{key}' must be an object with teacher and response", line=line)
    for sub in ("teacher", "response"):
        if not isinstance(node.get(sub), str):
            raise DataError(path, f"key '{key}.{sub}' is missing or not a string", line=line)
    strategy = node.get("strategy")
    if strategy is not None and strategy not in ("code", "text"):
        raise DataError(path, f"key '{key}.strategy' must be 'code' or 'text', got {strategy!r}", line=line)
    strategy = strategy or default or infer_strategy(node["response"])
    return Attempt(node["teacher"], strategy, node["response"])


def read_pairs(path: str | Path) -> list[Pair]:
    """Read a pairs file (``teach`` output). Every problem must have id, problem, answer, first, second."""
    path = Path(path)
    pairs: list[Pair] = []
    seen: dict[str, int] = {}
    for line, r in read_jsonl(path):
        for key in ("id", "problem", "answer"):
            if key not in r or r[key] is None or scalar_text(r[key], key, path, line).strip() == "":
                raise DataError(path, f"missing or empty key '{key}'", line=line)
        pid = scalar_text(r["id"], "id", path, line)
        if pid in seen:
            raise DataError(path, f"duplicate id {pid!r} (first seen on line {seen[pid]})", line=line)
        seen[pid] = line
        first = _attempt(r, "first", path, line, None)
        other: Strategy = "text" if first.strategy == "code" else "code"
        second = _attempt(r, "second", path, line, other)
        if first.strategy == second.strategy:
            raise DataError(
                path,
                f"both attempts use strategy {first.strategy!r}; DualDistill composes a code teacher "
                "and a text teacher",
                line=line,
            )
        pairs.append(
            Pair(pid, str(r["problem"]), scalar_text(r["answer"], "answer", path, line), first, second)
        )
    if not pairs:
        raise DataError(path, "holds no pairs (is it the right file?)")
    return pairs
