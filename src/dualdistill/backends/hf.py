"""``HFBackend``: a local transformers causal LM with a per-step continuous-batching loop.

One worker thread owns the model (``hf_engine.Engine``). Requests from concurrent ``complete`` calls
join the running batch between decoding steps, each in its own slot of a preallocated KV cache
(``slot_cache.py``); rows that finish (stop string, end of sequence, token limit) leave at once. So a
trajectory waiting for its code to run never holds up the others, and the batch grows by itself up to
``max_batch`` when many are waiting.

Guarantees:
- Stop strings: generation stops at the first token that completes any stop string; the text is cut
  just after it. Stop strings that are single tokens (the trajectory tags of our tokenizer) are
  matched by token id; others by decoding the last few tokens of the row.
- Sampling is per request: greedy when ``temperature == 0``, else temperature + top-p with the row's
  own random stream, so a given ``seed`` reproduces its text when the batch composition is the same.
- bf16 on CUDA, float32 on CPU unless ``dtype`` says otherwise; ``stats()`` counts tokens and time.
- Prefix reuse: a row that stopped at a stop string keeps its keys/values in its slot, and its
  continuation after a tool call reads only its new tokens, inside a decoding step when they are few.
  When a new request needs the slot, the row moves to one of ``parked_slots`` extra slots (then, when
  those are taken, the oldest there to the ``prefix_cache_tokens`` positions of ``prefix_cache.py``).
  Memory: the cache holds ``max_batch + parked_slots`` slots, each as long as the longest row.
- Prompts are tokenized as the tokenizer does, but the text between added tokens (the trajectory
  tags) only once (``segment_tokens.py``): a continuation tokenizes its new pieces.

Not guaranteed: bitwise-identical text for the same seed in a *different* batch (how rows are
packed and what is reused change float rounding); sliding-window attention (the cache keeps every
position); the model's own attention implementation (flash attention and the like): every pass runs
through the engine's packed attention on PyTorch's SDPA; CUDA graphs.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dualdistill.backends import BackendConfig, BackendError, Completion
from dualdistill.backends.batching import BatchWorker
from dualdistill.backends.hf_engine import Engine, GenStats


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
        parked_slots: int = BackendConfig.parked_slots,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not Path(model_path).is_dir():
            raise BackendError(f"{model_path}: model directory not found")
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        torch_dtype = _resolve_dtype(dtype, device)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).to(device)
        self._setup(
            model,
            tokenizer,
            max_batch,
            stop_on_eos=stop_on_eos,
            prefix_cache_tokens=prefix_cache_tokens,
            parked_slots=parked_slots,
        )

    @classmethod
    def from_objects(
        cls, model, tokenizer, *, max_batch: int = BackendConfig.max_batch, **options
    ) -> HFBackend:
        """Serve an already loaded model (e.g. right after training) without saving it first.
        ``options``: ``stop_on_eos``, ``prefix_cache_tokens``, ``parked_slots`` as in the constructor."""
        self = cls.__new__(cls)
        options = {
            "stop_on_eos": True, "prefix_cache_tokens": 65536, "parked_slots": BackendConfig.parked_slots, **options
        }  # fmt: skip
        self._setup(model, tokenizer, max_batch, **options)
        return self

    def _setup(self, model, tokenizer, max_batch: int, **engine_options) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self._engine = Engine(model, tokenizer, max_batch=max_batch, **engine_options)
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
        """Forget kept KV (call while no request is running, e.g. between benchmark runs); the cache's
        memory stays allocated for the next requests (it goes with the backend)."""
        self._engine.forget()

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
