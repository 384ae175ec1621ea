"""The root Typer app. Area modules in this package register their commands on it."""

from __future__ import annotations

import typer

from dualdistill.core.records import DataError, check_writable

app = typer.Typer(
    name="dualdistill",
    help="DualDistill (Agentic-R1): compose two teachers' trajectories, distil, self-distil, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Built-in benchmarks.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def run_in_process(argv: list[str]) -> int | None:
    """Run ``dualdistill ARGV...`` in this process and return its exit status: the runner the CLI hands to
    the pipeline, so a stage's printed command and its run are the same argv."""
    return app(args=argv, prog_name="dualdistill", standalone_mode=False)


def fail(message: str, code: int = 2) -> None:
    """Print a clear error (no traceback) and exit."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def writable(path, *, directory: bool = False) -> None:
    """Fail at once, naming the path and the cause, when the command could not write its output there
    (before it does any work: ``grade`` would otherwise grade everything first)."""

    try:
        check_writable(path, directory=directory)
    except DataError as e:
        fail(str(e))


def option_overrides(given: dict[str, object]) -> list[str]:
    """``key=value`` overrides for the options a user gave (``None``: not given, the config's value stands).

    Commands that take ``--config`` declare their options with ``None`` defaults and pass them through
    here, so a default lives only in the config dataclass and an option wins over the file.
    """
    import json

    return [f"{key}={json.dumps(value)}" for key, value in given.items() if value is not None]
