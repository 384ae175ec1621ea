"""``dualdistill eval``: tool-integrated evaluation over benchmarks, with resume and regrading."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dualdistill.cli.app import app, fail, option_overrides, writable
from dualdistill.config import ConfigError, load_config
from dualdistill.records import DataError

EXAMPLE = (
    "Example: dualdistill eval --model ./student --bench math500,aime2025 --samples 5 "
    "--budget 4096 --out runs/eval1   |   dualdistill eval --regrade runs/eval1"
)


@app.command("eval", help=f"Evaluate a model on benchmarks with the tool loop.\n\n{EXAMPLE}")
def eval_command(
    model: str | None = typer.Option(
        None, help="Local HF model directory, or an http(s) URL of an OpenAI-compatible server."
    ),
    config: Path | None = typer.Option(
        None,
        help="EvalConfig YAML (model, benches, samples, agent: {...}); options and --set win over it. "
        "Unset options take the config's values; its defaults are the paper's evaluation settings.",
    ),
    set_: list[str] = typer.Option([], "--set", help="Config override key=value, e.g. agent.top_p=1.0."),
    bench: str | None = typer.Option(None, help="Comma-separated built-in benchmarks or problem files."),
    samples: int | None = typer.Option(None, min=1, help="Samples per problem."),
    budget: int | None = typer.Option(None, min=1, help="Total response tokens, executor output included."),
    tools: bool | None = typer.Option(None, "--tools/--no-tools", help="Let the model run code."),
    limit: int | None = typer.Option(None, min=1, help="Only the first N problems of each benchmark."),
    template: str | None = typer.Option(
        None, help="Prompt template: paper (the released prompts), plain, compact, or chat (the tokenizer's)."
    ),
    chat_tokenizer: str | None = typer.Option(
        None,
        help="With --template chat and a server URL: the tokenizer (dir or hub id) whose template to use.",
    ),
    executor_timeout: float | None = typer.Option(None, min=0.01, help="Seconds per code block."),
    temperature: float | None = typer.Option(None, min=0.0),
    top_p: float | None = typer.Option(None, min=0.0, max=1.0),
    max_tool_calls: int | None = typer.Option(None, min=0),
    seed: int | None = typer.Option(None),
    served_model_name: str | None = typer.Option(None, help="Model name sent to the server (URL models)."),
    api: str | None = typer.Option(
        None, help="A server's API: completions (default) or chat (continues with continue_final_message)."
    ),
    tokenizer: str | None = typer.Option(
        None, help="A server model's tokenizer (dir or hub id): counts executor text exactly."
    ),
    concurrency: int | None = typer.Option(None, min=1, help="Trajectories in flight at once."),
    max_batch: int | None = typer.Option(None, min=1, help="Sequences per forward pass (local models)."),
    max_retries: int | None = typer.Option(None, min=0, help="Retries per request to a server."),
    request_timeout: float | None = typer.Option(
        None, min=0.001, help="Seconds one request to a server may take before it is retried."
    ),
    out: Path | None = typer.Option(None, help="Output directory (records.jsonl, report.*); reruns resume."),
    log_dir: str | None = typer.Option(
        None, help="Also write the summary as TensorBoard scalars into this directory."
    ),
    regrade: Path | None = typer.Option(None, help="Re-grade the records in this directory; no generation."),
    shard: str | None = typer.Option(
        None, help="Only the share I/N of the problems; `dualdistill merge` joins the shards."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    if out is not None:
        writable(out, directory=True)
    from dualdistill import evaluate
    from dualdistill.backends import BackendError
    from dualdistill.sandbox import SandboxUnavailable

    try:
        if regrade is not None:
            summaries = evaluate.regrade(regrade)
            _print(summaries, regrade)
            return
        given = {
            "model": model, "samples": samples, "limit": limit, "seed": seed, "max_batch": max_batch,
            "served_model_name": served_model_name, "api": api, "tokenizer": tokenizer,
            "max_retries": max_retries,
            "request_timeout_s": request_timeout, "log_dir": log_dir, "agent.tools": tools, "agent.template": template,
            "agent.chat_tokenizer": chat_tokenizer, "agent.budget": budget, "agent.temperature": temperature,
            "agent.top_p": top_p, "agent.max_tool_calls": max_tool_calls,
            "agent.executor_timeout_s": executor_timeout, "agent.concurrency": concurrency, "shard": shard,
        }  # fmt: skip
        cfg = load_config(evaluate.EvalConfig, config, [*option_overrides(given), *set_])
        if bench is not None:
            cfg = dataclasses.replace(cfg, benches=[b.strip() for b in bench.split(",") if b.strip()])
        if not cfg.model or out is None:
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
