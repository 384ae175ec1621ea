"""Commands for SFT: train, inspect-masks, view. Dispatch only; the work is in ``dualdistill.sft``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dualdistill.cli.app import app, fail, writable
from dualdistill.core.config import ConfigError, load_config, to_dict
from dualdistill.core.records import DataError
from dualdistill.format.examples import read_examples
from dualdistill.pipeline.recipe import shipped_file
from dualdistill.sft.masking import encode_example, trained_text_spans
from dualdistill.sft.train import SFTConfig, train_run, trained_steps
from dualdistill.sft.viewer import ViewerOptions, write_view


def _config(config: Path | None, overrides: list[str] | None):

    try:
        path = shipped_file(config) if config is not None else None  # a shipped name or a path
        return load_config(SFTConfig, path, list(overrides or []))
    except ConfigError as e:
        fail(str(e))


def _tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        fail(f"cannot load a tokenizer from {path}: {e}")


@app.command("train")
def train_cmd(
    config: Path = typer.Option(
        ..., "--config", help="SFT recipe YAML, or a shipped one: sft_tiny, sft_r1_distill_qwen7b."
    ),
    data: str = typer.Option(None, "--data", help="Composed JSONL (overrides the recipe's data)."),
    model: str = typer.Option(None, "--model", help="Initial model dir or hub id (overrides model)."),
    out: str = typer.Option(None, "--out", help="Output dir (overrides output_dir)."),
    restart: bool = typer.Option(
        False,
        "--restart",
        help="Move checkpoints of another run (other data or settings) aside and start over.",
    ),
    steps_of: Path = typer.Option(
        None,
        "--steps-of",
        help="Train as many optimizer steps as the model in this directory was trained "
        "(its train_summary.json): a budget-matched control. Overrides epochs and max_steps.",
    ),
    overrides: list[str] = typer.Argument(
        None, help="key=value overrides, e.g. lr=1e-5 masking.executor=false"
    ),
) -> None:
    """Fine-tune a student on composed trajectories (TRL SFTTrainer, loss masks from spans).

    A killed run resumes from its last checkpoint in --out; checkpoints made with other data, another
    initial model or other settings are refused (naming the key) unless --restart is given.

    Example: dualdistill train --config sft_tiny --data composed.jsonl --model student/ --out runs/sft max_steps=50

    A control at another student's budget: dualdistill train --config sft_tiny --data code_only.jsonl --model student/ --steps-of runs/dual/model --out runs/control

    Multi-GPU: accelerate launch --config_file $(dualdistill config-path deepspeed_zero3) -m dualdistill.cli train --config sft_r1_distill_qwen7b
    """

    cfg = _config(config, overrides)
    if steps_of is not None:
        try:
            cfg.max_steps = trained_steps(steps_of)
        except DataError as e:
            fail(str(e))
    data, model, out = data or cfg.data, model or cfg.model, out or cfg.output_dir
    for name, value in (("data", data), ("model", model), ("output_dir", out)):
        if not value:
            fail(f"{config}: no {name} (set it in the recipe or pass --{name.split('_')[0]})")
    try:
        result = train_run(cfg, data, out, init_model=model, restart=restart)
    except (ConfigError, DataError) as e:
        fail(str(e))
    s = result.stats
    typer.echo(
        f"saved {result.model_dir} after {result.steps} steps in {result.seconds:.1f}s "
        f"(loss {result.train_loss:.4f}; kept {s.kept}/{s.examples}, dropped too long {s.dropped_too_long}, "
        f"truncated {s.truncated}, no target {s.dropped_no_target}; trained {s.trained_tokens}/{s.tokens} tokens)"
    )


@app.command("inspect-masks")
def inspect_masks(
    data: Path = typer.Argument(..., help="Composed JSONL with 'problem' and 'text'."),
    tokenizer: str = typer.Option(..., "--tokenizer", help="Tokenizer (model) dir or hub id."),
    config: Path = typer.Option(
        None, "--config", help="Recipe YAML for template, tools, masking, max_length."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per example."),
    limit: int = typer.Option(0, "--limit", help="Only the first N examples (0: all)."),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. masking.first_attempt=false"),
) -> None:
    """Print, per example, the text spans that are trained on.

    Example: dualdistill inspect-masks composed.jsonl --tokenizer student/ --json template=compact
    """

    cfg = _config(config, overrides)
    tok = _tokenizer(tokenizer)
    try:
        for n, (line, example) in enumerate(read_examples(data)):
            if limit and n >= limit:
                break
            ex = encode_example(
                example, tok, cfg.masking, template=cfg.template, tools=cfg.tools, max_length=cfg.max_length,
                truncation=cfg.truncation,
            )  # fmt: skip
            row = {"id": example.id or line, "line": line, "case": example.case}
            if ex is None:
                row.update(dropped="too long")
            else:
                spans = trained_text_spans(ex)
                row.update(
                    tokens=len(ex.input_ids), trained_tokens=ex.n_trained, truncated=ex.truncated,
                    eos_trained=ex.labels[-1] == ex.input_ids[-1] and not ex.truncated,
                    trained=[{"start": s - ex.prompt_chars, "end": e - ex.prompt_chars, "text": t}
                             for s, e, t in spans],
                )  # fmt: skip
            if as_json:
                typer.echo(json.dumps(row, ensure_ascii=False))
            else:
                _print_human(row)
    except (DataError, ValueError) as e:  # ValueError: template chat without a chat template
        fail(str(e))


def _print_human(row: dict) -> None:
    typer.secho(f"== {row['id']} (line {row['line']}, case {row['case']})", bold=True)
    if "dropped" in row:
        typer.echo(f"  dropped: {row['dropped']}")
        return
    typer.echo(f"  {row['trained_tokens']}/{row['tokens']} tokens trained; EOS trained: {row['eos_trained']}")
    for span in row["trained"]:
        typer.echo(f"  [{span['start']}:{span['end']}] {span['text']!r}")


@app.command("view")
def view(
    data: Path = typer.Argument(..., help="Composed JSONL with 'problem' and 'text'."),
    tokenizer: str = typer.Option(..., "--tokenizer", help="Tokenizer (model) dir or hub id."),
    out: Path = typer.Option(Path("view.html"), "--out", help="HTML file to write."),
    config: Path = typer.Option(None, "--config", help="Recipe YAML for template, tools, masking."),
    limit: int = typer.Option(200, "--limit", help="At most N examples on the page."),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. template=compact"),
) -> None:
    """Write a self-contained HTML page: segments coloured, trained vs masked tokens, filters, counts.

    Example: dualdistill view composed.jsonl --tokenizer student/ --out view.html template=compact
    """
    if out is not None:
        writable(out, directory=False)

    cfg = _config(config, overrides)
    tok = _tokenizer(tokenizer)
    opts = ViewerOptions(template=cfg.template, tools=cfg.tools, limit=limit, max_length=cfg.max_length)
    try:
        path = write_view(data, tok, out, cfg.masking, opts)
    except (DataError, ValueError) as e:  # ValueError: template chat without a chat template
        fail(str(e))
    typer.echo(f"wrote {path} (mask: {json.dumps(to_dict(cfg.masking))})")
