"""The engine behind ``HFBackend``: one running batch of slots, stepped by the ``BatchWorker`` thread.

Every request gets a slot of the ``SlotCache`` and keeps it while it is generated. Each tick admits the
waiting requests and takes one decoding step over the slots in use:

- **Admission** finds the longest token prefix the request shares with a slot (a row that stopped for a
  tool call and is *parked* with its keys/values, or a running row, e.g. the same prompt sampled K
  times) or with the ``PrefixCache``, and reuses it: a parked row whose whole sequence is the prefix is
  continued in place (or copied back from a parking slot), any other prefix is copied.
- **Slots:** the first ``max_batch`` slots run rows, so a pass's decoding rows attend over one window
  of slots. When a request needs a running slot and all are taken by parked rows, the oldest parked row
  is copied to one of the ``parked_slots`` after them; when those are taken too, the oldest parked row
  there moves to the ``PrefixCache`` (exact-size copies, bounded in positions).
- **Mixed steps:** every forward pass is packed (``slot_cache.py``): the rows that decode one token
  and the requests that still have tokens to read (a new prompt, or a continuation after a tool
  call: the executor block and a few re-tokenized tokens) go through the model together, with no
  padding, so an admission costs no forward pass of its own. A pass reads at most ``PASS_TOKENS``
  prompt tokens; a longer prompt is read over several passes (chunked prefill).
- **Retiring** a row resolves it and leaves its slot parked (stopped at a stop string or the token
  limit: it may be continued) or free (end of sequence, cancelled): no cache is copied.

Guarantees: each request is resolved exactly once; positions a row reuses were computed for exactly its
token ids at the same positions, so results equal a full prefill up to float rounding; with
``prefix_cache_tokens=0`` nothing is reused. Not guaranteed: bitwise-identical text across batch
compositions (how rows are packed and what is reused change float rounding).
"""

from __future__ import annotations

import inspect
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from dualdistill.backends import BackendError, Completion, cut_at_stop
from dualdistill.backends.batching import Pending, resolve_all
from dualdistill.backends.prefix_cache import PrefixCache
from dualdistill.backends.segment_tokens import SegmentEncoder
from dualdistill.backends.slot_cache import SlotCache, packed

# Prompt tokens one forward pass reads at most, besides the decoding rows (bounds a pass's activations).
PASS_TOKENS = 4096


@dataclass
class GenStats:
    """Counters of the generation loop (read with ``HFBackend.stats()``)."""

    requests: int = 0  # completions returned
    admissions: int = 0  # ticks that admitted requests
    prefills: int = 0  # forward passes that read prompt tokens (beside the decoding rows, if any)
    steps: int = 0  # forward passes (each decodes one token for every row that is not reading)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    max_active: int = 0  # largest running batch seen
    reused_tokens: int = 0  # prompt tokens whose KV was reused (a slot or the prefix cache)
    from_parking: int = 0  # continuations whose row was copied back from a parking slot
    row_steps: int = 0  # sum of rows fed over steps (mean batch = row_steps / steps)
    gen_time_s: float = 0.0  # wall time inside prefill + decoding

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(eq=False)
class Row:
    """A request being generated."""

    ids: list[int]
    max_new_tokens: int
    stop: list[str]
    temperature: float
    top_p: float
    generator: torch.Generator
    stop_ids: dict[int, str]  # single-token stop strings by token id
    text_stops: bool  # some stop string needs a text check
    tail_tokens: int  # how many trailing tokens can hold the longest stop string
    generated: list[int] = field(default_factory=list)
    done: tuple[str, str | None] | None = None  # (finish_reason, stop hit)
    slot: int = -1
    pending: list[int] = field(default_factory=list)  # tokens to feed next (not yet in the cache)


class Engine:
    """The ``Engine`` of ``batching.BatchWorker`` for a transformers causal LM."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        max_batch: int,
        stop_on_eos: bool,
        prefix_cache_tokens: int,
        parked_slots: int,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.encoder = SegmentEncoder(tokenizer)  # a trajectory's earlier pieces are not tokenized again
        self.max_batch = max_batch
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        eos = model.generation_config.eos_token_id if stop_on_eos else None
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if stop_on_eos and tokenizer.eos_token_id is not None:
            eos.append(tokenizer.eos_token_id)
        self.eos_ids = set(eos)
        # transformers 5 renamed ``past_key_values`` to ``cache``; older releases know only the former.
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.mask_keys = sorted(set(getattr(model.config, "layer_types", None) or ["full_attention"]))
        self.stats = GenStats()
        self.reuse = prefix_cache_tokens > 0
        self.prefix = PrefixCache(prefix_cache_tokens)
        # Slots [0, max_batch) run rows; the ``parked_slots`` after them only keep parked rows, so the
        # rows of a pass stay within the first max_batch slots (one attention window).
        self.parked_slots = parked_slots if self.reuse else 0
        self.cache = SlotCache(max_batch + self.parked_slots, self.device, next(model.parameters()).dtype)
        self.rows: list[Pending | None] = [None] * max_batch  # the request generated in each slot
        self.parked: OrderedDict[int, None] = OrderedDict()  # slots kept for a continuation, oldest first
        self.active: list[Pending] = []
        self._single_token: dict[str, int | None] = {}

    # -- requests --------------------------------------------------------------------------------
    def make_row(self, prompt, max_new_tokens, stop, temperature, top_p, seed) -> Row:
        ids = self.encoder.encode(prompt)
        if not ids:
            ids = [self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else self.pad_id]
        gen = torch.Generator()
        gen.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(8), "little") >> 1)
        stop_ids = {}
        for s in stop:
            tid = self._stop_token(s)
            if tid is not None:
                stop_ids[tid] = s
        longest = max((len(s.encode()) for s in stop), default=0)
        return Row(
            ids=ids,
            max_new_tokens=max_new_tokens,
            stop=stop,
            temperature=float(temperature),
            top_p=float(top_p),
            generator=gen,
            stop_ids=stop_ids,
            text_stops=any(s not in stop_ids.values() for s in stop if s),
            tail_tokens=longest + 1,
        )

    def _stop_token(self, s: str) -> int | None:
        """The token id when ``s`` is exactly one token (e.g. an added tag token), else None."""
        if s not in self._single_token:
            ids = self.tokenizer.encode(s, add_special_tokens=False)
            ok = len(ids) == 1 and self.tokenizer.decode(ids) == s
            self._single_token[s] = ids[0] if ok else None
        return self._single_token[s]

    # -- Engine protocol -------------------------------------------------------------------------
    def room(self) -> int:
        return self.max_batch - len(self.active)

    def busy(self) -> bool:
        return bool(self.active)

    def abort(self, error: BaseException) -> list[Pending]:
        """Forget every row and everything kept (the cache may be half-written after an error)."""
        rows, self.active = self.active, []
        self.forget(keep_memory=False)  # free the buffers too: a failed pass may have left anything in them
        return rows

    def forget(self, keep_memory: bool = True) -> None:
        """Drop parked rows and the prefix cache (only while nothing runs); the KV buffers stay allocated
        unless ``keep_memory`` is False."""
        self.rows = [None] * self.max_batch
        self.parked.clear()
        self.cache.clear(keep_memory=keep_memory)
        self.prefix.clear()

    @torch.inference_mode()
    def tick(self, new: list[Pending]) -> None:
        t0 = time.perf_counter()
        if new:
            self._admit(new)
        if self.active:
            self._step()
            self._retire()
        self.stats.gen_time_s += time.perf_counter() - t0

    # -- admission -------------------------------------------------------------------------------
    def _admit(self, new: list[Pending]) -> None:
        """Give each request a slot holding its longest reusable prefix; the rest is read by ``_step``."""
        for p in new:
            self._place(p)
        self.active.extend(new)
        rows = [p.payload for p in new]
        self.stats.admissions += 1
        self.stats.prompt_tokens += sum(len(r.ids) for r in rows)
        self.stats.reused_tokens += sum(len(r.ids) - len(r.pending) for r in rows)
        self.stats.max_active = max(self.stats.max_active, len(self.active))

    def _place(self, p: Pending) -> None:
        r: Row = p.payload
        query = np.asarray(r.ids[:-1])  # at least one token is left to read, for the next-token logits
        src, n = self.cache.common_prefix(query) if self.reuse else (None, 0)
        # The prefix cache can only do better than a slot sharing less than the whole query.
        entry, n_kept = self.prefix.lookup(r.ids) if self.reuse and n < len(query) else (None, 0)
        if src is not None and src in self.parked and n == self.cache.lens[src] and n >= n_kept:
            # the row that stopped for this tool call: continue it in place, or back from parking
            slot = src if src < self.max_batch else self._free_slot(keep=src)
            del self.parked[src]
            if slot != src:
                self.cache.copy_prefix(src, slot, n)
                self.cache.lens[src] = 0
                self.stats.from_parking += 1
        else:
            slot = self._free_slot(keep=src)
            if n_kept > n:
                self.cache.load(slot, entry.ids, entry.keys, entry.values, n_kept)
                n = n_kept
            elif n:
                self.cache.copy_prefix(src, slot, n)
        self.cache.lens[slot] = n
        self.rows[slot] = p
        r.slot, r.pending = slot, r.ids[n:]

    def _free_slot(self, keep: int | None) -> int:
        """The lowest unused running slot; when there is none, the oldest parked one (not ``keep`` if
        another exists), whose row moves to a parking slot. ``keep`` itself is not overwritten."""
        for i, row in enumerate(self.rows):
            if row is None and i not in self.parked:
                self.cache.lens[i] = 0
                return i
        others = [i for i in self.parked if i != keep and i < self.max_batch]
        if not others:  # only ``keep`` itself, if it is a parked running slot
            if keep not in self.parked or keep >= self.max_batch:
                raise BackendError("no free slot (more running rows than max_batch)")
            others = [keep]
        victim = others[0]
        del self.parked[victim]
        self._park_away(victim, keep)
        self.cache.lens[victim] = 0
        return victim

    def _park_away(self, slot: int, keep: int | None) -> None:
        """Keep the parked row of running ``slot`` in a free parking slot, else in the place of the
        oldest parked row there (which moves to the prefix cache), else in the prefix cache."""
        if self.cache.lens[slot] < 2:
            return
        parking = range(self.max_batch, self.cache.slots)
        spot = next((i for i in parking if i not in self.parked and i != keep), None)
        if spot is None:
            spot = next((i for i in self.parked if i >= self.max_batch and i != keep), None)
            if spot is None:
                self._to_prefix_cache(slot)
                return
            del self.parked[spot]
            self._to_prefix_cache(spot)
        self.cache.copy_prefix(slot, spot, int(self.cache.lens[slot]))
        self.parked[spot] = None

    def _to_prefix_cache(self, slot: int) -> None:
        keys, values = self.cache.export(slot)
        self.prefix.put(self.cache.held(slot).tolist(), keys, values)

    # -- forward passes --------------------------------------------------------------------------
    def _step(self) -> None:
        """One packed forward pass: every decoding row feeds its sampled token, and rows still reading
        their prompt feed up to ``PASS_TOKENS`` prompt tokens in all; rows that finish reading sample."""
        rows = [p.payload for p in self.active]
        budget = PASS_TOKENS
        feeds: list[tuple[Row, int]] = []
        for r in sorted(rows, key=lambda r: len(r.pending) > 1):  # decoding rows first (stable sort)
            take = len(r.pending) if len(r.pending) == 1 else min(len(r.pending), budget)
            if take:
                feeds.append((r, take))
                budget -= take if take > 1 else 0
        plan = self.cache.plan([(r.slot, r.pending[:k]) for r, k in feeds])
        for r, k in feeds:
            r.pending = r.pending[k:]
        with packed(self.model):
            out = self.model(
                input_ids=plan.ids,
                attention_mask=dict.fromkeys(self.mask_keys, plan),
                position_ids=plan.position_ids,
                use_cache=True,
                logits_to_keep=plan.last,
                **{self.cache_kw: self.cache},
            )
        ready = [i for i, (r, _) in enumerate(feeds) if not r.pending]  # read all it had: samples
        self.stats.steps += 1
        self.stats.row_steps += len(feeds)
        self.stats.prefills += any(k > 1 for _, k in feeds)
        if ready:
            sampling = [feeds[i][0] for i in ready]
            logits = out.logits[0, torch.tensor(ready, dtype=torch.long, device=self.device)]
            self._record(sampling, self._sample(logits, sampling))

    def _sample(self, logits: torch.Tensor, rows: list[Row]) -> torch.Tensor:
        temps = torch.tensor([r.temperature for r in rows], device=logits.device)
        greedy = logits.argmax(-1)
        if not (temps > 0).any():
            return greedy
        top_p = torch.tensor([r.top_p for r in rows], device=logits.device)
        # Each row draws its uniform from its own generator, so its stream does not depend on its batch.
        u = torch.cat([torch.rand(1, generator=r.generator) for r in rows]).to(logits.device)
        probs = torch.softmax(logits.float() / temps.clamp(min=1e-6)[:, None], dim=-1)
        order = None
        if (top_p < 1).any():
            probs, order = probs.sort(dim=-1, descending=True)
            cum = probs.cumsum(-1)
            probs = probs.masked_fill(cum - probs > top_p[:, None], 0.0)  # keep the nucleus (>= 1 token)
        cdf = probs.cumsum(-1)
        pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp(max=cdf.shape[-1] - 1)
        sampled = (order.gather(1, pick) if order is not None else pick).squeeze(1)
        return torch.where(temps > 0, sampled, greedy)

    # -- finishing -------------------------------------------------------------------------------
    def _record(self, rows: list[Row], tokens: torch.Tensor) -> None:
        """Append each row's new token, queue it to be fed, and decide whether the row is finished."""
        ids = tokens.tolist()
        needs_text: list[Row] = []
        for r, t in zip(rows, ids, strict=True):
            r.generated.append(t)
            r.pending = [t]
            self.stats.generated_tokens += 1
            if t in self.eos_ids:
                r.done = ("stop", None)
            elif t in r.stop_ids:
                r.done = ("stop", r.stop_ids[t])
            elif r.text_stops:
                needs_text.append(r)
            if r.done is None and len(r.generated) >= r.max_new_tokens:
                r.done = ("length", None)
        if needs_text:
            tails = self.tokenizer.batch_decode([r.generated[-r.tail_tokens :] for r in needs_text])
            for r, tail in zip(needs_text, tails, strict=True):
                if any(s and s in tail for s in r.stop):
                    r.done = ("stop", "text")

    def _retire(self) -> None:
        """Resolve finished rows; park the slot of a row that may be continued, free the others."""
        keep, finished = [], []
        for p in self.active:
            r: Row = p.payload
            if r.done is None and not p.cancelled:
                keep.append(p)
                continue
            self.rows[r.slot] = None
            if r.done is not None:
                self.stats.requests += 1
                finished.append((p, self._completion(r)))
            if r.done is not None and (r.done[1] is not None or r.done[0] == "length") and self.reuse:
                self.parked[r.slot] = None  # may be continued after a tool call
            else:
                self.cache.lens[r.slot] = 0
            r.pending = []
        self.active = keep
        resolve_all(finished)

    def _completion(self, r: Row) -> Completion:
        reason, hit = r.done
        ids = [t for t in r.generated if t not in self.eos_ids]
        text = self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        stop_hit = None
        if hit is not None:
            text, stop_hit = cut_at_stop(text, r.stop)
            if stop_hit is None:  # decoding merged the stop away (rare); report the token stop
                stop_hit = hit if hit != "text" else None
        return Completion(text=text, n_tokens=len(r.generated), finish_reason=reason, stop=stop_hit)
