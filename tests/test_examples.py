"""The SFT example: one record type that every training set is written and read as."""

from __future__ import annotations

import pytest

from dualdistill.examples import SFTExample, read_examples, write_examples
from dualdistill.records import DataError


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


def test_every_producer_writes_examples_the_trainer_reads(tmp_path):
    """compose, singles and self-distillation build all write through SFTExample."""
    from dualdistill.compose import Attempt, Composed, Pair, compose_pair  # noqa: F401  (the producers' own types)

    pair = Pair("i", "What is 1+1?", "2", Attempt("a", "code", "<code>\nprint(1+1)\n</code>\n<executor>\n2\n</executor>\n"
                "<answer>\n\\boxed{2}\n</answer>"), Attempt("b", "text", "<think>\n1+1=2\n</think>\n<answer>\n\\boxed{2}\n</answer>"))  # fmt: skip
    composed = compose_pair(pair, True, True)
    ex = SFTExample.from_dict(composed.to_dict())
    assert (ex.case, ex.meta["grades"]) == ("right_right", {"g1": True, "g2": True})
