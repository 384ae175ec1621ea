"""``dualdistill eval``: tool-integrated evaluation over benchmarks, with resume and regrading."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dualdistill.agent import AgentConfig
from dualdistill.cli.app import app, fail
from dualdistill.config import ConfigError
from dualdistill.prompts import TEMPLATES
from dualdistill.records import DataError

EXAMPLE = (
    "Example: dualdistill eval --model ./student --bench math500,aime2025 --samples 5 "
    "--budget 4096 --out runs/eval1   |   dualdistill eval --regrade runs/eval1"
)


@app.command("eval", help=f"Evaluate a model on benchmarks with the tool loop.\n\n{EXAMPLE}")
def eval_command(
    model: str = typer.Option(
        "", help="Local HF model directory, or an http(s) URL of an OpenAI-compatible server."
    ),
    bench: str = typer.Option(
        "math500,aime2025,amc,combinatorics300", help="Comma-separated built-in benchmarks or problem files."
    ),
    samples: int = typer.Option(1, min=1, help="Samples per problem."),
    budget: int = typer.Option(4096, min=1, help="Total response tokens, executor output included."),
    tools: bool = typer.Option(True, "--tools/--no-tools", help="Let the model run code."),
    limit: int | None = typer.Option(None, min=1, help="Only the first N problems of each benchmark."),
    template: str = typer.Option(
        "paper",
        help="Prompt template: paper (the released prompts), plain, compact, or chat (the tokenizer's).",
    ),
    chat_tokenizer: str | None = typer.Option(
        None,
        help="With --template chat and a server URL: the tokenizer (dir or hub id) whose template to use.",
    ),
    executor_timeout: float = typer.Option(3.0, min=0.01, help="Seconds per code block (the paper's 3 s)."),
    temperature: float = typer.Option(0.6, min=0.0),
    top_p: float = typer.Option(0.95, min=0.0, max=1.0),
    max_tool_calls: int = typer.Option(10, min=0),
    seed: int = typer.Option(0),
    served_model_name: str | None = typer.Option(None, help="Model name sent to the server (URL models)."),
    concurrency: int = typer.Option(256, min=1, help="Trajectories in flight at once."),
    max_retries: int = typer.Option(5, min=0, help="Retries per request to a server (URL models)."),
    request_timeout: float = typer.Option(
        600.0, min=0.001, help="Seconds one request to a server may take before it is retried (URL models)."
    ),
    out: Path | None = typer.Option(None, help="Output directory (records.jsonl, report.*); reruns resume."),
    regrade: Path | None = typer.Option(None, help="Re-grade the records in this directory; no generation."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    from dualdistill import evaluate
    from dualdistill.backends import BackendError
    from dualdistill.sandbox import SandboxUnavailable

    try:
        if regrade is not None:
            summaries = evaluate.regrade(regrade)
            _print(summaries, regrade)
            return
        if not model or out is None:
            fail("--model and --out are required (or use --regrade DIR)")
        if template not in TEMPLATES:
            fail(f"--template must be one of {', '.join(TEMPLATES)}, got {template!r}")
        agent = AgentConfig(
            tools=tools, template=template, max_tool_calls=max_tool_calls, budget=budget,  # type: ignore[arg-type]
            temperature=temperature, top_p=top_p, concurrency=concurrency, chat_tokenizer=chat_tokenizer,
            executor_timeout_s=executor_timeout,
        )  # fmt: skip
        config = evaluate.EvalConfig(
            model=model,
            benches=[b.strip() for b in bench.split(",") if b.strip()],
            samples=samples,
            limit=limit,
            seed=seed,
            served_model_name=served_model_name,
            max_retries=max_retries,
            request_timeout_s=request_timeout,
            agent=agent,
        )
        summaries = evaluate.run_eval(config, out, progress=progress)
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
