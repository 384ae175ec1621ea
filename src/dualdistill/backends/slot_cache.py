"""``SlotCache``: the KV cache of ``HFBackend``'s engine, one fixed row ("slot") per sequence, and the
packed forward pass that reads and writes it.

Each slot holds one sequence's keys and values from position 0 up to its own length, in buffers of
shape ``(slots, kv_heads, capacity, head_dim)`` per layer, allocated once and grown (never copied per
step). A row that finishes leaves without copying anyone else's cache, and a row that stopped for a
tool call keeps its keys/values where they are until its continuation arrives.

A forward pass is *packed*: the tokens of every row taking part (one sampled token for a decoding row,
a prompt or a tool call's continuation for another) form one sequence of ``N`` tokens, so the model's
linear layers see no padding. Attention (``slot_attention``, registered with transformers'
``AttentionInterface`` and switched on by ``packed``) runs per group: the rows that feed one token
attend over the first ``hi`` slots as views of the buffers (no copy; slots not decoding attend to
position 0 only), and the rows that feed several tokens are gathered into one small padded batch with
a causal mask. Each new key/value is written at its row's next position before attention reads it.

Guarantees: a slot's positions below its length are only written by its own tokens (or a copy of
another slot's prefix, ``copy_prefix``/``load``); attention never reads a position at or past a row's
new length. Not guaranteed: sliding-window attention (every position is kept and attended); models
whose attention does not go through ``AttentionInterface``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dualdistill.backends.prefix_cache import shared_prefix

ATTENTION = "dualdistill_slots"


@dataclass
class Pass:
    """One packed forward pass: what ``SlotCache.update`` writes and ``slot_attention`` reads.
    It travels to the attention function as the model's ``attention_mask``."""

    ids: torch.Tensor  # (1, N) the input ids
    slot: torch.Tensor  # (N,) slot of every token
    at: torch.Tensor  # (N,) position it is written at
    position_ids: torch.Tensor  # (1, N)
    last: torch.Tensor  # (R,) index of each row's last token: its logits give the next token
    one_token: torch.Tensor  # (Bd,) index of the tokens of rows that feed one token
    one_slot: torch.Tensor  # (Bd,) their slots
    one_hi: int  # their attention runs over slots [0, one_hi)
    one_kv: int  # positions they attend over
    one_mask: torch.Tensor | None  # (one_hi, 1, 1, one_kv) 0: attend, -inf: not; None: every row sees all
    one_dense: bool  # the rows feeding one token are exactly slots 0..one_hi-1, in order
    many_slot: torch.Tensor  # (Bm,) slots of rows that feed several tokens
    many_index: torch.Tensor  # (Bm, Lm) token index of each query (padding repeats the row's first)
    many_real: torch.Tensor  # (Bm, Lm) False for padding
    many_mask: torch.Tensor | None  # (Bm, 1, Lm, kv) 0: attend, -inf: not


class SlotCache:
    """Per-slot keys/values for a transformers model: ``plan`` a pass, then call the model with
    ``attention_mask=pass``, ``position_ids=pass.position_ids``, ``cache=self`` under ``packed(model)``."""

    def __init__(self, slots: int, device: torch.device | str, dtype: torch.dtype = torch.float32):
        self.slots = slots
        self.device = torch.device(device)
        self.dtype = dtype  # the model's: the masks are added to its attention scores
        self.lens = np.zeros(slots, dtype=np.int64)  # positions holding the slot's sequence
        self.tokens = np.zeros((slots, 0), dtype=np.int64)  # the token ids of those positions
        self.keys: list[torch.Tensor] = []  # per layer: (slots, kv_heads, capacity, head_dim)
        self.values: list[torch.Tensor] = []
        self.capacity = 0
        self._pass: Pass | None = None

    def plan(self, feeds: list[tuple[int, list[int]]]) -> Pass:
        """A pass in which each ``(slot, tokens)`` feeds its next tokens (at least one), in this
        order; the slots' lengths grow at once. Returns the pass; its input ids are ``Pass.ids``."""
        dev = self.device
        slots = np.array([s for s, _ in feeds], dtype=np.int64)
        n = np.array([len(t) for _, t in feeds], dtype=np.int64)
        ids = np.fromiter((t for _, toks in feeds for t in toks), dtype=np.int64, count=int(n.sum()))
        lens = self.lens[slots]
        start = np.cumsum(n) - n
        token_slot = np.repeat(slots, n)
        at = np.repeat(lens, n) + np.arange(len(ids)) - np.repeat(start, n)
        self.lens[slots] += n
        self.reserve(int(self.lens[slots].max()))
        self.tokens[token_slot, at] = ids
        one, many = n == 1, n > 1
        one_slot = slots[one]
        one_hi = int(one_slot.max()) + 1 if len(one_slot) else 0
        one_mask, one_kv = None, 0
        if one_hi:
            visible = np.ones(one_hi, dtype=np.int64)  # slots not decoding: position 0 only
            visible[one_slot] = self.lens[one_slot]
            one_kv = int(visible.max())
            if (visible != one_kv).any():  # else every row sees every position: no mask needed
                one_mask = self._additive(np.arange(one_kv)[None, :] < visible[:, None])[:, None, None]
        width = int(n[many].max()) if many.any() else 0
        many_index = np.repeat(start[many][:, None], width, axis=1)
        within = np.arange(width)[None, :]
        many_real = within < n[many][:, None]
        many_index = np.where(many_real, many_index + within, many_index)
        query_at = np.where(many_real, lens[many][:, None] + within, 0)
        many_mask = None
        if many.any():
            kv = int(self.lens[slots[many]].max())
            many_mask = self._additive(np.arange(kv)[None, None, :] <= query_at[:, :, None])[:, None]
        self._pass = Pass(
            ids=torch.from_numpy(ids)[None].to(dev), slot=torch.from_numpy(token_slot).to(dev),
            at=torch.from_numpy(at).to(dev), position_ids=torch.from_numpy(at)[None].to(dev),
            last=torch.from_numpy(start + n - 1).to(dev),
            one_token=torch.from_numpy(start[one]).to(dev), one_slot=torch.from_numpy(one_slot).to(dev),
            one_hi=one_hi, one_kv=one_kv, one_mask=one_mask, one_dense=bool((one_slot == np.arange(one_hi)).all())
            if len(one_slot) == one_hi else False,
            many_slot=torch.from_numpy(slots[many]).to(dev), many_index=torch.from_numpy(many_index).to(dev),
            many_real=torch.from_numpy(many_real).to(dev), many_mask=many_mask,
        )  # fmt: skip
        return self._pass

    def _additive(self, allowed: np.ndarray) -> torch.Tensor:
        """The mask as attention adds it to the scores: 0 where allowed, -inf elsewhere. Made once per
        pass: SDPA would otherwise convert a boolean mask in every layer (the same values; measured in
        docs/BENCHMARKS.md, "Masks made once a pass")."""
        mask = torch.from_numpy(np.where(allowed, np.float32(0), np.float32(-np.inf)))
        return mask.to(device=self.device, dtype=self.dtype)

    def held(self, slot: int) -> np.ndarray:
        """The token ids whose keys/values ``slot`` holds."""
        return self.tokens[slot, : self.lens[slot]]

    def common_prefix(self, query: np.ndarray) -> tuple[int | None, int]:
        """The slot whose held tokens share the longest prefix with ``query``, and that length."""
        cands = np.flatnonzero(self.lens > 0)
        if not len(cands) or not len(query):
            return None, 0
        shared = shared_prefix(self.tokens[cands], self.lens[cands], query)
        best = int(shared.argmax())
        return (int(cands[best]), int(shared[best])) if shared[best] else (None, 0)

    # -- the cache interface the model calls ---------------------------------------------------------
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Write the pass's new keys/values ``(1, kv_heads, N, head_dim)``; return the whole buffers
        (``slot_attention`` knows which parts to read)."""
        if layer_idx == len(self.keys):
            self._allocate(key_states)
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        p = self._pass
        keys[p.slot, :, p.at] = key_states[0].transpose(0, 1).to(keys.dtype)
        values[p.slot, :, p.at] = value_states[0].transpose(0, 1).to(values.dtype)
        return keys, values

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # positions are always passed explicitly

    # -- moving sequences ----------------------------------------------------------------------------
    def copy_prefix(self, src: int, dst: int, n: int) -> None:
        """Make slot ``dst`` hold the first ``n`` positions of slot ``src``."""
        for buf in (*self.keys, *self.values):
            buf[dst, :, :n] = buf[src, :, :n]
        self.tokens[dst, :n] = self.tokens[src, :n]
        self.lens[dst] = n

    def export(self, slot: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Copies of the slot's keys/values, per layer ``(kv_heads, len, head_dim)``."""
        n = self.lens[slot]
        return [k[slot, :, :n].clone() for k in self.keys], [v[slot, :, :n].clone() for v in self.values]

    def load(
        self, slot: int, ids: np.ndarray, keys: list[torch.Tensor], values: list[torch.Tensor], n: int
    ) -> None:
        """Put the first ``n`` positions of exported keys/values (of token ``ids``) into ``slot``."""
        self.reserve(n)
        if not self.keys:
            for k in keys:
                self._allocate(k[None])
        for layer, (k, v) in enumerate(zip(keys, values, strict=True)):
            self.keys[layer][slot, :, :n] = k[:, :n]
            self.values[layer][slot, :, :n] = v[:, :n]
        self.tokens[slot, :n] = ids[:n]
        self.lens[slot] = n

    def reserve(self, positions: int) -> None:
        """Grow every buffer to at least ``positions`` (by half again at least, so growth is rare)."""
        if positions <= self.capacity:
            return
        new = max(positions, self.capacity * 3 // 2, 256)
        for bufs in (self.keys, self.values):
            for i, buf in enumerate(bufs):
                grown = buf.new_empty((buf.shape[0], buf.shape[1], new, buf.shape[3]))
                grown[:, :, : self.capacity] = buf
                grown[:, :, self.capacity :] = 0  # finite, as ``_allocate``'s (the old part is copied once)
                bufs[i] = grown
        tokens = np.zeros((self.slots, new), dtype=np.int64)
        tokens[:, : self.capacity] = self.tokens
        self.tokens, self.capacity = tokens, new

    def clear(self, keep_memory: bool = False) -> None:
        """Forget every slot's sequence, and free the buffers unless ``keep_memory`` (then the next
        sequences need not grow them again; what they held stays finite and is never read, since reads
        stop at a slot's length)."""
        self.lens = np.zeros(self.slots, dtype=np.int64)
        if not keep_memory:
            self.keys, self.values, self.capacity = [], [], 0
            self.tokens = np.zeros((self.slots, 0), dtype=np.int64)

    def _allocate(self, like: torch.Tensor) -> None:
        # zeros, not empty: a slot that is not decoding still attends to its position 0, which must be finite
        shape = (self.slots, like.shape[1], self.capacity, like.shape[3])
        self.keys.append(like.new_zeros(shape))
        self.values.append(like.new_zeros(shape))


def slot_attention(module, query, key, value, attention_mask: Pass, scaling=None, dropout=0.0, **kwargs):
    """Attention of a packed pass: ``query (1, heads, N, dim)``, ``key``/``value`` the layer's whole
    buffers; returns ``(1, N, heads, dim)`` as transformers' attention functions do."""
    p = attention_mask
    q = query[0]  # (heads, N, dim)
    out = q.new_empty((q.shape[1], q.shape[0], q.shape[2]))  # (N, heads, dim)
    gqa = key.shape[1] != q.shape[0]
    if p.one_hi:
        kv, heads = p.one_kv, q.shape[0]
        if p.one_dense:  # every slot of the window decodes, in slot order
            window = q[:, p.one_token].transpose(0, 1)
        else:
            window = q.new_zeros((p.one_hi, heads, q.shape[2]))
            window[p.one_slot] = q[:, p.one_token].transpose(0, 1)
        # One query per row: the query heads that share a key/value head become that head's queries
        # (as transformers' pack_gqa does), so no key/value is repeated.
        window = window.view(p.one_hi, key.shape[1], heads // key.shape[1], q.shape[2])
        res = F.scaled_dot_product_attention(
            window, key[: p.one_hi, :, :kv], value[: p.one_hi, :, :kv], attn_mask=p.one_mask, scale=scaling
        ).reshape(p.one_hi, heads, q.shape[2])
        out[p.one_token] = res if p.one_dense else res[p.one_slot]
    if p.many_mask is not None:
        kv = p.many_mask.shape[-1]
        queries = q[:, p.many_index].permute(1, 0, 2, 3)  # (Bm, heads, Lm, dim)
        res = F.scaled_dot_product_attention(
            queries, key[p.many_slot, :, :kv], value[p.many_slot, :, :kv],
            attn_mask=p.many_mask, scale=scaling, enable_gqa=gqa,
        )  # fmt: skip
        out[p.many_index[p.many_real]] = res.permute(0, 2, 1, 3)[p.many_real]
    return out[None], None


@contextmanager
def packed(model):
    """Run ``model``'s attention through ``slot_attention`` for the duration (the config is shared by
    its layers and read at every call; restored after, so the model object serves training as before)."""
    from transformers import AttentionInterface

    if ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTENTION, slot_attention)
    before = model.config._attn_implementation
    model.config._attn_implementation = ATTENTION
    try:
        yield
    finally:
        model.config._attn_implementation = before
