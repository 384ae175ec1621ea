"""``dualdistill eval``: tool-integrated evaluation over benchmarks, with resume and regrading."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dualdistill.backends import BackendError
from dualdistill.cli.app import app, fail, option_overrides, writable
from dualdistill.cli.options import AGENT_OPTIONS, BACKEND_OPTIONS, with_config_options
from dualdistill.core.config import ConfigError, load_config
from dualdistill.core.records import DataError
from dualdistill.evaluate import run as evaluate
from dualdistill.evaluate.run import EvalConfig
from dualdistill.sandbox import SandboxUnavailable

EXAMPLE = (
    "Example: dualdistill eval --model ./student --bench math500,aime2025 --samples 5 "
    "--budget 4096 --out runs/eval1   |   dualdistill eval --regrade runs/eval1"
)


# Options derived from EvalConfig's fields (help and bounds live there); a spelling kept where it differs.
EVAL_OPTIONS = {
    **BACKEND_OPTIONS, "samples": None, "limit": None, "seed": None, "log_dir": None, "shard": None,
    **AGENT_OPTIONS, "agent.chat_tokenizer": None, "agent.concurrency": None,
}  # fmt: skip


@app.command("eval", help=f"Evaluate a model on benchmarks with the tool loop.\n\n{EXAMPLE}")
@with_config_options(EvalConfig, EVAL_OPTIONS)
def eval_command(
    config: Path | None = typer.Option(
        None,
        help="EvalConfig YAML (model, benches, samples, agent: {...}); options and --set win over it. "
        "Unset options take the config's values; its defaults are the paper's evaluation settings.",
    ),
    set_: list[str] = typer.Option([], "--set", help="Config override key=value, e.g. agent.top_p=1.0."),
    bench: str | None = typer.Option(None, help="Comma-separated built-in benchmarks or problem files."),
    out: Path | None = typer.Option(None, help="Output directory (records.jsonl, report.*); reruns resume."),
    regrade: Path | None = typer.Option(None, help="Re-grade the records in this directory; no generation."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    given: dict | None = None,
) -> None:
    if out is not None:
        writable(out, directory=True)

    try:
        if regrade is not None:
            summaries = evaluate.regrade(regrade)
            _print(summaries, regrade)
            return
        cfg = load_config(evaluate.EvalConfig, config, [*option_overrides(given or {}), *set_])
        if bench is not None:
            cfg = dataclasses.replace(cfg, benches=[b.strip() for b in bench.split(",") if b.strip()])
        if not cfg.backend.model or out is None:
            fail("--model (or model: in --config) and --out are required (or use --regrade DIR)")
        summaries = evaluate.run_eval(cfg, out, progress=progress)
    except (DataError, ConfigError, BackendError, SandboxUnavailable) as e:
        fail(str(e))
    except KeyError as e:  # unknown benchmark name
        fail(str(e.args[0]) if e.args else str(e))
    _print(summaries, out)


def _print(summaries: dict, out: Path) -> None:
    table = Table("benchmark", "problems", "accuracy %", "95% CI", "tool use %", "mean tokens")
    for name, s in summaries.items():
        if not s.get("records"):
            table.add_row(name, "0", "-", "-", "-", "-")
            continue
        low, high = s["accuracy_ci95"]
        table.add_row(
            name,
            str(s["problems"]),
            f"{100 * s['accuracy']:.1f}",
            f"{100 * low:.1f}–{100 * high:.1f}",
            f"{100 * s['tool_use_rate']:.1f}",
            f"{s['mean_tokens']:.0f}",
        )
    Console().print(table)
    Console().print(f"report: {out / 'report.md'}")
