"""``OpenAIBackend``: any OpenAI-compatible server (vLLM, SGLang, hosted APIs), completions or chat.

With ``api="completions"`` (the default) plain-text prompts go to ``POST {base_url}/completions``
through the official ``openai`` client (``AsyncOpenAI``), with the ``stop`` list, ``max_tokens``,
``temperature``, ``top_p`` and ``seed``. With ``api="chat"`` they go to ``POST {base_url}/chat/completions``
(the only API of hosted DeepSeek-R1 and of OpenAI's current models): the prompt up to its assistant
marker is the user message; a reasoning field the server returns (``reasoning_content``: DeepSeek,
vLLM ``--reasoning-parser``; ``reasoning``: OpenRouter) becomes a ``<think>`` block before the content
(or closes the one the template's ``<think>`` prefill opened). Text after the marker beyond that
prefill is a partial response (the tool loop after an executor block): it is sent as the last assistant
message with ``continue_final_message`` (vLLM's extension). A server that refuses it (hosted APIs,
``transformers serve``) gets a ``BackendError`` that says so; over those, evaluate with ``--no-tools``,
or run an agentic teacher with native tool calls.

Guarantees:
- At most ``concurrency`` requests are in flight per backend (an ``asyncio.Semaphore``).
- Every attempt has a total deadline of ``request_timeout`` seconds (connect, headers and body, enforced
  here, not only as the HTTP client's per-read timeout, so a server that trickles one byte a second
  fails too). 429, 5xx, timeouts and connection errors are retried ``max_retries`` times with exponential
  backoff (``backoff_s * 2**attempt``, capped, with jitter; a server's ``Retry-After`` seconds are waited
  at least, up to ``max_backoff_s``); then a ``BackendError`` names the URL, the attempts and the last
  status. So one call ends within ``(max_retries + 1) * request_timeout + max_retries * max_backoff_s``.
  Other 4xx fail at once.
- vLLM and OpenAI strip the stop string from the text. vLLM reports it as ``stop_reason``; the
  backend appends it back so ``Completion.text`` ends with it, as the protocol says.
- The API key is read from the environment variable ``api_key_env`` and is never logged or put in
  an error message.

Not guaranteed: stop detection on servers that report no ``stop_reason`` and strip the stop string
(hosted OpenAI): there the backend cannot tell a stop string from end-of-sequence and returns
``stop=None``. ``count_tokens`` is exact only when ``tokenizer`` names a loadable tokenizer; otherwise
it estimates four bytes per token.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import warnings
import weakref

import openai

from dualdistill.backends import (
    DEFAULT_KEY_ENV,
    BackendConfig,
    BackendError,
    Completion,
    ServerBusy,
    cut_at_stop,
)
from dualdistill.backends.usage import record_usage

_RETRYABLE = (
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APITimeoutError,
    openai.APIConnectionError,
)


class OpenAIBackend:
    """Completions over HTTP. Example::

    backend = OpenAIBackend("http://localhost:8000/v1", "agentic-r1", concurrency=128)
    c = await backend.complete(prompt, max_new_tokens=1024, stop=["</code>"], temperature=0.6)
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key_env: str = DEFAULT_KEY_ENV["completions"],
        concurrency: int = 64,
        max_retries: int = BackendConfig.max_retries,
        request_timeout: float = BackendConfig.request_timeout_s,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        tokenizer: str | None = None,
        api: str = "completions",
        assistant_marker: str = "\nAssistant: ",
        park_busy: bool = False,
    ):
        if api not in ("completions", "chat"):
            raise ValueError(f"api must be 'completions' or 'chat', got {api!r}")
        self.api, self.assistant_marker = api, assistant_marker
        if concurrency < 1 or max_retries < 0:
            raise ValueError(f"need concurrency >= 1 and max_retries >= 0, got {concurrency}, {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_retries = max_retries
        self.request_timeout = request_timeout
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.park_busy = park_busy
        self._concurrency = concurrency
        self._api_key_env = api_key_env
        # Per event loop: the client's connection pool and the semaphore belong to the loop that made
        # them, and a backend may serve several ``asyncio.run`` calls.
        self._per_loop: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._tokenizer_name = tokenizer
        self._tokenizer = None
        self._model_lock: asyncio.Lock | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend({self.base_url!r}, model={self.model!r})"

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
        model = self.model or await self._default_model()
        if self.api == "chat":
            return await self._complete_chat(model, prompt, max_new_tokens, stop, temperature, top_p, seed)
        request = dict(
            model=model, prompt=prompt, max_tokens=max_new_tokens, temperature=temperature, top_p=top_p
        )
        if stop:
            request["stop"] = list(stop)
        if seed is not None:
            request["seed"] = seed
        client, semaphore = self._loop_state()
        async with semaphore:
            response = await self._with_retries(lambda: client.completions.create(**request))
        choice = self._first_choice(response)
        return self._completion(response, choice, choice.text or "", stop)

    def _completion(self, response, choice, text: str, stop: list[str]) -> Completion:
        """The protocol's ``Completion``: the stop string restored, the server's token count recorded."""
        text, hit = _restore_stop(text, choice.finish_reason, _stop_reason(choice), stop)
        usage = response.usage
        record_usage(getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None))
        n_tokens = usage.completion_tokens if usage and usage.completion_tokens is not None else None
        return Completion(
            text=text,
            n_tokens=n_tokens if n_tokens is not None else self.count_tokens(text),
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            stop=hit,
        )

    async def _complete_chat(
        self, model: str, prompt: str, max_new_tokens: int, stop: list[str], temperature: float,
        top_p: float, seed: int | None,
    ) -> Completion:  # fmt: skip
        user, _, partial = prompt.partition(self.assistant_marker)
        messages: list[dict] = [{"role": "user", "content": user}]
        # The server's chat template opens the assistant turn (and a reasoning model's <think>), so a bare
        # <think> prefill is not sent; a longer partial response is continued, not answered anew.
        continuing = partial.strip() not in ("", "<think>")
        if continuing:
            messages.append({"role": "assistant", "content": partial})
        request: dict = dict(model=model, messages=messages, max_tokens=max_new_tokens, temperature=temperature,
                             top_p=top_p)  # fmt: skip
        if continuing:  # vLLM's chat extension; servers without it answer 400/422
            request["extra_body"] = {"continue_final_message": True, "add_generation_prompt": False}
        if stop:
            request["stop"] = list(stop)
        if seed is not None:
            request["seed"] = seed
        try:
            response, choice, message = await self._chat_request(request)
        except BackendError as e:
            if continuing and "HTTP 4" in str(e):
                raise BackendError(
                    f"{e}; the chat API continued a partial response with continue_final_message (a vLLM "
                    "extension) and this server refused it: use api completions for the tool loop here"
                ) from None
            raise
        extra = getattr(message, "model_extra", None) or {}
        reasoning = extra.get("reasoning_content") or extra.get("reasoning") or ""
        return self._completion(
            response, choice, with_reasoning(partial, reasoning, message.content or ""), stop
        )

    async def chat(
        self, messages: list[dict], *, tools: list[dict] | None, max_new_tokens: int, temperature: float,
        top_p: float = 1.0,
    ) -> dict:  # fmt: skip
        """One chat turn with native tool calling; returns the assistant message as a dict (``content``,
        ``tool_calls``: ``[{id, type, function: {name, arguments}}]``). Retries as ``complete`` does."""
        model = self.model or await self._default_model()
        request: dict = dict(model=model, messages=messages, max_tokens=max_new_tokens, temperature=temperature,
                             top_p=top_p)  # fmt: skip
        if tools:
            request["tools"] = tools
        response, _, message = await self._chat_request(request)
        usage = getattr(response, "usage", None)
        record_usage(getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None))
        calls = [{"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
                 for c in message.tool_calls or []]  # fmt: skip
        return {"role": "assistant", "content": message.content, "tool_calls": calls}

    async def _chat_request(self, request: dict):
        """``(response, first choice, its message)`` of one chat request, checked like completions."""
        client, semaphore = self._loop_state()
        async with semaphore:
            response = await self._with_retries(lambda: client.chat.completions.create(**request))
        choices = getattr(response, "choices", None)
        message = getattr(choices[0], "message", None) if isinstance(choices, list) and choices else None
        if message is None or not isinstance(message.content or "", str):
            raise BackendError(f"{self.base_url}: chat response has no message (got {str(response)[:120]!r})")
        return response, choices[0], message

    def close(self) -> None:
        """Drop the per-loop clients (their loops own the connections and close them with the loop)."""
        self._per_loop.clear()

    def count_tokens(self, text: str) -> int:
        tok = self._load_tokenizer()
        if tok is None:
            return max(1, len(text.encode()) // 4) if text else 0
        return len(tok.encode(text, add_special_tokens=False))

    # -- internals -------------------------------------------------------------------------------
    def _first_choice(self, response):
        """The first choice of a completions response, checked: a 200 with the wrong shape (a proxy's
        page, ``[]``, a non-text ``text``) is a ``BackendError`` naming the server, never a traceback."""
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise BackendError(f"{self.base_url}: response has no choices (got {str(response)[:120]!r})")
        choice = choices[0]
        if not isinstance(getattr(choice, "text", None), str):
            raise BackendError(f"{self.base_url}: choice text is {type(choice.text).__name__}, not a string")
        return choice

    def _loop_state(self) -> tuple[openai.AsyncOpenAI, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if loop not in self._per_loop:
            client = openai.AsyncOpenAI(
                base_url=self.base_url,
                # Local servers (vLLM, SGLang) need no key; the client insists on a non-empty one.
                api_key=os.environ.get(self._api_key_env) or "EMPTY",
                max_retries=0,  # retries are ours: we want the backoff and the final error we document
                timeout=self.request_timeout,
            )
            self._per_loop[loop] = (client, asyncio.Semaphore(self._concurrency))
        return self._per_loop[loop]

    def _client(self) -> openai.AsyncOpenAI:
        return self._loop_state()[0]

    async def _with_retries(self, call):
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            try:
                # The whole attempt, body included: httpx's timeout restarts with every byte read.
                return await asyncio.wait_for(call(), self.request_timeout)
            except TimeoutError:
                last = f"Timeout (no complete answer within {self.request_timeout:g} s)"
                if attempt == self.max_retries:
                    break
                await asyncio.sleep(self._delay(attempt, None))
            except _RETRYABLE as e:
                last = _describe(e)
                busy = self._retry_after(e) if self.park_busy else None
                if busy:  # one server of several: the set parks this one and sends the request elsewhere
                    raise ServerBusy(self.base_url, busy) from None
                if attempt == self.max_retries:
                    break
                await asyncio.sleep(self._delay(attempt, e))
            except openai.APIStatusError as e:
                raise BackendError(f"{self.base_url}: request rejected: {_describe(e)}") from None
            except (json.JSONDecodeError, openai.APIResponseValidationError) as e:
                raise BackendError(
                    f"{self.base_url}: answered with a body that is not the API's JSON ({e})"
                ) from None
        raise BackendError(
            f"{self.base_url}: gave up after {self.max_retries + 1} attempts; last error: {last}"
        ) from None

    def _delay(self, attempt: int, error: Exception | None) -> float:
        # jitter spreads out a crowd of retrying requests; a server's Retry-After is a floor, not jittered
        delay = min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
        return max(delay, min(self.max_backoff_s, self._retry_after(error)))

    @staticmethod
    def _retry_after(error: Exception | None) -> float:
        """The seconds of a 429's or 503's ``Retry-After`` header (0 when absent or an HTTP date)."""
        response = getattr(error, "response", None)
        if response is None or response.status_code not in (429, 503):
            return 0.0
        try:
            return max(0.0, float(response.headers.get("retry-after") or 0))
        except ValueError:  # an HTTP date: rare from APIs; keep our backoff
            return 0.0

    async def _default_model(self) -> str:
        if self._model_lock is None:
            self._model_lock = asyncio.Lock()
        async with self._model_lock:
            if self.model is None:
                models = await self._with_retries(lambda: self._client().models.list())
                if not models.data:
                    raise BackendError(f"{self.base_url}: server lists no models; pass a model name")
                self.model = models.data[0].id
        return self.model

    def _load_tokenizer(self):
        name = self._tokenizer_name
        if name is None or self._tokenizer is False:
            return None
        if self._tokenizer is None:
            try:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(name)
            except Exception as e:
                warnings.warn(f"tokenizer {name!r} not loadable ({e}); estimating tokens", stacklevel=2)
                self._tokenizer = False
                return None
        return self._tokenizer


def with_reasoning(partial: str, reasoning: str, content: str) -> str:
    """The completion text of a chat answer whose reasoning came in its own field: the reasoning closes
    the ``<think>`` block the partial response left open, or stands in a new one before the content."""
    if not reasoning:
        return content
    opened = partial.rfind("<think>") > partial.rfind("</think>")
    head = "" if opened else "<think>\n"
    return f"{head}{reasoning.strip()}\n</think>\n{content}"


def _stop_reason(choice) -> str | int | None:
    extra = getattr(choice, "model_extra", None) or {}
    return extra.get("stop_reason", getattr(choice, "stop_reason", None))


def _restore_stop(
    text: str, finish_reason: str | None, stop_reason: str | int | None, stop: list[str]
) -> tuple[str, str | None]:
    """Put back the stop string a server stripped, and cut anything after the first stop string."""
    stripped = isinstance(stop_reason, str) and stop_reason in stop and not text.endswith(stop_reason)
    if finish_reason == "stop" and stripped:
        text += stop_reason
    return cut_at_stop(text, stop)


def _describe(error: Exception) -> str:
    status = getattr(error, "status_code", None)
    kind = type(error).__name__
    return f"HTTP {status} ({kind})" if status is not None else kind
