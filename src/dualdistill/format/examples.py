"""The SFT example: the one record type of every training set, and how it is read and written.

Producers: ``compose`` (the composed set), ``compose.singles`` (single-teacher sets),
``selfdistill.build.build`` (kept and repaired samples), ``export`` (import and the released data).
Consumers: ``train``, ``inspect-masks``, ``view`` and ``export``, all through ``read_examples``.

An example is the question (``problem``), the whole trajectory (``text``), and optional ``id``,
``answer`` and ``case`` (the composition case, or ``kept_correct``/``repaired_wrong``/``single``);
every other field is provenance, kept in ``meta`` and written back unchanged.

Guarantees: ``SFTExample.from_dict(x.to_dict()) == x``; a line without a non-empty ``problem`` or
``text`` string, or with a non-scalar ``id``/``answer``, is an error naming the file and line.
Not guaranteed: that ``text`` is well-formed (``format.trajectory.check_format`` says; compose cleans).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualdistill.core.records import DataError, read_jsonl, scalar_text, write_jsonl

_NAMED = ("id", "problem", "answer", "text", "case")


@dataclass
class SFTExample:
    problem: str
    text: str
    id: str | None = None
    answer: str | None = None
    case: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # provenance: teachers, grades, sources, ...

    @classmethod
    def from_dict(
        cls, record: dict, *, path: str | os.PathLike = "<record>", line: int | None = None
    ) -> SFTExample:
        for key in ("problem", "text"):
            if not isinstance(record.get(key), str) or not record[key]:
                raise DataError(path, f"missing or empty string field '{key}'", line=line)
        scalars = {
            k: scalar_text(record[k], k, path, line) for k in ("id", "answer") if record.get(k) is not None
        }
        case = record.get("case")
        return cls(problem=record["problem"], text=record["text"], case=None if case is None else str(case),
                   meta={k: v for k, v in record.items() if k not in _NAMED}, **scalars)  # fmt: skip

    def to_dict(self) -> dict:
        named = {
            "id": self.id,
            "problem": self.problem,
            "answer": self.answer,
            "text": self.text,
            "case": self.case,
        }
        return {**{k: v for k, v in named.items() if v is not None}, **self.meta}


def read_examples(path: str | os.PathLike) -> Iterator[tuple[int, SFTExample]]:
    """``(line, example)`` for each line of a training JSONL; bad lines are named by file and line."""
    for line, record in read_jsonl(path):
        yield line, SFTExample.from_dict(record, path=path, line=line)


def write_examples(path: str | Path, examples: list[SFTExample]) -> None:
    write_jsonl(path, [e.to_dict() for e in examples])
