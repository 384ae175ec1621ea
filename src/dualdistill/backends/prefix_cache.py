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
        self._table: tuple[list[int], np.ndarray, np.ndarray] | None = None  # keys, ids padded, lengths

    def lookup(self, ids: list[int]) -> tuple[Entry | None, int]:
        """The entry sharing the longest token prefix with ``ids`` and that length (< len(ids), so at
        least one token is left to compute the next-token logits from)."""
        if not self.entries or len(ids) < 2:
            return None, 0
        keys, shared = self._shared(np.asarray(ids[:-1]))
        best = int(shared.argmax())
        if not shared[best]:
            return None, 0
        self.entries.move_to_end(keys[best])  # recently useful: evict last
        return self.entries[keys[best]], int(shared[best])

    def put(self, ids: list[int], keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        if self.max_tokens <= 0 or len(ids) < 2 or len(ids) > self.max_tokens:
            return
        arr = np.asarray(ids)
        if self.entries:
            old_keys, shared = self._shared(arr)
            lengths = self._table[2]
            for key in [k for k, n, m in zip(old_keys, shared, lengths, strict=True) if n == m]:
                self._drop(key)  # superseded: the new entry extends it
        self.entries[self._next_key] = Entry(arr, keys, values)
        self._next_key += 1
        self.tokens += len(ids)
        self._table = None
        while self.tokens > self.max_tokens:
            self._drop(next(iter(self.entries)))

    def clear(self) -> None:
        self.entries.clear()
        self.tokens = 0
        self._table = None

    def _drop(self, key: int) -> None:
        self.tokens -= len(self.entries.pop(key).ids)
        self._table = None

    def _shared(self, query: np.ndarray) -> tuple[list[int], np.ndarray]:
        """Every entry's key and the length of the prefix it shares with ``query``: one comparison of
        a padded table (rebuilt after a change) instead of one per entry."""
        if self._table is None:
            keys = list(self.entries)
            lengths = np.array([len(self.entries[k].ids) for k in keys])
            table = np.full((len(keys), int(lengths.max())), -1, dtype=np.int64)
            for row, k in enumerate(keys):
                table[row, : lengths[row]] = self.entries[k].ids
            self._table = (keys, table, lengths)
        keys, table, lengths = self._table
        return keys, shared_prefix(table, lengths, query)


def shared_prefix(table: np.ndarray, lengths: np.ndarray, query: np.ndarray) -> np.ndarray:
    """For each row of ``table`` (token ids, valid up to ``lengths``), how many leading tokens it
    shares with ``query``: one comparison for all rows (the engine's slots use it too)."""
    width = min(len(query), table.shape[1])
    same = table[:, :width] == query[None, :width]
    first_diff = np.where(same.all(1), width, same.argmin(1))
    return np.minimum(first_diff, lengths)
