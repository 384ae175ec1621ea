"""Sharded jobs: ``teach``, ``eval`` and ``self-distill sample`` split over N machines, then merged.

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dualdistill.records import DataError, read_jsonl, write_jsonl

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


def check_shard(text: str) -> None:
    """A config's ``shard`` value, checked at load: ValueError naming the value when it is not I/N."""
    Shard.parse(text)


# ----------------------------------------------------------------------------- merge
KINDS = {"pairs.jsonl": "teach", "samples.jsonl": "sample", "records.jsonl": "eval"}


def kind_of(directory: Path) -> str:
    for name, kind in KINDS.items():
        if (directory / name).exists():
            return kind
    raise DataError(directory, "holds no teach, eval or self-distill sample output")


def _markers(dirs: list[Path]) -> tuple[list[Shard], list[str]]:
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


def _same_settings(dirs: list[Path], read) -> dict:
    """The shards' settings (``read(dir) -> dict``, shard removed) must agree; returns them."""
    from dualdistill.config import flat_differences

    first = read(dirs[0])
    for d in dirs[1:]:
        other = read(d)
        diff = flat_differences(first, other)
        if diff:
            raise DataError(d, f"made with other settings than {dirs[0]}: key '{diff[0]}' differs")
    return first


def _merge_records(dirs: list[Path], name: str, key, position) -> list[dict]:
    rows, owner = [], {}
    for d in dirs:
        for line, r in read_jsonl(d / name, allow_torn_tail=True):
            k = key(r)
            if k in owner:
                raise DataError(d / name, f"record {k} is also in {owner[k]}", line=line)
            owner[k] = d
            rows.append(r)
    return sorted(rows, key=position)


def _check_out(dirs: list[Path], out: Path) -> None:
    target = out.resolve()
    for d in dirs:
        if target == d.resolve() or d.resolve() in target.parents:
            raise DataError(out, f"--out is (inside) the input shard {d}; give a new directory")


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


def merge(dirs: Sequence[str | Path], out: str | Path, *, allow_incomplete: bool = False) -> tuple[str, int]:
    """Merge the output directories of all shards of one job into ``out``; returns (kind, records).

    An eval or sample shard that lacks records (a killed shard, a torn last line) is refused, naming the
    shard and the first missing record, unless ``allow_incomplete``: then ``out/merge.json`` lists what
    is missing."""
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise ValueError("merge needs the shard directories")
    _check_out(dirs, Path(out))
    kinds = {kind_of(d) for d in dirs}
    if len(kinds) > 1:
        raise DataError(dirs[0], f"the directories hold different outputs: {sorted(kinds)}")
    (kind,) = kinds
    _, order = _markers(dirs)
    index = {pid: i for i, pid in enumerate(order)}
    out = Path(out)
    missing = _missing(kind, dirs, order)
    if missing and not allow_incomplete:
        raise DataError(dirs[0], "incomplete shards (finish them, or merge with --allow-incomplete):\n  "
                        + "\n  ".join(missing))  # fmt: skip
    n = {"teach": _merge_teach, "eval": _merge_eval, "sample": _merge_sample}[kind](dirs, out, index)
    (out / "merge.json").write_text(
        json.dumps({"shards": [str(d) for d in dirs], "missing": missing}, indent=1)
    )
    return kind, n


def _missing(kind: str, dirs: list[Path], order: list[str]) -> list[str]:
    """Eval and sample shards: every problem of the shard, every sample of it (teach may give up on a
    problem by design; its records say why)."""
    if kind == "eval":
        from dualdistill.evaluate import RECORDS, load_benches, load_eval_config

        def expected(d: Path, shard: Shard):
            config = load_eval_config(d)
            for source, problems in load_benches(config.benches, limit=config.limit).items():
                for p in problems:
                    if in_shard(p.id, shard):
                        yield from ((str(p.id), source, i) for i in range(config.samples))

        keys = lambda r: (str(r["problem_id"]), r["source"], r["sample_index"])  # noqa: E731
        return missing_records(dirs, RECORDS, keys, expected)
    if kind == "sample":
        from dualdistill.config import load_config
        from dualdistill.selfdistill import CONFIG_FILE, SAMPLES_FILE, SampleConfig

        def expected(d: Path, shard: Shard):
            k = load_config(SampleConfig, d / CONFIG_FILE).k
            for pid in order:
                if in_shard(pid, shard):
                    yield from ((pid, i) for i in range(k))

        return missing_records(
            dirs, SAMPLES_FILE, lambda r: (str(r["problem_id"]), r["sample_index"]), expected
        )
    return []


def _merge_teach(dirs: list[Path], out: Path, index: dict) -> int:
    from dualdistill.teach import IDENTITY_FILE

    def settings(d: Path) -> dict:
        data = json.loads((d / IDENTITY_FILE).read_text(encoding="utf-8"))
        data.pop("shard", None)
        return data

    identity = _same_settings(dirs, settings)
    pairs = _merge_records(
        dirs, "pairs.jsonl", lambda r: str(r["id"]), lambda r: index.get(str(r["id"]), 1 << 60)
    )
    attempts = _merge_records(dirs, "records.jsonl", lambda r: (str(r["id"]), r["role"], r.get("attempt")),
                              lambda r: (index.get(str(r["id"]), 1 << 60), r["role"], r.get("attempt", 0)))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "records.jsonl", attempts)
    write_jsonl(out / "pairs.jsonl", pairs)
    (out / IDENTITY_FILE).write_text(json.dumps(identity, indent=1, sort_keys=True), encoding="utf-8")
    return len(pairs)


def _merge_eval(dirs: list[Path], out: Path, index: dict) -> int:
    import dataclasses

    from dualdistill.config import save_config
    from dualdistill.evaluate import (
        CONFIG,
        RECORDS,
        _meta,
        eval_identity,
        load_benches,
        load_eval_config,
        summarize_by_source,
        write_report,
    )

    def settings(d: Path) -> dict:
        # The one rule for "the same job", as a resume decides it: eval_identity (a server by its served
        # model name, not its address, so shards served by different replicas merge).
        data = eval_identity(load_eval_config(d))
        data.pop("shard", None)
        return data

    _same_settings(dirs, settings)
    config = dataclasses.replace(load_eval_config(dirs[0]), shard="")
    records = _merge_records(dirs, RECORDS, lambda r: (str(r["problem_id"]), r["source"], r["sample_index"]),
                             lambda r: (r["source"], index.get(str(r["problem_id"]), 1 << 60), r["sample_index"]))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / RECORDS, records)
    save_config(config, out / CONFIG)
    write_report(
        out,
        summarize_by_source(records, load_benches(config.benches, limit=config.limit)),
        meta=_meta(config),
    )
    return len(records)


def _merge_sample(dirs: list[Path], out: Path, index: dict) -> int:
    import dataclasses

    from dualdistill.config import load_config, save_config, speed_free
    from dualdistill.problems import load_problems, write_problems
    from dualdistill.selfdistill import CONFIG_FILE, PROBLEMS_FILE, SAMPLES_FILE, SampleConfig

    def settings(d: Path) -> dict:
        data = speed_free(load_config(SampleConfig, d / CONFIG_FILE))
        data.pop("shard", None)
        return data

    _same_settings(dirs, settings)
    config = dataclasses.replace(load_config(SampleConfig, dirs[0] / CONFIG_FILE), shard="")
    problems = sorted(
        (p for d in dirs for p in load_problems(d / PROBLEMS_FILE)),
        key=lambda p: index.get(str(p.id), 1 << 60),
    )
    samples = _merge_records(dirs, SAMPLES_FILE, lambda r: (str(r["problem_id"]), r["sample_index"]),
                             lambda r: (index.get(str(r["problem_id"]), 1 << 60), r["sample_index"]))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_problems(out / PROBLEMS_FILE, problems)
    write_jsonl(out / SAMPLES_FILE, samples)
    save_config(config, out / CONFIG_FILE)
    return len(samples)
