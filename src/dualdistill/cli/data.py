"""Commands over problems and benchmarks."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dualdistill.cli.app import bench_app, fail
from dualdistill.problems import BENCHMARKS, load_benchmark, load_training_problems
from dualdistill.records import DataError


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
