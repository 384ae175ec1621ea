"""Sharded jobs: ``teach``, ``eval`` and ``self-distill sample`` split over N machines, then merged.

This module holds the split and the merge's checks; each stage merges its own records
(``teachers.teach.merge_shards``, ``evaluate.run.merge_shards``, ``selfdistill.sample.merge_shards``) with
``merge`` here, and ``dualdistill merge`` only picks the stage by the files a directory holds.

``--shard I/N`` (I in 0..N-1; the config field ``shard``) keeps the problems whose id hashes to I modulo N
(``in_shard``): a deterministic share that depends on the id alone, not on the order or the other
problems, so N machines or N array tasks given the same problem set split it exactly. Each shard writes
its own output directory as the unsharded command would, plus ``shard.json`` (its ``I/N`` and the order
of the whole problem set). ``merge`` combines the directories of all N shards into the output of one run:

- teach: ``pairs.jsonl`` and ``records.jsonl``; eval: ``records.jsonl``, ``config.yaml`` and the report;
  self-distill sample: ``samples.jsonl``, ``problems.jsonl`` and ``sample_config.yaml``;
- records in the problem set's order (an unsharded run writes them in the order they finish; compare
  sorted), so ``compose``, ``self-distill build`` and a report on the merge equal the unsharded run's.

Guarantees: ``merge`` refuses, naming the shard directory and the key, shards made with different settings
(anything but ``shard`` and speed settings), a missing or repeated shard, shards of different N, and a
record present in two shards. It writes nothing until every check passed.
An eval or sample shard that lacks a record (killed, or its last line torn) is refused, naming the shard and
the record, unless ``--allow-incomplete`` (then ``merge.json`` lists what is missing). ``--out`` may not be
an input. A damaged ``shard.json`` is named.
Not guaranteed: that a teach shard finished (a teacher may give up on a problem by design; its records say).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualdistill.core.config import flat_differences, setting
from dualdistill.core.records import DataError, read_jsonl

MARKER = "shard.json"


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard | None:
        """``"I/N"`` (0 <= I < N) as a Shard; ``""`` as None (the whole set)."""
        if not text:
            return None
        try:
            i, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise ValueError(f"shard: {text!r} is not of the form I/N (e.g. 0/4)") from None
        if n < 1 or not 0 <= i < n:
            raise ValueError(f"shard: {text!r} needs 0 <= I < N")
        return cls(i, n)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def in_shard(problem_id: str, shard: Shard | None) -> bool:
    if shard is None:
        return True
    digest = hashlib.sha256(str(problem_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") % shard.count == shard.index


def take(problems: Sequence, shard_text: str) -> list:
    """The problems of the shard (all when ``shard_text`` is empty). Writes nothing: the caller marks its
    output directory (``mark``) only once its resume checks passed, so a refused run changes nothing."""
    shard = Shard.parse(shard_text)
    return [p for p in problems if in_shard(p.id, shard)]


def mark(out_dir: str | Path, shard_text: str, problems: Sequence) -> None:
    """Write ``shard.json`` into ``out_dir`` (nothing when ``shard_text`` is empty): the shard and the id
    order of the whole problem set, which ``merge`` restores."""
    shard = Shard.parse(shard_text)
    if shard is None:
        return
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    marker = {"shard": str(shard), "order": [str(p.id) for p in problems]}
    (Path(out_dir) / MARKER).write_text(json.dumps(marker), encoding="utf-8")


def shard_setting() -> Any:
    """The ``shard`` field of every shardable job's config (teach, eval, self-distill sample): which
    records a job makes, so a ``scope`` field (resume identities leave it out; stage keys keep it)."""
    return setting(
        "",
        scope=True,
        help="Only the share I/N of the problems (by a hash of each id); merge joins the N shards.",
    )


def check_shard(text: str) -> None:
    """A config's ``shard`` value, checked at load: ValueError naming the value when it is not I/N."""
    Shard.parse(text)


# ----------------------------------------------------------------------------- merge
Missing = Callable[[list[Path], list[str]], list[str]]  # (shard dirs, problem order) -> lines naming gaps
Write = Callable[[list[Path], Path, dict[str, int]], int]  # (shard dirs, out, position of each id) -> records


def kind_of(directory: Path, kinds: dict[str, str]) -> str:
    """The kind of output ``directory`` holds: the first of ``kinds`` (file name -> kind) it has."""
    for name, kind in kinds.items():
        if (directory / name).exists():
            return kind
    raise DataError(
        directory, f"holds none of {', '.join(kinds)}: no teach, eval or self-distill sample output"
    )


def markers(dirs: list[Path]) -> tuple[list[Shard], list[str]]:
    """Each directory's shard, and the problem order they share; refuses missing, repeated, damaged or
    mismatched markers, naming the directory."""
    shards, order = [], None
    for d in dirs:
        path = d / MARKER
        if not path.exists():
            raise DataError(d, f"no {MARKER}: not the output of a run with --shard")
        try:
            marker = json.loads(path.read_text(encoding="utf-8"))
            shard = Shard.parse(marker["shard"])
            if shard is None or not isinstance(marker["order"], list):
                raise ValueError("no shard or no order")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DataError(
                path, f"damaged shard marker ({type(e).__name__}: {e}); rerun that shard"
            ) from None
        shards.append(shard)
        if order is None:
            order = marker["order"]
        elif marker["order"] != order:
            raise DataError(d, "made from another problem set than the first shard")
    counts = {s.count for s in shards}
    if len(counts) > 1:
        raise DataError(dirs[0], f"the shards were made with different N: {sorted(counts)}")
    (n,) = counts
    seen: dict[int, Path] = {}
    for d, s in zip(dirs, shards, strict=True):
        if s.index in seen:
            raise DataError(d, f"shard {s} is given twice (also {seen[s.index]})")
        seen[s.index] = d
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise DataError(dirs[0], f"shard {missing[0]}/{n} is missing ({len(dirs)} of {n} given)")
    return shards, order or []


def same_settings(dirs: list[Path], read: Callable[[Path], dict]) -> dict:
    """The shards' settings (``read(dir) -> dict``; ``shard`` is a scope field, left out of identities)
    must agree; returns them."""
    first = read(dirs[0])
    for d in dirs[1:]:
        other = read(d)
        diff = flat_differences(first, other)
        if diff:
            raise DataError(d, f"made with other settings than {dirs[0]}: key '{diff[0]}' differs")
    return first


def merge_records(dirs: list[Path], name: str, key: Callable, position: Callable) -> list[dict]:
    """The records of file ``name`` of every shard, sorted by ``position``; a key in two shards is refused."""
    rows, owner = [], {}
    for d in dirs:
        for line, r in read_jsonl(d / name, allow_torn_tail=True):
            k = key(r)
            if k in owner:
                raise DataError(d / name, f"record {k} is also in {owner[k]}", line=line)
            owner[k] = d
            rows.append(r)
    return sorted(rows, key=position)


def missing_records(dirs: list[Path], name: str, keys_of, expected) -> list[str]:
    """What each shard lacks: ``expected(dir, shard)`` yields the keys its records must hold; returns
    lines naming the shard, the problem and what is missing (a torn last record counts as missing)."""
    lines = []
    for d in dirs:
        shard = Shard.parse(json.loads((d / MARKER).read_text(encoding="utf-8"))["shard"])
        have = {keys_of(r) for _, r in read_jsonl(d / name, allow_torn_tail=True)}
        lacking = [k for k in expected(d, shard) if k not in have]
        if lacking:
            lines.append(f"{d}: {len(lacking)} records missing, first {lacking[0]}")
    return lines


def merge(
    dirs: Sequence[str | Path],
    out: str | Path,
    write: Write,
    *,
    missing: Missing | None = None,
    allow_incomplete: bool = False,
) -> int:
    """Merge the output directories of all shards of one job into ``out`` with the stage's ``write``;
    returns the number of records.

    Shards that lack records (``missing``: a killed shard, a torn last line) are refused, naming the shard
    and the first missing record, unless ``allow_incomplete``: then ``out/merge.json`` lists what is
    missing. Nothing is written before every check passed."""
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise ValueError("merge needs the shard directories")
    out = Path(out)
    target = out.resolve()
    for d in dirs:
        if target == d.resolve() or d.resolve() in target.parents:
            raise DataError(out, f"--out is (inside) the input shard {d}; give a new directory")
    _, order = markers(dirs)
    lacking = missing(dirs, order) if missing else []
    if lacking and not allow_incomplete:
        raise DataError(dirs[0], "incomplete shards (finish them, or merge with --allow-incomplete):\n  "
                        + "\n  ".join(lacking))  # fmt: skip
    n = write(dirs, out, {pid: i for i, pid in enumerate(order)})
    (out / "merge.json").write_text(
        json.dumps({"shards": [str(d) for d in dirs], "missing": lacking}, indent=1)
    )
    return n


def position(index: dict[str, int], problem_id) -> int:
    """Where a problem stands in the whole set (unknown ids last)."""
    return index.get(str(problem_id), 1 << 60)
