"""Worker processes for comparisons that may hang: each job runs in a forked worker that is killed and
replaced once it passes its deadline, so a batch never waits on one item longer than its timeout.

Guarantees: every job gets exactly one outcome (``ok``, ``error`` or ``timeout``); a worker that dies
mid-job reports ``error`` and is replaced; workers are forked lazily, after the parent imported
math-verify, so a replacement costs a fork, not an import. Not guaranteed: fairness between callers
(the caller serialises batches with ``GraderPool.lock``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection, wait

# compare(pred, gold) -> equal?; on_done(key, correct, status, message, seconds)
Compare = Callable[[str, str], bool]
OnDone = Callable[[tuple[str, str], bool, str, str, float], None]


def _close_inherited_fds(keep: int) -> None:
    # A forked worker must not hold the parent's other pipes and sockets open (a sandbox child would
    # never see EOF on its stdin while a grader worker lives).
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else ():
        fd = int(name)
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _worker_main(conn: Connection, compare: Compare) -> None:
    _close_inherited_fds(conn.fileno())
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # silences "timeout is disabled"
    try:
        compare("1", "1")  # warm up the LaTeX parser before reporting ready
        conn.send("ready")
        while True:
            job = conn.recv()
            if job is None:
                return
            key, pred, gold = job
            try:
                conn.send((key, compare(pred, gold), ""))
            except Exception as e:  # a math-verify bug must not take the worker down
                conn.send((key, False, f"{type(e).__name__}: {e}"[:300]))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        return


_START_TIMEOUT_S = 120.0  # a worker's own start-up (fork + warm-up); not charged to any item


class _Worker:
    def __init__(self, ctx: multiprocessing.context.BaseContext, compare: Compare):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, compare), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.job: tuple[tuple[str, str], float, float] | None = None  # (key, started, deadline)
        self.started = time.monotonic()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(timeout=1)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self.conn.close()


_ctx = None


def _context() -> multiprocessing.context.BaseContext:
    global _ctx
    if _ctx is None:
        # fork: a replacement worker costs a fork, not a fresh interpreter plus a sympy import, and
        # (unlike spawn/forkserver) it never re-runs the caller's __main__. math-verify is imported
        # here first so the children import nothing: a child of a threaded parent that still hangs
        # on an inherited lock is caught by the same timeout as a slow comparison.
        import math_verify  # noqa: F401

        _ctx = multiprocessing.get_context("fork")
    return _ctx


class GraderPool:
    """Up to ``workers`` worker processes running ``compare``, started on demand, killed on timeout."""

    def __init__(self, compare: Compare, workers: int | None = None):
        self.compare = compare
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._live: list[_Worker] = []
        self.lock = threading.Lock()

    def close(self) -> None:
        for w in self._live:
            w.stop()
        self._live = []

    def __enter__(self) -> GraderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def resize(self, workers: int) -> None:
        self.workers = max(1, workers)
        while len(self._live) > self.workers:
            self._live.pop().stop()

    def run(
        self,
        feed: Callable[[], tuple[list[tuple[str, str]], bool]],
        timeout: float,
        on_done: OnDone,
    ) -> None:
        """Compare ``(pred, gold)`` jobs; ``on_done(key, correct, status, message, seconds)`` gets each
        job's outcome (status ``ok``, ``error`` or ``timeout``).

        ``feed()`` returns ``(new jobs, more to come)``. It is called between short waits while it has
        more, so the caller's fast path overlaps with the workers' math-verify work.
        """
        pending: deque[tuple[str, str]] = deque()
        feeding = True
        while feeding or pending or any(w.job for w in self._live):
            if feeding:
                jobs, feeding = feed()
                pending.extend(jobs)
            self._dispatch(pending, timeout)
            busy = [w for w in self._live if w.job or not w.ready]
            if not busy:
                continue
            now = time.monotonic()
            deadlines = [w.job[2] if w.job else w.started + _START_TIMEOUT_S for w in busy]
            wait_s = 0.0 if feeding else max(0.0, min(deadlines) - now)
            for conn in wait([w.conn for w in busy], timeout=wait_s):
                self._receive(next(w for w in busy if w.conn is conn), on_done)
            self._expire(on_done)

    def _dispatch(self, pending: deque[tuple[str, str]], timeout: float) -> None:
        idle = [w for w in self._live if w.ready and not w.job]
        starting = sum(1 for w in self._live if not w.ready)
        while len(self._live) < self.workers and len(idle) + starting < len(pending):
            self._live.append(_Worker(_context(), self.compare))
            starting += 1
        for w in idle:
            if not pending:
                break
            key = pending.popleft()
            now = time.monotonic()
            w.conn.send((key, *key))
            w.job = (key, now, now + timeout)

    def _receive(self, w: _Worker, on_done: OnDone) -> None:
        try:
            msg = w.conn.recv()
        except (EOFError, OSError):  # the worker died (out of memory, killed from outside)
            self._live.remove(w)
            w.kill()
            if not w.job:
                raise RuntimeError("a math-verify worker died while starting") from None
            key, started, _ = w.job
            dt = time.monotonic() - started
            on_done(key, False, "error", "worker died", dt)
            return
        if msg == "ready":
            w.ready = True
            return
        key, ok, err = msg
        started = w.job[1] if w.job else time.monotonic()
        w.job = None
        dt = time.monotonic() - started
        on_done(key, bool(ok), "error" if err else "ok", err, dt)

    def _expire(self, on_done: OnDone) -> None:
        now = time.monotonic()
        for w in list(self._live):
            if w.job and now >= w.job[2]:
                self._live.remove(w)
                w.kill()  # the replacement is started lazily by the next _dispatch
                key, started, deadline = w.job
                msg = f"math-verify took longer than {deadline - started:g} s"
                on_done(key, False, "timeout", msg, now - started)
            elif not w.ready and now >= w.started + _START_TIMEOUT_S:
                self._live.remove(w)
                w.kill()
                raise RuntimeError(f"a math-verify worker did not start within {_START_TIMEOUT_S:g} s")
