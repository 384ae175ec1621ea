"""Commands over problems and benchmarks."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dualdistill.cli.app import bench_app, fail, writable
from dualdistill.core.records import DataError
from dualdistill.format.problems import BENCHMARKS, load_benchmark, load_training_problems, write_problems


@bench_app.command("list")
def bench_list() -> None:
    """List the built-in benchmarks with their problem counts.

    Example: dualdistill bench list
    """
    table = Table("name", "problems", "description")
    try:
        for name, spec in BENCHMARKS.items():
            table.add_row(name, str(len(load_benchmark(name))), spec.description)
        table.add_row("(train) deepmath", str(len(load_training_problems())), "the paper's training problems")
    except DataError as e:
        fail(str(e))
    Console().print(table)


@bench_app.command("export")
def bench_export(
    name: str = typer.Argument(..., help="A built-in benchmark name, or 'deepmath' (the training list)."),
    out: Path = typer.Option(..., "--out", help="JSONL to write (id, question, answer, source, metadata)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N problems."),
) -> None:
    """Write a built-in problem set as normalised JSONL, the format every other command reads.

    Example: dualdistill bench export aime2025 --out aime.jsonl
    """
    if out is not None:
        writable(out, directory=False)
    try:
        problems = load_training_problems() if name == "deepmath" else load_benchmark(name)
    except (DataError, KeyError) as e:
        fail(str(e))
    write_problems(out, problems[:limit])
    typer.echo(f"wrote {len(problems[:limit])} problems to {out}")
