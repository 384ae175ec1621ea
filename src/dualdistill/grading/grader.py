r"""The grader: is a response's final answer equal to the gold answer?

``grade(response, gold)`` extracts the answer with ``format.trajectory.extract_answer`` and compares it with
``answers_match``'s rules: a fast exact path for plain numbers, then Hugging Face ``math-verify`` (the
paper's grader) for everything else. ``grade_many`` does the same for a batch on all cores.

Guarantees:
- Whole-answer comparison, never substring matching: gold ``1`` rejects ``10``, gold ``12`` rejects
  ``2012``, gold ``0.5`` rejects ``0.05``.
- Plain integers, decimals and simple fractions (``1,234``; ``-0.5``; ``3/4``; ``\dfrac{3}{4}``; also
  after ``x =``, ``\$``, ``\text{}``, degree signs or a whitelisted unit word) are decided exactly in
  the calling process; math-verify is never imported for them.
- Every other comparison runs in a worker process that is killed and replaced once it passes its
  per-item ``timeout``. A timeout is reported as ``status="timeout"``; a batch never hangs on one item.
  math-verify's own signal timeouts are switched off in the workers: the kill is the one mechanism.
- Workers start lazily (only when an item needs math-verify), forked from the calling process after
  it has imported math-verify, so a replacement costs a fork, not an import.

Decisions (see docs/GRADING.md):
- ``1,234`` (commas between groups of exactly three digits, no brackets) is the number 1234, as in
  math-verify; a tuple or a list needs brackets or a space after the comma (``(1,234)``, ``1, 234``).
- A decimal never equals a different fraction exactly; near-equal pairs such as ``0.333333`` and
  ``1/3`` are left to math-verify, which rounds to 6 places.

Not guaranteed: ``answers_match`` runs math-verify in the calling process (with math-verify's own
signal timeout in the main thread only); use ``grade``/``grade_many`` when a hang must be impossible.
Concurrent calls from several threads share one worker pool and are served one batch at a time.
"""

from __future__ import annotations

import atexit
import logging
import math
import multiprocessing
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import Connection, wait
from typing import Literal

from dualdistill.core.config import check_bounds, setting
from dualdistill.format.trajectory import extract_answer
from dualdistill.grading.rationals import exact_rationals

# Seconds one math-verify comparison may take (a hostile answer can make sympy run for ever): the one default.
GRADE_TIMEOUT_S = 5.0


@dataclass
class GradeConfig:
    """How responses are graded; the grade timeout of eval, sampling and compose is this field."""

    timeout_s: float = setting(GRADE_TIMEOUT_S, gt=0, help="Seconds allowed per math-verify comparison.")
    workers: int | None = setting(None, ge=1, identity=False, help="Worker processes (default: all cores).")

    def __post_init__(self) -> None:
        check_bounds(self)


Status = Literal["ok", "no_answer", "timeout", "error"]
Method = Literal["exact", "math_verify", "none"]


@dataclass(frozen=True)
class Verdict:
    correct: bool
    extracted: str | None
    status: Status
    method: Method = "none"  # which path decided: the exact fast path or math-verify
    message: str = ""  # the reason for an "error" or "timeout"
    duration_s: float = 0.0  # time spent in a worker (0 for the fast path)

    def to_dict(self) -> dict:
        return {"correct": self.correct, "extracted": self.extracted, "status": self.status}


# ----------------------------------------------------------------------------- fast exact path
# Units that may follow a number in a final answer. A whitelist on purpose: stripping arbitrary words
# would accept "5 thousand" or "5 pi" for gold 5.
_UNIT_LIST = (
    "cm m km mm in inch inches ft foot feet yd yard yards mi mile miles meter meters metre metres "
    "kilometer kilometers centimeter centimeters millimeter millimeters unit units square sq cubic "
    "degree degrees deg rad radians dollar dollars cent cents second seconds sec s minute minutes "
    "min hour hours hr hrs h day days week weeks month months year years mph kph km/h kg g gram "
    "grams mg lb lbs pound pounds oz ounce ounces l liter liters litre litres ml gallon gallons "
    "people persons students ways times points"
)
UNITS: frozenset[str] = frozenset(_UNIT_LIST.split())
_SPACING = re.compile(r"\\[,;:! ]|\\q?quad|\\displaystyle|\\left|\\right|~")
_WRAPPER = re.compile(r"^\\(?:text|textbf|textrm|mathrm|mathbf|mbox|boxed)\{(.*)\}$", re.S)
_DEGREE = re.compile(r"(?:\^\s*\{?\\circ\}?|°|\\degree)$")
_PERCENT = re.compile(r"\s*(?:\\%|%|\\text\{\s*\\?%\s*\})$")
_ASSIGN = re.compile(r"^([a-zA-Z])(?:_\{?\w+\}?)?\s*=\s*(?=\S)")
_UNIT_TEXT = re.compile(r"\\(?:text|mbox|mathrm)\{\s*([^{}]*?)\s*\}(?:\^\{?[23]\}?)?$")
_UNIT_WORDS = re.compile(r"(?<=[\d.])\s+([a-zA-Z/]+(?:\s+[a-zA-Z/]+)*)(?:\^\{?[23]\}?)?$")
_INT = r"(?:\d{1,3}(?:,\d{3})+|\d+)"
_NUMBER = re.compile(rf"^([+-]?)({_INT}(?:\.\d*)?|\.\d+)$")
_FRACTION = re.compile(r"^([+-]?)(?:\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}|(\d+)/(\d+))$")
_SPACED_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?: \d{3})+$")


@dataclass(frozen=True)
class _Num:
    value: Fraction
    decimal: bool  # written with a decimal point: equality with other forms may need rounding


def _strip_units(s: str) -> str:
    m = _UNIT_TEXT.search(s)
    if m and m.start() > 0 and all(w.lower() in UNITS for w in m.group(1).split()):
        return s[: m.start()].rstrip()
    m = _UNIT_WORDS.search(s)  # bare words: no single letters ("5 m" may be a product)
    if m and all(len(w) > 1 and w.lower() in UNITS for w in m.group(1).split()):
        return s[: m.start()].rstrip()
    return s


def normalize(answer: str) -> tuple[str, str | None]:
    """Cheap, meaning-preserving clean-up; returns ``(text, assigned variable or None)``."""
    s = answer.strip().strip("$").strip().replace("−", "-")
    s = _SPACING.sub(" ", s).strip()
    for _ in range(3):  # \text{\textbf{5}} and similar nestings
        m = _WRAPPER.match(s)
        if not m:
            break
        s = m.group(1).strip()
    s = re.sub(r"\\[dt]frac", r"\\frac", s).rstrip(".").strip()
    var = None
    m = _ASSIGN.match(s)
    if m and "=" not in s[m.end() :]:  # "x = 5", not "a = 1, b = 2"
        var, s = m.group(1), s[m.end() :]
    s = _DEGREE.sub("", s).strip()
    s = _PERCENT.sub("", s).strip()  # a percent sign is a unit: 35.0\% is 35 (as gold "35" means)
    s = s.removeprefix("\\$").strip()
    s = _strip_units(s)
    if _SPACED_THOUSANDS.match(s):  # "1 234" is 1234 (math-verify would read 1 + 234)
        s = s.replace(" ", "")
    return s, var


def _number(s: str) -> _Num | None:
    s = s.replace(" ", "") if not re.search(r"\d\s+\d", s) else s
    try:
        m = _NUMBER.match(s)
        if m:
            return _Num(Fraction(m.group(1) + m.group(2).replace(",", "")), "." in m.group(2))
        m = _FRACTION.match(s)
        if m:
            num, den = (m.group(2), m.group(3)) if m.group(2) else (m.group(4), m.group(5))
            if int(den) == 0:
                return None
            sign = -1 if m.group(1) == "-" else 1
            return _Num(sign * Fraction(int(num), int(den)), False)
    except ValueError:  # more digits than int() converts; let math-verify decide
        return None
    return None


def fast_match(pred: str, gold: str) -> bool | None:
    """Decide exactly when both sides are plain numbers or identical after clean-up; else ``None``."""
    p, pvar = normalize(pred)
    g, gvar = normalize(gold)
    if pvar and gvar and pvar != gvar:
        return None
    if p == g and p:
        return True
    pn, gn = _number(p), _number(g)
    if pn is None or gn is None:
        return None
    if pn.value == gn.value:
        return True
    if not (pn.decimal or gn.decimal):
        return False
    # A decimal that is far from the other value is wrong under any rounding math-verify applies.
    if abs(pn.value - gn.value) > Fraction(1, 1000) * max(1, abs(gn.value)):
        return False
    return None


# ----------------------------------------------------------------------------- math-verify
_MV_CONFIG = None


def _math_verify(pred: str, gold: str, *, timeout: int | None) -> bool:
    global _MV_CONFIG
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    if _MV_CONFIG is None:
        _MV_CONFIG = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]

    def prep(s: str) -> str:
        s = s.strip().replace(" ", "") if _SPACED_THOUSANDS.match(s.strip()) else s
        return "\\boxed{" + s.replace("°", "^\\circ") + "}"

    g = parse(prep(gold), extraction_config=_MV_CONFIG, parsing_timeout=timeout)
    p = parse(prep(pred), extraction_config=_MV_CONFIG, parsing_timeout=timeout)
    exact = exact_rationals(g, p)
    if exact is not None:
        return exact
    return bool(g and p and verify(g, p, timeout_seconds=timeout))


def answers_match(pred: str, gold: str) -> bool:
    """Pure comparison of two answer strings (no extraction), in the calling process."""
    fast = fast_match(pred, gold)
    if fast is not None:
        return fast
    # math-verify's signal-based timeout only works in the main thread; elsewhere it must be off.
    in_main = threading.current_thread() is threading.main_thread()
    return _math_verify(pred, gold, timeout=5 if in_main else None)


# ----------------------------------------------------------------------------- worker processes
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


def _worker_main(conn: Connection) -> None:
    _close_inherited_fds(conn.fileno())
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # silences "timeout is disabled"
    try:
        _math_verify("1", "1", timeout=None)  # warm up the LaTeX parser before reporting ready
        conn.send("ready")
        while True:
            job = conn.recv()
            if job is None:
                return
            key, pred, gold = job
            try:
                conn.send((key, _math_verify(pred, gold, timeout=None), ""))
            except Exception as e:  # a math-verify bug must not take the worker down
                conn.send((key, False, f"{type(e).__name__}: {e}"[:300]))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        return


_START_TIMEOUT_S = 120.0  # a worker's own start-up (fork + warm-up); not charged to any item


class _Worker:
    def __init__(self, ctx: multiprocessing.context.BaseContext):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
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
    """Up to ``workers`` math-verify worker processes, started on demand, killed on timeout."""

    def __init__(self, workers: int | None = None):
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
        on_done: Callable[[tuple[str, str], Verdict], None],
    ) -> None:
        """Compare ``(pred, gold)`` jobs with math-verify; ``on_done`` gets each job's Verdict.

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
            self._live.append(_Worker(_context()))
            starting += 1
        for w in idle:
            if not pending:
                break
            key = pending.popleft()
            now = time.monotonic()
            w.conn.send((key, *key))
            w.job = (key, now, now + timeout)

    def _receive(self, w: _Worker, on_done: Callable) -> None:
        try:
            msg = w.conn.recv()
        except (EOFError, OSError):  # the worker died (out of memory, killed from outside)
            self._live.remove(w)
            w.kill()
            if not w.job:
                raise RuntimeError("a math-verify worker died while starting") from None
            key, started, _ = w.job
            dt = time.monotonic() - started
            on_done(key, Verdict(False, key[0], "error", "math_verify", "worker died", dt))
            return
        if msg == "ready":
            w.ready = True
            return
        key, ok, err = msg
        started = w.job[1] if w.job else time.monotonic()
        w.job = None
        dt = time.monotonic() - started
        status: Status = "error" if err else "ok"
        on_done(key, Verdict(bool(ok), key[0], status, "math_verify", err, dt))

    def _expire(self, on_done: Callable) -> None:
        now = time.monotonic()
        for w in list(self._live):
            if w.job and now >= w.job[2]:
                self._live.remove(w)
                w.kill()  # the replacement is started lazily by the next _dispatch
                key, started, deadline = w.job
                msg = f"math-verify took longer than {deadline - started:g} s"
                on_done(key, Verdict(False, key[0], "timeout", "math_verify", msg, now - started))
            elif not w.ready and now >= w.started + _START_TIMEOUT_S:
                self._live.remove(w)
                w.kill()
                raise RuntimeError(f"a math-verify worker did not start within {_START_TIMEOUT_S:g} s")


_shared: GraderPool | None = None
_shared_lock = threading.Lock()


def _pool(workers: int | None) -> GraderPool:
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = GraderPool(workers)
            atexit.register(_shared.close)
        _shared.resize(workers or os.cpu_count() or 1)
        return _shared


# ----------------------------------------------------------------------------- public API
def _first_pass(response: str, gold: str) -> Verdict | tuple[str, str]:
    """The Verdict when extraction or the fast path decides; else the ``(pred, gold)`` job."""
    extracted = extract_answer(response)
    if not extracted:  # nothing found, or an empty \boxed{}
        return Verdict(False, extracted, "no_answer")
    gold = str(gold)
    if not gold.strip():
        return Verdict(False, extracted, "error", message="empty gold answer")
    fast = fast_match(extracted, gold)
    if fast is not None:
        return Verdict(fast, extracted, "ok", "exact")
    return (extracted, gold)


def grade(response: str, gold: str, *, timeout: float = GRADE_TIMEOUT_S) -> Verdict:
    """Grade one response against a gold answer; never blocks longer than about ``timeout``."""
    return grade_many([(response, gold)], timeout=timeout)[0]


def grade_many(
    pairs: Iterable[tuple[str, str]],
    *,
    timeout: float = GRADE_TIMEOUT_S,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Verdict]:
    """Grade ``(response, gold)`` pairs; the verdicts come back in input order.

    Extraction and the fast path run in this process; other comparisons run on ``workers`` processes
    (default: all cores), each killed after ``timeout`` seconds. Identical ``(answer, gold)``
    comparisons run once. ``progress(n)`` is called as ``n`` more items finish.
    """
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    batch = _Batch(list(pairs), progress)
    first: list[tuple[str, str]] = []
    more = True
    while more and not first:  # no worker starts unless some item needs math-verify
        first, more = batch.feed()
    if first:
        pool = _pool(workers)
        queued = [(first, more)]

        def feed_pool() -> tuple[list[tuple[str, str]], bool]:
            return queued.pop() if queued else batch.feed()

        with pool.lock:
            pool.run(feed_pool, timeout, batch.on_done)
    missing = [i for i, r in enumerate(batch.results) if r is None]
    if missing:
        raise RuntimeError(f"internal error: items {missing[:5]} were never graded")
    return batch.results  # type: ignore[return-value]


class _Batch:
    """The verdicts of one ``grade_many`` call as they come in: the fast path runs here, chunk by chunk;
    each distinct comparison it cannot settle goes to the pool once, and its verdict fills every item
    that asked it."""

    def __init__(self, pairs: list[tuple[str, str]], progress: Callable[[int], None] | None):
        self.pairs, self.progress = pairs, progress
        self.results: list[Verdict | None] = [None] * len(pairs)
        self.waiting: dict[tuple[str, str], list[int]] = {}
        self.cursor = 0

    def feed(self, chunk: int = 512) -> tuple[list[tuple[str, str]], bool]:
        """The next chunk's new comparisons for the pool, and whether items remain."""
        jobs, done = [], 0
        end = min(self.cursor + chunk, len(self.pairs))
        for i in range(self.cursor, end):
            out = _first_pass(*self.pairs[i])
            if isinstance(out, Verdict):
                self.results[i] = out
                done += 1
            else:
                if out not in self.waiting:
                    jobs.append(out)
                self.waiting.setdefault(out, []).append(i)
        self.cursor = end
        if self.progress and done:
            self.progress(done)
        return jobs, self.cursor < len(self.pairs)

    def on_done(self, key: tuple[str, str], verdict: Verdict) -> None:
        indices = self.waiting.pop(key)
        for i in indices:
            self.results[i] = verdict
        if self.progress:
            self.progress(len(indices))
