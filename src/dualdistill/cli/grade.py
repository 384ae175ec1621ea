"""`dualdistill grade`: grade a JSONL file of responses against gold answers."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dualdistill.cli.app import app, fail, option_overrides, writable
from dualdistill.cli.options import with_config_options
from dualdistill.core.config import ConfigError, load_config
from dualdistill.core.records import DataError, check_distinct, read_jsonl, scalar_text, write_jsonl
from dualdistill.format.problems import normalize_answer
from dualdistill.grading.grader import GradeConfig, Verdict, grade_many


def load_pairs(path: Path, response_field: str, answer_field: str) -> list[dict]:
    """Every record of ``path``; a missing or non-text field is an error naming the field and line."""
    records = []
    for line, record in read_jsonl(path):
        response = record.get(response_field)
        if not isinstance(response, str):
            what = "missing" if response is None else f"not a string ({type(response).__name__})"
            raise DataError(path, f"field '{response_field}' is {what}", line=line)
        answer = record.get(answer_field)
        if answer is not None:
            answer = scalar_text(answer, answer_field, path, line)
        if answer is None or not normalize_answer(answer):
            raise DataError(path, f"field '{answer_field}' is missing or empty", line=line)
        records.append(record)
    if not records:
        raise DataError(path, "holds no records to grade")
    return records


def summary_table(verdicts: list[Verdict], seconds: float) -> Table:
    counts = Counter(v.status for v in verdicts)
    correct = sum(v.correct for v in verdicts)
    total = len(verdicts)
    table = Table("", "count", title="grading summary")
    table.add_row("graded", str(total))
    table.add_row("correct", str(correct))
    table.add_row("incorrect", str(counts["ok"] - correct))
    for status in ("no_answer", "timeout", "error"):
        table.add_row(status, str(counts[status]))
    table.add_row("accuracy", f"{correct / total:.1%}" if total else "-")
    table.add_row("grades/s", f"{total / seconds:,.0f}" if seconds > 0 else "-")
    return table


@app.command("grade")
@with_config_options(GradeConfig, {"timeout_s": "--timeout", "workers": None})
def grade_command(
    input: Path = typer.Option(..., "--input", "-i", help="JSONL with a response and an answer per line."),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help="JSONL to write: each input line plus `correct`, `extracted` and `status`.",
    ),
    response_field: str = typer.Option("response", help="Field holding the model's response."),
    answer_field: str = typer.Option("answer", help="Field holding the gold answer."),
    given: dict | None = None,
) -> None:
    """Grade responses against gold answers (math-verify plus exact fast paths, no substring matching).

    Example: dualdistill grade --input eval/records.jsonl --output eval/graded.jsonl --timeout 5
    """
    if output is not None:
        writable(output, directory=False)
    try:
        config = load_config(GradeConfig, None, option_overrides(given or {}))
    except ConfigError as e:
        fail(str(e))
    if output.is_dir():
        fail(f"{output}: is a directory; --output names the JSONL file to write")
    try:
        check_distinct(output, input)
        records = load_pairs(input, response_field, answer_field)
    except DataError as e:
        fail(str(e))
    pairs = [(r[response_field], normalize_answer(r[answer_field])) for r in records]
    start = time.perf_counter()
    columns = (TextColumn("grading"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("grading", total=len(pairs))
        verdicts = grade_many(
            pairs, timeout=config.timeout_s, workers=config.workers, progress=lambda n: bar.advance(task, n)
        )
    seconds = time.perf_counter() - start
    write_jsonl(output, [{**r, **v.to_dict()} for r, v in zip(records, verdicts, strict=True)])
    Console().print(summary_table(verdicts, seconds))
    typer.echo(f"wrote {len(verdicts)} graded lines to {output}")
