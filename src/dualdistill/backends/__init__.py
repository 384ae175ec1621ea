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

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from dualdistill.core.config import ConfigError, check_bounds, setting
from dualdistill.core.records import DataError
from dualdistill.format.prompts import assistant_marker

if TYPE_CHECKING:  # the implementations import torch / openai; load them only when used
    from dualdistill.backends.hf import HFBackend
    from dualdistill.backends.openai_api import OpenAIBackend
    from dualdistill.backends.vllm_engine import VLLMBackend

__all__ = [
    "Backend",
    "BackendConfig",
    "BackendError",
    "Completion",
    "HFBackend",
    "OpenAIBackend",
    "ServerBusy",
    "VLLMBackend",
    "cut_at_stop",
    "open_backend",
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
    """Raise ``DataError`` unless ``model`` is a directory holding a transformers model (config.json), or
    a LoRA adapter directory (adapter_config.json) whose base model is one.

    With ``allow_hub_id`` an ``org/name`` that is not a local path passes (transformers downloads it).
    """

    path = Path(model)
    name = str(model)
    if allow_hub_id and not path.exists() and name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return
    if not path.exists():
        raise DataError(path, "model not found: give a model directory (saved by save_pretrained)")
    if path.is_dir() and (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        # A LoRA adapter (peft.merge: false): transformers loads the base it names, then the adapter.
        base = json.loads((path / "adapter_config.json").read_text(encoding="utf-8")).get(
            "base_model_name_or_path"
        )
        if not base:
            raise DataError(
                path / "adapter_config.json", "names no base_model_name_or_path to load the adapter on"
            )
        check_model_dir(base, allow_hub_id=True)
        return
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


# The provider's own key variable, for a config that names none: the one place these are written.
DEFAULT_KEY_ENV = {
    "completions": "OPENAI_API_KEY",
    "chat": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
}


@dataclass
class BackendConfig:
    """Where a model is and how it is reached: the one backend section, nested as ``backend`` in the eval,
    self-distill sample and teacher configs and opened by ``open_backend``. The defaults live here only."""

    model: str = setting(
        "", help="Local HF model directory, vllm:PATH, or http(s) URL(s) of OpenAI-compatible servers "
        "(comma-separated; URL#name picks a served model). Anthropic: an optional base URL.",
    )  # fmt: skip
    served_model_name: str | None = setting(
        None, help="Model name sent to the server (default: its first model); the Anthropic model id."
    )
    api: Literal["completions", "chat", "anthropic"] = setting(
        "completions", help="A server's API: completions (vLLM, SGLang, transformers serve), chat "
        "(continues with continue_final_message), or anthropic (the Messages API).",
    )  # fmt: skip
    # The injected executor text counts against the budget; the server reports only what it generated.
    tokenizer: str | None = setting(
        None,
        help="A server model's tokenizer (dir or hub id): counts executor text exactly (else 4 bytes a token).",
    )
    api_key_env: str = setting(
        "", identity=False, help="Environment variable holding the API key ('': OPENAI_API_KEY, or "
        "ANTHROPIC_API_KEY for api anthropic).",
    )  # fmt: skip
    max_retries: int = setting(
        5, ge=0, identity=False, help="Retries per request to a server (exponential backoff)."
    )
    request_timeout_s: float = setting(
        600.0,
        gt=0,
        identity=False,
        help="Seconds one request to a server may take in all before it is retried.",
    )
    device: str = setting("auto", identity=False, help="Device of a local model: auto, cpu, cuda.")
    max_batch: int = setting(64, ge=1, identity=False, help="Sequences per forward pass (local models).")
    # 192 = the agent loop's 256 trajectories in flight less max_batch's 64: every trajectory waiting on
    # a tool call keeps its keys/values. Memory: (max_batch + parked_slots) slots x the longest row.
    parked_slots: int = setting(
        192,
        ge=0,
        identity=False,
        help="A local model's extra KV slots for rows waiting on a tool call (each as long as the longest row).",
    )

    def __post_init__(self) -> None:
        check_bounds(self)

    @property
    def key_env(self) -> str:
        """The environment variable the API key is read from."""
        return self.api_key_env or DEFAULT_KEY_ENV[self.api]

    @property
    def is_server(self) -> bool:
        return self.model.startswith(("http://", "https://"))


def open_backend(spec: BackendConfig, template: str) -> Backend:
    """The backend a ``BackendConfig`` names, opened the one way every command and teacher opens one.
    ``template`` is the prompt template, whose assistant marker ends the user turn of a chat API.

    - ``api: anthropic``: ``AnthropicBackend`` (``served_model_name`` is the model id; ``model`` an
      optional base URL).
    - a server URL, or several comma-separated: ``OpenAIBackend``, or one ``ServerSet`` over them (the
      least busy first; a failing server is left out for a while, and each server's own retries are cut
      to one, since another takes over). ``URL#name``, else ``served_model_name``, else the server's
      first listed model.
    - ``vllm:PATH``: ``VLLMBackend``; a local directory: ``HFBackend`` on ``device``, ``max_batch``
      sequences per forward pass and ``parked_slots`` rows kept for their continuation. ``api`` must
      stay ``completions`` for both.
    """
    if spec.api == "anthropic":
        from dualdistill.backends.anthropic import (  # cycle: imports this face
            AnthropicBackend,
            AnthropicConfig,
        )

        model = {"model": spec.served_model_name} if spec.served_model_name else {}
        return AnthropicBackend(AnthropicConfig(
            **model, api_key_env=spec.key_env, base_url=spec.model or None, timeout_s=spec.request_timeout_s,
            assistant_marker=assistant_marker(template),
        ))  # fmt: skip
    if spec.is_server:
        return _servers(spec, template)
    if spec.api != "completions":
        raise ConfigError(f"api: {spec.api} needs a server URL as the model, not {spec.model!r}")
    if spec.model.startswith("vllm:"):
        from dualdistill.backends.vllm_engine import VLLMBackend  # heavy: vllm

        return VLLMBackend(spec.model.removeprefix("vllm:"))
    from dualdistill.backends.hf import HFBackend  # heavy: torch

    check_model_dir(spec.model)
    return HFBackend(spec.model, device=spec.device, max_batch=spec.max_batch, parked_slots=spec.parked_slots)


def _servers(spec: BackendConfig, template: str) -> Backend:
    from dualdistill.backends.openai_api import OpenAIBackend  # cycle: it imports this face
    from dualdistill.backends.servers import ServerSet  # cycle: it imports this face

    urls = [u.strip() for u in spec.model.split(",") if u.strip()]
    for u in urls:
        check_url(u.partition("#")[0])
    options: dict[str, Any] = {"api_key_env": spec.key_env, "max_retries": spec.max_retries,
                               "request_timeout": spec.request_timeout_s, "tokenizer": spec.tokenizer}  # fmt: skip
    if spec.api == "chat":
        if template == "chat":
            raise ConfigError(
                "api: chat applies the server's chat template; use template paper, plain or compact"
            )
        options |= {"api": "chat", "assistant_marker": assistant_marker(template)}

    def one(url: str, **extra: Any) -> Backend:
        base, _, name = url.partition("#")
        return OpenAIBackend(base, name or spec.served_model_name or None, **{**options, **extra})

    if len(urls) == 1:
        return one(urls[0])
    return ServerSet([one(u, max_retries=min(spec.max_retries, 1), park_busy=True) for u in urls])


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
