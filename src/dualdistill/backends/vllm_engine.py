"""``VLLMBackend``: vLLM's offline engine (``pip install dualdistill[vllm]``, needs a GPU).

Concurrent ``complete`` calls are gathered by the same ``BatchWorker`` as ``HFBackend``: whenever the
engine is free, every waiting request goes into one ``LLM.generate`` call, where vLLM batches them
continuously itself. ``include_stop_str_in_output`` keeps the stop string in the text.

Guarantees: those of ``dualdistill.backends``. Not guaranteed: joining a running ``generate`` call
(a request that arrives meanwhile waits for the next call; use ``OpenAIBackend`` against
``vllm serve`` for fully continuous batching across tool calls). Untested here: vLLM is not
installable on the CPU test machine, and its tests skip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dualdistill.backends import BackendError, Completion, cut_at_stop
from dualdistill.backends.batching import BatchWorker, Pending


@dataclass
class _Request:
    prompt: str
    params: object  # vllm.SamplingParams
    stop: list[str]


class VLLMBackend:
    """Example: ``VLLMBackend("runs/student", max_batch=256, gpu_memory_utilization=0.8)``."""

    def __init__(
        self, model_path: str | os.PathLike, *, dtype: str = "auto", max_batch: int = 256, **engine_kw
    ):
        try:
            import vllm
        except ImportError as e:
            raise BackendError("vLLM is not installed; pip install 'dualdistill[vllm]'") from e
        self._vllm = vllm
        self.llm = vllm.LLM(model=str(model_path), dtype=dtype, **engine_kw)
        self.tokenizer = self.llm.get_tokenizer()
        self._worker = BatchWorker(_Engine(self.llm, max_batch), name="vllm-backend")

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
        params = self._vllm.SamplingParams(
            max_tokens=max_new_tokens,
            stop=list(stop) or None,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            include_stop_str_in_output=True,
        )
        return await self._worker.submit(_Request(prompt, params, list(stop)))

    @property
    def context_length(self) -> int | None:
        return getattr(self.llm.llm_engine.model_config, "max_model_len", None)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def close(self) -> None:
        self._worker.close()


class _Engine:
    def __init__(self, llm, max_batch: int):
        self.llm = llm
        self.max_batch = max_batch

    def room(self) -> int:
        return self.max_batch

    def busy(self) -> bool:
        return False  # each tick finishes its requests

    def abort(self, error: BaseException) -> list[Pending]:
        return []

    def tick(self, new: list[Pending]) -> None:
        if not new:
            return
        reqs: list[_Request] = [p.payload for p in new]
        outputs = self.llm.generate([r.prompt for r in reqs], [r.params for r in reqs], use_tqdm=False)
        for p, r, out in zip(new, reqs, outputs, strict=True):
            o = out.outputs[0]
            text, hit = cut_at_stop(o.text, r.stop)
            reason = "length" if o.finish_reason == "length" else "stop"
            p.resolve(Completion(text=text, n_tokens=len(o.token_ids), finish_reason=reason, stop=hit))
