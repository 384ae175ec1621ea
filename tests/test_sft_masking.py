"""Loss-mask rules on crafted trajectories, with real BPE tokenizers (tags as added tokens, and not)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualdistill.core.config import ConfigError, load_config
from dualdistill.core.records import DataError
from dualdistill.format.prompts import build_prompt
from dualdistill.format.trajectory import ALSO_CODE, CODE_TO_TEXT, executor_block
from dualdistill.sft.masking import (
    IGNORE,
    MaskConfig,
    complement,
    encode,
    masked_spans,
    trained_text_spans,
)
from dualdistill.sft.train import SFTConfig, load_examples

PROMPT = build_prompt("Compute 12 * 34 exactly.", template="compact")
ERR = "Traceback (most recent call last):\n  File x\nZeroDivisionError: division by zero"
TRAJ = (
    "<think>plan the product</think>\n<code>\nprint(12/0)\n</code>"
    + executor_block(ERR)
    + "<code>\nprint(12*34)\n</code>"
    + executor_block("408")
    + "<answer>\\boxed{408}</answer>\n"
    + CODE_TO_TEXT
    + "\n<think>12*34 = 408</think>\n<answer>\\boxed{408}</answer>"
)


def _corpus() -> list[str]:
    return [TRAJ, PROMPT + TRAJ, "print(1)\n</code>\n<executor>\n1\n</executor>\nWait, so"] * 30


@pytest.fixture(scope="module")
def straddling_tokenizer():
    """A byte-level BPE trained WITHOUT regex pre-splitting or added tag tokens: merges cross tag text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def _covered(ex) -> np.ndarray:
    """Per character of the response: is it inside a trained token?"""
    cov = np.zeros(len(ex.full_text), dtype=bool)
    for (s, e), lab in zip(ex.offsets, ex.labels, strict=True):
        if lab != IGNORE:
            cov[s:e] = True
    return cov[ex.prompt_chars :]


def _not_trained(ex, sl: slice, strict: bool) -> bool:
    """No token lying wholly inside response chars ``sl`` is trained; with ``strict``, none touching it.

    ``strict`` holds for the tokenizer with tags as added tokens; with the straddling one a token may
    cover a masked character and a trained one, and the boundary rule trains it (see masking.py).
    """
    lo, hi = sl.start + ex.prompt_chars, sl.stop + ex.prompt_chars
    for (s, e), lab in zip(ex.offsets, ex.labels, strict=True):
        hit = (s < hi and e > lo) if strict else (lo <= s and e <= hi and e > s)
        if hit and lab != IGNORE:
            return False
    return True


def _trained_text(ex) -> str:
    return "".join(t for _, _, t in trained_text_spans(ex))


def _span(sub: str, nth: int = 0) -> slice:
    at = -1
    for _ in range(nth + 1):
        at = TRAJ.index(sub, at + 1)
    return slice(at, at + len(sub))


class Tok:
    """A tokenizer under test, and whether no token can straddle a mask boundary (tags are added tokens)."""

    def __init__(self, tokenizer, strict: bool):
        self.tokenizer, self.strict = tokenizer, strict
        self.eos_token_id = tokenizer.eos_token_id

    def __call__(self, *args, **kwargs):
        return self.tokenizer(*args, **kwargs)

    @property
    def is_fast(self) -> bool:
        return self.tokenizer.is_fast


@pytest.fixture(params=["added_tags", "straddling"])
def tok(request, tiny_tokenizer, straddling_tokenizer):
    if request.param == "added_tags":
        return Tok(tiny_tokenizer, strict=True)
    return Tok(straddling_tokenizer, strict=False)


def test_straddling_tokenizer_really_straddles(straddling_tokenizer):
    ex = encode(PROMPT, TRAJ, straddling_tokenizer, MaskConfig())
    spans = masked_spans(TRAJ, MaskConfig())
    edges = {p for s, e in spans for p in (s, e)}
    shift = ex.prompt_chars
    straddlers = [
        (s, e) for s, e in ex.offsets[ex.prompt_tokens :] if any(s - shift < p < e - shift for p in edges)
    ]
    assert straddlers, "the test tokenizer should merge across mask boundaries"
    tags = [(s, e) for s, e in ex.offsets if "<" in ex.full_text[s:e] and len(ex.full_text[s:e]) > 9]
    assert tags, "some token should hold a tag together with other text"


def test_prompt_rule(tok):
    ex = encode(PROMPT, TRAJ, tok, MaskConfig())
    assert all(lab == IGNORE for lab in ex.labels[: ex.prompt_tokens])
    ex2 = encode(PROMPT, TRAJ, tok, MaskConfig(prompt=False))
    assert ex2.labels[: ex2.prompt_tokens] == ex2.input_ids[: ex2.prompt_tokens]
    # The prompt is tokenized as inference tokenizes it: no token straddles the boundary.
    assert ex.input_ids[: ex.prompt_tokens] == tok(PROMPT)["input_ids"]


def test_executor_rule(tok):
    cfg = MaskConfig(first_attempt=False, error_code=False)
    ex = encode(PROMPT, TRAJ, tok, cfg)
    cov = _covered(ex)
    out = _span("408\n</executor>")
    assert _not_trained(ex, slice(out.start - 12, out.stop), tok.strict), "executor output is not a target"
    assert _not_trained(ex, _span(ERR), tok.strict)
    close = _span("</code>", 1)
    assert cov[close].all(), "</code> is trained: the model must learn to stop there"
    assert cov[_span("<answer>")].all()
    off = _covered(
        encode(PROMPT, TRAJ, tok, MaskConfig(executor=False, first_attempt=False, error_code=False))
    )
    assert off[out.start : out.start + 3].all()


def test_executor_mask_is_exactly_the_injected_block():
    spans = masked_spans(TRAJ, MaskConfig(first_attempt=False, error_code=False))
    block = executor_block("408")
    at = TRAJ.index(block)
    assert (at, at + len(block)) in spans


def test_error_code_rule(tok):
    cfg = MaskConfig(first_attempt=False)
    ex = encode(PROMPT, TRAJ, tok, cfg)
    cov = _covered(ex)
    assert _not_trained(ex, _span("<code>\nprint(12/0)\n</code>"), tok.strict), "erroring code is no target"
    assert cov[_span("print(12*34)")].all(), "code that ran fine is a target"
    assert cov[_span("plan the product")].all()
    off = _covered(encode(PROMPT, TRAJ, tok, MaskConfig(first_attempt=False, error_code=False)))
    assert off[_span("print(12/0)")].all()


def test_first_attempt_rule(tok):
    ex = encode(PROMPT, TRAJ, tok, MaskConfig())
    cov = _covered(ex)
    cut = TRAJ.index(CODE_TO_TEXT)
    assert _not_trained(ex, slice(0, cut), tok.strict), "the failed first attempt is context, not a target"
    assert cov[cut + 1 : cut + len(CODE_TO_TEXT)].all(), "the transition sentence is trained"
    assert _trained_text(ex).strip().endswith("</answer>")
    assert cov[_span("12*34 = 408")].all()
    off = _covered(encode(PROMPT, TRAJ, tok, MaskConfig(first_attempt=False)))
    assert off[_span("plan the product")].all()


def test_any_rule_also_masks_a_right_first_attempt(tiny_tokenizer):
    text = "<think>a</think>\n<answer>\\boxed{1}</answer>\n" + ALSO_CODE + "\n<answer>\\boxed{1}</answer>"
    ex = encode(PROMPT, text, tiny_tokenizer, MaskConfig(first_attempt_until="any"))
    assert _trained_text(ex).startswith(ALSO_CODE)


def test_the_default_switch_rule_trains_a_right_first_attempt_and_masks_a_failed_one(tiny_tokenizer):
    switch_only = MaskConfig()
    assert switch_only.first_attempt_until == "switch"  # the released masker's rule
    right = "<think>a</think>\n<answer>\\boxed{1}</answer>\n" + ALSO_CODE + "\n<answer>\\boxed{1}</answer>"
    assert _trained_text(encode(PROMPT, right, tiny_tokenizer, switch_only)).startswith("<think>a</think>")
    wrong = "<think>b</think>\n" + CODE_TO_TEXT + "\n<think>a</think>\n" + ALSO_CODE + "\n<answer>x</answer>"
    trained = _trained_text(encode(PROMPT, wrong, tiny_tokenizer, switch_only))
    assert trained.startswith(CODE_TO_TEXT) and ALSO_CODE in trained and "<think>b" not in trained


def test_eos_rule(tok):
    eos = tok.eos_token_id
    ex = encode(PROMPT, TRAJ, tok, MaskConfig())
    assert ex.input_ids[-1] == eos and ex.labels[-1] == eos, "EOS is trained after </answer>"
    assert encode(PROMPT, TRAJ, tok, MaskConfig(train_eos=False)).labels[-1] == IGNORE
    cut = TRAJ[: TRAJ.rindex("<answer>")]
    assert encode(PROMPT, cut, tok, MaskConfig()).labels[-1] == IGNORE, "no EOS target without an answer"


def test_boundary_rule_matches_char_level_reference(tok):
    """A token is trained iff it overlaps a trained character (brute force over characters)."""
    for cfg in (MaskConfig(), MaskConfig(first_attempt=False), MaskConfig(prompt=False, executor=False)):
        ex = encode(PROMPT, TRAJ, tok, cfg)
        char_ok = np.zeros(len(ex.full_text), dtype=bool)
        for s, e in complement(masked_spans(TRAJ, cfg), len(TRAJ)):
            char_ok[ex.prompt_chars + s : ex.prompt_chars + e] = True
        if not cfg.prompt:
            char_ok[: ex.prompt_chars] = True
        for (s, e), lab, tid in zip(ex.offsets[:-1], ex.labels[:-1], ex.input_ids[:-1], strict=True):
            assert (lab != IGNORE) == bool(char_ok[s:e].any()), ex.full_text[s:e]
            assert lab in (IGNORE, tid)


_PIECES = st.sampled_from(
    [
        "<think>x y</think>\n",
        "<code>\nprint(1)\n</code>" + executor_block("1"),
        "<code>\n1/0\n</code>" + executor_block(ERR),
        CODE_TO_TEXT + "\n",
        "so ",
        "<answer>\\boxed{1}</answer>",
    ]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_PIECES, min_size=1, max_size=8))
def test_masks_property(straddling_tokenizer, pieces):
    text = "".join(pieces)
    ex = encode(PROMPT, text, straddling_tokenizer, MaskConfig())
    cov = _covered(ex)
    for s, e in complement(masked_spans(text, MaskConfig()), len(text)):
        assert cov[s:e].all(), "every trained character lies in a trained token"
    assert len(ex.input_ids) == len(ex.labels) == len(ex.offsets)
    assert (ex.labels[-1] != IGNORE) == text.endswith("</answer>")


def _write(tmp_path, records) -> str:
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(p)


def test_length_policy_counts(tmp_path, tiny_tokenizer):
    long = {"problem": "q", "text": TRAJ * 5, "case": "wrong-right"}
    short = {"problem": "q", "text": "<think>a</think>\n<answer>\\boxed{1}</answer>", "case": "right"}
    path = _write(tmp_path, [long, short, long])
    n_long = len(encode(build_prompt("q"), long["text"], tiny_tokenizer, MaskConfig()).input_ids)
    cfg = SFTConfig(max_length=n_long - 5)
    rows, stats = load_examples(cfg, path, tiny_tokenizer)
    assert (stats.kept, stats.dropped_too_long, stats.truncated) == (1, 2, 0)
    cfg = SFTConfig(max_length=n_long - 5, truncation="truncate")
    rows, stats = load_examples(cfg, path, tiny_tokenizer)
    assert (stats.kept, stats.dropped_too_long, stats.truncated) == (3, 0, 2)
    assert max(len(r["input_ids"]) for r in rows) == n_long - 5
    assert rows[0]["input_ids"][-1] != tiny_tokenizer.eos_token_id, "a truncated sequence gets no EOS"


def test_no_target_examples_are_dropped(tmp_path, tiny_tokenizer):
    # An erroring code block alone: code masked (error), executor masked, no answer so no EOS target.
    empty = {"problem": "q", "text": "<code>\n1/0\n</code>" + executor_block(ERR)}
    good = {"problem": "q", "text": "<code>\n1\n</code>" + executor_block("1")}
    rows, stats = load_examples(SFTConfig(), _write(tmp_path, [empty, good]), tiny_tokenizer)
    assert (stats.kept, stats.dropped_no_target) == (1, 1)
    assert stats.trained_tokens == sum(x != IGNORE for x in rows[0]["labels"]) > 0
    with pytest.raises(DataError, match="no usable examples"):
        load_examples(SFTConfig(), _write(tmp_path, [empty]), tiny_tokenizer)


def test_bad_records_name_file_and_line(tmp_path, tiny_tokenizer):
    path = _write(tmp_path, [{"problem": "q", "text": "<answer>1</answer>"}, {"problem": "q"}])
    with pytest.raises(DataError, match=r"d\.jsonl:2: missing or empty string field 'text'"):
        load_examples(SFTConfig(), path, tiny_tokenizer)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"masking\.exectuor"):
        load_config(SFTConfig, overrides=["masking.exectuor=false"])
    with pytest.raises(ConfigError, match="truncation"):
        load_config(SFTConfig, overrides=["truncation=cut"])
