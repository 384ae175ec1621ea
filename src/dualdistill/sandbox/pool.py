"""An asyncio front end: many sessions in use at once, a bounded number of blocks running at once.

``SandboxPool(config, max_concurrency=16, max_open=None)`` runs each blocking ``Session`` call in its own
thread pool of ``max_concurrency`` workers, so at most that many blocks (or session starts) run at the
same time, and holds at most ``max_open`` sessions open (default ``8 x max_concurrency``): a caller that
asks for one more waits until another is closed. So a caller that gathers 2,000 trajectories never has
2,000 sessions, with their processes and descriptors, alive at once. All sessions fork from one shared
template process.

Guarantees: ``async with pool.session() as s`` always closes (kills) the session, also on cancellation;
``await pool.close()`` closes every session still open. Not guaranteed: fairness between waiting sessions
(the thread pool serves them first come, first served).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from dualdistill.sandbox.session import ExecResult, SandboxConfig, Session


class AsyncSession:
    """The async face of a ``Session``; blocks run in the pool's threads."""

    def __init__(self, pool: SandboxPool, session: Session):
        self._pool = pool
        self.session = session

    async def run(self, code: str) -> ExecResult:
        return await self._pool._call(self.session.run, code)

    async def reset(self) -> None:
        await self._pool._call(self.session.reset)

    async def close(self) -> None:
        if self.session in self._pool._open:
            self._pool._open.discard(self.session)
            try:
                await self._pool._call(self.session.close)
            finally:
                self._pool._slots.release()


class SandboxPool:
    """Bounded-concurrency sessions for asyncio code (one generation loop, hundreds of trajectories)."""

    def __init__(
        self, config: SandboxConfig | None = None, max_concurrency: int = 16, max_open: int | None = None
    ):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_open is not None and max_open < 1:
            raise ValueError(f"max_open must be >= 1, got {max_open}")
        self.config = config or SandboxConfig()
        self.max_concurrency = max_concurrency
        self.max_open = max_open or 8 * max_concurrency
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="sandbox")
        self._open: set[Session] = set()
        self._slots = asyncio.Semaphore(self.max_open)

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> AsyncSession:
        """A new session (waiting while ``max_open`` are open); the caller must ``await s.close()``
        (prefer ``async with pool.session()``)."""
        await self._slots.acquire()
        try:
            session = await self._call(Session, self.config)
        except BaseException:
            self._slots.release()
            raise
        self._open.add(session)
        return AsyncSession(self, session)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        s = await self.open()
        try:
            yield s
        finally:
            # Shielded so that a cancelled trajectory still kills its processes.
            await asyncio.shield(s.close())

    async def run_once(self, code: str) -> ExecResult:
        """Run one block in a throwaway session."""
        async with self.session() as s:
            return await s.run(code)

    async def close(self) -> None:
        for s in list(self._open):
            self._open.discard(s)
            await self._call(s.close)
            self._slots.release()
        self._executor.shutdown(wait=False)

    async def __aenter__(self) -> SandboxPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
