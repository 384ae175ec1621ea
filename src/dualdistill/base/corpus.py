"""The pretraining corpus of the shipped tiny base: generic number skills, not the synthetic world's tasks.

The paper's student is a pretrained model: it could copy numbers, do small arithmetic and read Python
before any distillation. This corpus gives the tiny base the same kind of head start, with four kinds of
short documents, each drawn from its own seeded generator:

- ``copy``: numbers of 1-15 digits repeated in many contexts (lists, assignments, "again:" lines);
- ``facts``: small arithmetic facts in words and symbols: sums, differences, products (with partial
  products), remainders, parity, last digits and last two digits, small powers and the repeating last
  digits of powers, neighbours (``18 = 17 + 1``);
- ``code``: Python snippets that print expressions over random numbers, in ``<code>`` with the exact
  output in ``<executor>`` (computed here, in-process, on numbers this module drew; nothing is
  executed from outside), sometimes followed by a boxed value;
- ``tags``: the trajectory tags in varied, meaningless arrangements around the above.

Guarantees:
- ``pretrain_corpus(n, seed)`` is a pure function of its arguments.
- Nothing here imports ``dualdistill.synthetic``: no question phrasing, family or teacher of the
  synthetic world is used (``tests/test_base.py`` checks the text against every world phrasing and
  against the test questions of world seeds 0-9).

Not guaranteed: that any particular downstream task is learnable from it; it is a head start, not a
solution.
"""

from __future__ import annotations

import random
from collections.abc import Callable

EXECUTOR_OPEN, EXECUTOR_CLOSE = "\n<executor>\n", "\n</executor>\n"
TIMEOUT_TEXT = "Error: Code execution timed out."


def _num(rng: random.Random, lo_digits: int = 1, hi_digits: int = 8) -> int:
    d = rng.randint(lo_digits, hi_digits)
    return rng.randint(10 ** (d - 1) if d > 1 else 0, 10**d - 1)


def _cycle(d: int) -> list[int]:
    out = [d % 10]
    while (out[-1] * d) % 10 != out[0]:
        out.append((out[-1] * d) % 10)
    return out


# ----------------------------------------------------------------------------- copy
_COPY_FORMS = (
    "{a} again: {a}",
    "{a} = {a}",
    "{a}\n{a}",
    "({a}) ({a})",
    "x = {a}\nx is {a}",
    "Number: {a}. Repeated: {a}.",
    "The value {a} written twice: {a} {a}",
    "{a} -> {a}",
    "Take {a}; the same number is {a}.",
    "List: {a}, {b}. First {a}, second {b}.",
    "Pair ({a}, {b}) reversed is ({b}, {a}).",
    "a = {a}, b = {b}. So a is {a} and b is {b}.",
    "Read {a} and {b}, then write {a} and {b}.",
)


def copy_doc(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(2, 5)):
        a, b = _num(rng, 1, 15), _num(rng, 1, 15)
        lines.append(rng.choice(_COPY_FORMS).format(a=a, b=b))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- facts
def _fact_sum(rng):
    a, b = _num(rng, 1, 7), _num(rng, 1, 7)
    return rng.choice(("{a} + {b} = {s}", "{a} plus {b} is {s}.")).format(a=a, b=b, s=a + b)


def _fact_diff(rng):
    a, b = sorted((_num(rng, 1, 6), _num(rng, 1, 6)), reverse=True)
    return rng.choice(("{a} - {b} = {d}", "{a} minus {b} is {d}.")).format(a=a, b=b, d=a - b)


def _fact_product(rng):
    a, b = _num(rng, 1, 4), rng.randint(0, 9) * 10 ** rng.randint(0, 3)
    return rng.choice(("{a} * {b} = {p}", "{a} multiplied by {b} gives {p}.")).format(a=a, b=b, p=a * b)


def _fact_small_product(rng):
    a, b = rng.randint(2, 99), rng.randint(2, 9)
    return f"{a} * {b} = {a * b}"


def _fact_partial_products(rng):
    a, b = _num(rng, 2, 4), _num(rng, 2, 4)
    parts = [(int(ch) * 10 ** (len(str(b)) - 1 - i)) for i, ch in enumerate(str(b)) if ch != "0"]
    split = " + ".join(map(str, parts))
    products = " + ".join(str(a * p) for p in parts)
    return f"Split {b} as {split}; then {a} * {b} is {products}, which is {a * b}."


def _fact_remainder(rng):
    m = rng.randint(2, 40)
    a = rng.randint(0, 999) if rng.random() < 0.7 else _num(rng, 1, 6)
    return rng.choice(
        ("{a} mod {m} = {r}", "{a} leaves {r} after dividing by {m}.", "{a} % {m} = {r}")
    ).format(a=a, m=m, r=a % m)


def _fact_parity(rng):
    a = _num(rng, 1, 15)
    word = "even" if a % 2 == 0 else "odd"
    return rng.choice((f"{a} ends in {a % 10}, so it is {word}.", f"{a} is {word}."))


def _fact_last_digits(rng):
    a = _num(rng, 2, 15)
    if rng.random() < 0.5:
        return f"The last digit of {a} is {a % 10}."
    return f"The last two digits of {a} are {a % 100:02d}, and {a % 100:02d} mod 4 = {a % 100 % 4}."


def _fact_power(rng):
    a, n = rng.randint(2, 12), rng.randint(2, 4)
    return rng.choice(("{a}^{n} = {p}", "{a} to the power {n} is {p}.")).format(a=a, n=n, p=a**n)


def _fact_power_cycle(rng):
    d = rng.randint(0, 9)
    cyc = _cycle(d)
    a = rng.randint(0, 9) * 10 + d
    return f"Powers of {a} end in {', '.join(map(str, cyc))}, then repeat: the cycle has length {len(cyc)}."


def _fact_neighbour(rng):
    m = rng.randint(2, 60)
    if rng.random() < 0.5:
        return f"{m + 1} = {m} + 1, so {m + 1} mod {m} = 1."
    return f"{m - 1} = {m} - 1, so {m - 1} mod {m} = {m - 1}, which is -1 mod {m}."


FACTS: tuple[Callable[[random.Random], str], ...] = (
    _fact_sum, _fact_diff, _fact_product, _fact_small_product, _fact_partial_products, _fact_remainder,
    _fact_parity, _fact_last_digits, _fact_power, _fact_power_cycle, _fact_neighbour,
)  # fmt: skip


def facts_doc(rng: random.Random) -> str:
    return "\n".join(rng.choice(FACTS)(rng) for _ in range(rng.randint(3, 7)))


# ----------------------------------------------------------------------------- code
def _expr(rng: random.Random) -> tuple[str, str, int | None]:
    """(a sentence naming the numbers, a Python expression, its value or None when it would not finish)."""
    kind = rng.randrange(9)
    a, b = _num(rng, 1, 5), _num(rng, 1, 5)
    if kind == 0:
        return f"Multiply {a} by {b} in Python.", f"{a} * {b}", a * b
    if kind == 1:
        return f"Add {a} and {b}.", f"{a} + {b}", a + b
    if kind == 2:
        return f"Subtract {b} from {a}.", f"{a} - {b}", a - b
    if kind == 3:
        n, m = rng.randint(2, 40), rng.randint(2, 9999)
        c = rng.randint(1, 99) if rng.random() < 0.5 else 0
        expr = f"({a}**{n} + {c}) % {m}" if c else f"{a}**{n} % {m}"
        return f"Evaluate {a} raised to {n}{f' plus {c}' if c else ''}, reduced by {m}.", expr, (a**n + c) % m
    if kind == 4:
        n, m = _num(rng, 12, 15), rng.randint(3, 99)
        return f"Evaluate {a} raised to {n}, reduced by {m}.", f"{a}**{n} % {m}", None
    if kind == 5:
        N, k = rng.randint(10, 9999), rng.randint(2, 30)
        return (
            f"Tally the multiples of {k} up to {N}.",
            f"sum(1 for i in range(1, {N} + 1) if i % {k} == 0)",
            N // k,
        )
    if kind == 6:
        N, s = rng.randint(10, 9999), rng.randint(1, 30)
        value = sum(1 for i in range(1, N + 1) if sum(map(int, str(i))) == s)
        return (
            f"Tally numbers up to {N} with digits totalling {s}.",
            f"sum(1 for i in range(1, {N} + 1) if sum(map(int, str(i))) == {s})",
            value,
        )
    if kind == 7:
        return f"Digits of {a} * {b}.", f"len(str({a} * {b}))", len(str(a * b))
    return f"Larger of {a} and {b}.", f"max({a}, {b})", max(a, b)


def code_doc(rng: random.Random) -> str:
    sentence, expr, value = _expr(rng)
    # the same expression, sometimes through a variable
    body = f"value = {expr}\nprint(value)" if rng.random() < 0.3 else f"print({expr})"
    output = TIMEOUT_TEXT if value is None else str(value)
    doc = f"{sentence}\n<code>\n{body}\n</code>{EXECUTOR_OPEN}{output}{EXECUTOR_CLOSE}"
    if value is not None:
        tail = rng.choice(("The output is {v}.", "<answer>\n\\boxed{{{v}}}\n</answer>", "So: {v}", ""))
        doc += tail.format(v=value)
    return doc


# ----------------------------------------------------------------------------- tags
def tags_doc(rng: random.Random) -> str:
    """Blocks in a random order with unrelated contents: the tags as tokens, nothing to solve."""
    parts = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(4)
        if kind == 0:
            parts.append(f"<think>\n{facts_doc(rng)}\n</think>\n")
        elif kind == 1:
            a = _num(rng, 1, 6)
            parts.append(f"<code>\nprint({a})\n</code>{EXECUTOR_OPEN}{a}{EXECUTOR_CLOSE}")
        elif kind == 2:
            parts.append(copy_doc(rng) + "\n")
        else:
            parts.append(f"<answer>\n\\boxed{{{_num(rng, 1, 6)}}}\n</answer>\n")
    return "".join(parts).strip()


# Copying is the slowest skill for a tiny model to pick up (it needs an induction head), so it gets
# the largest share.
KINDS: dict[str, tuple[Callable[[random.Random], str], float]] = {
    "copy": (copy_doc, 0.40),
    "facts": (facts_doc, 0.20),
    "code": (code_doc, 0.30),
    "tags": (tags_doc, 0.10),
}


def pretrain_corpus(n: int, seed: int = 0) -> list[str]:
    """``n`` documents, each of one kind drawn by the weights in ``KINDS``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"dualdistill-base-corpus-{seed}")
    makers = [m for m, _ in KINDS.values()]
    weights = [w for _, w in KINDS.values()]
    return [rng.choices(makers, weights)[0](rng) for _ in range(n)]
