"""The paper's selection rule (the ``build`` step): only problems with s̄ < 1 take part.

- s̄ > β1: one correct, format-valid sample, cut before its ``<answer>``, + ``ALSO_TEXT`` (or
  ``ALSO_CODE``) + a teacher's correct solution (kind ``kept_correct``);
- s̄ ≤ β2: one wrong, format-valid sample without a wrong-to-right sentence, cut after its last
  reasoning block, + ``CODE_TO_TEXT`` (or ``TEXT_TO_CODE``) + a teacher's correct solution
  (kind ``repaired_wrong``).

Guarantees: β boundaries compare exactly (``exact_beta``: 0.9 is 9/10); the choice among candidate samples
is seeded per (seed, problem id, kind), so the same inputs give the same records in any problem order;
every skip is counted by its reason.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

# How samples are cut and joined lives with composition (one module for every cut and join).
from dualdistill.compose.run import cut_after_reasoning, cut_before_answer
from dualdistill.compose.run import join_self_distilled as join
from dualdistill.core.config import check_bounds, setting
from dualdistill.format.examples import SFTExample
from dualdistill.format.trajectory import (
    ALSO_CODE,
    ALSO_TEXT,
    CODE_TO_TEXT,
    TEXT_TO_CODE,
    WRONG_TO_RIGHT,
    check_format,
    strategy_facts,
)
from dualdistill.selfdistill.scores import ProblemScore, Sample
from dualdistill.selfdistill.teacher_solutions import RepairSource, TeacherSolutions, solution_strategy

Kind = Literal["kept_correct", "repaired_wrong"]


@dataclass
class BuildConfig:
    """Selection and repair settings; β1 = 0 and β2 = 0.9 are the paper's."""

    beta1: float = setting(0.0, ge=0, le=1, help="Keep a correct sample when s̄ > beta1.")
    beta2: float = setting(0.9, ge=0, le=1, help="Repair a wrong sample when s̄ <= beta2.")
    # "best": the teacher that solved the problem, by the teachers' records; text when both did.
    repair: RepairSource = setting(
        "text", help="Whose solutions repair and verify: text (the paper), agentic or best."
    )
    # "strategy": per problem the student's better strategy over its K samples is kept whole, and a
    # wrong sample of the other strategy is repaired (selfdistill/strategy.py).
    select: Literal["paper", "strategy"] = setting(
        "paper", help="The selection rule: paper (β1, β2) or strategy."
    )
    # Rejection-sampling fine-tuning over every solved problem; false: only problems the student
    # sometimes misses take part, as under the paper's rule.
    keep_solved: bool = setting(
        True, help="select strategy: also keep a sample of the problems solved on all K samples."
    )
    seed: int = setting(0, help="Seeds the choice among candidate samples.")
    teacher_concurrency: int = setting(
        8, ge=1, identity=False, help="Teacher calls at once (a Teacher object only)."
    )

    def __post_init__(self) -> None:
        check_bounds(self)


# ----------------------------------------------------------------------------- 3. selection
@dataclass
class BuildResult:
    records: list[dict]
    counts: Counter
    scores: list[ProblemScore]


def candidates(score: ProblemScore, kind: Kind) -> list[tuple[Sample, str]]:
    """The samples of one kind that can be used, each with its cut prefix."""
    out = []
    for s in score.samples:
        if s.correct != (kind == "kept_correct") or not check_format(s.response):
            continue
        if kind == "kept_correct":
            out.append((s, cut_before_answer(s.response)))
        elif not any(t in s.response for t in WRONG_TO_RIGHT):
            prefix = cut_after_reasoning(s.response)
            if prefix is not None:
                out.append((s, prefix))
    return out


def plan(scores: list[ProblemScore], config: BuildConfig) -> tuple[list[tuple], Counter]:
    """Decide, per problem, which kinds apply and which sample each uses (no teacher needed yet)."""
    beta1, beta2 = exact_beta(config.beta1), exact_beta(config.beta2)
    picks: list[tuple[ProblemScore, Kind, Sample, str]] = []
    counts: Counter = Counter(problems=len(scores))
    for score in scores:
        if score.s_bar == 1:
            counts["skipped_all_correct"] += 1
            continue
        counts["eligible"] += 1
        for kind, applies in (
            ("kept_correct", score.s_bar > beta1),
            ("repaired_wrong", score.s_bar <= beta2),
        ):
            if not applies:
                continue
            pool = candidates(score, kind)  # type: ignore[arg-type]
            if not pool:
                counts[f"no_candidate_{kind}"] += 1
                continue
            chosen, prefix = random.Random(f"{config.seed}|{score.problem.id}|{kind}").choice(pool)
            picks.append((score, kind, chosen, prefix))
    return picks, counts


def exact_beta(beta: float) -> Fraction:
    # 0.9 means 9/10, not the binary float just above it: s̄ = 9/10 must satisfy s̄ <= β2.
    return Fraction(repr(float(beta)))


def select(scores: list[ProblemScore], solutions: TeacherSolutions, config: BuildConfig) -> BuildResult:
    """Selection and repair for every problem; one record per (problem, kind) at most."""
    picks, counts = plan(scores, config)
    counts.update(solutions.counts)
    records = []
    for score, kind, chosen, prefix in picks:
        solution = solutions.by_id.get(score.problem.id)
        if solution is None:
            counts[f"no_teacher_solution_{kind}"] += 1
            continue
        code = solution_strategy(solution) == "code"
        if kind == "kept_correct":
            transition = ALSO_CODE if code else ALSO_TEXT
        else:
            transition = TEXT_TO_CODE if code else CODE_TO_TEXT
        text = join(prefix, transition, solution, kind=kind)
        fmt = check_format(text)
        if not fmt:
            counts[f"composed_invalid_{kind}"] += 1  # a stray tag in the student's free text, say
            continue
        counts[kind] += 1
        meta = {
            "problem_id": score.problem.id,
            "s_bar": float(score.s_bar),
            "n_correct": score.n_correct,
            "n_samples": len(score.samples),
            "kind": kind,
            "first_teacher": "student",
            "sample_index": chosen.sample_index,
            "first_strategy": strategy_facts(prefix).first_strategy,
            "repair_strategy": solution_strategy(solution),
        }
        p = score.problem
        # "case" is the kind: the SFT viewer and the training statistics group by it.
        records.append(
            SFTExample(p.question, text, id=f"{p.id}#{kind}", answer=p.answer, case=kind, meta=meta).to_dict()
        )
    return BuildResult(records, counts, scores)
