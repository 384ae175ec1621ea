"""JSONL records: append-and-flush writing, strict reading, and resume after a kill.

Every long job in dualdistill (teach, eval, self-distill sampling) writes one JSON object per line
through ``JsonlAppender`` and resumes by asking which keys are already done.

Guarantees:
- Each record is written whole with one ``write`` call followed by ``flush`` (and ``fsync`` when
  asked), so a kill loses at most the record being written.
- A torn last line (no trailing newline, left by a kill mid-write) is cut off when the file is
  opened for appending, so resuming never duplicates or corrupts a record.
- ``read_jsonl`` names the file and line of any malformed record; it never skips one silently.

Not guaranteed: safety against two processes appending to the same file at once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Bad input data. The message always names the file, and the line or field when known."""

    def __init__(self, path: str | os.PathLike, message: str, *, line: int | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


def read_jsonl(path: str | os.PathLike, *, allow_torn_tail: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line; each record must be a JSON object.

    With ``allow_torn_tail`` a final line without a newline that fails to parse (a write cut by a
    kill) is ignored instead of raising.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    with path.open("r", encoding="utf-8") as f:
        lines = f.readlines()
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if allow_torn_tail and i == len(lines) and not line.endswith("\n"):
                return
            raise DataError(path, f"malformed JSON ({e.msg} at column {e.colno})", line=i) from None
        if not isinstance(record, dict):
            raise DataError(path, f"expected a JSON object, got {type(record).__name__}", line=i)
        yield i, record


def _cut_torn_tail(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        data = f.seek(0) or f.read()
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)


class JsonlAppender:
    """Append records to a JSONL file, one flushed line each. Use as a context manager."""

    def __init__(self, path: str | os.PathLike, *, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_tail(self.path)
        self._f = self.path.open("a", encoding="utf-8")
        self._fsync = fsync

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        if self._fsync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def done_keys(path: str | os.PathLike, key: Callable[[dict], Any]) -> set:
    """Keys of the records already in ``path`` (empty when it does not exist); for resuming."""
    if not Path(path).exists():
        return set()
    return {key(r) for _, r in read_jsonl(path, allow_torn_tail=True)}


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Write a whole file atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
