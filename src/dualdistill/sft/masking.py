"""Loss masks for SFT on composed trajectories: labels from character spans, in linear time.

A training sequence is ``prompt + text + EOS``. The prompt is tokenized on its own (with the tokenizer's
default special tokens, exactly as inference tokenizes it) and the response ``text`` on its own, so no
token straddles the prompt/response boundary and the student is trained on the prompt tokens it is later
asked with. The response is parsed once with ``format.trajectory.parse`` into character spans; each token's
character offsets (fast tokenizers' offset mapping) are then looked up against the masked spans with one
vectorised binary search, so the cost is linear in the length (no per-token decoding).

Rules (each switchable in ``MaskConfig``; masked = label -100):

- ``prompt``: every prompt token.
- ``executor``: every injected executor block. The agent loop stops at ``</code>`` and injects
  ``format.trajectory.executor_block(output)`` = ``"\\n<executor>\\n…\\n</executor>\\n"``, so what is masked is
  exactly what the loop injects: the whitespace between ``</code>`` and ``<executor>``, both executor tags,
  the output, and one newline after ``</executor>``. ``</code>`` itself is trained: the model must learn to
  stop there.
- ``error_code``: a ``<code>…</code>`` block (tags included) whose executor output is an error
  (``format.trajectory.is_executor_error``). The text around it stays trained.
- ``first_attempt``: everything in the response before the first wrong-to-right sentence
  (``format.trajectory.WRONG_TO_RIGHT``: the two of the paper and the released masker's third, "the code may be
  incorrect"). The sentence itself IS trained: emitting it after a failed attempt is the behaviour
  composition is meant to teach. By default (``first_attempt_until: switch``) this is the released rule
  (``sft/dataloader.py``: its ``turn_over_words`` hold no "we can also use ... to verify" sentence), so
  the right first attempt of a right-right composition, and a self-distilled student's own kept solution
  before "we can also use text-reasoning", are trained. ``first_attempt_until: any`` also masks before an
  "also ... verify" sentence (``format.trajectory.SWITCH_PHRASES``). A response without one keeps its text.
- ``train_eos``: the appended EOS token is trained when the response ends with ``</answer>`` (trailing
  whitespace allowed), as in the reference; otherwise it is masked, so incomplete trajectories never teach
  the model to stop.

Boundary rule: a token is trained iff its character span overlaps at least one trained character. So a
target character is never dropped from the loss (a token merging ``</code>`` with the injected ``"\\n"``
is trained, and so the model still learns to emit ``</code>``); the price is that masked characters sharing
a token with a target are trained. With Qwen-style pre-tokenization that is a newline or a tag bracket;
with a tokenizer whose merges span whole blocks it can be more (``dualdistill view`` shows every token).
Tokens with an empty offset span take the state of the token before.

Length: sequences longer than ``max_length`` tokens are dropped or truncated (keeping the start; the EOS
is then not appended), and both are counted in ``MaskStats``. Examples left with no trained token are
dropped and counted.

Not guaranteed: that the tokens of an injected executor block match how a particular inference backend
re-tokenizes text after injection (backends may merge across the boundary); slow (Python) tokenizers
without an offset mapping are refused.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from dualdistill.format.examples import SFTExample
from dualdistill.format.prompts import PromptTemplate, build_prompt
from dualdistill.format.trajectory import (
    SWITCH_PHRASES,
    WRONG_TO_RIGHT,
    Segment,
    first_attempt,
    is_executor_error,
    parse,
)

IGNORE = -100


@dataclass
class MaskConfig:
    """Which parts of a sequence are masked from the loss (True = masked)."""

    prompt: bool = True
    executor: bool = True
    error_code: bool = True
    first_attempt: bool = True
    # What ends the masked first attempt. "switch": only a wrong-to-right sentence, as the released
    # masker and the paper's text do (the loss skips the *failed* first attempt). "any": also an
    # "also ... verify" sentence, so a right first attempt is masked too.
    first_attempt_until: Literal["any", "switch"] = "switch"
    train_eos: bool = True  # train EOS after a final </answer>


@dataclass
class MaskedExample:
    """One tokenized sequence with its labels. ``offsets`` index ``full_text`` (= prompt + text)."""

    input_ids: list[int]
    labels: list[int]
    offsets: list[tuple[int, int]]
    full_text: str
    prompt_chars: int
    prompt_tokens: int
    truncated: bool = False

    @property
    def n_trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


@dataclass
class MaskStats:
    """Counts over a dataset; reported by training and by the inspection CLI."""

    examples: int = 0
    kept: int = 0
    dropped_too_long: int = 0
    truncated: int = 0
    dropped_no_target: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    per_case: dict[str, int] = field(default_factory=dict)


def _executor_spans(segments: list[Segment], text: str) -> list[tuple[int, int]]:
    spans = []
    for i, seg in enumerate(segments):
        if seg.kind != "executor":
            continue
        start = seg.start
        prev = segments[i - 1] if i > 0 else None
        if i > 1 and prev.kind == "text" and not prev.text.strip() and segments[i - 2].kind == "code":
            start = prev.start  # the injected leading whitespace
        end = seg.end + (1 if seg.closed and text[seg.end : seg.end + 1] == "\n" else 0)
        spans.append((start, end))
    return spans


def _error_code_spans(segments: list[Segment]) -> list[tuple[int, int]]:
    spans = []
    last_code: Segment | None = None
    for seg in segments:
        if seg.kind == "code":
            last_code = seg
        elif seg.kind == "executor":
            if last_code is not None and is_executor_error(seg.body):
                spans.append((last_code.start, last_code.end))
            last_code = None
        elif seg.kind != "text" or seg.text.strip():
            last_code = None  # an executor belongs only to the code block right before it
    return spans


def masked_spans(
    text: str, config: MaskConfig, *, segments: list[Segment] | None = None
) -> list[tuple[int, int]]:
    """Sorted, merged character spans of the response ``text`` that are masked from the loss."""
    segments = parse(text) if segments is None else segments
    spans: list[tuple[int, int]] = []
    if config.executor:
        spans += _executor_spans(segments, text)
    if config.error_code:
        spans += _error_code_spans(segments)
    if config.first_attempt:
        phrases = WRONG_TO_RIGHT if config.first_attempt_until == "switch" else SWITCH_PHRASES
        cut = len(first_attempt(text, phrases))
        if 0 < cut < len(text):
            spans.append((0, cut))
    return _merge(spans)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(x for x in spans if x[1] > x[0]):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def complement(spans: list[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """The spans of ``[0, length)`` not covered by the sorted, merged ``spans``."""
    out, pos = [], 0
    for s, e in spans:
        if s > pos:
            out.append((pos, s))
        pos = max(pos, e)
    if pos < length:
        out.append((pos, length))
    return out


def trained_tokens(offsets: np.ndarray, trained: list[tuple[int, int]]) -> np.ndarray:
    """Boolean per token: does its ``[start, end)`` overlap a trained span? O(n log m), vectorised."""
    n = len(offsets)
    if n == 0:
        return np.zeros(0, dtype=bool)
    if not trained:
        return np.zeros(n, dtype=bool)
    starts = np.fromiter((s for s, _ in trained), dtype=np.int64, count=len(trained))
    ends = np.fromiter((e for _, e in trained), dtype=np.int64, count=len(trained))
    tok_s, tok_e = offsets[:, 0], offsets[:, 1]
    idx = np.searchsorted(ends, tok_s, side="right")  # first trained span ending after the token starts
    safe = np.minimum(idx, len(trained) - 1)
    out = (idx < len(trained)) & (starts[safe] < tok_e)
    empty = tok_e <= tok_s
    if empty.any():  # empty-span tokens copy the token before them (the first one is masked)
        for i in np.flatnonzero(empty):
            out[i] = out[i - 1] if i > 0 else False
    return out


def labels_from_offsets(
    input_ids: list[int], offsets: list[tuple[int, int]], text: str, config: MaskConfig
) -> list[int]:
    """Labels for the response tokens alone (offsets index ``text``); the masking step the bench times."""
    spans = complement(masked_spans(text, config), len(text))
    # fromiter over the flattened pairs is ~2x faster than asarray on a list of tuples
    flat = np.fromiter(itertools.chain.from_iterable(offsets), dtype=np.int64, count=2 * len(offsets))
    keep = trained_tokens(flat.reshape(-1, 2), spans)
    ids = np.fromiter(input_ids, dtype=np.int64, count=len(input_ids))
    return np.where(keep, ids, IGNORE).tolist()


def ends_with_answer(text: str) -> bool:
    return text.rstrip().endswith("</answer>")


def max_token_chars(tokenizer) -> int:
    """The most characters one token of ``tokenizer`` spans (its longest vocabulary entry; a byte-level
    entry has a character per byte, never fewer than the text it stands for). Cached on the tokenizer."""
    cached = getattr(tokenizer, "_dd_max_token_chars", None)
    if cached is None:
        cached = max((len(t) for t in tokenizer.get_vocab()), default=1)
        tokenizer._dd_max_token_chars = cached
    return cached


def encode(
    prompt: str,
    text: str,
    tokenizer,
    config: MaskConfig,
    *,
    max_length: int | None = None,
    truncation: Literal["drop", "truncate"] = "drop",
) -> MaskedExample | None:
    """Tokenize ``prompt + text + EOS`` and label it. None when dropped for length.

    Memory stays bounded by ``max_length``, not by the record: a text that cannot fit (more characters
    than ``max_length`` tokens can hold) is dropped, or cut, before it is tokenized.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("loss masking needs a fast tokenizer (offset mapping); got a slow one")
    if max_length is not None:
        # Each token covers at most max_token_chars(tokenizer) characters, so more than this many
        # characters always makes more than max_length tokens (2x and a margin for the cut's edge).
        room = 2 * max_length * max_token_chars(tokenizer) + 1024
        if len(prompt) + len(text) > room:
            if truncation == "drop":
                return None
            text = text[: max(0, room - len(prompt))]
    p = tokenizer(prompt, return_offsets_mapping=True)
    r = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    p_ids, r_ids = list(p["input_ids"]), list(r["input_ids"])
    r_labels = labels_from_offsets(r_ids, r["offset_mapping"], text, config)
    p_labels = [IGNORE] * len(p_ids) if config.prompt else list(p_ids)
    shift = len(prompt)
    offsets = [tuple(o) for o in p["offset_mapping"]] + [
        (s + shift, e + shift) for s, e in r["offset_mapping"]
    ]
    eos = tokenizer.eos_token_id
    ids = p_ids + r_ids + [eos]
    labels = p_labels + r_labels + [eos if config.train_eos and ends_with_answer(text) else IGNORE]
    offsets.append((shift + len(text), shift + len(text)))
    truncated = False
    if max_length is not None and len(ids) > max_length:
        if truncation == "drop":
            return None
        ids, labels, offsets, truncated = ids[:max_length], labels[:max_length], offsets[:max_length], True
    return MaskedExample(ids, labels, offsets, prompt + text, len(prompt), len(p_ids), truncated)


def trained_text_spans(example: MaskedExample) -> list[tuple[int, int, str]]:
    """Runs of consecutive trained tokens as ``(start, end, text)`` character spans of ``full_text``."""
    out: list[tuple[int, int, str]] = []
    run: list[int] | None = None
    for (s, e), lab in zip(example.offsets, example.labels, strict=True):
        if lab == IGNORE:
            run = None
            continue
        if e <= s:
            continue  # the appended EOS (reported apart) or an empty-span token
        if run is not None and s <= run[1]:
            run[1] = max(run[1], e)
            out[-1] = (run[0], run[1], "")
        else:
            run = [s, e]
            out.append((s, e, ""))
    return [(s, e, example.full_text[s:e]) for s, e, _ in out]


def encode_example(
    example: SFTExample,
    tokenizer,
    mask: MaskConfig,
    *,
    template: PromptTemplate,
    tools: bool,
    max_length: int | None,
    truncation: Literal["drop", "truncate"],
) -> MaskedExample | None:
    """One SFT example as training sees it: its prompt, built with the tokenizer (``template: chat``
    needs it), then ``encode``. The one path shared by train, view and inspect-masks."""
    prompt = build_prompt(
        example.problem, template=template, tools=tools, tokenizer=tokenizer, purpose="train"
    )
    return encode(prompt, example.text, tokenizer, mask, max_length=max_length, truncation=truncation)
