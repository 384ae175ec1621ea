"""``AnthropicBackend``: the ``Backend`` protocol over the official ``anthropic`` client (messages API).

Guarantees: the API key is read from the environment variable the config names when the backend is
built, passed only to the client, and never appears in ``repr``, errors or records. A refusal raises
``RefusalError``; HTTP and connection failures raise ``BackendError`` naming the API.
Not guaranteed: exact token counts (``count_tokens`` estimates characters / 3.5).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from dualdistill.backends import DEFAULT_KEY_ENV, BackendConfig, BackendError, Completion, RefusalError
from dualdistill.backends.usage import record_usage
from dualdistill.core.config import ConfigError


@dataclass
class AnthropicConfig:
    model: str = "claude-3-5-sonnet-20241022"
    api_key_env: str = DEFAULT_KEY_ENV["anthropic"]  # the key itself never goes in a config
    base_url: str | None = None  # None: the client's default (api.anthropic.com)
    timeout_s: float = BackendConfig.request_timeout_s
    max_retries: int = 2  # the client's own retries (429 and 5xx, with backoff)
    # The prompt text before this marker is the user turn; the text after it is the partial
    # trajectory, sent as an assistant prefill to continue. "\nAssistant: " fits the paper template.
    assistant_marker: str = "\nAssistant: "
    # Which sampling parameters to send (some newer models accept only one, or none).
    sampling: Literal["temperature", "both", "none"] = "temperature"
    extra_headers: dict[str, str] = field(default_factory=dict)


class AnthropicBackend:
    """``Backend`` over the Anthropic messages API (``anthropic.AsyncAnthropic``).

    ``complete(prompt, stop=...)`` sends the user turn and, when the agent is continuing a partial
    trajectory, that text as an assistant prefill (without trailing whitespace, which the API
    rejects). ``stop`` becomes ``stop_sequences``; like every backend, the returned text ends with the
    stop string that ended it. ``seed`` is not supported by the API and is ignored. ``count_tokens``
    is an estimate (characters / 3.5), since exact counting would cost an API call.
    """

    def __init__(self, config: AnthropicConfig | None = None):
        import anthropic

        self.config = config or AnthropicConfig()
        key = os.environ.get(self.config.api_key_env)
        if not key:
            raise ConfigError(
                f"environment variable {self.config.api_key_env} is not set (the Anthropic backend's API key)"
            )
        self._client = anthropic.AsyncAnthropic(
            api_key=key, base_url=self.config.base_url, timeout=self.config.timeout_s,
            max_retries=self.config.max_retries, default_headers=self.config.extra_headers or None,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"AnthropicBackend(model={self.config.model!r}, base_url={self.config.base_url!r})"

    def messages(self, prompt: str) -> list[dict]:
        """The messages sent for ``prompt``: a user turn and, when there is one, an assistant prefill."""
        marker = self.config.assistant_marker
        at = prompt.find(marker)
        if at == -1:
            raise ValueError(
                f"prompt has no assistant marker {marker!r}; set AnthropicConfig.assistant_marker"
            )
        user, prefill = prompt[:at], prompt[at + len(marker) :].rstrip()
        messages = [{"role": "user", "content": user}]
        if prefill:
            messages.append({"role": "assistant", "content": prefill})
        return messages

    async def complete(
        self, prompt: str, *, max_new_tokens: int, stop: list[str], temperature: float,
        top_p: float = 1.0, seed: int | None = None,
    ) -> Completion:  # fmt: skip

        sampling: dict[str, float] = {}
        if self.config.sampling in ("temperature", "both"):
            sampling["temperature"] = temperature
        if self.config.sampling == "both":
            sampling["top_p"] = top_p
        kwargs: dict[str, Any] = {}
        if stop:
            kwargs["stop_sequences"] = list(stop)
        msg = await self._create(max_tokens=max_new_tokens, messages=self.messages(prompt),
                                 extra_body=sampling or None, **kwargs)  # fmt: skip
        if msg.stop_reason == "refusal":
            raise RefusalError("the model refused")
        text = "".join(getattr(b, "text", "") for b in msg.content)
        hit = msg.stop_sequence if msg.stop_reason == "stop_sequence" else None
        if hit:
            text += hit
        finish = "length" if msg.stop_reason == "max_tokens" else "stop"
        return Completion(text, int(msg.usage.output_tokens), finish, hit)

    async def chat(
        self, messages: list[dict], *, tools: list[dict] | None, max_new_tokens: int, temperature: float,
        top_p: float = 1.0,
    ) -> dict:  # fmt: skip
        """One turn with native tool use (``tool_use``/``tool_result``), in and out in the OpenAI message
        shape that ``tool_teacher`` speaks (``OpenAIBackend.chat`` is the other implementation)."""

        kwargs: dict[str, Any] = {}
        if tools:
            kwargs["tools"] = [{"name": t["function"]["name"], "description": t["function"].get("description", ""),
                                "input_schema": t["function"]["parameters"]} for t in tools]  # fmt: skip
        if self.config.sampling != "none":  # sent as complete() sends it: the client's typed field varies
            kwargs["extra_body"] = {"temperature": temperature}
        msg = await self._create(max_tokens=max_new_tokens, messages=to_anthropic(messages), **kwargs)
        text = "".join(getattr(b, "text", "") for b in msg.content if b.type == "text")
        calls = [{"id": b.id, "type": "function", "function": {"name": b.name, "arguments": json.dumps(b.input)}}
                 for b in msg.content if b.type == "tool_use"]  # fmt: skip
        return {"role": "assistant", "content": text or None, "tool_calls": calls}

    async def _create(self, **request: Any):
        """One messages.create call: errors as ``BackendError`` naming the API, usage recorded."""
        import anthropic

        try:
            # A total deadline per call (the client's own timeout restarts with every byte read); the
            # client's retries run inside it.
            msg = await asyncio.wait_for(
                self._client.messages.create(model=self.config.model, **request), self.config.timeout_s
            )
        except TimeoutError:
            raise BackendError(
                f"timeout: no complete answer from the Anthropic API within {self.config.timeout_s:g} s"
            ) from None
        except anthropic.APIStatusError as e:
            raise BackendError(f"HTTP {e.status_code} from the Anthropic API ({type(e).__name__})") from None
        except anthropic.APIConnectionError as e:
            kind = "timeout" if isinstance(e, anthropic.APITimeoutError) else "connection"
            raise BackendError(f"{kind} error talking to the Anthropic API") from None
        record_usage(msg.usage.input_tokens, msg.usage.output_tokens)
        return msg

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text) / 3.5)

    def close(self) -> None:
        """Nothing to release: the client's connections close with it."""


def to_anthropic(messages: list[dict]) -> list[dict]:
    """OpenAI-shaped messages (user, assistant with ``tool_calls``, ``tool``) as Anthropic messages:
    tool calls become ``tool_use`` blocks, and consecutive tool results one user turn of ``tool_result``s."""
    out: list[dict] = []
    for m in messages:
        if m["role"] == "tool":
            block = {"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": m["content"]}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif m["role"] == "assistant" and m.get("tool_calls"):
            blocks: list[dict] = [{"type": "text", "text": m["content"]}] if m.get("content") else []
            for c in m["tool_calls"]:
                try:
                    args = json.loads(c["function"]["arguments"] or "{}")
                except json.JSONDecodeError:
                    args = {}
                blocks.append(
                    {"type": "tool_use", "id": c["id"], "name": c["function"]["name"], "input": args}
                )
            out.append({"role": "assistant", "content": blocks})
        else:
            out.append({"role": m["role"], "content": m.get("content") or ""})
    return out
