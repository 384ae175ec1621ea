"""JSONL records: append-and-flush writing, strict reading, and resume after a kill.

Every long job in dualdistill (teach, eval, self-distill sampling) writes one JSON object per line
through ``JsonlAppender`` and resumes by asking which keys are already done.

Guarantees:
- Each record is written whole with one ``write`` call followed by ``flush`` (and ``fsync`` when
  asked), so a kill loses at most the record being written.
- A torn last line (no trailing newline, left by a kill mid-write) is cut off when the file is
  opened for appending, so resuming never duplicates or corrupts a record.
- ``read_jsonl`` names the file and line of any malformed record; it never skips one silently.

- Two processes never append to one file: ``JsonlAppender`` (and every command that writes into a
  directory, through ``locked``) takes an exclusive ``flock`` and a second process fails at once with
  ``LockedError`` naming the holder's pid. The kernel drops the lock when its holder dies, so a killed
  run never blocks its own resume.
- Readers that resume or report (``unique_records``) keep the first record of each key, so a file
  corrupted by an older version's concurrent runs is counted once per key.

Not guaranteed: locks on network file systems without ``flock`` support (NFS before v4 and some FUSE
mounts) may not exclude a process on another host.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dualdistill import __version__


class DataError(ValueError):
    """Bad input data. The message always names the file, and the line or field when known."""

    def __init__(self, path: str | os.PathLike, message: str, *, line: int | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


class LockedError(DataError):
    """Another live process holds the lock of a directory or file this process wants to write."""


_HELD: dict[str, tuple[int, int]] = {}  # lock file -> (fd, depth): re-entrant within one process


@contextlib.contextmanager
def locked(target: str | os.PathLike, what: str = "run", *, file: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on the directory ``target`` (``DIR/.lock``), or with ``file`` on the
    file ``target`` (its ``.lock`` sibling), while inside.

    A second process gets ``LockedError`` at once, naming the holder's command and pid; the same
    process may nest.
    """
    target = Path(target)
    lock = target.with_name(target.name + ".lock") if file else target / ".lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    key = str(lock.resolve())
    if key in _HELD:
        fd, depth = _HELD[key]
        _HELD[key] = (fd, depth + 1)
    else:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, _, command = os.pread(fd, 256, 0).decode(errors="replace").strip().partition(" ")
            os.close(fd)
            raise LockedError(
                target,
                f"another command ({command or 'unknown'}) is writing here (pid {pid or 'unknown'}); wait for it to finish, "
                "or use another output directory",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)
        _HELD[key] = (fd, 1)
    try:
        yield
    finally:
        fd, depth = _HELD[key]
        if depth > 1:
            _HELD[key] = (fd, depth - 1)
        else:
            del _HELD[key]
            os.close(fd)  # closing drops the flock; the file stays, harmlessly, for the next holder


def check_writable(path: str | os.PathLike, *, directory: bool = False) -> None:
    """Raise ``DataError`` naming ``path`` and the cause when an output cannot be written there (a
    read-only or missing place, a file where a directory must be, or the reverse), before any work.
    ``directory``: ``path`` is an output directory; else an output file."""
    path = Path(path)
    if directory and path.exists() and not path.is_dir():
        raise DataError(path, "the output directory is a file")
    if not directory and path.is_dir():
        raise DataError(path, "the output path is a directory; give a file name")
    folder = path if directory else path.parent
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise DataError(path, f"{parent} is a file, not a directory")
            break
    made = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise DataError(path, f"cannot write here: {e.strerror or e}") from None
    finally:  # a check writes nothing: a command refused later (a bad setting) leaves no directory
        for p in made:
            with contextlib.suppress(OSError):
                p.rmdir()


# How libraries that write in C or Rust report a full disk without an OSError: torch's zip writer and
# safetensors (whose message carries the OS error's code, 28).
_DISK_FULL = ("No space left on device", "PytorchStreamWriter failed writing", "code: 28", "StorageFull")


@contextlib.contextmanager
def disk_errors(path: str | os.PathLike) -> Iterator[None]:
    """Within the block, a full disk reported by a library as another exception (a checkpoint save by torch
    or safetensors) is raised as ``OSError(ENOSPC)`` naming ``path``, so the CLI ends with one line, as
    for any other full disk; what was saved before stays and a rerun resumes."""
    try:
        yield
    except OSError:
        raise
    except Exception as e:  # a library's own error type (RuntimeError, SafetensorError)
        if any(marker in str(e) for marker in _DISK_FULL):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
        raise


def scalar_text(value: Any, key: str, path: str | os.PathLike, line: int | None = None) -> str:
    """A text field as a string: strings as they are, numbers in their usual form. Anything else
    (mapping, list, boolean, null) raises ``DataError`` naming the field, so every reader of ids,
    questions and answers accepts and refuses the same values."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else repr(value)
    what = "null" if value is None else type(value).__name__
    raise DataError(path, f"field '{key}' must be a string or a number, got {what}", line=line)


def read_text(path: str | os.PathLike) -> str:
    """A whole UTF-8 text file; a missing file, a directory or bad bytes raise ``DataError`` (with the
    line of the first bad byte)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a directory, not a file") from None
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(path, f"not UTF-8 text (byte 0x{data[e.start]:02x})", line=line) from None


def read_jsonl(path: str | os.PathLike, *, allow_torn_tail: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line; each record must be a JSON object.

    With ``allow_torn_tail`` a final line without a newline that fails to parse (a write cut by a
    kill) is ignored instead of raising.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    if path.is_dir():
        raise DataError(path, "is a directory, not a JSONL file")
    with path.open("rb") as f:
        raw = f.readlines()
    for i, data in enumerate(raw, start=1):
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as e:
            if allow_torn_tail and i == len(raw) and not data.endswith(b"\n"):
                return  # a kill can cut a multi-byte character in half
            raise DataError(
                path, f"not UTF-8 text (byte 0x{data[e.start]:02x} at column {e.start + 1})", line=i
            ) from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if allow_torn_tail and i == len(raw) and not line.endswith("\n"):
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
        self._lock = locked(self.path, "writer", file=True)
        self._lock.__enter__()  # before the torn-tail cut: that cut must not race another writer
        _cut_torn_tail(self.path)
        self._f = self.path.open("a", encoding="utf-8")
        self._fsync = fsync

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        if self._fsync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
            self._lock.__exit__(None, None, None)

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def done_keys(path: str | os.PathLike, key: Callable[[dict], Any]) -> set:
    """Keys of the records already in ``path`` (empty when it does not exist); for resuming."""
    if not Path(path).exists():
        return set()
    return {key(r) for _, r in read_jsonl(path, allow_torn_tail=True)}


def unique_records(
    rows: list[dict], key: Callable[[dict], Any], *, path: str | os.PathLike | None = None
) -> list[dict]:
    """The first record of each key, in file order; warns (on stderr) when duplicates were dropped."""
    seen: set = set()
    out = []
    for r in rows:
        k = key(r)
        if k not in seen:
            seen.add(k)
            out.append(r)
    if len(out) < len(rows):
        import sys

        print(f"warning: {path or 'records'}: dropped {len(rows) - len(out)} duplicate records "
              "(two runs wrote here at once?)", file=sys.stderr)  # fmt: skip
    return out


def check_distinct(out: str | os.PathLike, *inputs: str | os.PathLike) -> None:
    """Refuse an output path that names one of the inputs: writing it would destroy the input."""
    target = Path(out).resolve()
    for i in inputs:
        if Path(i).resolve() == target:
            raise DataError(out, f"the output is the input file {i}; choose another output path")


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Write a whole file atomically (temp file, then rename)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(path, "is a directory; give a file name to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when something failed


def provenance(command: str, **fields: Any) -> dict:
    """What every side file that describes an output starts with: the dualdistill version and the
    command (or function) that wrote it, then that writer's own fields (config, inputs, counts)."""

    return {"version": __version__, "command": command, **fields}
