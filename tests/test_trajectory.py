"""Trajectory format: lossless parsing, the format rule, answer extraction and strategy facts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualdistill.format.trajectory import (
    ALSO_CODE,
    CODE_TO_TEXT,
    TEXT_TO_CODE,
    boxed_contents,
    check_format,
    executor_block,
    extract_answer,
    first_attempt,
    is_executor_error,
    parse,
    render,
    strategy_facts,
)

TAGS = [f"<{k}>" for k in ("think", "code", "executor", "answer")]
TAGS += [f"</{k}>" for k in ("think", "code", "executor", "answer")]
# Pieces that stress the parser: tags, near-tags, boxes, braces and ordinary text.
PIECES = st.sampled_from([*TAGS, "<", ">", "</", "<thin", "k>", "\\boxed{", "}", "{", "\n", " ", "x", "42"])
tag_heavy = st.lists(st.one_of(PIECES, st.text(max_size=5)), max_size=40).map("".join)


def assert_tiles(text: str) -> None:
    segments = parse(text)
    assert render(segments) == text
    pos = 0
    for s in segments:
        assert s.start == pos and s.end > s.start and text[s.start : s.end] == s.text
        pos = s.end
    assert pos == len(text)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_render_parse_roundtrip_any_string(text: str) -> None:
    assert_tiles(text)


@settings(max_examples=500, deadline=None)
@given(tag_heavy)
def test_render_parse_roundtrip_tag_heavy(text: str) -> None:
    assert_tiles(text)
    extract_answer(text)  # never raises
    check_format(text)
    strategy_facts(text)


def test_parse_kinds_and_bodies() -> None:
    text = "<think>\nplan\n</think>\n<code>\nprint(1)\n</code>\n<executor>\n1\n</executor>\n<answer>\\boxed{1}</answer>"
    segments = parse(text)
    assert [s.kind for s in segments if s.kind != "text"] == ["think", "code", "executor", "answer"]
    assert segments[0].body == "\nplan\n"
    assert parse("<code>\nunclosed")[0].closed is False
    assert parse("<code>\nunclosed")[0].body == "\nunclosed"


VALID = [
    "<think>\nx\n</think>\n<answer>\n\\boxed{1}\n</answer>",
    "<code>\nprint(1)\n</code>\n<executor>\n1\n</executor>\n<answer>\\boxed{1}</answer>",
    f"<think>a</think>\n{TEXT_TO_CODE}\n<code>p</code>\n<executor>o</executor>\n<answer>\\boxed{{2}}</answer>",
    "<think>a</think><think>b</think><answer>\\boxed{3}</answer>\n",
]
INVALID = [
    ("<think>a</think>", "no <answer> block"),
    ("<think>a<answer>\\boxed{1}</answer>", "unclosed <think>"),
    ("<think>a <code>x</code></think><answer>1</answer>", "tag inside <think>"),
    ("<answer>1</answer><answer>2</answer>", "more than one <answer> block"),
    ("<answer>1</answer><think>a</think>", "<answer> is not the last block"),
    ("<answer>1</answer> trailing", "text after </answer>"),
    ("<executor>1</executor><answer>1</answer>", "does not follow a <code> block"),
    ("<code>x</code> words <executor>1</executor><answer>1</answer>", "text between </code> and <executor>"),
    ("</think><answer>1</answer>", "stray tag"),
]


@pytest.mark.parametrize("text", VALID)
def test_check_format_accepts_valid(text: str) -> None:
    assert check_format(text), check_format(text).reason


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_check_format_rejects_invalid_with_reason(text: str, reason: str) -> None:
    result = check_format(text)
    assert not result and reason in result.reason


def test_check_format_answer_optional() -> None:
    assert check_format("<think>a</think>", require_answer=False)


def test_extract_answer_order() -> None:
    # 1. the boxes inside the (last) answer block win over boxes elsewhere; several there are one answer
    assert extract_answer("\\boxed{1} <answer>\\boxed{2} then \\boxed{3}</answer> \\boxed{4}") == "2, 3"
    assert extract_answer("<answer>\\boxed{3} so \\boxed{3}</answer>") == "3"
    # 2. no box in the answer block: the last box anywhere
    assert extract_answer("\\boxed{1} text \\boxed{5}<answer>five</answer>") == "5"
    # 3. tool-only response: the last non-empty executor output
    tool = "<code>a</code>\n<executor>\n7\n</executor>\n<code>b</code>\n<executor>\n 8 \n</executor>\n<executor></executor>"
    assert extract_answer(tool) == "8"
    # an answer block without a box does not fall back to executor output
    assert extract_answer("<code>a</code><executor>9</executor><answer>nine</answer>") is None
    assert extract_answer("no answer at all") is None


def test_extract_answer_nested_braces() -> None:
    assert extract_answer("<answer>\\boxed{\\frac{\\sqrt{3}}{2}}</answer>") == "\\frac{\\sqrt{3}}{2}"
    assert extract_answer("\\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"
    assert extract_answer("\\boxed {  x^{2^{3}} }") == "x^{2^{3}}"
    assert boxed_contents("\\boxed{unclosed {") == []  # an unbalanced box is not an answer
    assert extract_answer("\\fbox{6}") == "6"


def test_strategy_facts() -> None:
    code_first = (
        "<code>\n1/0\n</code>\n<executor>\nTraceback (most recent call last):\nZeroDivisionError\n</executor>\n"
        f"{CODE_TO_TEXT}\n<think>\nby hand\n</think>\n<answer>\\boxed{{1}}</answer>"
    )
    facts = strategy_facts(code_first)
    assert (facts.code_blocks, facts.executor_errors, facts.think_blocks) == (1, 1, 1)
    assert facts.switched and facts.first_strategy == "code" and facts.used_tools

    text_only = strategy_facts("<think>\nx\n</think>\n<answer>\\boxed{1}</answer>")
    assert (text_only.code_blocks, text_only.switched, text_only.first_strategy) == (0, False, "text")
    assert not text_only.used_tools

    planned = strategy_facts("<think>plan</think>\n<code>p</code>\n<executor>1</executor>")
    assert planned.first_strategy == "code"  # planning in <think> before code is a code attempt
    assert strategy_facts("just words").first_strategy == "none"


def test_first_attempt_and_also_phrase() -> None:
    text = f"<think>a</think>\n{ALSO_CODE}\n<code>b</code>"
    assert first_attempt(text) == "<think>a</think>\n"
    assert strategy_facts(text).switched
    assert first_attempt("no transition") == "no transition"


def test_executor_block_and_errors() -> None:
    assert executor_block("\n42\n") == "\n<executor>\n42\n</executor>\n"
    block = executor_block("out")
    assert parse(block)[1].kind == "executor" and parse(block)[1].body.strip() == "out"
    assert is_executor_error("  File x\nSyntaxError: invalid syntax")
    assert is_executor_error("Error: Code execution timed out.")
    assert not is_executor_error("42")


# ----------------------------------------------------------------------------- the guess rule
def test_a_right_answer_after_failed_code_is_a_guess_and_a_clean_retry_is_not():
    from dualdistill.format.trajectory import CODE_TO_TEXT, guessed_after_failed_code

    timeout = "<executor>\nError: Code execution timed out.\n</executor>\n"
    guess = f"<code>\nwhile 1: pass\n</code>\n{timeout}<answer>\nThe code did not finish; a guess: \\boxed{{4}}\n</answer>"
    retry = f"<code>\nwhile 1: pass\n</code>\n{timeout}<code>\nprint(4)\n</code>\n<executor>\n4\n</executor>\n<answer>\\boxed{{4}}</answer>"
    reasoned = f"<code>\nwhile 1: pass\n</code>\n{timeout}<think>\n2 + 2 = 4\n</think>\n<answer>\\boxed{{4}}</answer>"
    assert guessed_after_failed_code(guess)
    assert not guessed_after_failed_code(retry)
    assert not guessed_after_failed_code(reasoned)
    assert not guessed_after_failed_code("<think>\n2 + 2 = 4\n</think>\n<answer>\\boxed{4}</answer>")
    # after a switch, only the last attempt counts: a guess that was switched away from is not one
    assert not guessed_after_failed_code(
        f"{guess[: guess.index('<answer>')]}\n{CODE_TO_TEXT}\n\n{reasoned[-60:]}"
    )
    assert guessed_after_failed_code(f"<think>\nhm\n</think>\n{CODE_TO_TEXT}\n\n{guess}")
