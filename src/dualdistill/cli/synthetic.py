"""Commands of the embedded synthetic world: problem files, the teacher report, the tiny student."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dualdistill.cli.app import app, fail, option_overrides, writable
from dualdistill.cli.options import with_config_options
from dualdistill.core.config import ConfigError, load_config
from dualdistill.core.records import DataError, JsonlAppender, provenance
from dualdistill.format.problems import load_problems
from dualdistill.pipeline.recipe import StudentConfig, WorldConfig
from dualdistill.sft.modelcard import write_card
from dualdistill.synthetic import report as rep
from dualdistill.synthetic.corpus import synthetic_corpus
from dualdistill.synthetic.families import FAMILIES, GROUPS, make_splits, write_world
from dualdistill.synthetic.student import build_student
from dualdistill.synthetic.teachers import (
    ProgrammaticAgenticConfig,
    ProgrammaticTextConfig,
    ProgrammaticTextTeacher,
)

synthetic_app = typer.Typer(help="The embedded synthetic math world.", no_args_is_help=True)
app.add_typer(synthetic_app, name="synthetic")


@synthetic_app.command("make")
@with_config_options(WorldConfig, {"n": None, "seed": None, "test_fraction": None, "train_limit": None})
def make(
    out: Path = typer.Option(
        ..., help="Output directory: train.jsonl, test.jsonl, test_{tool,text,mixed}.jsonl, manifest.json."
    ),
    given: dict | None = None,
) -> None:
    """Write seeded train/test problem files of the synthetic world (test also split by group). The
    defaults and bounds are a recipe's ``world:`` section's.

    Example: dualdistill synthetic make --n 2000 --seed 0 --out data/synthetic
    """
    if out is not None:
        writable(out, directory=True)

    world = _config(WorldConfig, given)
    n, seed, test_fraction, train_limit = world.n, world.seed, world.test_fraction, world.train_limit

    train, test = write_world(out, n, seed, test_fraction, train_limit)
    manifest = provenance("synthetic make", n=n, seed=seed, test_fraction=test_fraction, train_limit=train_limit,
                          families={f.name: f.group for f in FAMILIES.values()}, train=train, test=test)  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    Console().print(f"wrote {train} train and {test} test problems to {out}")


def _config(cls, given: dict | None):
    """``cls`` from its defaults and the options given, checked as a recipe section is."""

    try:
        return load_config(cls, None, option_overrides(given or {}))
    except ConfigError as e:
        fail(str(e))


def _load_split(data: Path | None, split: str, n: int, seed: int, limit: int | None):

    if split not in ("train", "test"):
        fail(f"--split must be 'train' or 'test', got {split!r}")
    if data is not None:
        problems = load_problems(data / f"{split}.jsonl")
    else:
        train, test = make_splits(n, seed)
        problems = test if split == "test" else train
    return problems[:limit] if limit else problems


@synthetic_app.command("teachers")
@with_config_options(WorldConfig, {"n": None, "seed": None}, into="world")
@with_config_options(ProgrammaticAgenticConfig, {"timeout_s": None, "max_concurrency": "--concurrency"},
                     into="agentic")  # fmt: skip
@with_config_options(ProgrammaticTextConfig, {"slip_p": None}, into="text")
def teachers(
    report: bool = typer.Option(False, "--report", help="Print per-family and per-group accuracy."),
    data: Path | None = typer.Option(None, help="Directory from 'synthetic make' (default: generate)."),
    split: str = typer.Option("test", help="train or test."),
    limit: int | None = typer.Option(None, min=1, help="Only the first N problems of the split."),
    out: Path | None = typer.Option(None, help="Also write every trajectory to this JSONL file."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the table as Markdown."),
    world: dict | None = None,
    agentic: dict | None = None,
    text: dict | None = None,
) -> None:
    """Run both programmatic teachers on a split (the agentic one in the real sandbox). A generated world
    takes a recipe's ``world:`` defaults and bounds (``--n``, ``--seed``), as ``synthetic make`` does.

    Example: dualdistill synthetic teachers --report --split test --n 2000 --timeout-s 1
    """
    if out is not None:
        writable(out, directory=False)
    world_config = _config(WorldConfig, world)
    agentic_config = _config(ProgrammaticAgenticConfig, agentic)
    text_teacher = ProgrammaticTextTeacher(_config(ProgrammaticTextConfig, text))
    try:
        problems = _load_split(data, split, world_config.n, world_config.seed, limit)
    except DataError as e:
        fail(str(e))
    if not problems:
        fail("no problems to run")
    writer = JsonlAppender(out) if out else None
    columns = (TextColumn("[bold]teachers"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("", total=2 * len(problems))

        def done(o: rep.Outcome) -> None:
            bar.advance(task)
            if writer:
                writer.write(rep.outcome_record(o))

        try:
            outcomes = rep.run_teachers(
                problems, agentic=agentic_config, text_teacher=text_teacher, on_done=done
            )
        finally:
            if writer:
                writer.close()
    summary = rep.summarize(outcomes)
    if report or markdown:
        _print_report(summary, markdown)
    violations = rep.complementary_violations(summary)
    console = Console()
    for v in violations:
        console.print(f"[yellow]not complementary:[/] {v}")
    if not violations:
        console.print("complementary pattern holds (>= 80% favoured, <= 40% other's favoured)")


def _print_report(summary, markdown: bool) -> None:
    from rich.table import Table

    if markdown:
        print(rep.markdown_table(summary))
        return
    teachers = [t for t in rep.FAVOURED if t in summary] + [t for t in summary if t not in rep.FAVOURED]
    table = Table("family", "group", *teachers)
    keys = [(f.name, f.group) for f in FAMILIES.values()] + [(f"group:{g}", g) for g in GROUPS]
    for key, group in keys:
        cells = [summary[t].get(key) for t in teachers]
        if any(cells):
            shown = [f"{c[0] / c[1]:.0%} ({c[0]}/{c[1]})" if c else "–" for c in cells]
            table.add_row(key.replace("group:", "all "), group, *shown)
    Console().print(table)


@app.command("tiny-model")
@with_config_options(StudentConfig, {"size": None, "vocab_size": None, "corpus_n": None, "seed": None})
def tiny_model(
    out: Path = typer.Option(..., help="Model directory to write (config, weights, tokenizer)."),
    corpus_seed: int = typer.Option(0, help="Seed of that corpus (the recipes use the world's seed)."),
    given: dict | None = None,
) -> None:
    """Build a from-scratch Qwen2 student with a BPE tokenizer trained on the synthetic world.

    The defaults are ``StudentConfig``'s (a recipe's ``student:`` section).

    Example: dualdistill tiny-model --out models/tiny --size small
    """
    if out is not None:
        writable(out, directory=True)

    student = _config(StudentConfig, given)
    size, vocab_size, corpus_n, seed = student.size, student.vocab_size, student.corpus_n, student.seed
    corpus = synthetic_corpus(corpus_n, seed=corpus_seed)
    path = build_student(out, corpus=corpus, size=size, vocab_size=vocab_size, seed=seed)  # type: ignore[arg-type]
    manifest = provenance("tiny-model", size=size, vocab_size=vocab_size, seed=seed,
                          corpus={"n": corpus_n, "seed": corpus_seed})  # fmt: skip
    (path / "dualdistill.json").write_text(json.dumps(manifest, indent=2) + "\n")

    write_card(path, title=f"A from-scratch {size} Qwen2 (random weights)", made=[
        f"- `dualdistill tiny-model`: random init (seed {seed}), a {vocab_size}-token BPE tokenizer trained on "
        f"{corpus_n} synthetic documents (seed {corpus_seed}); not trained"])  # fmt: skip
    Console().print(f"wrote a {size} Qwen2 student to {path}")
