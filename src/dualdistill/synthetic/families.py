"""The synthetic math world: seeded problem families where text reasoning and tool use are complementary.

Three question *phrasings* are shared across groups, so a student must route on the problem's content
(the magnitudes in it), never on a template word that names the strategy:

=================  =======  =====================================================================
family             group    what it asks (same phrasings as its siblings, different magnitudes)
=================  =======  =====================================================================
``mul_large``      tool     product of two 3-4 digit numbers
``powmod_large``   tool     ``a^n (+ c) mod m`` with a 2-digit exponent and a 3-4 digit modulus
``count_digits``   tool     how many of 1..N (N in 1000..9999) have digit sum s
``last_digit``     text     ``a^n (+ c) mod 10`` with a 12-15 digit exponent (last-digit cycle)
``near_one``       text     ``b^n (+ c) mod m`` with ``b = m ± 1`` and a 12-15 digit exponent
``mul_small``      mixed    product of a 2-digit and a 1-digit number
``powmod_small``   mixed    ``a^n (+ c) mod m`` with a one-digit base, ``n`` in {2, 3}, small ``m``
=================  =======  =====================================================================

Guarantees:
- ``generate(n, seed)`` is a pure function of its arguments; questions are unique; answers are exact
  integers (computed with closed forms here and re-checked by an independent computation in tests).
- ``make_splits`` gives fixed, seeded train/test splits with no exact question string in both, each
  family in both splits in proportion. Not guaranteed: that no test problem has a twin with the same
  numbers in another phrasing in the training split (in the demo's world 0, 13 of the 399 test
  questions have the same multiset of numbers as a training question).
- ``parse_question`` reads every question this module writes back into its numbers; the programmatic
  teachers use it, so they see only the question text, never the family or group.

Not guaranteed: anything about problems from other sources; ``parse_question`` returns ``None`` for them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dualdistill.format.problems import Problem, write_problems

Group = Literal["tool", "text", "mixed"]
SOURCE = "synthetic"


# ----------------------------------------------------------------------------- phrasings
# Each kind has a few phrasings; every family of that kind draws from all of them.
MUL_PHRASES = ("Compute {a} * {b}.", "What is {a} times {b}?", "Find the product of {a} and {b}.")
POW_PHRASES = (
    "Find the remainder when {expr} is divided by {m}.",
    "What is the remainder of {expr} modulo {m}?",
    "Compute ({expr}) mod {m}.",
)
COUNT_PHRASES = (
    "How many integers n with 1 <= n <= {N} have digit sum {s}?",
    "Count the integers from 1 to {N} whose digits add up to {s}.",
)

_MUL_RES = [re.compile(r"(?:Compute|What is|Find the product of) (\d+) (?:\*|times|and) (\d+)\s*[.?]$")]
_POW_RES = [
    re.compile(r"^Find the remainder when (\d+)\^(\d+)(?: \+ (\d+))? is divided by (\d+)\.$"),
    re.compile(r"^What is the remainder of (\d+)\^(\d+)(?: \+ (\d+))? modulo (\d+)\?$"),
    re.compile(r"^Compute \((\d+)\^(\d+)(?: \+ (\d+))?\) mod (\d+)\.$"),
]
_COUNT_RES = [
    re.compile(r"^How many integers n with 1 <= n <= (\d+) have digit sum (\d+)\?$"),
    re.compile(r"^Count the integers from 1 to (\d+) whose digits add up to (\d+)\.$"),
]


@dataclass(frozen=True)
class Mul:
    a: int
    b: int


@dataclass(frozen=True)
class PowMod:
    a: int
    n: int
    c: int  # 0 when the question has no "+ c"
    m: int


@dataclass(frozen=True)
class Count:
    N: int
    s: int


Parsed = Mul | PowMod | Count


def parse_question(question: str) -> Parsed | None:
    """The numbers of a synthetic question, by phrasing; ``None`` for anything else."""
    q = question.strip()
    for r in _MUL_RES:
        if m := r.search(q):
            return Mul(int(m[1]), int(m[2]))
    for r in _POW_RES:
        if m := r.search(q):
            return PowMod(int(m[1]), int(m[2]), int(m[3] or 0), int(m[4]))
    for r in _COUNT_RES:
        if m := r.search(q):
            return Count(int(m[1]), int(m[2]))
    return None


def render_question(p: Parsed, rng: random.Random) -> str:
    if isinstance(p, Mul):
        return rng.choice(MUL_PHRASES).format(a=p.a, b=p.b)
    if isinstance(p, PowMod):
        expr = f"{p.a}^{p.n}" + (f" + {p.c}" if p.c else "")
        return rng.choice(POW_PHRASES).format(expr=expr, m=p.m)
    return rng.choice(COUNT_PHRASES).format(N=p.N, s=p.s)


# ----------------------------------------------------------------------------- exact answers
def digit_sum(n: int) -> int:
    return sum(map(int, str(n)))


def count_digit_sum(N: int, s: int) -> int:
    """How many of 1..N have digit sum s (direct enumeration; N is at most a few thousand)."""
    return sum(1 for n in range(1, N + 1) if digit_sum(n) == s)


def last_digit_cycle(d: int) -> list[int]:
    """The last digits of d^1, d^2, ... up to the first repeat (length 1, 2 or 4)."""
    cycle = [d % 10]
    while (cycle[-1] * d) % 10 != cycle[0]:
        cycle.append((cycle[-1] * d) % 10)
    return cycle


def answer_of(p: Parsed) -> int:
    """The exact answer. Huge exponents use the closed forms the text teacher uses (cycles, ±1)."""
    if isinstance(p, Mul):
        return p.a * p.b
    if isinstance(p, Count):
        return count_digit_sum(p.N, p.s)
    if p.n < 10**6:
        return (pow(p.a, p.n, p.m) + p.c) % p.m
    if p.m == 10:
        cycle = last_digit_cycle(p.a)
        return (cycle[(p.n - 1) % len(cycle)] + p.c) % 10
    if p.a % p.m == 1:
        return (1 + p.c) % p.m
    if p.a % p.m == p.m - 1:
        return ((1 if p.n % 2 == 0 else p.m - 1) + p.c) % p.m
    raise ValueError(f"no closed form for a huge exponent in {p}")


# ----------------------------------------------------------------------------- families
def _huge_exponent(rng: random.Random) -> int:
    digits = rng.randint(12, 15)
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def _maybe_c(rng: random.Random, hi: int) -> int:
    return rng.randint(1, hi) if rng.random() < 0.5 else 0


def _mul_large(rng: random.Random) -> Parsed:
    return Mul(rng.randint(1000, 9999), rng.randint(1000, 9999))


def _mul_small(rng: random.Random) -> Parsed:
    return Mul(rng.randint(11, 99), rng.randint(2, 9))


def _powmod_large(rng: random.Random) -> Parsed:
    return PowMod(rng.randint(11, 999), rng.randint(7, 40), _maybe_c(rng, 99), rng.randint(101, 9999))


def _powmod_small(rng: random.Random) -> Parsed:
    n = rng.choice((2, 3))
    a = rng.randint(2, 9 if n == 2 else 6)
    return PowMod(a, n, _maybe_c(rng, 9), rng.randint(5, 30))


def _count_digits(rng: random.Random) -> Parsed:
    N = rng.randint(1000, 9999)
    return Count(N, rng.randint(5, 25))


def _last_digit(rng: random.Random) -> Parsed:
    # Bases ending in 2, 3, 4, 7, 8 or 9 have a cycle of length 2 or 4, so the exponent matters.
    a = rng.choice([x for x in range(2, 100) if x % 10 in (2, 3, 4, 7, 8, 9)])
    return PowMod(a, _huge_exponent(rng), _maybe_c(rng, 9), 10)


def _near_one(rng: random.Random) -> Parsed:
    m = rng.choice([x for x in range(3, 20) if x != 10])
    b = m + rng.choice((1, -1))
    return PowMod(b, _huge_exponent(rng), _maybe_c(rng, 9), m)


@dataclass(frozen=True)
class Family:
    name: str
    group: Group
    draw: Callable[[random.Random], Parsed]
    why: str  # one line for docs and the report


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("mul_large", "tool", _mul_large, "long multiplication: text slips, code is exact"),
        Family("powmod_large", "tool", _powmod_large, "many 4-digit modular products by hand"),
        Family("count_digits", "tool", _count_digits, "enumeration over thousands of integers"),
        Family("last_digit", "text", _last_digit, "a^n with n ~ 10^15 times out; cycle of 4 is tiny"),
        Family("near_one", "text", _near_one, "b = m±1 so b^n ≡ (±1)^n; naive code times out"),
        Family("mul_small", "mixed", _mul_small, "2-digit × 1-digit: short for both"),
        Family("powmod_small", "mixed", _powmod_small, "a^2 or a^3 mod small m: short for both"),
    )
}
GROUPS: tuple[Group, ...] = ("tool", "text", "mixed")


def problem_meta(problem: Problem) -> dict:
    """``family`` and ``group`` of a problem, also after a write/load round trip.

    ``format.problems.load_problems`` keeps unknown record fields in ``metadata``, so a problem read back from a
    file written by ``write_problems`` holds the original metadata under ``metadata["metadata"]``.
    """
    inner = problem.metadata.get("metadata")
    return {**(inner if isinstance(inner, dict) else {}), **problem.metadata}


# ----------------------------------------------------------------------------- generation
def generate(n: int, seed: int = 0, families: tuple[str, ...] | None = None) -> list[Problem]:
    """``n`` unique problems, families round-robin (so each gets n/len(families) ± 1)."""
    names = list(families or FAMILIES)
    unknown = [f for f in names if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown family {unknown[0]!r}; known: {', '.join(FAMILIES)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"dualdistill-synthetic-{seed}")
    seen: set[str] = set()
    problems: list[Problem] = []
    tries = 0
    while len(problems) < n:
        family = FAMILIES[names[len(problems) % len(names)]]
        parsed = family.draw(rng)
        question = render_question(parsed, rng)
        tries += 1
        if tries > 50 * n + 1000:
            raise RuntimeError(f"could not draw {n} unique questions (got {len(problems)})")
        if question in seen:  # small families can repeat; a duplicate would leak across splits
            continue
        seen.add(question)
        problems.append(
            Problem(
                id=f"syn{seed}-{len(problems):05d}",
                question=question,
                answer=str(answer_of(parsed)),
                source=SOURCE,
                metadata={"family": family.name, "group": family.group},
            )
        )
    return problems


def make_splits(
    n: int, seed: int = 0, test_fraction: float = 0.2, families: tuple[str, ...] | None = None
) -> tuple[list[Problem], list[Problem]]:
    """Fixed seeded (train, test) split, stratified by family; no exact question string is in both (a
    same-numbers twin in another phrasing can be)."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    problems = generate(n, seed, families)
    rng = random.Random(f"dualdistill-split-{seed}")
    train: list[Problem] = []
    test: list[Problem] = []
    for name in families or FAMILIES:
        members = [p for p in problems if p.metadata["family"] == name]
        rng.shuffle(members)
        k = round(len(members) * test_fraction)
        test += members[:k]
        train += members[k:]
    order = {p.id: i for i, p in enumerate(problems)}
    return sorted(train, key=lambda p: order[p.id]), sorted(test, key=lambda p: order[p.id])


def write_world(
    out: Path, n: int, seed: int = 0, test_fraction: float = 0.2, train_limit: int | None = None
) -> tuple[int, int]:
    """Write ``train.jsonl`` (its first ``train_limit``), ``test.jsonl`` and ``test_{group}.jsonl``.

    The per-group test files are the evaluation sets of the embedded recipes. Returns (train, test) sizes.
    """

    train, test = make_splits(n, seed, test_fraction)
    train = train[:train_limit]
    out.mkdir(parents=True, exist_ok=True)
    write_problems(out / "train.jsonl", train)
    write_problems(out / "test.jsonl", test)
    for group in GROUPS:
        write_problems(out / f"test_{group}.jsonl", [p for p in test if problem_meta(p)["group"] == group])
    return len(train), len(test)
