"""The root Typer app. Area modules in this package register their commands on it."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="dualdistill",
    help="DualDistill (Agentic-R1): compose two teachers' trajectories, distil, self-distil, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Built-in benchmarks.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def fail(message: str, code: int = 2) -> None:
    """Print a clear error (no traceback) and exit."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)
