"""Grading throughput and the reference rule, measured in one run.

    python bench/grading.py                 # 10,000 integer + 10,000 mixed responses, both cores
    python bench/grading.py --compare       # the markdown table of docs/GRADING.md (ours vs reference)

Prints one JSON line per measurement. ``integer``: grades/s on 10,000 responses with integer answers
(all decided by the exact fast path in this process). ``mixed``: 10,000 responses with integers,
fractions, decimals, LaTeX, near misses, no answers and a few pathological inputs (``9^{9^{9^{9}}}``,
which sympy never finishes evaluating), graded with ``--workers`` processes; ``max_item_s`` is the
longest any one item took, which must stay near ``--timeout``. ``baseline``: plain math-verify on every
item, one process, on a 500-item sample of the mixed set without the pathological inputs (each would
cost math-verify's 5 s alarm and come back as a silent ``False``); ``speedup`` compares the two rates.

The reference rule (the released DualDistill code's check, as described in issue 2) lives here and in
the tests only: it is the baseline we disagree with, never used for grading.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time

PATHOLOGICAL = "9^{9^{9^{9}}}"


# ----------------------------------------------------------------------------- the reference rule
def reference_correct(response: str, gold: str) -> bool:
    """Gold as a substring of the answer block, the first executor block or the text after </think>
    (also with thousands commas); otherwise math-verify on the whole response."""
    from math_verify import parse, verify

    places = []
    for pattern in (r"<answer>(.*?)</answer>", r"<executor>(.*?)</executor>"):
        m = re.search(pattern, response, re.S)
        if m:
            places.append(m.group(1))
    if "</think>" in response:
        places.append(response.split("</think>", 1)[1])
    golds = {gold}
    if re.fullmatch(r"-?\d+", gold):
        golds.add(f"{int(gold):,}")
    if any(g in place for g in golds for place in places):
        return True
    return bool(verify(parse(f"${gold}$"), parse(response)))


# ----------------------------------------------------------------------------- the data
def respond(answer: str, rng: random.Random) -> str:
    """A response in the paper's format whose final answer is ``answer``."""
    shape = rng.random()
    if shape < 0.6:
        return f"<think>\nLet me work it out step by step.\n</think>\n<answer>\nSo \\boxed{{{answer}}}.\n</answer>"
    if shape < 0.9:
        code = (
            f"<code>\nprint({rng.randint(1, 99)})\n</code>\n<executor>\n{rng.randint(1, 99)}\n</executor>\n"
        )
        return f"{code}<answer>\nThe result is \\boxed{{{answer}}}\n</answer>"
    return f"We get the value.\n\nFinal answer: $\\boxed{{{answer}}}$"


def integer_items(n: int, rng: random.Random) -> list[tuple[str, str]]:
    items = []
    for _ in range(n):
        gold = rng.randint(-999, 99_999)
        pred = gold if rng.random() < 0.6 else gold + rng.choice([1, -1, 10, 1000])
        items.append((respond(str(pred), rng), str(gold)))
    return items


def mixed_items(n: int, rng: random.Random, pathological: int) -> list[tuple[str, str]]:
    def one() -> tuple[str, str]:
        a, b = rng.randint(1, 50), rng.randint(2, 60)
        kind = rng.random()
        if kind < 0.35:  # integers, with thousands commas and units now and then
            g = rng.randint(0, 20_000)
            p = rng.choice([str(g), f"{g:,}", f"{g} \\text{{ cm}}", f"x = {g}", str(g + 1)])
            return p, str(g)
        if kind < 0.5:  # fractions and decimals
            p = rng.choice([f"\\frac{{{a}}}{{{b}}}", f"{a}/{b}", f"\\dfrac{{{a * 2}}}{{{b * 2}}}"])
            return p, f"\\frac{{{a}}}{{{b}}}"
        if kind < 0.6:
            return rng.choice(["0.5", "0.05", "1/2", "\\frac{1}{2}"]), "0.5"
        if kind < 0.85:  # LaTeX that needs math-verify
            g = rng.choice(
                [f"{a}\\sqrt{{{b}}}", f"\\frac{{{a}\\pi}}{{{b}}}", f"({a}, {b})", f"[{a}, {a + b})"]
            )
            p = rng.choice([g, g.replace(str(a), str(a + 1), 1), g.replace(" ", "")])
            return p, g
        if kind < 0.95:  # near misses by digits
            g = rng.randint(1, 999)
            return rng.choice([f"{g}0", f"20{g}", f"{g}.5", f"-{g}"]), str(g)
        return "", str(a)  # no answer at all

    items = [one() for _ in range(n - pathological)] + [(PATHOLOGICAL, "1")] * pathological
    rng.shuffle(items)
    return [(respond(p, rng) if p else "I could not solve it.", g) for p, g in items]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench(args: argparse.Namespace) -> None:
    from dualdistill.grading.grader import grade_many

    rng = random.Random(args.seed)
    ints = integer_items(args.n, rng)
    mixed = mixed_items(args.n, rng, args.pathological)
    grade_many(mixed[:50], timeout=args.timeout, workers=args.workers)  # start the workers once

    secs, verdicts = timed(lambda: grade_many(ints, timeout=args.timeout, workers=args.workers))
    print(json.dumps({"bench": "integer", "items": len(ints), "seconds": round(secs, 3),
                      "grades_per_s": round(len(ints) / secs),
                      "exact_path": sum(v.method == "exact" for v in verdicts)}), flush=True)  # fmt: skip

    secs, verdicts = timed(lambda: grade_many(mixed, timeout=args.timeout, workers=args.workers))
    statuses = {s: sum(v.status == s for v in verdicts) for s in ("ok", "no_answer", "timeout", "error")}
    rate = len(mixed) / secs
    print(json.dumps({"bench": "mixed", "items": len(mixed), "workers": args.workers, "seconds": round(secs, 3),
                      "grades_per_s": round(rate), "timeout_s": args.timeout,
                      "max_item_s": round(max(v.duration_s for v in verdicts), 3),
                      "math_verify_items": sum(v.method == "math_verify" for v in verdicts),
                      **statuses}), flush=True)  # fmt: skip

    from math_verify import parse, verify

    sample = [m for m in mixed if PATHOLOGICAL not in m[0]][: args.baseline_n]
    base_secs, _ = timed(lambda: [verify(parse(f"${g}$"), parse(r)) for r, g in sample])
    base_rate = len(sample) / base_secs
    print(json.dumps({"bench": "baseline", "what": "math-verify per item, 1 process", "items": len(sample),
                      "grades_per_s": round(base_rate), "speedup": round(rate / base_rate, 2)}))  # fmt: skip


# ----------------------------------------------------------------------------- the comparison table
COMPARE = [  # (gold, final answer or whole response): where a substring rule and ours can disagree
    ("1", "10"), ("12", "2012"), ("0.5", "10.5"), ("2", "-2"), ("3", "\\frac{3}{4}"), ("5", "5\\pi"),
    ("\\frac{1}{2}", "\\frac{1}{2}x"), ("(1,2)", "(1,2)\\cup(3,4)"),
    ("12", "<code>\nprint(3 * 4)\n</code>\n<executor>\n12\n</executor>\n"
           "<answer>\nThe count is \\boxed{15}.\n</answer>"),
    ("5", "<think>\nadd, then subtract 1\n</think>\n<answer>\n2 + 3 = 5, less 1 is \\boxed{4}\n</answer>"),
    ("1234", "1,234"), ("\\frac{1}{2}", "0.5"), ("30", "30^\\circ"), ("5", "x = 5"), ("7", "7 dollars"), ("\\frac{1}{2}", "\\frac{1}{2} of it"),
]  # fmt: skip


def compare() -> None:
    from dualdistill.grading.grader import grade_many

    def as_response(p: str) -> str:
        return p if "<answer>" in p else respond(p, random.Random(0))

    def shown(p: str) -> str:
        return "`" + p.replace("\n", " ").replace("|", "\\|") + "`"

    responses = [(as_response(p), g) for g, p in COMPARE]
    ours = grade_many(responses)
    print("| gold | final answer (or whole response) | reference rule | ours |")
    print("|---|---|---|---|")
    for (g, p), (resp, _), v in zip(COMPARE, responses, ours, strict=True):
        ref = reference_correct(resp, g)
        print(f"| `{g}` | {shown(p)} | {_word(ref)} | {_word(v.correct)} |")


def _word(ok: bool) -> str:
    return "accept" if ok else "reject"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--pathological", type=int, default=4)
    ap.add_argument("--baseline-n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare", action="store_true", help="print the ours-vs-reference markdown table")
    args = ap.parse_args()
    compare() if args.compare else bench(args)


if __name__ == "__main__":
    main()
