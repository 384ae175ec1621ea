"""A scripted backend for tests: implements the Backend protocol without a model.

Each ``complete`` call asks ``responder(prompt, seed)`` for the text the "model" would write next and
then behaves like a real backend: it stops at the first stop string (included in the text) and cuts
at ``max_new_tokens``. One token is one character, so budget arithmetic in tests is exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ScriptedCompletion:
    text: str
    n_tokens: int
    finish_reason: str
    stop: str | None


@dataclass
class Call:
    prompt: str
    max_new_tokens: int
    stop: list[str]
    temperature: float
    top_p: float
    seed: int | None


@dataclass
class ScriptedBackend:
    responder: Callable[[str, int | None], str] | list[str]
    delay_s: float = 0.0
    fail_after: int | None = None  # raise on the call with this index (simulates a dead server)
    calls: list[Call] = field(default_factory=list)

    def count_tokens(self, text: str) -> int:
        return len(text)

    async def complete(self, prompt, *, max_new_tokens, stop, temperature, top_p=1.0, seed=None):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise ConnectionError("scripted backend: server went away")
        self.calls.append(Call(prompt, max_new_tokens, list(stop), temperature, top_p, seed))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if isinstance(self.responder, list):
            text = self.responder.pop(0) if self.responder else ""
        else:
            text = self.responder(prompt, seed)
        hits = [(i, s) for s in stop if (i := text.find(s)) != -1]
        hit = min(hits) if hits else None
        if hit is not None:
            text = text[: hit[0] + len(hit[1])]
        if len(text) > max_new_tokens:
            return ScriptedCompletion(text[:max_new_tokens], max_new_tokens, "length", None)
        return ScriptedCompletion(text, len(text), "stop", hit[1] if hit else None)
