"""Two programmatic teachers for the synthetic world, writing the paper's exact tag format.

- ``ProgrammaticTextTeacher`` reasons in ``<think>``: it picks a method from the question's content (a cycle or
  ``±1`` argument when the exponent is huge, direct arithmetic otherwise) and does every elementary
  arithmetic step (a digit product, an addition column, a quotient digit, a block of a count) with
  a slip probability ``slip_p``. A slip changes that step's result and the error propagates, so long
  computations fail more often: failures come from the method, not from a coin flip on the answer.
- ``ProgrammaticAgenticTeacher`` writes the naive Python program for the question into ``<code>``, runs it in
  the real sandbox, reads ``<executor>``, and boxes the printed number. It is a weak agent: after an
  error or a timeout it retries once with a slightly different but still naive program, then gives
  up and boxes a guess. On huge exponents both programs genuinely time out.

Guarantees:
- Both are deterministic given (problem, seed): randomness comes from a ``random.Random`` seeded by
  the teacher's name, its seed and the problem's id and question (the sandbox's timing aside, which
  only decides *whether* a naive program finishes, and it never does for huge exponents).
- Every response passes ``format.trajectory.check_format`` and ends with ``<answer>…\\boxed{…}…</answer>``;
  executor text is made by ``format.trajectory.executor_block``.
- ``previous`` (another teacher's attempt) is accepted and does not change the solution: the teacher
  writes its own attempt and the composition stage adds the transition sentence.

Not guaranteed: solving questions that are not from ``synthetic.families`` (``solve`` raises
``ValueError`` naming the problem).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from dualdistill.core.config import check_bounds, setting
from dualdistill.format.problems import Problem
from dualdistill.format.trajectory import executor_block
from dualdistill.sandbox import SandboxConfig, SandboxPool
from dualdistill.synthetic.families import (
    Count,
    Mul,
    Parsed,
    PowMod,
    count_digit_sum,
    last_digit_cycle,
    parse_question,
)

HUGE_EXPONENT = 10**6  # above this, the text teacher looks for a cycle or a ±1 argument


def _nd(x: int) -> int:
    return len(str(abs(x)))


def _parse(problem: Problem) -> Parsed:
    parsed = parse_question(problem.question)
    if parsed is None:
        raise ValueError(f"problem {problem.id!r} is not a synthetic question: {problem.question[:80]!r}")
    return parsed


def _rng(name: str, seed: int, problem: Problem) -> random.Random:
    return random.Random(f"{name}|{seed}|{problem.id}|{problem.question}")


def _respond(body: str, answer: int | str, *, note: str = "") -> str:
    return f"{body}<answer>\n{note}\\boxed{{{answer}}}\n</answer>"


# ----------------------------------------------------------------------------- text teacher
class Slips:
    """Elementary arithmetic with a per-step slip probability. Counts the steps it was asked to do."""

    def __init__(self, rng: random.Random, p: float):
        self.rng, self.p, self.steps, self.slips = rng, p, 0, 0

    def step(self, exact: int, steps: int, *, unit: int | None = None, mod: int | None = None) -> int:
        """``exact`` after ``steps`` elementary steps; each slip moves one digit of it by ±1."""
        value = exact
        for _ in range(steps):
            if self.rng.random() < self.p:
                self.slips += 1
                delta = unit or 10 ** self.rng.randrange(_nd(exact))
                delta *= self.rng.choice((-1, 1))
                value = value + delta if value + delta >= 0 else value - delta
        self.steps += steps
        return value % mod if mod else value

    def mul(self, x: int, y: int, mod: int | None = None) -> int:
        # One step per digit product, plus one per quotient digit when reducing mod m.
        product = self.step(x * y, _nd(x) * _nd(y))
        return self.reduce(product, mod) if mod else product

    def add(self, x: int, y: int) -> int:
        return self.step(x + y, _nd(min(x, y)))

    def reduce(self, x: int, m: int) -> int:
        return x if x < m else self.step(x % m, _nd(x // m), unit=1, mod=m)


@dataclass
class ProgrammaticTextConfig:
    slip_p: float = setting(0.04, ge=0, le=1, help="The text teacher's slip chance per arithmetic step.")
    seed: int = setting(0, help="Seed of the text teacher's slips.")

    def __post_init__(self) -> None:
        check_bounds(self)


class ProgrammaticTextTeacher:
    """A careful but fallible hand calculator that knows the cycle and ±1 tricks."""

    strategy: Literal["text"] = "text"

    def __init__(self, config: ProgrammaticTextConfig | None = None, name: str = "synthetic-text"):
        self.config = config or ProgrammaticTextConfig()
        self.name = name

    async def solve(self, problem: Problem, previous: str | None = None) -> str:
        return self.solve_sync(problem)

    def solve_sync(self, problem: Problem) -> str:
        parsed = _parse(problem)
        s = Slips(_rng(self.name, self.config.seed, problem), self.config.slip_p)
        if isinstance(parsed, Mul):
            lines, value = _text_mul(parsed, s)
        elif isinstance(parsed, Count):
            lines, value = _text_count(parsed, s)
        else:
            lines, value = _text_powmod(parsed, s)
        return _respond("<think>\n" + "\n".join(lines) + "\n</think>\n", value)


def _text_mul(p: Mul, s: Slips) -> tuple[list[str], int]:
    if p.b < 10 or p.a < 10:
        value = s.mul(p.a, p.b)
        return [f"{p.a} * {p.b} = {value}"], value
    digits = [(int(d), len(str(p.b)) - 1 - i) for i, d in enumerate(str(p.b)) if d != "0"]
    parts = [f"{p.a} * {d * 10**k}" for d, k in digits]
    terms = [s.mul(p.a, d) * 10**k for d, k in digits]
    total = terms[0]
    for t in terms[1:]:
        total = s.add(total, t)
    lines = [f"{p.a} * {p.b} = " + " + ".join(parts)]
    if len(terms) > 1:
        lines.append("= " + " + ".join(map(str, terms)))
    lines.append(f"= {total}")
    return lines, total


def _text_count(p: Count, s: Slips) -> tuple[list[str], int]:

    blocks = p.N // 100 + 1
    # Two steps per block of 100 (the sum the last two digits need, then how many endings give it);
    # a slip miscounts a block by one.
    value = s.step(count_digit_sum(p.N, p.s), 2 * blocks, unit=1)
    return [f"Counting block by block, the {blocks} blocks of 100 up to {p.N} give {value} in all."], value


def _text_powmod(p: PowMod, s: Slips) -> tuple[list[str], int]:
    if p.n > HUGE_EXPONENT and (p.m == 10 or p.a % p.m in (1, p.m - 1)):
        return _invariant_argument(p, s)
    if p.n <= 3 and p.a < 10:
        power = p.a
        for _ in range(p.n - 1):
            power = s.mul(power, p.a)
        lines = [f"{p.a}^{p.n} = {power}."]
        if p.c:
            power = s.add(power, p.c)
            lines.append(f"Adding {p.c} gives {power}.")
        r = s.reduce(power, p.m)
        return [*lines, f"{power} mod {p.m} = {r}."], r
    lines, r = _square_and_multiply(p, s)
    if p.c:
        total = s.add(r, p.c)
        r = s.reduce(total, p.m)
        lines.append(f"Adding {p.c}: {total} mod {p.m} = {r}.")
    return lines, r


def _invariant_argument(p: PowMod, s: Slips) -> tuple[list[str], int]:
    """A huge exponent: the last-digit cycle (m = 10) or the ±1 argument (a = m ± 1), written so that a
    0.46M-parameter student can follow every step (docs/SYNTHETIC.md, "How the text teacher writes"):

    - the problem is restated in question order, numbers copied left to right as code copies them;
    - every later number is either copied from just before it (a fixed offset), or looked up by an
      exact match ("3 → 2" in the cycle table), or one small fact of a form the pretrained base knows
      ("The last two digits of N are 99, and 99 mod 4 = 3.");
    - base and modulus are named side by side before the ±1 comparison;
    - c is always added (0 when the question has none), one unit at a time.
    """
    lines = [f"We need {p.a}^{p.n} + {p.c} mod {p.m}."]
    if p.m == 10:
        r = _cycle_argument(p, s, lines)
        # Adding 0 cannot slip; one slip draw for the sum, as Slips.add (the chain shows the slipped end).
        total = s.add(r, p.c) if p.c else r
        y = s.reduce(total, p.m)
        lines.append(f"{unit_steps(r, p.c, total)}, and {total} mod {p.m} = {y}.")
        return lines, y
    r = _plus_minus_one_argument(p, s, lines)
    total = s.add(r, p.c) if p.c and r >= 0 else r + p.c
    y = total % p.m if total < 0 else s.reduce(total, p.m)
    lines.append(f"{r} + {p.c} = {total}, and {total} mod {p.m} = {y}.")
    return lines, y


def unit_steps(r: int, c: int, total: int) -> str:
    """``r + c`` one unit at a time, ending in ``total``: ``2 + 3 = 3 + 2 = 4 + 1 = 5 + 0 = 5``."""
    parts = [f"{r + i} + {c - i}" for i in range(c + 1)] if c else [f"{r} + 0"]
    return " = ".join(parts) + f" = {total}"


def _cycle_argument(p: PowMod, s: Slips, lines: list[str]) -> int:
    d = p.a % 10
    cycle = last_digit_cycle(d)
    k = len(cycle)
    table = ", ".join(f"{(j + 1) % k} → {v}" for j, v in enumerate(cycle))
    lines.append(f"Last digits of powers of {d} by exponent mod {k}: {table}.")
    # Reading n mod 4 off the last two digits is one step; n mod 2 off the last digit is free.
    if k == 4:
        tail = p.n % 100
        pos = s.step(tail % 4, 1, unit=1, mod=4)
        lines.append(f"The last two digits of {p.n} are {tail:02d}, and {tail:02d} mod 4 = {pos}.")
    else:
        last = p.n % 10
        pos = s.step(last % 2, 0, unit=1, mod=2)
        lines.append(f"{p.n} ends in {last}, and {last} mod 2 = {pos}.")
    r = cycle[(pos - 1) % k]
    lines.append(f"{pos} → {r}, so the last digit is {r}.")
    return r


def _plus_minus_one_argument(p: PowMod, s: Slips, lines: list[str]) -> int:
    if p.a % p.m == 1:
        lines += [
            f"Base {p.a}, modulus {p.m}: {p.a} = {p.m} + 1, so {p.a} ≡ 1 (mod {p.m}).",
            f"So {p.a}^n ≡ 1.",
        ]
        return 1
    last = p.n % 10
    parity = "even" if s.step(last % 2, 0) == 0 else "odd"
    r = 1 if parity == "even" else -1
    lines += [
        f"Base {p.a}, modulus {p.m}: {p.a} = {p.m} - 1, so {p.a} ≡ -1 (mod {p.m}).",
        f"Exponent {p.n} ends in {last}.",
        f"{last} is {parity}, so {p.a}^n ≡ {r}.",
    ]
    return r


def _square_and_multiply(p: PowMod, s: Slips) -> tuple[list[str], int]:
    base = s.reduce(p.a, p.m)
    squares = {1: base}
    k = 1
    while 2 * k <= p.n:
        squares[2 * k] = s.mul(squares[k], squares[k], p.m)
        k *= 2
    shown = ", ".join(f"{p.a}^{e} ≡ {v}" for e, v in squares.items() if e > 1)
    used = [e for e in sorted(squares, reverse=True) if p.n & e]
    r = squares[used[0]]
    for e in used[1:]:
        r = s.mul(r, squares[e], p.m)
    lines = [f"Square and multiply modulo {p.m}: {shown}."]
    if len(used) > 1:
        lines.append(f"{p.a}^{p.n} = " + " * ".join(f"{p.a}^{e}" for e in used) + f" ≡ {r}.")
    return lines, r


# ----------------------------------------------------------------------------- agentic teacher
def naive_programs(parsed: Parsed) -> list[str]:
    """The weak agent's programs for a question, first try first. All are correct but naive."""
    if isinstance(parsed, Mul):
        return [f"print({parsed.a} * {parsed.b})", f"x = {parsed.a}\ny = {parsed.b}\nprint(x * y)"]
    if isinstance(parsed, Count):
        return [
            f"print(sum(1 for n in range(1, {parsed.N} + 1) if sum(map(int, str(n))) == {parsed.s}))",
            f"c = 0\nfor n in range(1, {parsed.N} + 1):\n    if sum(int(d) for d in str(n)) == {parsed.s}:\n"
            "        c += 1\nprint(c)",
        ]
    p = parsed
    power, r = (f"({p.a}**{p.n} + {p.c})", f"(r + {p.c})") if p.c else (f"{p.a}**{p.n}", "r")
    return [
        f"print({power} % {p.m})",
        f"r = 1\nfor _ in range({p.n}):\n    r = r * {p.a}\nprint({r} % {p.m})",
    ]


def _guess(parsed: Parsed, rng: random.Random) -> int:
    if isinstance(parsed, PowMod):
        return rng.randrange(parsed.m)
    if isinstance(parsed, Mul):
        return rng.randint(1, 9) * 10 ** (_nd(parsed.a) + _nd(parsed.b) - 1)
    return rng.randint(0, parsed.N // 10)


@dataclass
class ProgrammaticAgenticConfig:
    retries: int = setting(1, ge=0, help="Extra attempts after a run that errors or times out.")
    # Tests use about 1 s: the naive programs never finish either way.
    timeout_s: float = setting(SandboxConfig.timeout_s, gt=0, help="Sandbox seconds per program.")
    memory_mb: int = setting(1024, gt=0, help="Memory of the teacher's sandbox session (MiB).")
    max_concurrency: int = setting(
        8, ge=1, identity=False, help="Sandbox runs in flight (when the teacher makes its own pool)."
    )
    seed: int = setting(0, help="Seed of the agentic teacher's guesses.")

    def __post_init__(self) -> None:
        check_bounds(self)


class ProgrammaticAgenticTeacher:
    """Writes the naive program, runs it in the real sandbox, boxes the output or a guess."""

    strategy: Literal["code"] = "code"

    def __init__(
        self, config: ProgrammaticAgenticConfig | None = None, *, pool=None, name: str = "synthetic-agentic"
    ):
        self.config = config or ProgrammaticAgenticConfig()
        self.name = name
        self._pool = pool
        self.tool_calls: list[dict] = []  # {status, duration_s} of every sandbox run, in order

    @property
    def pool(self):
        if self._pool is None:
            cfg = SandboxConfig(timeout_s=self.config.timeout_s, memory_mb=self.config.memory_mb)
            self._pool = SandboxPool(cfg, max_concurrency=self.config.max_concurrency)
        return self._pool

    async def solve(self, problem: Problem, previous: str | None = None) -> str:
        parsed = _parse(problem)
        programs = naive_programs(parsed)[: 1 + self.config.retries]
        parts: list[str] = []
        for code in programs:
            # Each program is standalone, so each runs in a fresh session: after a timeout the
            # sandbox would otherwise prepend a long "session restarted" note to the retry's output.
            async with self.pool.session() as session:
                result = await session.run(code)
                self.tool_calls.append({"status": result.status, "duration_s": result.duration_s})
                parts.append(f"<code>\n{code}\n</code>{executor_block(result.output)}")
                answer = result.output.strip()
                if result.status == "ok" and answer.lstrip("-").isdigit():
                    return _respond("".join(parts), answer)
        guess = _guess(parsed, _rng(self.name, self.config.seed, problem))
        return _respond("".join(parts), guess, note="The code did not finish; a guess: ")
