"""Prefix reuse for ``HFBackend``: keep the KV cache of finished rows for the continuation that follows.

A tool-integrated trajectory comes back as ``prompt + text + executor block``. Without reuse the
backend would read that whole context again at every tool call; with it, only the tokens after the
longest common token prefix with a kept row are computed. The match is on token ids (the longest
common prefix, not only whole entries), so a continuation whose text re-tokenizes a little
differently still reuses everything up to the first differing token.

Guarantees: reused keys/values are those the model computed for exactly the same token ids at the
same positions, so results equal a full prefill up to float rounding. Memory is bounded by
``max_tokens`` cached positions (oldest entries go first); an entry is dropped as soon as a longer
entry extending it is stored. Not guaranteed: a hit for prompts shared only through their text.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(eq=False)
class Entry:
    ids: np.ndarray  # token ids whose keys/values are kept
    keys: list[torch.Tensor]  # per layer, (heads, len(ids), head_dim)
    values: list[torch.Tensor]


class PrefixCache:
    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens
        self.entries: OrderedDict[int, Entry] = OrderedDict()
        self.tokens = 0
        self._next_key = 0

    def lookup(self, ids: list[int]) -> tuple[Entry | None, int]:
        """The entry sharing the longest token prefix with ``ids`` and that length (< len(ids), so at
        least one token is left to compute the next-token logits from)."""
        if not self.entries or len(ids) < 2:
            return None, 0
        query = np.asarray(ids[:-1])
        best, best_n = None, 0
        for key, entry in self.entries.items():
            n = _common_prefix(query, entry.ids)
            if n > best_n:
                best, best_n = key, n
        if best is None:
            return None, 0
        self.entries.move_to_end(best)  # recently useful: evict last
        return self.entries[best], best_n

    def put(self, ids: list[int], keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        if self.max_tokens <= 0 or len(ids) < 2 or len(ids) > self.max_tokens:
            return
        arr = np.asarray(ids)
        for key in [k for k, e in self.entries.items() if _common_prefix(arr, e.ids) == len(e.ids)]:
            self._drop(key)  # superseded: the new entry extends it
        self.entries[self._next_key] = Entry(arr, keys, values)
        self._next_key += 1
        self.tokens += len(ids)
        while self.tokens > self.max_tokens:
            self._drop(next(iter(self.entries)))

    def clear(self) -> None:
        self.entries.clear()
        self.tokens = 0

    def _drop(self, key: int) -> None:
        self.tokens -= len(self.entries.pop(key).ids)


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n
