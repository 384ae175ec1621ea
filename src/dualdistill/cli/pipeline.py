"""Commands that run whole recipes: ``dualdistill run`` and ``dualdistill demo``."""

from __future__ import annotations

from pathlib import Path

import typer

from dualdistill.cli.app import app, fail, run_in_process, writable
from dualdistill.core.config import ConfigError
from dualdistill.core.records import DataError
from dualdistill.pipeline.demo import demo as run_demo
from dualdistill.pipeline.demo import seed_workdir, spread
from dualdistill.pipeline.recipe import SHIPPED_FILES, load_recipe, shipped_file
from dualdistill.pipeline.run import dry_run as plan
from dualdistill.pipeline.run import run
from dualdistill.pipeline.stages import CommandFailed


@app.command("run")
def run_recipe(
    recipe: str = typer.Argument(..., help="Recipe YAML, or a shipped one: embedded, embedded_quick, paper."),
    workdir: Path = typer.Option(..., "--workdir", help="Run directory; a rerun skips finished stages."),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. sft.lr=1e-5 eval.samples=4"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the recipe and print the commands."),
    force: list[str] = typer.Option([], "--force", help="Re-run this stage even if up to date (repeatable)."),
    until: str | None = typer.Option(None, "--until", help="Stop after this stage (e.g. compose)."),
) -> None:
    """Run a recipe's stages in order: teach, compose, train, eval, self-distill, train, eval.

    Examples:
      dualdistill run embedded --workdir runs/embedded
      dualdistill run embedded --workdir runs/e2 sft.lr=1e-3 selfdistill.sample.k=8
      dualdistill run embedded --workdir runs/embedded --until compose
      dualdistill run paper --workdir runs/paper --dry-run
    """
    if workdir is not None:
        writable(workdir, directory=True)

    try:
        config = load_recipe(recipe, overrides or [])
        if dry_run:
            typer.echo("\n".join(plan(config, workdir)))
            return
        run(config, workdir, force=set(force), until=until, log=typer.echo, runner=run_in_process)
    except (ConfigError, DataError, FileNotFoundError, ValueError, CommandFailed) as e:
        fail(str(e))


@app.command("demo")
def demo(
    quick: bool = typer.Option(False, "--quick", help="A smaller run (about 3 minutes) for smoke checks."),
    workdir: Path | None = typer.Option(None, "--workdir", help="Default: runs/demo[-quick]-seed<SEED>."),
    seed: int = typer.Option(0, help="Seeds teachers' order, model init, training and sampling."),
    seeds: str = typer.Option(
        None,
        "--seeds",
        help="Several seeds, e.g. 0,1,2,3,4: one run each (WORKDIR-seedN), then mean ± sample SD, paired "
        "differences with 95% t-intervals, and the targets.",
    ),
    overrides: list[str] = typer.Argument(None, help="key=value overrides of the embedded recipe."),
) -> None:
    """The paper's experiment in miniature on CPU: two teachers, the students and their controls, one table.

    Examples:
      dualdistill demo
      dualdistill demo --seeds 0,1,2,3,4      # five runs, then the spread, paired intervals and targets
      dualdistill demo --quick --workdir /tmp/demo
    """

    try:
        chosen = [int(x) for x in seeds.split(",")] if seeds else None
    except ValueError:
        fail(f"--seeds: {seeds!r} is not a comma-separated list of integers")
    try:
        runs = [(seed, workdir)] if chosen is None else [(s, seed_workdir(workdir, s, quick)) for s in chosen]
        for s, d in runs:
            table = run_demo(quick=quick, workdir=d, seed=s, overrides=overrides or [], log=typer.echo,
                             runner=run_in_process)  # fmt: skip
        if chosen is not None:
            table = spread([d for _, d in runs])
    except (ConfigError, DataError, FileNotFoundError, CommandFailed) as e:
        fail(str(e))
    typer.echo("")
    typer.echo(table)


@app.command("config-path")
def config_path(
    name: str = typer.Argument(..., help="A shipped YAML's name, e.g. deepspeed_zero3, sft_tiny, paper."),
) -> None:
    """Print where a shipped recipe or accelerate config lies (it is in the installed package).

    Example: accelerate launch --config_file $(dualdistill config-path fsdp) -m dualdistill.cli train ...
    """

    if name not in SHIPPED_FILES:
        fail(f"no shipped file {name!r}; shipped: {', '.join(SHIPPED_FILES)}")
    typer.echo(str(shipped_file(name)))
