"""Several inference servers behind one backend: ``--model http://a:8000/v1,http://b:8000/v1``.

vLLM scales out as replicas, each with its own URL. ``ServerSet`` spreads requests over them, the least
busy first (fewest requests in flight, ties to the first listed). A server that fails a request (after
its own backend gave up: connection refused, a timeout, 5xx after retries) is taken out of the set for
``cooldown_s`` seconds and the request is sent again to another server at once; a taken-out server is
tried again after its cool-down. Only when every server has failed the same request does it fail, with
a ``BackendError`` naming each server and its last error.

A server that answers 429 or 503 with ``Retry-After`` is *parked* for that long, not failed: its backend
raises ``ServerBusy`` at once instead of sleeping with the request, the request goes to another server at
once, and the parked server takes requests again when its wait is over. When every server is parked the
request waits for the first to come back (``waited_s`` counts it).

Guarantees: each request is answered exactly once (a failed attempt returns nothing, so there is nothing
to duplicate); the answer is the one server's answer, unchanged. Requests in flight on a server that dies
fail there and go to another. Not guaranteed: identical answers across servers for sampled decoding
(greedy decoding of the same model agrees).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from dualdistill.backends import BackendError, ServerBusy


class ServerSet:
    """A ``Backend`` over several servers' backends (one ``OpenAIBackend`` each)."""

    def __init__(
        self,
        backends: Sequence[Any],
        *,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_busy: int = 10,
    ):
        if not backends:
            raise ValueError("ServerSet needs at least one backend")
        self.backends = list(backends)
        self.cooldown_s = cooldown_s
        self._clock, self._sleep = clock, sleep
        self.max_busy = max_busy  # busy answers per server that one request takes before it fails
        self.waited_s = 0.0  # time requests spent waiting for a parked server (every one was busy)
        self.in_flight = [0] * len(self.backends)
        self.down_until = [0.0] * len(self.backends)
        self.served = [0] * len(self.backends)  # requests answered, per server

    def __repr__(self) -> str:
        return f"ServerSet({', '.join(repr(b) for b in self.backends)})"

    def _order(self, tried: set[int]) -> list[int]:
        now = self._clock()
        up = [i for i in range(len(self.backends)) if i not in tried and self.down_until[i] <= now]
        return sorted(up, key=lambda i: (self.in_flight[i], i))

    async def _route(self, call: Callable[[Any], Any]):
        tried: set[int] = set()
        errors: list[str] = []
        busy = 0
        while True:
            order = self._order(tried)
            if not order:
                untried = [i for i in range(len(self.backends)) if i not in tried]
                if not untried:
                    raise BackendError("every server failed this request: " + "; ".join(errors))
                # every server left is parked or cooling down: wait for the one that comes back first
                order = [min(untried, key=lambda i: self.down_until[i])]
                wait = self.down_until[order[0]] - self._clock()
                if wait > 0:
                    self.waited_s += wait
                    await self._sleep(wait)
            i = order[0]
            tried.add(i)
            self.in_flight[i] += 1
            try:
                result = await call(self.backends[i])
            except ServerBusy as e:  # parked for its Retry-After; the request goes elsewhere at once
                self.down_until[i] = self._clock() + e.retry_after
                busy += 1
                if busy > self.max_busy * len(self.backends):
                    raise BackendError(
                        f"every server stayed busy for this request ({busy} busy answers)"
                    ) from None
                tried.discard(i)  # busy is no failure: the server may take the request once back
                continue
            except (TimeoutError, BackendError, ConnectionError, OSError) as e:
                self.down_until[i] = self._clock() + self.cooldown_s
                errors.append(f"{self.backends[i]!r}: {e}")
                continue
            finally:
                self.in_flight[i] -= 1
            self.down_until[i] = 0.0
            self.served[i] += 1
            return result

    async def complete(self, prompt: str, **kw):
        return await self._route(lambda b: b.complete(prompt, **kw))

    async def chat(self, messages: list[dict], **kw):
        return await self._route(lambda b: b.chat(messages, **kw))

    def count_tokens(self, text: str) -> int:
        return self.backends[0].count_tokens(text)

    def close(self) -> None:
        for b in self.backends:
            b.close()
