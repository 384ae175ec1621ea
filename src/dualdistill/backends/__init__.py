"""Model backends behind one small interface: give a prompt, get text that stops at a stop string.

``Backend`` is a Protocol with two methods, ``complete`` and ``count_tokens``. Three backends implement it:

- ``HFBackend`` (``backends/hf.py``): a local transformers model with its own continuous-batching loop.
- ``OpenAIBackend`` (``backends/openai_api.py``): any OpenAI-compatible completions server (vLLM,
  SGLang, hosted APIs) through the official ``openai`` client, with bounded concurrency and retries.
- ``VLLMBackend`` (``backends/vllm_engine.py``): vLLM's offline engine, when ``vllm`` is installed.

Guarantees (all backends):
- ``Completion.text`` is the generated text only (not the prompt). When generation stopped at one of
  ``stop``, the text ends with that stop string (servers that strip it get it appended back) and
  ``Completion.stop`` names it; nothing after the first stop string is returned.
- ``finish_reason`` is ``"length"`` when ``max_new_tokens`` ran out, else ``"stop"`` (a stop string,
  or the model's end-of-sequence token, in which case ``stop`` is None).
- ``temperature == 0`` means greedy decoding.

Not guaranteed: identical text across backends for the same prompt, or token counts that match a
different tokenizer. A stop string that straddles the prompt/completion boundary is not detected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from dualdistill.core.config import ConfigError
from dualdistill.core.records import DataError
from dualdistill.format.prompts import assistant_marker

if TYPE_CHECKING:  # the implementations import torch / openai; load them only when used
    from dualdistill.backends.hf import HFBackend
    from dualdistill.backends.openai_api import OpenAIBackend
    from dualdistill.backends.vllm_engine import VLLMBackend

__all__ = [
    "Backend",
    "BackendError",
    "Completion",
    "HFBackend",
    "OpenAIBackend",
    "ServerBusy",
    "VLLMBackend",
    "cut_at_stop",
    "make_backend",
]


@dataclass
class Completion:
    text: str  # generated text; ends with the stop string when one was hit
    n_tokens: int  # tokens the model generated for this completion
    finish_reason: Literal["stop", "length"]
    stop: str | None  # the stop string hit, or None (end of sequence, or length)


@runtime_checkable
class Backend(Protocol):
    async def complete(
        self,
        prompt: str,
        *,
        max_new_tokens: int,
        stop: list[str],
        temperature: float,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> Completion: ...

    def count_tokens(self, text: str) -> int: ...

    def close(self) -> None:
        """Release what the backend holds (model weights, worker threads, connections); idempotent."""


class BackendError(RuntimeError):
    """A backend could not produce a completion (server down after retries, bad request, model error)."""


class ServerBusy(BackendError):
    """A server answered 429 or 503 with ``Retry-After``: busy for ``retry_after`` seconds. Raised at once
    (no wait) by a backend that is one server of a ``ServerSet``, which parks that server and sends the
    request to another."""

    def __init__(self, url: str, retry_after: float):
        super().__init__(f"{url}: busy (Retry-After {retry_after:g} s)")
        self.retry_after = retry_after


class RefusalError(BackendError):
    """The model declined to answer (a provider's refusal stop reason); teach records it as ``refusal``."""


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, str | None]:
    """Cut ``text`` just after the earliest occurrence of any stop string; return (text, stop hit).

    When two stop strings start at the same place the longer one wins (``"</code>"`` over ``"</"``).
    """
    best: tuple[int, int, str] | None = None
    for s in stop:
        if not s:
            continue
        i = text.find(s)
        if i >= 0 and (best is None or (i, -len(s)) < (best[0], -best[1])):
            best = (i, len(s), s)
    if best is None:
        return text, None
    return text[: best[0] + best[1]], best[2]


def check_model_dir(model: str | os.PathLike, *, allow_hub_id: bool = False) -> None:
    """Raise ``DataError`` unless ``model`` is a directory holding a transformers model (config.json).

    With ``allow_hub_id`` an ``org/name`` that is not a local path passes (transformers downloads it).
    """

    path = Path(model)
    name = str(model)
    if allow_hub_id and not path.exists() and name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return
    if not path.exists():
        raise DataError(path, "model not found: give a model directory (saved by save_pretrained)")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise DataError(path, "not a model directory (no config.json; saved by save_pretrained?)")


def check_url(url: str) -> None:
    """``BackendError`` naming the entry when a server URL lacks its scheme, host or a valid port: one
    bad entry of a list would otherwise fail only at its first request and leave the job on the rest."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when it is not a number in 0-65535
    except ValueError as e:
        raise BackendError(f"server URL {url!r}: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BackendError(
            f"server URL {url!r}: needs http:// or https:// and a host (e.g. http://127.0.0.1:8000/v1)"
        )
    if port == 0:
        raise BackendError(f"server URL {url!r}: port 0 is not a server's port")


def make_backend(model: str, **options: Any) -> Backend:
    """Pick a backend from a model spec, as ``dualdistill eval --model PATH_OR_URL`` does.

    - ``http://…`` or ``https://…``: ``OpenAIBackend``; ``URL#name`` selects the served model name
      (otherwise the server's first listed model). Several comma-separated URLs: one ``ServerSet``
      over them (the least busy first; a server that fails is left out for a while, its requests go to
      the others); each server's own retries are cut to one, since another server takes over.
    - ``vllm:PATH``: ``VLLMBackend`` on a local model directory.
    - anything else: a local model directory for ``HFBackend``.

    ``options`` go to the backend's constructor unchanged.
    """
    if model.startswith(("http://", "https://")):
        from dualdistill.backends.openai_api import OpenAIBackend  # cycle: it imports this face

        urls = [u.strip() for u in model.split(",") if u.strip()]
        for u in urls:
            check_url(u.partition("#")[0])
        if len(urls) > 1:
            from dualdistill.backends.servers import ServerSet  # cycle: it imports this face

            each = {**options, "max_retries": min(int(options.get("max_retries", 1)), 1), "park_busy": True}
            return ServerSet(
                [OpenAIBackend(u.partition("#")[0], u.partition("#")[2] or None, **each) for u in urls]
            )
        url, _, name = model.partition("#")
        return OpenAIBackend(url, name or None, **options)
    if model.startswith("vllm:"):
        from dualdistill.backends.vllm_engine import VLLMBackend  # heavy: vllm

        return VLLMBackend(model.removeprefix("vllm:"), **options)
    from dualdistill.backends.hf import HFBackend  # heavy: torch

    check_model_dir(model)
    return HFBackend(model, **options)


def open_backend(
    model: str, *, api: str = "completions", template: str = "paper", served_model_name: str | None = None,
    tokenizer: str | None = None, api_key_env: str = "OPENAI_API_KEY", max_retries: int = 5,
    request_timeout: float = 600.0, device: str = "auto", max_batch: int = 64,
) -> Backend:  # fmt: skip
    """The backend of a model spec, opened the one way eval, solve, self-distill sample and the API
    teachers open it (``make_backend`` picks the class):

    - a server URL (or several, comma-separated): ``served_model_name`` names the model on each URL
      without its own ``#name``; ``api`` is ``completions``, or ``chat`` (the prompt's user turn then ends
      at ``template``'s assistant marker); ``tokenizer`` counts executor text exactly; a key from
      ``api_key_env``; ``max_retries`` and ``request_timeout`` per request;
    - ``vllm:PATH``: vLLM's offline engine; a local directory: ``HFBackend`` on ``device`` with
      ``max_batch`` sequences per forward pass. ``api`` must stay ``completions`` for both.
    """

    if model.startswith(("http://", "https://")):
        if served_model_name:
            model = ",".join(u if "#" in u else f"{u}#{served_model_name}" for u in model.split(","))
        options: dict[str, Any] = {}
        if api == "chat":
            if template == "chat":
                raise ConfigError(
                    "api: chat applies the server's chat template; use template paper, plain or compact"
                )

            options = {"api": api, "assistant_marker": assistant_marker(template)}
        return make_backend(model, api_key_env=api_key_env, max_retries=max_retries,
                            request_timeout=request_timeout, tokenizer=tokenizer, **options)  # fmt: skip
    if api != "completions":
        raise ConfigError(f"api: {api} needs a server URL as the model, not {model!r}")
    if model.startswith("vllm:"):
        return make_backend(model)
    return make_backend(model, device=device, max_batch=max_batch)


def __getattr__(name: str):
    if name == "HFBackend":
        from dualdistill.backends.hf import HFBackend  # heavy: torch

        return HFBackend
    if name == "OpenAIBackend":
        from dualdistill.backends.openai_api import OpenAIBackend  # cycle: it imports this face

        return OpenAIBackend
    if name == "VLLMBackend":
        from dualdistill.backends.vllm_engine import VLLMBackend  # heavy: vllm

        return VLLMBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
