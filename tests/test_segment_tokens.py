"""SegmentEncoder: the tokenizer's own ids, with a trajectory's earlier pieces remembered."""

from __future__ import annotations

import random

import pytest
from tokenizers import AddedToken

from dualdistill.backends.segment_tokens import SegmentEncoder
from dualdistill.format.trajectory import executor_block

TAGS = ["<code>", "</code>", "<executor>", "</executor>", "<think>", "</think>", "<answer>", "</answer>"]
# text that is hard to split right: partial tags, whitespace runs, digits, Unicode (composed and not),
# and combining marks (U+0338 after ">" composes to "≯" under NFC)
ATOMS = [*TAGS, "<|endoftext|>", " ", "  ", "\n", "\n\n", "\r\n", "\t", "x", "print(", ")", "12", "3.5", "é",
         "e\u0301", ">", "<", "<code", "code>", "</", "\u0338", "\u0301", "≯", "…", "ab", " world", "'s", "中文",
         "🙂"]  # fmt: skip


@pytest.fixture
def spied(tiny_tokenizer, monkeypatch):
    """The tiny tokenizer, counting the characters it is asked to tokenize (whole prompts, pieces)."""
    seen = {"whole": 0, "pieces": 0}
    real = type(tiny_tokenizer).encode

    def encode(self, text, *args, **kwargs):
        seen["whole" if kwargs.get("add_special_tokens", True) else "pieces"] += len(text)
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tiny_tokenizer), "encode", encode)
    return tiny_tokenizer, seen


def test_random_texts_get_the_tokenizers_own_ids(tiny_tokenizer):
    rng = random.Random(0)
    encoder = SegmentEncoder(tiny_tokenizer)
    assert encoder.split is not None  # the tags are added tokens that strip nothing: pieces are used
    texts = ["".join(rng.choice(ATOMS) for _ in range(rng.randint(0, 30))) for _ in range(2000)]
    for _ in range(2):  # cold, then with every piece remembered
        assert [encoder.encode(t) for t in texts] == [tiny_tokenizer.encode(t) for t in texts]


def test_a_growing_trajectory_tokenizes_only_its_new_pieces(spied):
    tokenizer, seen = spied
    encoder = SegmentEncoder(tokenizer)
    prompt = "Problem: add 2 and 3.\n<think>\n"
    for i in range(6):
        added = f"Step {i}: try it.\n<code>\nprint({i} + 1)\n</code>\n" + executor_block(str(i + 1))
        prompt += added
        seen.update(whole=0, pieces=0)
        assert encoder.encode(prompt) == tokenizer.encode(prompt)
        assert seen["whole"] == len(prompt)  # the reference call only: the encoder never sent it whole
        # this call's pieces (its completion and output; the piece it continues is new too), not the
        # whole prompt
        assert 0 < seen["pieces"] <= len(added) + (len(prompt) - len(added) if i == 0 else 1)
    assert len(prompt) > 300


def test_an_added_token_followed_by_a_combining_mark_is_encoded_whole(spied):
    """NFC joins ">" and U+0338 into "≯", so the tag is not a tag there: split pieces would be wrong."""
    tokenizer, seen = spied
    text = "x </code>\u0338 y"
    pieces = [tokenizer.convert_tokens_to_ids("</code>")]
    pieces += tokenizer.encode("\u0338 y", add_special_tokens=False)
    assert tokenizer.encode("x ", add_special_tokens=False) + pieces != tokenizer.encode(text)
    encoder = SegmentEncoder(tokenizer)
    seen["whole"] = 0
    assert encoder.encode(text) == tokenizer.encode(text)
    assert seen["whole"] == 2 * len(text)  # the encoder's call and the reference were both whole


def test_a_tokenizer_whose_added_tokens_strip_space_is_used_whole(tiny_tokenizer):
    tokenizer = type(tiny_tokenizer).from_pretrained(tiny_tokenizer.name_or_path)
    tokenizer.add_tokens([AddedToken("<tool>", lstrip=True)])
    encoder = SegmentEncoder(tokenizer)
    assert encoder.split is None
    text = "call it  <tool> now"
    assert encoder.encode(text) == tokenizer.encode(text)


def test_the_memo_keeps_at_most_its_characters(tiny_tokenizer):
    encoder = SegmentEncoder(tiny_tokenizer, memo_chars=100)
    for i in range(50):
        text = f"piece number {i} " * 3 + "<code>" + "x = 1\n" * 3
        assert encoder.encode(text) == tiny_tokenizer.encode(text)
    assert encoder.chars == sum(map(len, encoder.memo)) <= 100
