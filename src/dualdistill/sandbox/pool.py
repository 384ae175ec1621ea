"""An asyncio front end: many sessions in use at once, a bounded number of blocks running at once.

``SandboxPool(config, max_concurrency=16)`` runs each blocking ``Session`` call in its own thread pool of
``max_concurrency`` workers, so at most that many blocks (or session starts) run at the same time while
any number of sessions stay open. All sessions fork from one shared template process.

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
        self._pool._open.discard(self.session)
        await self._pool._call(self.session.close)


class SandboxPool:
    """Bounded-concurrency sessions for asyncio code (one generation loop, hundreds of trajectories)."""

    def __init__(self, config: SandboxConfig | None = None, max_concurrency: int = 16):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.config = config or SandboxConfig()
        self.max_concurrency = max_concurrency
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="sandbox")
        self._open: set[Session] = set()

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> AsyncSession:
        """A new session; the caller must ``await s.close()`` (prefer ``async with pool.session()``)."""
        session = await self._call(Session, self.config)
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
            await self._call(s.close)
        self._open.clear()
        self._executor.shutdown(wait=False)

    async def __aenter__(self) -> SandboxPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
