"""Token accounting: what each request to a hosted model cost, as the server reported it.

Backends call ``record_usage`` after every response that carries ``usage``; ``usage_scope`` collects the
calls made inside it (one teacher attempt, say) into a ``Counter`` of ``requests``, ``prompt_tokens`` and
``completion_tokens``. The scope is a ``ContextVar``, so concurrent attempts (separate asyncio tasks)
never mix their counts.

Not guaranteed: counts from servers that report no usage (their requests are counted, their tokens 0).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from contextvars import ContextVar

_CURRENT: ContextVar[Counter | None] = ContextVar("dualdistill_usage", default=None)


@contextlib.contextmanager
def usage_scope() -> Iterator[Counter]:
    counter: Counter = Counter()
    token = _CURRENT.set(counter)
    try:
        yield counter
    finally:
        _CURRENT.reset(token)


def record_usage(prompt_tokens: int | None, completion_tokens: int | None) -> None:
    counter = _CURRENT.get()
    if counter is None:
        return
    counter["requests"] += 1
    counter["prompt_tokens"] += int(prompt_tokens or 0)
    counter["completion_tokens"] += int(completion_tokens or 0)
