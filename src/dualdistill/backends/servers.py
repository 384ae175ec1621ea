"""Several inference servers behind one backend: ``--model http://a:8000/v1,http://b:8000/v1``.

vLLM scales out as replicas, each with its own URL. ``ServerSet`` spreads requests over them, the least
busy first (fewest requests in flight, ties to the first listed). A server that fails a request (after
its own backend gave up: connection refused, a timeout, 5xx after retries) is taken out of the set for
``cooldown_s`` seconds and the request is sent again to another server at once; a taken-out server is
tried again after its cool-down. Only when every server has failed the same request does it fail, with
a ``BackendError`` naming each server and its last error.

Guarantees: each request is answered exactly once (a failed attempt returns nothing, so there is nothing
to duplicate); the answer is the one server's answer, unchanged. Requests in flight on a server that dies
fail there and go to another. Not guaranteed: identical answers across servers for sampled decoding
(greedy decoding of the same model agrees).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from dualdistill.backends import BackendError


class ServerSet:
    """A ``Backend`` over several servers' backends (one ``OpenAIBackend`` each)."""

    def __init__(
        self,
        backends: Sequence[Any],
        *,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not backends:
            raise ValueError("ServerSet needs at least one backend")
        self.backends = list(backends)
        self.cooldown_s = cooldown_s
        self._clock = clock
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
        while True:
            order = self._order(tried)
            if not order:
                untried = [i for i in range(len(self.backends)) if i not in tried]
                if untried:  # every server left is cooling down: try the one that went down first
                    order = [min(untried, key=lambda i: self.down_until[i])]
                else:
                    raise BackendError("every server failed this request: " + "; ".join(errors))
            i = order[0]
            tried.add(i)
            self.in_flight[i] += 1
            try:
                result = await call(self.backends[i])
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
