"""``dualdistill teach``: both teachers over a problem set (y1, then y2 given y1), resumable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dualdistill.cli.app import app, fail, option_overrides, writable
from dualdistill.cli.options import with_config_options
from dualdistill.core.config import ConfigError, load_config
from dualdistill.core.records import DataError
from dualdistill.format.problems import FieldMap, load_problems
from dualdistill.pipeline.recipe import WorldConfig
from dualdistill.sandbox import SandboxUnavailable
from dualdistill.synthetic.families import make_splits
from dualdistill.teachers.cost import estimate
from dualdistill.teachers.teach import TeachConfig, teach_from_config

TEACH_EXAMPLE = (
    "Example: dualdistill teach --problems synthetic --first-teacher-seed 0 --out runs/teach   |   "
    "dualdistill teach --problems train.jsonl --config teach.yaml --out runs/teach "
    "--set code_teacher.kind=anthropic"
)


def _problems(spec: str, fields: str | None, synthetic_n: int, synthetic_seed: int):

    if spec == "synthetic":
        return make_splits(synthetic_n, seed=synthetic_seed)[0]
    return load_problems(spec, fields=FieldMap.parse(fields))


@app.command(
    "teach", help=f"Run the two teachers (y1, then y2 given y1) over problems; resumable.\n\n{TEACH_EXAMPLE}"
)
@with_config_options(TeachConfig, {"first_teacher_seed": None, "shard": None, "concurrency": None})
@with_config_options(WorldConfig, {"n": "--synthetic-n", "seed": "--synthetic-seed"}, into="world")
def teach_command(
    out: Path = typer.Option(
        ..., help="Output directory (records.jsonl, pairs.jsonl, teach.json); reruns resume."
    ),
    problems: str = typer.Option(
        "synthetic",
        help="Problem file (.jsonl/.json/.parquet), or 'synthetic' for the synthetic training split.",
    ),
    config: Path | None = typer.Option(None, help="TeachConfig YAML (teachers, concurrency, retries)."),
    set_: list[str] = typer.Option([], "--set", help="Config override key=value (repeatable)."),
    fields: str | None = typer.Option(None, help="Field map for the problem file: question=F,answer=F,id=F."),
    limit: int | None = typer.Option(None, min=1, help="Only the first N problems."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    estimate: bool = typer.Option(
        False, "--estimate", help="Print upper bounds of the requests, tokens and cost; send nothing."
    ),
    given: dict | None = None,
    world: dict | None = None,
) -> None:
    if out is not None:
        writable(out, directory=True)

    try:
        cfg = load_config(TeachConfig, config, [*option_overrides(given or {}), *set_])
        synthetic = load_config(WorldConfig, None, option_overrides(world or {}))
        items = _problems(problems, fields, synthetic.n, synthetic.seed)[:limit]
        if estimate:
            return _print_estimate(items, cfg)
        report = asyncio.run(teach_from_config(items, cfg, out, progress=progress))
    except (ConfigError, DataError, ValueError, SandboxUnavailable) as e:
        fail(str(e))
    table = Table("problems", "pairs", "gave up", "code first", "failed attempts", "seconds", title="teach")
    spent = report.spent  # this run's tokens as the servers reported them
    failed = ", ".join(f"{k}: {v}" for k, v in sorted(report.failed.items())) or "0"
    table.add_row(
        *map(str, (report.problems, report.pairs, report.gave_up, report.code_first, failed, report.seconds))
    )
    Console().print(table)
    if spent.get("prompt_tokens") or spent.get("completion_tokens"):
        Console().print(f"tokens: {spent['prompt_tokens']:,} in, {spent['completion_tokens']:,} out; "
                        f"spend ${spent.get('usd', 0):.2f} at the configured prices")  # fmt: skip
    Console().print(f"pairs: {out / 'pairs.jsonl'}")


def _print_estimate(items, cfg) -> None:

    rows = estimate(items, cfg)
    table = Table("teacher", "requests", "prompt tokens", "completion tokens", "cost USD",
                  title=f"teach --estimate: upper bounds for {len(items)} problems (nothing sent)")  # fmt: skip
    for r in rows:
        table.add_row(
            r.teacher, f"{r.requests:,}", f"{r.prompt_tokens:,}", f"{r.completion_tokens:,}", f"{r.usd:,.2f}"
        )
    if not rows:
        table.add_row("(no API teacher)", "0", "0", "0", "0.00")
    Console().print(table)
