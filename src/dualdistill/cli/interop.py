"""Commands that take dualdistill's results elsewhere: ``solve``, ``export``, ``import``, ``import-released``."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import typer
from rich.console import Console

from dualdistill.agent.solve import Printer, solve
from dualdistill.backends import BackendError, open_backend
from dualdistill.cli.app import app, fail, option_overrides, writable
from dualdistill.cli.options import AGENT_OPTIONS, BACKEND_OPTIONS, with_config_options
from dualdistill.core.config import ConfigError, load_config
from dualdistill.core.records import DataError, check_distinct, read_text, write_jsonl
from dualdistill.core.shards import kind_of
from dualdistill.evaluate import run as evaluate
from dualdistill.evaluate.run import EvalConfig
from dualdistill.evaluate.run import merge_shards as merge_eval
from dualdistill.format.trajectory import extract_answer
from dualdistill.sandbox import SandboxUnavailable
from dualdistill.selfdistill.sample import merge_shards as merge_sample
from dualdistill.sft import export
from dualdistill.sft.export import import_released
from dualdistill.sft.train import CONFIG_FILE
from dualdistill.teachers.teach import merge_shards as merge_teach


def _question(question: str | None, file: Path | None) -> str:
    if question is not None and file is not None:
        fail("give the question as an argument or with --file, not both")
    if file is not None:
        try:
            return read_text(file).strip()
        except (DataError, OSError) as e:
            fail(str(e))
    if question is None or question == "-":
        if sys.stdin.isatty():
            fail("no question: give it as an argument, with --file, or on stdin")
        return sys.stdin.read().strip()
    return question


def _trained_with(model: str) -> list[str]:
    """Overrides for the prompt a local model was trained with (its ``sft_config.yaml``): template, tools."""
    import yaml

    path = Path(model) / CONFIG_FILE
    if not path.is_file():
        return []
    trained = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return option_overrides({"agent.template": trained.get("template"), "agent.tools": trained.get("tools")})


@app.command("solve")
@with_config_options(EvalConfig, {**BACKEND_OPTIONS, "seed": None, **AGENT_OPTIONS})
def solve_command(
    question: str | None = typer.Argument(None, help="The question ('-' or none: read stdin)."),
    file: Path | None = typer.Option(None, help="Read the question from this file."),
    config: Path | None = typer.Option(
        None, help="EvalConfig YAML (its agent: section is used), as for eval."
    ),
    set_: list[str] = typer.Option([], "--set", help="Config override key=value, e.g. agent.temperature=0."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the agent record as JSON instead of streaming."
    ),
    given: dict | None = None,
) -> None:
    """Solve one question with the tool loop, streaming the trajectory: text, each code block and its
    executor output, the boxed answer, then tokens and time. Settings are eval's; a model trained here
    defaults to the template and tool setting it was trained with.

    Example: dualdistill solve --model runs/demo-seed0/models/dualdistill/model "Compute 12 * 34."

    Example: echo "What is 2^10?" | dualdistill solve --model http://127.0.0.1:8000/v1 --temperature 0
    """

    text = _question(question, file)
    if not text:
        fail("the question is empty")
    model = (given or {}).get("backend.model")
    backend = None
    try:
        cfg = load_config(
            evaluate.EvalConfig,
            config,
            [
                *(_trained_with(model) if config is None and model else []),
                *option_overrides(given or {}),
                *set_,
            ],
        )
        if not cfg.backend.model:
            fail("--model (or backend.model in --config) is required")
        backend = open_backend(cfg.backend, cfg.agent.template)
        started = time.perf_counter()
        record = asyncio.run(
            solve(text, backend, cfg.agent, seed=cfg.seed, on_text=None if as_json else Printer())
        )
    except (DataError, ConfigError, BackendError, SandboxUnavailable) as e:
        fail(str(e))
    finally:
        if backend is not None:
            backend.close()
    if as_json:
        typer.echo(json.dumps(record.to_dict(), ensure_ascii=False))
        return
    _print_solved(record, time.perf_counter() - started)


def _print_solved(record, seconds: float) -> None:

    answer = extract_answer(record.response)
    console = Console(highlight=False)
    console.print()
    console.rule()
    console.print(f"answer: [bold]{answer if answer is not None else '(no boxed answer)'}[/]")
    console.print(
        f"{record.n_generated} tokens generated, {record.n_tokens} in the response, "
        f"{len(record.tool_calls)} code blocks run, {seconds:.1f} s ({record.finish_reason})"
    )


@app.command("export")
def export_command(
    data: Path = typer.Argument(..., help="Composed or self-distilled JSONL (fields problem, text)."),
    format_: str = typer.Option(..., "--format", help="messages, sharegpt or hf."),
    out: Path = typer.Option(
        ..., help="JSONL to write; for hf a directory (save_to_disk) or a .parquet file."
    ),
) -> None:
    """Write training data for other trainers: OpenAI messages (executor results as tool messages),
    ShareGPT, or a Hugging Face dataset with a dataset card.

    Example: dualdistill export runs/demo-seed0/data/composed.jsonl --format messages --out composed.messages.jsonl

    Example: dualdistill export composed.jsonl --format hf --out composed_hf   (then datasets.load_from_disk)
    """
    if out is not None:
        writable(out, directory=Path(out).suffix == "")

    if format_ not in export.FORMATS:
        fail(f"--format must be one of {', '.join(export.FORMATS)}, got {format_!r}")
    try:
        examples = export.example_dicts(data)
        path = export.export_examples(examples, format_, out)  # type: ignore[arg-type]
    except (DataError, ValueError) as e:
        fail(str(e))
    Console().print(f"wrote {len(examples)} trajectories as {format_} to {path}")


@app.command("import")
def import_command(
    source: Path = typer.Argument(..., help="A file (or hf directory) written by `dualdistill export`."),
    format_: str = typer.Option(..., "--format", help="messages, sharegpt or hf."),
    out: Path = typer.Option(..., help="SFT JSONL to write (fields problem, text + provenance)."),
) -> None:
    """Read exported data back into the SFT example format that `train` reads (the inverse of export).

    Example: dualdistill import composed.messages.jsonl --format messages --out composed.jsonl
    """
    if out is not None:
        writable(out, directory=False)

    if format_ not in export.FORMATS:
        fail(f"--format must be one of {', '.join(export.FORMATS)}, got {format_!r}")
    try:
        check_distinct(out, source)
        examples = export.import_file(source, format_)  # type: ignore[arg-type]
    except (DataError, ValueError) as e:
        fail(str(e))
    write_jsonl(out, examples)
    Console().print(f"wrote {len(examples)} examples to {out}")


@app.command("import-released")
def import_released_command(
    source: Path = typer.Argument(
        ..., help="The paper's released training set as JSONL (problem, synthetic_data)."
    ),
    out: Path = typer.Option(..., help="SFT JSONL to write, for `dualdistill train --data`."),
) -> None:
    """Turn the paper's released training data (VanishD/DualDistill: fields problem and synthetic_data)
    into SFT examples, so you can train on the paper's own trajectories.

    Example: dualdistill import-released dualdistill_train.jsonl --out released.jsonl
    """
    if out is not None:
        writable(out, directory=False)
    from collections import Counter

    try:
        check_distinct(out, source)
        examples = import_released(source)
    except (DataError, ValueError) as e:
        fail(str(e))
    write_jsonl(out, examples)
    cases = Counter(e["case"] for e in examples)
    Console().print(
        f"wrote {len(examples)} examples to {out} ({', '.join(f'{c} {n}' for c, n in sorted(cases.items()))})"
    )


@app.command("merge")
def merge_command(
    shards: list[Path] = typer.Argument(..., help="The output directories of all N shards of one job."),
    out: Path = typer.Option(..., help="Directory to write the merged output to (what one run writes)."),
    allow_incomplete: bool = typer.Option(
        False, "--allow-incomplete", help="Merge shards that lack records; merge.json lists what is missing."
    ),
) -> None:
    """Merge the outputs of a job run in shards (teach, eval or self-distill sample with --shard I/N).

    Example: for i in 0 1 2; do dualdistill teach --shard $i/3 --out runs/teach-$i ...; done
             dualdistill merge runs/teach-0 runs/teach-1 runs/teach-2 --out runs/teach
    """
    writable(out, directory=True)
    try:
        kind, n = merge_shards(shards, out, allow_incomplete=allow_incomplete)
    except (DataError, ValueError) as e:
        fail(str(e))
    missing = json.loads((out / "merge.json").read_text(encoding="utf-8"))["missing"]
    typer.echo(f"merged {len(shards)} {kind} shards: {n} records in {out}")
    for line in missing:
        typer.echo(f"incomplete: {line}")


# What a stage's output directory holds first, in the order checked (teach also writes records.jsonl).
SHARD_KINDS = {"pairs.jsonl": "teach", "samples.jsonl": "sample", "records.jsonl": "eval"}


def merge_shards(dirs: list[Path], out: Path, *, allow_incomplete: bool = False) -> tuple[str, int]:
    """Hand the shards to their stage's ``merge_shards`` by the files they hold; returns (kind, records)."""

    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise ValueError("merge needs the shard directories")
    kinds = {kind_of(d, SHARD_KINDS) for d in dirs}
    if len(kinds) > 1:
        raise DataError(dirs[0], f"the directories hold different outputs: {sorted(kinds)}")
    (kind,) = kinds
    stage_merge = {"teach": merge_teach, "eval": merge_eval, "sample": merge_sample}[kind]
    return kind, stage_merge(dirs, out, allow_incomplete=allow_incomplete)
