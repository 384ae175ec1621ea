"""Run a public grader suite's labelled cases through our grader and list where we disagree.

Two suites are read, both with ``ast`` (no code from them runs):

- Math-Verify's ``tests/test_all.py``: its ``@pytest.mark.parametrize("gold,pred,expected", …)`` lists;
- MARIO_EVAL's ``math_evaluation/tests/test_is_equiv.py`` (``--format mario``): each ``test_in`` /
  ``test_out`` assignment pair followed by ``self.assertTrue(…)`` (equal) or ``self.assertFalse(…)``.

``--format tora`` reads a ToRA output file (``src/outputs/llm-agents/*/gsm8k/*.jsonl``: ``code``, the
responses, ``pred``, ToRA's extracted answers, and ``gt``). It has no per-item labels, only the mean in
the ``.metrics`` beside it, so it prints our accuracy on the boxed responses and on ToRA's own ``pred``,
to compare with that mean, and the items where the two readings disagree.
 Math-Verify extracts answers from free text;
we grade boxed final answers. So a ``pred`` with a ``\\boxed{}`` is graded as a response
(``grading.grader.grade``), and any other ``pred`` is taken as the final answer itself (``answers_match``, with
surrounding ``$`` removed). A case we cannot read as an answer counts as a disagreement of the class
``extraction``.

Usage::

    git -C MATH_VERIFY_CHECKOUT show HEAD:tests/test_all.py > /tmp/mv_test_all.py
    python bench/grader_suites.py /tmp/mv_test_all.py [--show 40]
    git -C MARIO_EVAL_CHECKOUT show HEAD:math_evaluation/tests/test_is_equiv.py > /tmp/mario_test.py
    python bench/grader_suites.py /tmp/mario_test.py --format mario
    python bench/grader_suites.py TORA_OUTPUT.jsonl --format tora

Prints one JSON line (cases, agree, by class) and the disagreements, one per line.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import Counter
from pathlib import Path


def labelled_cases(path: Path) -> list[tuple[str, str, int, str]]:
    """``(gold, pred, expected, test name)`` of every ``gold,pred,expected`` parametrize list."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        for dec in fn.decorator_list:
            if not (isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize"):
                continue
            names = dec.args[0]
            if not (isinstance(names, ast.Constant) and names.value.replace(" ", "") == "gold,pred,expected"):
                continue
            try:
                rows = ast.literal_eval(dec.args[1])
            except ValueError:
                continue  # rows built by code, not literals
            out += [(str(g), str(p), int(e), fn.name) for g, p, e in rows]
    return out


def mario_cases(path: Path) -> list[tuple[str, str, int, str]]:
    """``(test_out as gold, test_in as pred, expected, test name)`` from MARIO_EVAL's unittest file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        values: dict[str, str] = {}
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                for t in node.targets:
                    if isinstance(t, ast.Name) and t.id in ("test_in", "test_out"):
                        values[t.id] = str(node.value.value)
            call = node.value if isinstance(node, ast.Expr) else None
            asserts = isinstance(call, ast.Call) and getattr(call.func, "attr", "") in (
                "assertTrue",
                "assertFalse",
            )
            if asserts and {"test_in", "test_out"} <= set(values):
                expected = int(call.func.attr == "assertTrue")
                out.append((values["test_out"], values["test_in"], expected, fn.name))
    return out


def our_verdict(gold: str, pred: str) -> bool | None:
    """Our decision, or None when ``pred`` is no answer we read (free text without a box)."""
    from dualdistill.grading.grader import answers_match, grade

    if "\\boxed" in pred:
        v = grade(pred, gold, timeout=10)
        return None if v.status == "no_answer" else bool(v.correct)
    answer = pred.strip().strip("$").strip()
    if not answer or len(answer.split()) > 6:
        return None  # a sentence, not an answer
    try:
        return bool(answers_match(answer, gold.strip().strip("$").strip()))
    except Exception:
        return None


def tora_report(path: Path, show: int) -> None:
    from dualdistill.grading.grader import answers_match, grade

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    on_response = on_pred = 0
    differ = []
    for r in rows:
        gold, response, pred = str(r["gt"]), r["code"][0], str(r["pred"][0])
        a = bool(grade(response, gold, timeout=10).correct)
        b = bool(pred) and bool(answers_match(pred, gold))
        on_response, on_pred = on_response + a, on_pred + b
        if a != b:
            differ.append(
                {"idx": r["idx"], "gt": gold, "pred": pred, "ours_on_response": a, "ours_on_pred": b}
            )
    n = len(rows)
    print(json.dumps({"suite": str(path), "items": n, "acc_on_responses": round(100 * on_response / n, 2),
                      "acc_on_pred": round(100 * on_pred / n, 2), "readings_differ": len(differ)}))  # fmt: skip
    for d in differ[:show]:
        print(json.dumps(d, ensure_ascii=False))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("suite", type=Path)
    ap.add_argument("--show", type=int, default=40)
    ap.add_argument("--format", choices=("math-verify", "mario", "tora"), default="math-verify")
    args = ap.parse_args()
    if args.format == "tora":
        tora_report(args.suite, args.show)
        return
    cases = mario_cases(args.suite) if args.format == "mario" else labelled_cases(args.suite)
    classes: Counter = Counter()
    rows = []
    for gold, pred, expected, test in cases:
        ours = our_verdict(gold, pred)
        if ours is None:
            kind = "extraction"
        elif ours == bool(expected):
            kind = "agree"
        else:
            kind = "false_accept" if ours else "false_reject"
        classes[kind] += 1
        if kind != "agree":
            rows.append({"test": test, "gold": gold, "pred": pred, "expected": expected, "kind": kind})
    print(json.dumps({"suite": str(args.suite), "cases": len(cases), **dict(classes)}))
    for r in rows[: args.show]:
        print(json.dumps(r, ensure_ascii=False))
    if len(rows) > args.show:
        print(f"... {len(rows) - args.show} more", file=sys.stderr)


if __name__ == "__main__":
    main()
