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
import math
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from typing import Literal

from dualdistill.core.config import check_bounds, setting
from dualdistill.format.trajectory import extract_answer
from dualdistill.grading.rationals import exact_rationals
from dualdistill.grading.workers import GraderPool

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


_shared: GraderPool | None = None
_shared_lock = threading.Lock()


def _pool(workers: int | None) -> GraderPool:
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = GraderPool(partial(_math_verify, timeout=None), workers)
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

    def on_done(
        self, key: tuple[str, str], correct: bool, status: Status, message: str, seconds: float
    ) -> None:
        verdict = Verdict(correct, key[0], status, "math_verify", message, seconds)
        indices = self.waiting.pop(key)
        for i in indices:
            self.results[i] = verdict
        if self.progress:
            self.progress(len(indices))
