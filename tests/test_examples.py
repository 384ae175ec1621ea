"""The SFT example: one record type that every training set is written and read as."""

from __future__ import annotations

import pytest

from dualdistill.core.records import DataError
from dualdistill.format.examples import SFTExample, read_examples, write_examples


def test_round_trip_keeps_provenance_and_omits_what_is_absent(tmp_path):
    record = {"id": "a", "problem": "p", "answer": "1", "text": "<answer>\\boxed{1}</answer>", "case": "right_only",
              "first_teacher": "t", "grades": {"g1": True}}  # fmt: skip
    ex = SFTExample.from_dict(record)
    assert (ex.id, ex.case, ex.meta) == ("a", "right_only", {"first_teacher": "t", "grades": {"g1": True}})
    assert ex.to_dict() == record and list(ex.to_dict())[:5] == ["id", "problem", "answer", "text", "case"]
    bare = SFTExample.from_dict({"problem": "p", "text": "t"})
    assert bare.to_dict() == {"problem": "p", "text": "t"}
    path = tmp_path / "x.jsonl"
    write_examples(path, [ex, bare])
    assert [e for _, e in read_examples(path)] == [ex, bare]


@pytest.mark.parametrize(
    ("line", "message"),
    [('{"problem": "p"}', "missing or empty string field 'text'"),
     ('{"problem": "p", "text": "t", "id": [1]}', "field 'id' must be a string or a number")],
)  # fmt: skip
def test_a_bad_line_is_named(tmp_path, line, message):
    path = tmp_path / "d.jsonl"
    path.write_text('{"problem": "q", "text": "t"}\n' + line + "\n")
    with pytest.raises(DataError, match=rf"d\.jsonl:2: {message}"):
        list(read_examples(path))


def test_compose_writes_the_composed_and_single_sets_from_one_grading(tmp_path):
    """The composed set and both single-teacher sets come from one grading pass, as SFT examples."""
    from dualdistill.compose.run import ComposeConfig, compose_file
    from dualdistill.core.records import write_jsonl
    from dualdistill.format.pairs import Attempt, Pair

    code = "<code>\nprint(1+1)\n</code>\n<executor>\n2\n</executor>\n<answer>\n\\boxed{2}\n</answer>"
    text = "<think>\n1+1=2\n</think>\n<answer>\n\\boxed{2}\n</answer>"
    pairs = [Pair(f"p{i}", f"What is 1+1? ({i})", "2", Attempt("a", "code", code), Attempt("b", "text", text))
             for i in range(3)]  # fmt: skip
    write_jsonl(tmp_path / "pairs.jsonl", [p.to_dict() for p in pairs])
    calls = []

    def grader(items):  # first attempts right, second attempts right except the last pair's
        calls.append(len(items))
        return [True, True, True, True, True, False]

    cfg = ComposeConfig(decontaminate=False)
    compose_file(tmp_path / "pairs.jsonl", tmp_path / "composed.jsonl", cfg, grader, singles_dir=tmp_path)
    assert calls == [6]  # one grading for all three files
    code_only = [e for _, e in read_examples(tmp_path / "code_only.jsonl")]
    text_only = [e for _, e in read_examples(tmp_path / "text_only.jsonl")]
    assert [e.id for e in code_only] == ["p0", "p1", "p2"] and [e.id for e in text_only] == ["p0", "p1"]
    assert {e.case for e in code_only + text_only} == {"single"}
    composed = [e for _, e in read_examples(tmp_path / "composed.jsonl")]
    assert {e.case for e in composed} <= {"right_right", "right_only"} and composed
