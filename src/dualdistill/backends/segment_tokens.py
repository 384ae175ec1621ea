"""``SegmentEncoder``: a prompt's token ids, exactly as ``tokenizer.encode(prompt)`` gives them, with
the text between added tokens (the trajectory tags) tokenized once and remembered.

A tool loop sends the same trajectory again at every tool call, longer by a completion and an
executor block. A fast tokenizer splits its input at added tokens first and tokenizes each piece on
its own, so the ids of a text are the ids of its pieces, joined: the pieces seen before (everything up
to the last tool call) come from the memo, and only the new ones are tokenized.

Guarantees: the ids equal ``tokenizer.encode(text)``. It is used only for a fast tokenizer that adds
no special tokens around a text and whose added tokens strip nothing (``lstrip``/``rstrip``/
``single_word`` all false); a text in which an added token is followed by a combining character is
encoded whole (Unicode normalization could join it to the token's ``>``: ``>`` + U+0338 is ``≯``).
Otherwise ``encode`` is the tokenizer's own. Not guaranteed: any saving for texts without added tokens.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections import OrderedDict

# characters of the pieces remembered (the most recently used are kept; a piece is the text between
# two added tokens): 16M characters, some tens of MB with their ids
MEMO_CHARS = 1 << 24


class SegmentEncoder:
    def __init__(self, tokenizer, memo_chars: int = MEMO_CHARS):
        self.tokenizer = tokenizer
        self.memo: OrderedDict[str, list[int]] = OrderedDict()
        self.memo_chars, self.chars = memo_chars, 0
        self.lock = threading.Lock()  # callers on several threads share the memo
        added = {t.content: i for i, t in tokenizer.added_tokens_decoder.items()}
        strips = any(t.lstrip or t.rstrip or t.single_word for t in tokenizer.added_tokens_decoder.values())
        wraps = tokenizer.encode("a") != tokenizer.encode("a", add_special_tokens=False)
        usable = getattr(tokenizer, "is_fast", False) and added and not strips and not wraps
        self.added = added if usable else {}
        # longest first, so a token that contains another is matched whole (the tokenizer's leftmost-longest)
        names = sorted(self.added, key=len, reverse=True)
        self.split = re.compile("(" + "|".join(map(re.escape, names)) + ")") if names else None

    def encode(self, text: str) -> list[int]:
        if self.split is None:
            return self.tokenizer.encode(text)
        parts = self.split.split(text)  # text, token, text, token, ..., text
        for i in range(1, len(parts) - 1, 2):
            after = parts[i + 1][:1]
            if after and unicodedata.combining(after):  # NFC could join it to the token's ">"
                return self.tokenizer.encode(text)
        ids: list[int] = []
        for i, part in enumerate(parts):
            if i % 2:
                ids.append(self.added[part])
            elif part:
                ids.extend(self._piece(part))
        return ids

    def _piece(self, text: str) -> list[int]:
        with self.lock:
            ids = self.memo.get(text)
            if ids is not None:
                self.memo.move_to_end(text)
                return ids
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        with self.lock:
            if text not in self.memo:
                self.memo[text] = ids
                self.chars += len(text)
            while self.chars > self.memo_chars and len(self.memo) > 1:
                old, _ = self.memo.popitem(last=False)
                self.chars -= len(old)
        return ids
