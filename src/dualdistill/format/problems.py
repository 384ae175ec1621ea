"""Problems and benchmarks: one record type, loaders for the shipped data and for users' files.

Guarantees:
- Every loader returns ``Problem`` records with a unique ``id``, a non-empty ``question`` and a
  normalised ``answer`` string (``142.0`` becomes ``142``; surrounding whitespace and ``$`` removed).
- Bad input raises ``DataError`` naming the file, the line (or row) and the field: malformed JSON,
  a missing or empty question or answer, a duplicate id. Nothing is dropped silently.
- The four paper benchmarks and the training list ship inside the package (``dualdistill/data``),
  so nothing is downloaded.

Not guaranteed: that an answer is parseable by the grader; that is checked at grading time.
"""

from __future__ import annotations

import ast
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from dualdistill.core.records import DataError, read_jsonl, read_text, scalar_text, write_jsonl


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: str
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "question": self.question,
            "answer": self.answer,
            "source": self.source,
            "metadata": self.metadata,
        }


def normalize_answer(value: Any) -> str:
    """Normalise a gold answer to a string: floats that are integers lose their ``.0``."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).strip().strip("$").strip()
    try:
        as_float = float(text)
    except ValueError:
        return text
    if as_float.is_integer() and "." in text and set(text.split(".", 1)[1]) <= {"0"}:
        return text.split(".", 1)[0] or "0"
    return text


# ----------------------------------------------------------------------------- field lookup
# Field names tried in order when a file gives no mapping (the shipped benchmark layouts included).
QUESTION_FIELDS = ("question", "problem", "prompt")
ANSWER_FIELDS = ("answer", "reward_model.ground_truth", "ground_truth", "final_answer")
ID_FIELDS = ("id", "unique_id")


def _get(record: dict, dotted: str) -> Any:
    node: Any = record
    for part in dotted.split("."):
        if isinstance(node, str) and node.startswith("{"):
            node = _loose_mapping(node)
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _loose_mapping(text: str) -> Any:
    # Combinatorics300 stores nested fields as Python reprs ("{'ground_truth': '12636'}").
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return None


def _question_text(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip().startswith("[{"):
        value = _loose_mapping(value)
    if isinstance(value, list):  # chat-style prompt: the last user turn is the question
        users = [m for m in value if isinstance(m, dict) and m.get("role", "user") == "user"]
        return users[-1].get("content") if users else None
    return value


@dataclass(frozen=True)
class FieldMap:
    """Which record fields hold the question, answer and id. ``None`` means: try the usual names."""

    question: str | None = None
    answer: str | None = None
    id: str | None = None

    @classmethod
    def parse(cls, spec: str | None) -> FieldMap:
        """Parse ``question=problem,answer=final`` (dotted paths allowed)."""
        if not spec:
            return cls()
        kwargs = {}
        for part in spec.split(","):
            key, _, value = part.partition("=")
            if key.strip() not in ("question", "answer", "id") or not value.strip():
                raise ValueError(f"bad field mapping {part!r}: use question=FIELD,answer=FIELD,id=FIELD")
            kwargs[key.strip()] = value.strip()
        return cls(**kwargs)


def _first(record: dict, names: tuple[str, ...]) -> tuple[str | None, Any]:
    for name in names:
        value = _get(record, name)
        if value is not None:
            return name, value
    return None, None


def problem_from_record(
    record: dict, *, index: int, source: str, fields: FieldMap, path: Path, line: int
) -> Problem:
    q_name, question = _first(record, (fields.question,) if fields.question else QUESTION_FIELDS)
    question = _question_text(question)
    if not isinstance(question, str) or not question.strip():
        wanted = fields.question or " / ".join(QUESTION_FIELDS)
        raise DataError(path, f"missing or empty question (field '{q_name or wanted}')", line=line)
    a_name, answer = _first(record, (fields.answer,) if fields.answer else ANSWER_FIELDS)
    if answer is not None:
        answer = scalar_text(answer, a_name, path, line)
    if answer is None or normalize_answer(answer) == "":
        wanted = fields.answer or " / ".join(ANSWER_FIELDS)
        raise DataError(path, f"missing or empty answer (field '{a_name or wanted}')", line=line)
    id_name, pid = _first(record, (fields.id,) if fields.id else ID_FIELDS)
    pid = scalar_text(pid, id_name, path, line) if pid is not None else f"{source}-{index}"
    used = {n.split(".")[0] for n in (q_name, a_name) if n}
    metadata = {k: v for k, v in record.items() if k not in used and k not in ("id",)}
    return Problem(pid, question.strip(), normalize_answer(answer), source, metadata)


def _raw_records(path: Path) -> list[tuple[int, dict]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return list(read_jsonl(path))
    if suffix == ".json":
        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as e:
            raise DataError(path, f"malformed JSON ({e.msg})", line=e.lineno) from None
        if isinstance(data, dict):
            data = data.get("data", data.get("problems"))
        if not isinstance(data, list):
            raise DataError(path, "expected a JSON list of objects (or {'data': [...]})")
        for i, r in enumerate(data, start=1):
            if not isinstance(r, dict):
                raise DataError(path, f"item {i} is not an object", line=i)
        return list(enumerate(data, start=1))
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except (OSError, pa.ArrowException) as e:
            raise DataError(path, f"not a readable Parquet file ({e})") from None
        return list(enumerate(rows, start=1))
    raise DataError(path, f"unsupported file type {suffix!r} (use .jsonl, .json or .parquet)")


def load_problems(
    path: str | os.PathLike, *, fields: FieldMap | None = None, source: str | None = None
) -> list[Problem]:
    """Load problems from a JSONL, JSON or Parquet file. Line numbers count from 1 (rows for Parquet)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    fields = fields or FieldMap()
    source = source or path.stem
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, (line, record) in enumerate(_raw_records(path)):
        p = problem_from_record(record, index=index, source=source, fields=fields, path=path, line=line)
        if p.id in seen:
            raise DataError(path, f"duplicate id {p.id!r} (first seen on line {seen[p.id]})", line=line)
        seen[p.id] = line
        problems.append(p)
    if not problems:
        raise DataError(path, "holds no problems (is it the right file?)")
    return problems


def write_problems(path: str | os.PathLike, problems: list[Problem]) -> None:

    write_jsonl(path, [p.to_dict() for p in problems])


# ----------------------------------------------------------------------------- built-in data
@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    filename: str
    description: str
    id_field: str | None = None


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec("math500", "math500.jsonl", "MATH500 (Lightman et al., 2023)", "unique_id"),
        BenchmarkSpec("aime2025", "aime2025.jsonl", "AIME 2025 I and II"),
        BenchmarkSpec("amc", "amc.jsonl", "AMC 2022-2023 (as released with the paper)"),
        BenchmarkSpec("combinatorics300", "combinatorics300.jsonl", "Combinatorics300 (NuminaMath)"),
    )
}
TRAIN_FILE = "deepmath_dualdistill_problems.jsonl"


def data_path(*parts: str) -> Path:
    return Path(str(resources.files("dualdistill").joinpath("data", *parts)))


def load_benchmark(name: str, *, limit: int | None = None) -> list[Problem]:
    if name not in BENCHMARKS:
        path = Path(name)
        if path.exists():  # a user's own file may stand in for a benchmark name
            return load_problems(path)[:limit]
        raise KeyError(f"unknown benchmark {name!r}; built-in: {', '.join(BENCHMARKS)} (or a file path)")
    spec = BENCHMARKS[name]
    problems = load_problems(
        data_path("benchmarks", spec.filename), fields=FieldMap(id=spec.id_field), source=name
    )
    return problems[:limit]


def load_training_problems() -> list[Problem]:
    """The paper's 985 DeepMath training problems (problem and answer only)."""
    return load_problems(data_path("train", TRAIN_FILE), source="deepmath")
