"""``dualdistill compose``: graded pairs -> the composed training set (and the single-teacher sets)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dualdistill.cli.app import app, fail, writable
from dualdistill.compose.run import ComposeConfig, compose_file
from dualdistill.core.config import ConfigError, load_config
from dualdistill.core.records import DataError

COMPOSE_EXAMPLE = (
    "Example: dualdistill compose --pairs runs/teach/pairs.jsonl --out runs/composed.jsonl "
    "--set balance.strategy_shares.code=1 --set balance.strategy_shares.text=1"
)


@app.command(
    "compose", help=f"Compose graded pairs into training trajectories (the four cases).\n\n{COMPOSE_EXAMPLE}"
)
def compose_command(
    pairs: Path = typer.Option(..., help="pairs.jsonl from teach (id, problem, answer, first, second)."),
    out: Path = typer.Option(..., help="Output JSONL; a report is written to OUT.report.json."),
    config: Path | None = typer.Option(
        None, help="ComposeConfig YAML (transitions, balance, decontamination)."
    ),
    set_: list[str] = typer.Option([], "--set", help="Config override key=value (repeatable)."),
    singles: Path | None = typer.Option(
        None,
        help="Also write each teacher's correct responses alone (text_only.jsonl, code_only.jsonl) here.",
    ),
) -> None:
    if out is not None:
        writable(out, directory=False)

    try:
        cfg = load_config(ComposeConfig, config, list(set_))
        report = compose_file(pairs, out, cfg, singles_dir=singles)
    except (ConfigError, DataError, ValueError) as e:
        fail(str(e))
    console = Console()
    cases = Table("case", "count", title=f"composition of {report.pairs} pairs")
    for case, n in report.cases.items():
        cases.add_row(case, str(n))
    console.print(cases)
    console.print(
        f"cleaned (format): {len(report.cleaned)}   decontaminated: {len(report.contaminated)}   "
        f"written: {report.written} -> {out}"
    )
    for c in report.contaminated[:10]:
        console.print(f"  removed {c['id']} (~ {c['benchmark']}:{c['benchmark_id']}, ratio {c['score']})")
    cells = Table("cell", "before", "after", title="balance")
    for key in sorted(set(report.balance_before) | set(report.balance_after)):
        cells.add_row(key, str(report.balance_before.get(key, 0)), str(report.balance_after.get(key, 0)))
    console.print(cells)
