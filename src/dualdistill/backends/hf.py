"""``HFBackend``: a local transformers causal LM with a per-step continuous-batching loop.

One worker thread owns the model. Requests from concurrent ``complete`` calls join the running
batch between decoding steps (they are prefilled together, left-padded, and their KV cache is
concatenated to the running one); rows that finish (stop string, end of sequence, token limit)
leave at once. So a trajectory waiting for its code to run never holds up the others, and the batch
grows by itself up to ``max_batch`` when many are waiting.

Guarantees:
- Stop strings: generation stops at the first token that completes any stop string; the text is cut
  just after it. Stop strings that are single tokens (the trajectory tags of our tokenizer) are
  matched by token id; others by decoding the last few tokens of the row.
- Sampling is per request: greedy when ``temperature == 0``, else temperature + top-p with the row's
  own random stream, so a given ``seed`` reproduces its text when the batch composition is the same.
- bf16 on CUDA, float32 on CPU unless ``dtype`` says otherwise; ``stats()`` counts tokens and time.

- Prefix reuse: the KV of a finished row is kept (``prefix_cache_tokens`` positions at most, see
  ``prefix_cache.py``), so a continuation after a tool call computes only its new tokens.

Not guaranteed: bitwise-identical text for the same seed in a *different* batch (padding and
prefix reuse change float rounding); sliding-window attention (the cache keeps every position);
CUDA graphs or a static cache (the loop uses transformers' ``DynamicCache``).
"""

from __future__ import annotations

import inspect
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from dualdistill.backends import BackendConfig, BackendError, Completion, cut_at_stop
from dualdistill.backends.batching import BatchWorker, Pending
from dualdistill.backends.prefix_cache import PrefixCache


@dataclass
class GenStats:
    """Counters of the generation loop (read with ``HFBackend.stats()``)."""

    requests: int = 0  # completions returned
    prefills: int = 0  # admission events (one forward over all newly joined prompts)
    steps: int = 0  # decoding steps over the running batch
    prompt_tokens: int = 0
    generated_tokens: int = 0
    max_active: int = 0  # largest running batch seen
    reused_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    row_steps: int = 0  # sum of batch sizes over steps (mean batch = row_steps / steps)
    gen_time_s: float = 0.0  # wall time inside prefill + decoding

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(eq=False)
class _Row:
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


class HFBackend:
    """Local transformers model. ``await complete(...)`` from any number of tasks; ``close()`` when done.

    Example::

        backend = HFBackend("runs/student", max_batch=64)
        c = await backend.complete(prompt, max_new_tokens=512, stop=["</code>"], temperature=0.6)
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        device: str = BackendConfig.device,
        dtype: str = "auto",
        max_batch: int = BackendConfig.max_batch,
        stop_on_eos: bool = True,
        prefix_cache_tokens: int = 65536,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not Path(model_path).is_dir():
            raise BackendError(f"{model_path}: model directory not found")
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        torch_dtype = _resolve_dtype(dtype, device)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).to(device)
        self._setup(
            model, tokenizer, max_batch, stop_on_eos=stop_on_eos, prefix_cache_tokens=prefix_cache_tokens
        )

    @classmethod
    def from_objects(
        cls, model, tokenizer, *, max_batch: int = BackendConfig.max_batch, **options
    ) -> HFBackend:
        """Serve an already loaded model (e.g. right after training) without saving it first.
        ``options``: ``stop_on_eos``, ``prefix_cache_tokens`` as in the constructor."""
        self = cls.__new__(cls)
        options = {"stop_on_eos": True, "prefix_cache_tokens": 65536, **options}
        self._setup(model, tokenizer, max_batch, **options)
        return self

    def _setup(self, model, tokenizer, max_batch: int, **engine_options) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self._engine = _Engine(model, tokenizer, max_batch=max_batch, **engine_options)
        self._worker = BatchWorker(self._engine, name="hf-backend")

    # -- Backend protocol ------------------------------------------------------------------------
    async def complete(
        self,
        prompt: str,
        *,
        max_new_tokens: int,
        stop: list[str],
        temperature: float,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> Completion:
        if max_new_tokens < 1:
            return Completion("", 0, "length", None)
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        row = self._engine.make_row(prompt, max_new_tokens, list(stop), temperature, top_p, seed)
        return await self._worker.submit(row)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    @property
    def context_length(self) -> int | None:
        """Positions the model has (prompt and response together); None when its config does not say."""
        return getattr(self.model.config, "max_position_embeddings", None)

    # -- lifecycle and stats ---------------------------------------------------------------------
    def stats(self) -> GenStats:
        return GenStats(**self._engine.stats.as_dict())

    def reset_stats(self) -> None:
        self._engine.stats = GenStats()

    def clear_prefix_cache(self) -> None:
        """Forget kept KV (call while no request is running, e.g. between benchmark runs)."""
        self._engine.prefix.clear()

    def close(self) -> None:
        self._worker.close()

    def __enter__(self) -> HFBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ValueError(f"dtype must be auto or one of {', '.join(table)}, got {dtype!r}")
    return table[dtype]


class _Engine:
    """The running batch: KV cache, attention mask, next input token and position of every row."""

    def __init__(self, model, tokenizer, *, max_batch: int, stop_on_eos: bool, prefix_cache_tokens: int):
        self.model = model
        self.tokenizer = tokenizer
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
        self.stats = GenStats()
        self.rows: list[Pending] = []
        self.cache = None
        self.mask: torch.Tensor | None = None  # (B, T) 1 = real token in the cache
        self.last: torch.Tensor | None = None  # (B,) token to feed next (not yet in the cache)
        self.pos: torch.Tensor | None = None  # (B,) its position id
        self._single_token: dict[str, int | None] = {}
        self.prefix = PrefixCache(prefix_cache_tokens)

    # -- requests --------------------------------------------------------------------------------
    def make_row(self, prompt, max_new_tokens, stop, temperature, top_p, seed) -> _Row:
        ids = self.tokenizer.encode(prompt)
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
        return _Row(
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
        return self.max_batch - len(self.rows)

    def busy(self) -> bool:
        return bool(self.rows)

    def abort(self, error: BaseException) -> list[Pending]:
        rows, self.rows = self.rows, []
        self.cache = self.mask = self.last = self.pos = None
        return rows

    @torch.inference_mode()
    def tick(self, new: list[Pending]) -> None:
        t0 = time.perf_counter()
        if new:
            self._admit(new)
            self._retire()
        if self.rows:  # step every tick, so a stream of arrivals never starves the running rows
            self._step()
            self._retire()
        self.stats.gen_time_s += time.perf_counter() - t0

    # -- the loop --------------------------------------------------------------------------------
    def _admit(self, new: list[Pending]) -> None:
        """Prefill the new prompts together and merge them into the running batch.

        Row layout (left padding twice): ``[pad | reused prefix | pad | new tokens]``; the mask hides
        the pads and position ids count real tokens only, so the holes change nothing.
        """
        from transformers import DynamicCache

        rows = [p.payload for p in new]
        hits = [self.prefix.lookup(r.ids) for r in rows]
        reuse = max(n for _, n in hits)
        width = max(len(r.ids) - n for r, (_, n) in zip(rows, hits, strict=True))
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), reuse + width), dtype=torch.long)
        position = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (r, (_, n)) in enumerate(zip(rows, hits, strict=True)):
            rest = len(r.ids) - n
            ids[i, width - rest :] = torch.tensor(r.ids[n:])
            position[i, width - rest :] = torch.arange(n, len(r.ids))
            mask[i, reuse - n : reuse] = 1
            mask[i, reuse + width - rest :] = 1
        cache = DynamicCache()  # filled in place by the forward pass
        if reuse:
            self._load_prefixes(cache, hits, reuse)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=position.to(self.device),
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_kw: cache},
        )
        first = self._sample(out.logits[:, -1, :], rows)
        self.stats.prefills += 1
        self.stats.prompt_tokens += sum(len(r.ids) for r in rows)
        self.stats.reused_tokens += sum(n for _, n in hits)
        next_pos = torch.tensor([len(r.ids) for r in rows], device=self.device)
        self._merge(cache, mask.to(self.device), first, next_pos)
        self.rows.extend(new)
        self._record(rows, first)

    def _load_prefixes(self, cache, hits, reuse: int) -> None:
        """Put each row's reused keys/values, right-aligned in ``reuse`` columns, into ``cache``."""
        some = next(e for e, n in hits if n)
        for layer, (k0, v0) in enumerate(zip(some.keys, some.values, strict=True)):
            keys = k0.new_zeros((len(hits), k0.shape[0], reuse, k0.shape[2]))
            values = v0.new_zeros((len(hits), v0.shape[0], reuse, v0.shape[2]))
            for i, (entry, n) in enumerate(hits):
                if n:
                    keys[i, :, reuse - n :] = entry.keys[layer][:, :n]
                    values[i, :, reuse - n :] = entry.values[layer][:, :n]
            cache.update(keys, values, layer)

    def _keep_prefix(self, i: int, r: _Row) -> None:
        """Store row ``i``'s keys/values (prompt + generated tokens fed so far) for its continuation."""
        cols = self.mask[i].bool()
        ids = r.ids + r.generated[:-1]  # the last sampled token was never fed
        if int(cols.sum()) != len(ids):
            return
        layers = self.cache.layers
        self.prefix.put(
            ids, [lay.keys[i][:, cols] for lay in layers], [lay.values[i][:, cols] for lay in layers]
        )

    def _merge(self, cache, mask, last, pos) -> None:
        if self.cache is None:
            self.cache, self.mask, self.last, self.pos = cache, mask, last, pos
            return
        t_old, t_new = self.mask.shape[1], mask.shape[1]
        width = max(t_old, t_new)
        for old, add in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_pad_time(old.keys, width - t_old), _pad_time(add.keys, width - t_new)])
            old.values = torch.cat(
                [_pad_time(old.values, width - t_old), _pad_time(add.values, width - t_new)]
            )
        self.mask = torch.cat([F.pad(self.mask, (width - t_old, 0)), F.pad(mask, (width - t_new, 0))])
        self.last = torch.cat([self.last, last])
        self.pos = torch.cat([self.pos, pos])

    def _step(self) -> None:
        """One decoding step for every running row."""
        self.mask = F.pad(self.mask, (0, 1), value=1)
        out = self.model(
            input_ids=self.last[:, None],
            attention_mask=self.mask,
            position_ids=self.pos[:, None],
            use_cache=True,
            **{self.cache_kw: self.cache},
        )
        rows = [p.payload for p in self.rows]
        nxt = self._sample(out.logits[:, -1, :], rows)
        self.last, self.pos = nxt, self.pos + 1
        self.stats.steps += 1
        self.stats.row_steps += len(rows)
        self._record(rows, nxt)

    def _sample(self, logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
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

    def _record(self, rows: list[_Row], tokens: torch.Tensor) -> None:
        """Append each row's new token and decide whether the row is finished."""
        ids = tokens.tolist()
        needs_text: list[_Row] = []
        for r, t in zip(rows, ids, strict=True):
            r.generated.append(t)
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
        """Resolve finished rows, drop them (and cancelled ones) from the batch, trim padding columns."""
        keep = []
        for i, p in enumerate(self.rows):
            r: _Row = p.payload
            if r.done is not None:
                if r.done[1] is not None or r.done[0] == "length":  # may be continued after a tool call
                    self._keep_prefix(i, r)
                self.stats.requests += 1
                p.resolve(self._completion(r))
            elif not p.cancelled:
                keep.append(i)
        self.stats.max_active = max(self.stats.max_active, len(self.rows))
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.abort(BackendError("unused"))
            return
        index = torch.tensor(keep, device=self.device)
        self.rows = [self.rows[i] for i in keep]
        self.cache.batch_select_indices(index)
        self.mask, self.last, self.pos = self.mask[index], self.last[index], self.pos[index]
        first_used = int(self.mask.any(0).long().argmax())
        if first_used > 0:  # columns that only the departed rows used
            self.mask = self.mask[:, first_used:]
            for layer in self.cache.layers:
                layer.keys = layer.keys[:, :, first_used:]
                layer.values = layer.values[:, :, first_used:]

    def _completion(self, r: _Row) -> Completion:
        reason, hit = r.done
        ids = [t for t in r.generated if t not in self.eos_ids]
        text = self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        stop_hit = None
        if hit is not None:
            text, stop_hit = cut_at_stop(text, r.stop)
            if stop_hit is None:  # decoding merged the stop away (rare); report the token stop
                stop_hit = hit if hit != "text" else None
        return Completion(text=text, n_tokens=len(r.generated), finish_reason=reason, stop=stop_hit)


def _pad_time(x: torch.Tensor, n: int) -> torch.Tensor:
    """Left-pad a (B, heads, T, dim) cache tensor by ``n`` positions (masked out, so zeros are fine)."""
    return F.pad(x, (0, 0, n, 0)) if n else x
