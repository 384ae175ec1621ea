"""The single-attempt sets of ``compose --singles``, and the one rule for trustworthy attempts.

``trusted`` turns a right answer that is a guess after failed code (``format.trajectory.guessed_after_failed_code``)
into a wrong one; composition and the single sets share it, so they share one grading. ``singles`` gives
each teacher's right attempts alone (the text-only and code-only students' data) and both together
(``union``: the control that has both strategies' data without composition).

Guarantees: an attempt is in a single set exactly when composition counts it right. Not guaranteed: any
balance between the sets (they are what the teachers got right).
"""

from __future__ import annotations

from dualdistill.format import trajectory as tj
from dualdistill.format.examples import SFTExample
from dualdistill.format.pairs import Pair

# The single-attempt sets that ``compose --singles DIR`` writes, by key of ``singles``.
SINGLES_FILES = {"text": "text_only.jsonl", "code": "code_only.jsonl", "union": "union.jsonl"}


def trusted(pairs: list[Pair], verdicts: list[bool]) -> tuple[list[bool], int]:
    """``grade_pairs``'s verdicts with every right answer that is a guess after failed code turned wrong
    (``format.trajectory.guessed_after_failed_code``), and how many were turned."""
    responses = [p.first.response for p in pairs] + [p.second.response for p in pairs]
    out = [v and not tj.guessed_after_failed_code(r) for v, r in zip(verdicts, responses, strict=True)]
    return out, sum(v and not t for v, t in zip(verdicts, out, strict=True))


def singles(pairs: list[Pair], verdicts: list[bool]) -> dict[str, list[SFTExample]]:
    """Each teacher's correct responses alone, by strategy: the data of the single-strategy students,
    and both together (``union``: every correct attempt as a single attempt, no composition).
    ``verdicts`` are ``grade_pairs``'s, so the single sets and the composed set share one grading and
    one rule for guesses (``trusted``)."""
    verdicts, _ = trusted(pairs, verdicts)
    n = len(pairs)
    out: dict[str, list[SFTExample]] = {"text": [], "code": []}
    for i, p in enumerate(pairs):
        for a, correct in ((p.first, verdicts[i]), (p.second, verdicts[n + i])):
            if correct:
                out[a.strategy].append(SFTExample(p.problem, a.response, id=p.id, answer=p.answer, case="single",
                                                  meta={"first_teacher": a.teacher}))  # fmt: skip
    out["union"] = [*out["text"], *out["code"]]
    return out
