"""The trajectory format of DualDistill: tags, parsing, format checks, answers, strategy facts.

A response is plain text that uses the paper's tags::

    <think>…</think>  <code>…</code>  <executor>…</executor>  <answer>…\\boxed{…}…</answer>

Guarantees:
- ``parse`` never fails and is lossless: ``render(parse(x)) == x`` for every string ``x``. Segments tile
  the input; malformed input (unclosed or stray tags) is still parsed, and ``check_format`` says why
  it is not well formed.
- ``Segment.start``/``end`` are character offsets into the parsed string, so later stages (loss masks,
  the viewer) can map segments to tokens without re-parsing.
- ``extract_answer`` follows one documented order (see its docstring) and handles nested braces.

Not guaranteed: that a well-formed response is *sensible* (a code block with no executor after it
is well formed if generation stopped there) or that an extracted answer is mathematically parseable;
that is the grader's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

SegmentKind = Literal["text", "think", "code", "executor", "answer"]
BLOCK_KINDS: tuple[str, ...] = ("think", "code", "executor", "answer")

# The two strategies of the paper: reasoning in code blocks, or in text.
Strategy = Literal["code", "text"]

# The transition sentences of the paper's released code. A "switch" follows a wrong first attempt;
# an "also" follows a right one (right-right composition, and teacher verification in
# self-distillation). Keys are (first strategy, second strategy).
TEXT_TO_CODE = "Wait, use text reasoning is too tedious, let's try code reasoning."
CODE_TO_TEXT = "Wait, the code is not correct, let's try text reasoning."
ALSO_CODE = "Wait, we can also use code-reasoning as an alternative way to verify the solution."
ALSO_TEXT = "Wait, we can also use text-reasoning as an alternative way to verify the solution."
# The released masker lists a third wrong-to-right sentence (sft/dataloader.py, turn_over_words).
CODE_MAY_BE_WRONG = "Wait, the code may be incorrect, let's try text reasoning."
SWITCH_PHRASES: tuple[str, ...] = (TEXT_TO_CODE, CODE_TO_TEXT, CODE_MAY_BE_WRONG, ALSO_CODE, ALSO_TEXT)
WRONG_TO_RIGHT: tuple[str, ...] = (TEXT_TO_CODE, CODE_TO_TEXT, CODE_MAY_BE_WRONG)  # after a failed attempt

EXECUTOR_ERROR_MARKERS: tuple[str, ...] = (
    "Traceback (most recent call last)",
    "SyntaxError",
    "Error: Code execution timed out.",
)

_TAG_RE = re.compile(r"</?(think|code|executor|answer)>")


@dataclass(frozen=True)
class Segment:
    """A contiguous piece of a response. ``text`` includes the tags of a block."""

    kind: SegmentKind
    text: str
    start: int
    end: int
    closed: bool = True  # False for a block whose closing tag never came

    @property
    def body(self) -> str:
        """The content of a block without its tags (the whole text for a ``text`` segment)."""
        if self.kind == "text":
            return self.text
        inner = self.text[len(self.kind) + 2 :]
        close = f"</{self.kind}>"
        return inner[: -len(close)] if self.closed and inner.endswith(close) else inner


def parse(text: str) -> list[Segment]:
    """Split ``text`` into segments. Content of a block is raw up to its first matching close tag."""
    segments: list[Segment] = []
    pos = 0
    n = len(text)

    def add(kind: SegmentKind, start: int, end: int, closed: bool = True) -> None:
        if end > start:
            segments.append(Segment(kind, text[start:end], start, end, closed))

    text_start = 0
    while pos < n:
        m = _TAG_RE.search(text, pos)
        if m is None:
            break
        if m.group(0).startswith("</"):  # a stray closing tag stays in the surrounding text
            pos = m.end()
            continue
        kind = m.group(1)
        add("text", text_start, m.start())
        close = f"</{kind}>"
        close_at = text.find(close, m.end())
        if close_at == -1:
            add(kind, m.start(), n, closed=False)  # type: ignore[arg-type]
            return segments
        end = close_at + len(close)
        add(kind, m.start(), end)  # type: ignore[arg-type]
        pos = text_start = end
    add("text", text_start, n)
    return segments


def render(segments: list[Segment]) -> str:
    return "".join(s.text for s in segments)


@dataclass(frozen=True)
class FormatCheck:
    valid: bool
    reason: str | None = None

    def __bool__(self) -> bool:
        return self.valid


def check_format(text: str, *, require_answer: bool = True) -> FormatCheck:
    """The paper's rule: non-nested think/code/executor blocks, then at most one final answer block.

    Free text between blocks is allowed (composed trajectories put transition sentences there), but
    not after the answer. An executor block must directly follow a code block. No tag may appear
    inside another block, and nothing may stay unclosed.
    """
    segments = parse(text)
    blocks = [s for s in segments if s.kind != "text"]
    for s in segments:
        if s.kind == "text" and _TAG_RE.search(s.text):
            return FormatCheck(False, f"stray tag {_TAG_RE.search(s.text).group(0)!r} at {s.start}")
        if s.kind != "text" and not s.closed:
            return FormatCheck(False, f"unclosed <{s.kind}> at {s.start}")
        if s.kind != "text" and _TAG_RE.search(s.body):
            return FormatCheck(False, f"tag inside <{s.kind}> at {s.start}")
    answers = [b for b in blocks if b.kind == "answer"]
    if len(answers) > 1:
        return FormatCheck(False, "more than one <answer> block")
    if answers and blocks[-1] is not answers[0]:
        return FormatCheck(False, "<answer> is not the last block")
    if answers and text[answers[0].end :].strip():
        return FormatCheck(False, "text after </answer>")
    if require_answer and not answers:
        return FormatCheck(False, "no <answer> block")
    for prev, cur in zip([None, *blocks], blocks, strict=False):
        if cur.kind == "executor" and (prev is None or prev.kind != "code"):
            return FormatCheck(False, f"<executor> at {cur.start} does not follow a <code> block")
        if cur.kind == "executor" and text[prev.end : cur.start].strip():
            return FormatCheck(False, f"text between </code> and <executor> at {cur.start}")
    return FormatCheck(True)


_BOX_OR_BRACE = re.compile(r"\\(?:boxed|fbox)\s*\{|[{}]")


def boxed_contents(text: str) -> list[str]:
    r"""Every ``\boxed{...}`` (or ``\fbox{...}``) content in order, nested braces balanced.

    One pass with a stack of open braces, so the time is linear in the text: 100,000 unclosed boxes (a
    small model repeating itself) cost as little as one.
    """
    found: list[tuple[int, str]] = []  # (opening order, content)
    stack: list[tuple[int, int]] = []  # (content start, opening order; -1 for a plain brace)
    opened = 0
    for m in _BOX_OR_BRACE.finditer(text):
        token = m.group()
        if token == "}":
            if stack:
                start, order = stack.pop()
                if order >= 0:
                    found.append((order, text[start : m.start()]))
        elif token == "{":
            stack.append((m.end(), -1))
        else:
            stack.append((m.end(), opened))
            opened += 1
    return [content for _, content in sorted(found)]


def extract_answer(text: str) -> str | None:
    r"""The final answer of a response, in this order:

    1. the ``\boxed{}`` inside the last closed ``<answer>`` block; several there ("enter all
       solutions": ``\boxed{(2, 2)} and \boxed{(6, 2)}``) are one answer, joined with ``", "``;
    2. the last ``\boxed{}`` anywhere (an intermediate box in ``<think>`` never joins the answer's);
    3. for tool-only responses (no ``<answer>``, no box), the last non-empty executor output.
    """
    segments = parse(text)
    answers = [s for s in segments if s.kind == "answer" and s.closed]
    if answers:
        boxes = [b.strip() for b in boxed_contents(answers[-1].body) if b.strip()]
        if boxes:
            return ", ".join(dict.fromkeys(boxes))  # a box repeated verbatim counts once
    boxes = boxed_contents(text)
    if boxes:
        return boxes[-1].strip()
    if not answers:
        outputs = [s.body.strip() for s in segments if s.kind == "executor" and s.closed]
        outputs = [o for o in outputs if o]
        if outputs:
            return outputs[-1]
    return None


def executor_block(output: str) -> str:
    """The text injected after a ``</code>``: the one executor format every producer uses."""
    return f"\n<executor>\n{output.strip(chr(10))}\n</executor>\n"


def is_executor_error(output: str) -> bool:
    return any(marker in output for marker in EXECUTOR_ERROR_MARKERS)


@dataclass(frozen=True)
class StrategyFacts:
    code_blocks: int
    executor_errors: int
    think_blocks: int
    switched: bool
    first_strategy: Literal["code", "text", "none"]

    @property
    def used_tools(self) -> bool:
        return self.code_blocks > 0


def first_attempt(text: str, phrases: tuple[str, ...] = SWITCH_PHRASES) -> str:
    """The text before the first of ``phrases`` (default: any transition); the whole text when none."""
    cuts = [i for i in (text.find(p) for p in phrases) if i != -1]
    return text[: min(cuts)] if cuts else text


def last_attempt(text: str, phrases: tuple[str, ...] = SWITCH_PHRASES) -> str:
    """The text after the last of ``phrases``: the attempt whose answer is boxed (the whole text when none)."""
    cuts = [i + len(p) for p in phrases for i in [text.rfind(p)] if i != -1]
    return text[max(cuts, default=0) :]


def guessed_after_failed_code(text: str) -> bool:
    """Whether the boxed answer is a guess: in the last attempt, the block right before the first
    ``<answer>`` (or the end) is an executor error (a timeout or a traceback). Such an answer rests on no
    run and on no reasoning, so it is right only by luck. The one rule for trustworthy training data:
    composition, the single-teacher sets, self-distillation's samples and its teacher solutions all treat
    such an attempt as not right. A code block that failed and was followed by a clean run, or by
    reasoning, is not a guess."""
    blocks = [s for s in parse(last_attempt(text)) if s.kind != "text"]
    answer = next((i for i, s in enumerate(blocks) if s.kind == "answer"), len(blocks))
    before = blocks[:answer]
    return bool(before) and before[-1].kind == "executor" and is_executor_error(before[-1].body)


def strategy_facts(text: str) -> StrategyFacts:
    segments = parse(text)
    code = [s for s in segments if s.kind == "code"]
    think = [s for s in segments if s.kind == "think"]
    errors = sum(1 for s in segments if s.kind == "executor" and is_executor_error(s.body))
    # A first attempt that wrote any code is a code attempt, even if it planned in <think> first.
    head = parse(first_attempt(text))
    if any(s.kind == "code" for s in head):
        first = "code"
    elif any(s.kind in ("think", "answer") for s in head):
        first = "text"
    else:
        first = "none"
    return StrategyFacts(
        code_blocks=len(code),
        executor_errors=errors,
        think_blocks=len(think),
        switched=any(p in text for p in SWITCH_PHRASES),
        first_strategy=first,  # type: ignore[arg-type]
    )
