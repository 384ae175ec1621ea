"""The synthetic problem generator: determinism, splits, exact answers (checked independently), CLI."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from dualdistill.cli.app import app
from dualdistill.format.problems import load_problems
from dualdistill.synthetic.families import (
    FAMILIES,
    GROUPS,
    Count,
    Mul,
    PowMod,
    generate,
    make_splits,
    parse_question,
    problem_meta,
)

# Independent readings of the questions: different regexes from families.py, and brute force / pow().
NUMS = re.compile(r"\d+")


def independent_answer(question: str) -> int:
    nums = [int(x) for x in NUMS.findall(question)]
    if "digit" in question:  # count: 1 <= n <= N ... digit sum s
        _, N, s = nums

        def dsum(n: int) -> int:
            total = 0
            while n:
                n, r = divmod(n, 10)
                total += r
            return total

        return sum(1 for n in range(1, N + 1) if dsum(n) == s)
    if "^" in question:
        a, n, *rest = nums
        c, m = rest if len(rest) == 2 else (0, rest[0])
        return (pow(a, n, m) + c) % m  # three-argument pow: fast even for n ~ 10^15
    a, b = nums
    return a * b


@pytest.fixture(scope="module")
def world():
    return generate(1400, seed=0)


def test_answers_match_an_independent_computation(world):
    for p in world:
        assert p.answer == str(independent_answer(p.question)), p


def test_generation_is_deterministic_per_seed():
    a = [p.to_dict() for p in generate(300, seed=7)]
    assert a == [p.to_dict() for p in generate(300, seed=7)]
    assert a != [p.to_dict() for p in generate(300, seed=8)]


def test_families_groups_and_balance(world):
    by_group = {g: [f for f in FAMILIES.values() if f.group == g] for g in GROUPS}
    assert all(len(fams) >= 2 for fams in by_group.values())
    counts = {name: sum(p.metadata["family"] == name for p in world) for name in FAMILIES}
    assert set(counts.values()) == {1400 // len(FAMILIES)}
    for p in world:
        assert p.metadata["group"] == FAMILIES[p.metadata["family"]].group
    assert len({p.question for p in world}) == len(world)
    assert len({p.id for p in world}) == len(world)


def test_routing_needs_content_not_a_template_word(world):
    """Tool-, text- and mixed-favoured power questions share their phrasings; only magnitudes differ."""

    def stem(q: str) -> str:
        return NUMS.sub("#", q).replace(" + #", "")

    stems = {
        g: {stem(p.question) for p in world if p.metadata["group"] == g and "^" in p.question} for g in GROUPS
    }
    assert stems["tool"] & stems["text"] & stems["mixed"]
    mul_stems = {g: {stem(p.question) for p in world if p.metadata["group"] == g and "^" not in p.question
                     and "digit" not in p.question} for g in ("tool", "mixed")}  # fmt: skip
    assert mul_stems["tool"] == mul_stems["mixed"]
    # The signal that does exist: the exponent's length (huge for text-favoured power questions).
    for p in world:
        parsed = parse_question(p.question)
        if isinstance(parsed, PowMod):
            assert (len(str(parsed.n)) >= 12) == (p.metadata["group"] == "text")


def test_splits_are_fixed_disjoint_and_stratified():
    train, test = make_splits(700, seed=1, test_fraction=0.2)
    assert len(train) + len(test) == 700
    assert not {p.question for p in train} & {p.question for p in test}
    assert {p.metadata["family"] for p in test} == set(FAMILIES)
    assert len(test) == 7 * round(100 * 0.2)
    again = make_splits(700, seed=1, test_fraction=0.2)
    assert [p.id for p in again[1]] == [p.id for p in test]


def test_parse_question_reads_every_question_and_rejects_others(world):
    kinds = {type(parse_question(p.question)) for p in world}
    assert kinds == {Mul, PowMod, Count}
    assert parse_question("What is the capital of France?") is None
    assert parse_question("Compute 12 * 34 + 5.") is None


def test_generate_rejects_unknown_family():
    with pytest.raises(ValueError, match="unknown family 'nope'"):
        generate(10, families=("nope",))


def test_cli_make_writes_loadable_problem_files(tmp_path):
    out = tmp_path / "world"
    result = CliRunner().invoke(app, ["synthetic", "make", "--n", "140", "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    train, test = load_problems(out / "train.jsonl"), load_problems(out / "test.jsonl")
    assert (len(train), len(test)) == (112, 28)
    assert [p.id for p in test] == [p.id for p in make_splits(140, 3)[1]]
    # The loader keeps the written metadata nested; problem_meta reads it either way.
    assert all(problem_meta(p)["group"] in GROUPS for p in train + test)
    assert [problem_meta(p)["family"] for p in test] == [p.metadata["family"] for p in make_splits(140, 3)[1]]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["version"]
