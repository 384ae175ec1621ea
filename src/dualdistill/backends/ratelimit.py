"""Request and token rates per minute for hosted APIs, enforced before a request is sent.

Hosted providers limit requests and tokens per minute; reacting to their 429s wastes attempts and
backoff. ``RateLimiter(requests_per_minute, tokens_per_minute)`` paces requests at that rate: a request
starts no sooner than ``60 / requests_per_minute`` seconds after the previous one, and its tokens (the
prompt plus the completion budget, the most it can use) occupy the token rate for ``60 * tokens /
tokens_per_minute`` seconds. Once the server answers, ``settle`` books what it really used, so an answer
shorter than its budget gives the time back.

A single request that reserves more than the token rate allows in a minute is refused (ValueError naming
both numbers); ``teachers.build.spec_backend`` checks the generation budget against the limit at load. A request
waiting for tokens wakes as soon as one in flight settles and gives its unused tokens back.

Guarantees: requests start in arrival order; n requests at r per minute span at least ``(n - 1) * 60 / r``
seconds (30 at 60 per minute: at least 29 s), with no burst; the tokens booked never run ahead of the
token rate. 0 means no limit. ``waiting_s`` is the total time spent waiting so far (teach shows it in its
progress line). Clock and sleep are injectable, so a test can check the waits without sleeping.

Not guaranteed: limits shared across processes (each process, or shard, paces itself).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class RateLimiter:
    def __init__(
        self,
        requests_per_minute: float = 0,
        tokens_per_minute: float = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        if requests_per_minute < 0 or tokens_per_minute < 0:
            raise ValueError("rate limits must be >= 0 (0: no limit)")
        self.rpm, self.tpm = requests_per_minute, tokens_per_minute
        self._clock, self._sleep = clock, sleep
        self._next_request = float("-inf")  # the earliest start of the next request
        self._tokens_free = float("-inf")  # when the tokens booked so far are paid off
        self._lock: asyncio.Lock | None = None
        self._settled: asyncio.Event | None = None  # set when a request gives unused tokens back
        self.waiting_s = 0.0
        self.waits: list[float] = []  # each wait, in order (tests and reports)

    @property
    def active(self) -> bool:
        return bool(self.rpm or self.tpm)

    async def acquire(self, tokens: int = 0) -> list:
        """Wait until the next request may start, book it, and return its booking (for ``settle``)."""
        if not self.active:
            return [self._clock(), tokens]
        if self.tpm and tokens > self.tpm:
            raise ValueError(
                f"one request reserves {tokens} tokens, more than max_tokens_per_minute {self.tpm:g}: "
                "raise the limit or lower the generation budget"
            )
        if self._lock is None or self._settled is None:
            self._lock, self._settled = asyncio.Lock(), asyncio.Event()
        async with self._lock:  # one admission at a time, in arrival order
            began = now = self._clock()
            start = self._start(now)
            while start > now:
                # Sleep until the booked time, or until a request in flight settles and gives tokens back.
                self._settled.clear()
                sleeper = asyncio.ensure_future(self._sleep(start - now))
                woken = asyncio.ensure_future(self._settled.wait())
                _, pending = await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                now = self._clock()
                start = self._start(now)
            if now > began:
                self.waiting_s += now - began
                self.waits.append(now - began)
            if self.rpm:
                self._next_request = start + 60.0 / self.rpm
            if self.tpm:
                self._tokens_free = max(self._tokens_free, start) + 60.0 * tokens / self.tpm
            return [start, tokens]

    def _start(self, now: float) -> float:
        return max(now, self._next_request, self._tokens_free if self.tpm else now)

    def settle(self, booking: list, tokens: int | None) -> None:
        """Book what a request really used instead of its reservation (when the server reported it); a
        request waiting for tokens wakes at once to see whether it may start now."""
        if tokens is None or not self.tpm:
            return
        self._tokens_free -= 60.0 * (booking[1] - tokens) / self.tpm
        booking[1] = tokens
        if self._settled is not None:
            self._settled.set()


class RateLimitedBackend:
    """A ``Backend`` (and the ``chat`` of tool-calling backends) whose requests pass ``limiter`` first.

    ``complete`` reserves the prompt's tokens plus ``max_new_tokens`` and settles at the prompt's tokens
    plus those generated; ``chat`` reserves the messages' estimated tokens plus ``max_new_tokens``.
    """

    def __init__(self, backend, limiter: RateLimiter):
        self.backend, self.limiter = backend, limiter

    def __getattr__(self, name: str):  # everything else (context_length, close, ...) is the backend's
        return getattr(self.backend, name)

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    async def complete(self, prompt: str, *, max_new_tokens: int, **kw):
        prompt_tokens = self.backend.count_tokens(prompt)
        entry = await self.limiter.acquire(prompt_tokens + max_new_tokens)
        out = await self.backend.complete(prompt, max_new_tokens=max_new_tokens, **kw)
        self.limiter.settle(entry, prompt_tokens + out.n_tokens)
        return out

    async def chat(self, messages: list[dict], *, max_new_tokens: int, **kw):
        import json

        await self.limiter.acquire(self.backend.count_tokens(json.dumps(messages)) + max_new_tokens)
        return await self.backend.chat(messages, max_new_tokens=max_new_tokens, **kw)

    def close(self) -> None:
        self.backend.close()
