"""Problems and benchmarks: the shipped files, user files with field maps, and errors that name the spot."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dualdistill.cli.app import app
from dualdistill.core.records import DataError
from dualdistill.format.problems import (
    BENCHMARKS,
    FieldMap,
    Problem,
    load_benchmark,
    load_problems,
    load_training_problems,
    normalize_answer,
    write_problems,
)

COUNTS = {"math500": 500, "aime2025": 30, "amc": 83, "combinatorics300": 300}


@pytest.mark.parametrize(("name", "count"), COUNTS.items())
def test_builtin_benchmarks_load_with_counts(name: str, count: int) -> None:
    problems = load_benchmark(name)
    assert len(problems) == count
    assert len({p.id for p in problems}) == count
    assert all(p.question.strip() and p.answer.strip() and p.source == name for p in problems)
    assert load_benchmark(name, limit=3) == problems[:3]


def test_registry_names_the_four_benchmarks() -> None:
    assert set(BENCHMARKS) == set(COUNTS)


def test_training_list() -> None:
    problems = load_training_problems()
    assert len(problems) == 985 and len({p.id for p in problems}) == 985
    assert all(p.answer for p in problems)


def test_amc_float_answers_become_integers() -> None:
    amc = load_benchmark("amc")
    assert amc[0].answer == "142"
    assert not any(p.answer.endswith(".0") for p in amc)
    assert amc[0].question.startswith("$\\frac{m}{n}$")  # the chat prompt's user turn


def test_math500_uses_unique_id() -> None:
    assert load_benchmark("math500")[0].id.startswith("test/")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(142.0, "142"), ("142.0", "142"), ("142.00", "142"), (" $5$ ", "5"), (7, "7"), (0.5, "0.5"),
     ("\\frac{1}{2}", "\\frac{1}{2}"), ("1.50", "1.50"), ("-3.0", "-3")],
)  # fmt: skip
def test_normalize_answer(raw, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_unknown_benchmark_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match=r"unknown benchmark 'nope'.*math500"):
        load_benchmark("nope")


# ----------------------------------------------------------------------------- user files
ROWS = [
    {"key": "p1", "problem": "What is 1+1?", "final": 2.0, "extra": "a"},
    {"key": "p2", "problem": "What is 2+2?", "final": "4", "extra": "b"},
]
MAPPING = FieldMap.parse("question=problem,answer=final,id=key")


def _check(problems: list[Problem]) -> None:
    assert [(p.id, p.question, p.answer) for p in problems] == [
        ("p1", "What is 1+1?", "2"),
        ("p2", "What is 2+2?", "4"),
    ]
    assert problems[0].metadata["extra"] == "a"  # unmapped fields are kept, not dropped


def test_user_jsonl_json_parquet_with_field_mapping(tmp_path: Path) -> None:
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    as_json = tmp_path / "mine.json"
    as_json.write_text(json.dumps(ROWS))
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": ROWS}))
    parquet = tmp_path / "mine.parquet"
    pq.write_table(pa.Table.from_pylist([{**r, "final": str(r["final"])} for r in ROWS]), parquet)
    for path in (jsonl, as_json, wrapped, parquet):
        problems = load_problems(path, fields=MAPPING)
        _check(problems)
        assert problems[0].source == path.stem


def test_dotted_field_mapping_and_default_names(tmp_path: Path) -> None:
    path = tmp_path / "nested.jsonl"
    path.write_text(json.dumps({"q": {"text": "Q?"}, "meta": {"gold": "7"}}) + "\n")
    [p] = load_problems(path, fields=FieldMap.parse("question=q.text,answer=meta.gold"))
    assert (p.question, p.answer, p.id) == ("Q?", "7", "nested-0")
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"question": "Q?", "answer": "1"}) + "\n")
    assert load_problems(plain)[0].answer == "1"


def test_bad_field_mapping() -> None:
    with pytest.raises(ValueError, match="bad field mapping"):
        FieldMap.parse("question=problem,solution=x")


def test_write_and_reload(tmp_path: Path) -> None:
    problems = load_benchmark("aime2025", limit=5)
    write_problems(tmp_path / "out.jsonl", problems)
    again = load_problems(tmp_path / "out.jsonl", source="aime2025")
    assert [(p.id, p.question, p.answer) for p in again] == [(p.id, p.question, p.answer) for p in problems]


# ----------------------------------------------------------------------------- errors
def _jsonl(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = json.dumps({"id": "a", "question": "Q?", "answer": "1"})


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ("{oops", r"bad.jsonl:2: malformed JSON"),
        (json.dumps({"id": "b", "question": "Q?"}), r"bad.jsonl:2: missing or empty answer"),
        (json.dumps({"id": "b", "question": "Q?", "answer": " "}), r"bad.jsonl:2: missing or empty answer"),
        (json.dumps({"id": "b", "answer": "1"}), r"bad.jsonl:2: missing or empty question"),
        (json.dumps({"id": "a", "question": "Q2?", "answer": "2"}), r"bad.jsonl:2: duplicate id 'a' \(first seen on line 1\)"),
        ("[1, 2]", r"bad.jsonl:2: expected a JSON object"),
    ],
)  # fmt: skip
def test_errors_name_file_line_and_field(tmp_path: Path, second: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_problems(_jsonl(tmp_path, [GOOD, second]))


def test_missing_mapped_field_is_named(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, [GOOD])
    with pytest.raises(DataError, match=r"bad.jsonl:1: missing or empty answer \(field 'final'\)"):
        load_problems(path, fields=FieldMap(answer="final"))


def test_other_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_problems(tmp_path / "absent.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type"):
        load_problems(tmp_path / "x.csv")
    (tmp_path / "x.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="expected a JSON list"):
        load_problems(tmp_path / "x.json")


def test_bench_list_cli() -> None:
    result = CliRunner().invoke(app, ["bench", "list"])
    assert result.exit_code == 0, result.output
    for name, count in COUNTS.items():
        assert name in result.output and str(count) in result.output
    assert "985" in result.output
