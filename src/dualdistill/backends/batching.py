"""Dynamic batching between asyncio callers and one engine thread.

Callers ``await submit(request)`` from any event loop; a single worker thread owns the model. Every
time the engine is free it takes *all* waiting requests (up to its free room) at once, so the batch
grows by itself when many trajectories are waiting, and a request that arrives while others are
being generated joins at the next step: there is no per-round barrier.

Guarantees: every submitted request's future is resolved exactly once, with a result or with a
``BackendError`` (an engine exception fails the requests it held, and the worker keeps serving);
a cancelled caller's request is dropped at the next step. Not guaranteed: fairness beyond FIFO.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from dualdistill.backends import BackendError


@dataclass(eq=False)
class Pending:
    """One request in flight. ``payload`` is engine-specific; ``state`` is the engine's scratch space."""

    payload: Any
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    state: Any = None

    def resolve(self, result: Any) -> None:
        self.loop.call_soon_threadsafe(_set, self.future, result, None)

    def fail(self, error: BaseException) -> None:
        self.loop.call_soon_threadsafe(_set, self.future, None, error)

    @property
    def cancelled(self) -> bool:
        return self.future.cancelled()


def resolve_all(done: list[tuple[Pending, Any]]) -> None:
    """Resolve many requests with one wake-up per event loop (each wake-up writes to the loop's
    socket, which costs more than setting a result)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any]]] = {}
    for p, result in done:
        by_loop.setdefault(p.loop, []).append((p.future, result))
    for loop, items in by_loop.items():
        loop.call_soon_threadsafe(_set_many, items)


def _set_many(items: list[tuple[asyncio.Future, Any]]) -> None:
    for future, result in items:
        _set(future, result, None)


def _set(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled by its caller meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Engine(Protocol):
    def room(self) -> int:
        """How many more requests the engine can take now."""
        ...

    def busy(self) -> bool:
        """True while the engine holds unfinished requests."""
        ...

    def tick(self, new: list[Pending]) -> None:
        """Admit ``new`` (may be empty) and advance; resolve each finished request exactly once."""
        ...

    def abort(self, error: BaseException) -> list[Pending]:
        """Forget all held requests after an error and return them (to be failed)."""
        ...


@dataclass
class BatchWorker:
    engine: Engine
    name: str = "dualdistill-backend"
    _waiting: list[Pending] = field(default_factory=list)
    _cv: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None
    _closed: bool = False

    async def submit(self, payload: Any) -> Any:
        loop = asyncio.get_running_loop()
        pending = Pending(payload, loop.create_future(), loop)
        with self._cv:
            if self._closed:
                raise BackendError("backend is closed")
            self._waiting.append(pending)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cv.notify()
        return await pending.future

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def _take(self) -> list[Pending] | None:
        with self._cv:
            while not self._closed and not self._waiting and not self.engine.busy():
                self._cv.wait()
            if self._closed:
                return None
            room = self.engine.room()
            taken = [p for p in self._waiting[:room] if not p.cancelled]
            del self._waiting[:room]
            return taken

    def _run(self) -> None:
        while (new := self._take()) is not None:
            try:
                self.engine.tick(new)
            except Exception as e:  # fail what the engine held, keep serving later requests
                error = BackendError(f"generation failed: {type(e).__name__}: {e}")
                error.__cause__ = e
                for p in {*self.engine.abort(error), *new}:
                    p.fail(error)
        with self._cv:  # closed: fail whatever is left
            leftover, self._waiting = self._waiting, []
        for p in leftover + self.engine.abort(BackendError("backend closed")):
            p.fail(BackendError("backend closed"))
