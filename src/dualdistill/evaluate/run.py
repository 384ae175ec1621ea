"""Evaluation runs: generate graded records over benchmarks, resume, report, plot, regrade.

Workflow (``run_eval``)::

    DIR/config.yaml    the resolved EvalConfig (checked against on resume)
    DIR/records.jsonl  one graded AgentRecord per (benchmark, problem, sample), appended and flushed
    DIR/report.json    summarize() per benchmark
    DIR/report.md      the same as tables
    DIR/report.png     accuracy and tool-use rate per benchmark

Guarantees:
- Rerunning with the same ``DIR`` resumes: records already there are kept, missing ones generated; the
  final report is computed from the file alone, so an interrupted-then-resumed run reports the same
  metrics as an uninterrupted one with the same seed (for a deterministic backend).
- A rerun whose generation settings (model, seed, budget, temperature, tools, ...) differ from
  ``DIR/config.yaml`` is refused with a ``ConfigError`` naming the key, so one file never mixes runs.
- ``regrade`` rewrites only the verdict fields, atomically; it never generates.

Metrics (per benchmark; the problem is the sampling unit):
- accuracy: mean over problems of the share of correct samples (= mean over samples of accuracy),
  with a 95% normal interval from the spread of per-problem scores;
- pass@k: the unbiased estimator 1 - C(n-c, k) / C(n, k) (Chen et al., 2021), mean over problems;
- maj@k: majority vote over the extracted answers of the first k samples (exact string match after
  whitespace removal; a tie counts as the expected score of a random pick among tied answers);
- tool-use rate (responses with >= 1 code block), strategy-switch rate (``format.trajectory.strategy_facts``),
  mean tokens, executor status counts, share of time in tools (tool time / (generation + tool time)).

Not guaranteed: maj@k groups answers by their text, so equivalent forms (1/2 vs 0.5) vote apart.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualdistill.agent.driver import run_many
from dualdistill.agent.loop import AgentConfig, make_pool
from dualdistill.agent.record import read_agent_records, record_key
from dualdistill.backends import BackendConfig, open_backend
from dualdistill.core import shards
from dualdistill.core.config import (
    ConfigError,
    check_bounds,
    flat_differences,
    from_dict,
    identity,
    load_config,
    save_config,
    setting,
)
from dualdistill.core.records import DataError, locked, unique_records, write_jsonl
from dualdistill.core.resume import check_identity, model_fingerprint
from dualdistill.evaluate.metrics import summarize_by_source
from dualdistill.evaluate.report import log_summaries, write_report
from dualdistill.format.problems import Problem, load_benchmark
from dualdistill.grading.grader import grade_many

DEFAULT_BENCHES = ("math500", "aime2025", "amc", "combinatorics300")
RECORDS, CONFIG = "records.jsonl", "config.yaml"


@dataclass
class EvalConfig:
    backend: BackendConfig = field(
        default_factory=BackendConfig
    )  # the evaluated model, and how it is reached
    benches: list[str] = setting(default_factory=lambda: list(DEFAULT_BENCHES), scope=True)
    shard: str = shards.shard_setting()
    samples: int = setting(1, ge=1, scope=True, help="Samples per problem.")
    limit: int | None = setting(None, ge=1, scope=True, help="Only the first N problems of each benchmark.")
    seed: int = setting(0, help="Sampling seed.")
    log_dir: str | None = setting(
        None,
        identity=False,
        help="Also write the summary as TensorBoard scalars here (e.g. a training run's OUT/runs).",
    )
    agent: AgentConfig = field(default_factory=AgentConfig)

    # Keys of configs written before the backend section (eval dirs made before then).
    MOVED = {k: f"backend.{k}" for k in ("model", "served_model_name", "api", "tokenizer", "api_key_env",
                                         "request_timeout_s", "max_retries", "device", "max_batch")}  # fmt: skip

    def __post_init__(self) -> None:
        check_bounds(self)
        shards.check_shard(self.shard)


# ----------------------------------------------------------------------------- runs
def load_benches(names: list[str], *, limit: int | None = None) -> dict[str, list[Problem]]:
    """``{source: problems}`` for built-in names or problem files; two files with one stem are refused."""
    out: dict[str, list[Problem]] = {}
    for name in names:
        problems = load_benchmark(name, limit=limit)
        source = problems[0].source if problems else Path(name).stem
        if source in out:
            raise DataError(name, f"benchmark {source!r} given twice (two files with the same name?)")
        out[source] = problems
    return out


def model_identity(backend: BackendConfig) -> str:
    """What must match to resume: the served model's name for a server (which may move to another
    host or port between runs), else the model path."""
    if backend.is_server:
        url, _, name = backend.model.partition("#")
        return f"served:{name or backend.served_model_name or url}"
    return backend.model


def eval_identity(config: EvalConfig) -> dict:
    """What an eval record depends on: every setting but the ``identity=False`` and scope ones, the model by
    ``model_identity`` (a server's name, not its address)."""
    ident = identity(config)
    ident["backend"].pop("served_model_name")
    ident["backend"]["model"] = model_identity(config.backend)
    return ident


def check_resume(out_dir: Path, config: EvalConfig) -> None:
    """Refuse to append to records made with settings that change what a record holds."""
    path = out_dir / CONFIG
    if not path.exists() or not (out_dir / RECORDS).exists():
        return

    old = eval_identity(load_config(EvalConfig, path))  # keys older files lack take their defaults
    new = eval_identity(config)
    for key in flat_differences(old, new):
        was, now = _at(old, key), _at(new, key)
        raise ConfigError(
            f"{path}: key '{key}' was {was!r}, now {now!r}; these records came from other settings "
            "(use a new --out, or the old settings to resume)"
        )


def _at(node: dict, dotted: str):
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def run_eval(config: EvalConfig, out_dir: str | Path, *, backend: Any = None, progress: bool = True) -> dict:
    """Generate (or resume) the records of ``config`` in ``out_dir`` and write the report."""
    out_dir = Path(out_dir)
    if config.log_dir:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("log_dir: tensorboard is not installed (pip install tensorboard)")
    everything = load_benches(config.benches, limit=config.limit)
    problems = {b: shards.take(ps, config.shard) for b, ps in everything.items()}
    with locked(out_dir, "eval"):
        check_resume(out_dir, config)
        # The weights, not the path: retrained weights at the same path must not be mixed in.
        local = Path(config.backend.model).is_dir()
        weights = model_fingerprint(config.backend.model) if local else model_identity(config.backend)
        check_identity(out_dir, "eval", {"model_weights": weights}, RECORDS)
        shards.mark(out_dir, config.shard, [p for ps in everything.values() for p in ps])
        return _run_eval(config, out_dir, problems, backend, progress)


def _run_eval(config: EvalConfig, out_dir: Path, problems: dict, backend: Any, progress: bool) -> dict:
    own_backend = backend is None
    backend = open_backend(config.backend, config.agent.template) if own_backend else backend
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / CONFIG)
    everything = [p for ps in problems.values() for p in ps]

    async def generate() -> list[dict]:
        pool = make_pool(config.agent) if config.agent.tools else None
        try:
            return await run_many(
                everything,
                backend,
                pool,
                config.agent,
                samples=config.samples,
                out_path=out_dir / RECORDS,
                seed=config.seed,
                progress=progress,
            )
        finally:
            if pool is not None:
                await pool.close()

    try:
        records = asyncio.run(generate())
    finally:
        if own_backend:
            backend.close()
    summaries = summarize_by_source(records, problems)
    write_report(out_dir, summaries, meta=_meta(config))
    if config.log_dir:
        log_summaries(config.log_dir, summaries)
    return summaries


def _meta(config: EvalConfig) -> dict:
    a = config.agent
    return {
        "model": config.backend.model, "samples": config.samples, "budget": a.budget, "tools": a.tools,
        "template": a.template, "temperature": a.temperature, "seed": config.seed,
    }  # fmt: skip


def load_eval_config(out_dir: Path) -> EvalConfig:
    import yaml

    path = out_dir / CONFIG
    if not path.exists():
        raise DataError(path, "no config.yaml here; is this an eval output directory?")
    return from_dict(EvalConfig, yaml.safe_load(path.read_text(encoding="utf-8")) or {}, source=str(path))


def regrade(out_dir: str | Path) -> dict:
    """Re-grade ``out_dir/records.jsonl`` with the current grader (no generation); rewrite the report."""
    out_dir = Path(out_dir)
    path = out_dir / RECORDS
    if not path.exists():
        raise DataError(path, "no records to regrade")
    config = load_eval_config(out_dir)
    with locked(out_dir, "eval"):
        return _regrade(out_dir, path, config)


def _regrade(out_dir: Path, path: Path, config: EvalConfig) -> dict:
    rows = [r.to_dict() for _, r in read_agent_records(path, allow_torn_tail=True)]
    rows = unique_records(rows, record_key, path=path)

    pairs = [(str(r["response"]), str(r["gold"])) for r in rows]
    for r, v in zip(rows, grade_many(pairs, timeout=config.agent.grade_timeout_s), strict=True):
        r.update(correct=bool(v.correct), extracted=v.extracted, grade_status=v.status)
    write_jsonl(path, rows)
    summaries = summarize_by_source(rows)
    write_report(out_dir, summaries, meta={**_meta(config), "regraded": True})
    return summaries


# ----------------------------------------------------------------------------- shards
def merge_shards(dirs: Sequence[str | Path], out: str | Path, *, allow_incomplete: bool = False) -> int:
    """Join the output directories of a sharded ``eval`` into ``out``: records in the benchmarks' order,
    the config and the report, as one run writes them (``core.shards.merge``); returns the records.
    Shards are the same job when their ``eval_identity`` agrees (a server by its served model name, not
    its address, so shards served by different replicas merge)."""

    def expected(d: Path, shard: shards.Shard):
        config = load_eval_config(d)
        for source, problems in load_benches(config.benches, limit=config.limit).items():
            for p in problems:
                if shards.in_shard(p.id, shard):
                    yield from ((str(p.id), source, i) for i in range(config.samples))

    def missing(dirs: list[Path], order: list[str]) -> list[str]:
        return shards.missing_records(dirs, RECORDS, _record_key, expected)

    def write(dirs: list[Path], out: Path, index: dict[str, int]) -> int:
        shards.same_settings(dirs, lambda d: eval_identity(load_eval_config(d)))
        config = dataclasses.replace(load_eval_config(dirs[0]), shard="")
        records = shards.merge_records(dirs, RECORDS, _record_key,
                                lambda r: (r["source"], shards.position(index, r["problem_id"]), r["sample_index"]))  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(out / RECORDS, records)
        save_config(config, out / CONFIG)
        problems = load_benches(config.benches, limit=config.limit)
        write_report(out, summarize_by_source(records, problems), meta=_meta(config))
        return len(records)

    return shards.merge(dirs, out, write, missing=missing, allow_incomplete=allow_incomplete)


def _record_key(r: dict) -> tuple[str, str, int]:
    return str(r["problem_id"]), r["source"], r["sample_index"]
