"""Self-distillation that keeps the student's own best strategy (``selfdistill.build.build.select: strategy``).

The paper's rule (``selfdistill.select.plan``/``select``) keeps one correct sample of a problem cut before its
answer and appends "we can also use text-reasoning to verify" plus a text-teacher solution, and repairs a
wrong sample with the text teacher; problems the student always solves take no part. A student that is
weak in text then learns to re-check every right answer in text, and a retrain on the few problems it
sometimes misses drifts away from what it does well. Here, per problem, over its K samples:

- **kept** (s̄ > β1, solved problems included): each strategy's success rate over the K samples (a
  sample's strategy is that of its last attempt, the one whose answer is boxed); of the strategy with the
  higher rate, the shortest correct sample, kept whole: nothing is appended (TATA, arXiv 2502.12022,
  picks the strategy by the model's own success; shortest-correct selection, arXiv 2502.20122, breaks
  ties). The retrain so sees the student's own best behaviour on every problem it can solve;
- **repaired** (s̄ ≤ β2, s̄ < 1): a wrong sample whose strategy differs from the teacher solution's (the
  student tried the strategy that does not suit the problem), cut after its reasoning, the switch
  sentence, and the solution of the teacher whose strategy suits it (``repair``: with ``best``, the
  agentic teacher's when its program ran cleanly to the right answer, else the text teacher's). When every
  wrong sample already used the solution's strategy, a switch sentence would not fit: the teacher's
  solution stands alone (kind ``teacher_solution``), a demonstration of the strategy done right.

Guarantees: the same inputs give the same records (ties broken by length, then sample index); every
record passes ``check_format``; skips are counted by reason. Not guaranteed: that the kept strategy is
right for other problems of the same kind (the rule looks at one problem's K samples only).
"""

from __future__ import annotations

from collections import Counter

from dualdistill.compose.run import join_self_distilled as join
from dualdistill.format.examples import SFTExample
from dualdistill.format.trajectory import CODE_TO_TEXT, TEXT_TO_CODE, check_format, last_attempt
from dualdistill.selfdistill.scores import ProblemScore, Sample
from dualdistill.selfdistill.select import BuildConfig, BuildResult, candidates, exact_beta
from dualdistill.selfdistill.teacher_solutions import TeacherSolutions, solution_strategy


def sample_strategy(response: str) -> str:
    """``code`` or ``text``: the strategy of the last attempt, the one whose answer is boxed."""
    return solution_strategy(last_attempt(response))


def best_correct(score: ProblemScore) -> Sample | None:
    """The shortest correct sample of the strategy with the higher success rate (None: none correct)."""
    by_strategy: dict[str, list[Sample]] = {}
    for s in score.samples:
        by_strategy.setdefault(sample_strategy(s.response), []).append(s)
    rates = {k: sum(s.correct for s in v) / len(v) for k, v in by_strategy.items()}
    ranked = sorted(rates, key=lambda k: (-rates[k], k))
    for strategy in ranked:
        correct = [s for s in by_strategy[strategy] if s.correct and check_format(s.response)]
        if correct:
            return min(correct, key=lambda s: (len(s.response), s.sample_index))
    return None


def needs_solution(score: ProblemScore, config: BuildConfig) -> bool:
    """Whether the problem's record needs a teacher solution: a repair (s̄ <= β2, s̄ < 1)."""
    return score.s_bar < 1 and score.s_bar <= exact_beta(config.beta2)


def select_by_strategy(
    scores: list[ProblemScore], solutions: TeacherSolutions, config: BuildConfig
) -> BuildResult:
    """Kept and repaired records under the strategy rule (see the module docstring)."""
    counts: Counter = Counter(problems=len(scores))
    counts.update(solutions.counts)
    records: list[dict] = []
    for score in scores:
        counts["solved" if score.s_bar == 1 else "eligible"] += 1
        if score.s_bar > exact_beta(config.beta1) and (config.keep_solved or score.s_bar < 1):
            kept = best_correct(score)
            if kept is None:
                counts["no_candidate_kept_correct"] += 1
            else:
                records.append(_record(score, "kept_correct", kept, kept.response, kept.response))
                counts["kept_correct"] += 1
        if needs_solution(score, config):
            _repair(score, solutions, config, counts, records)
    return BuildResult(records, counts, scores)


def _repair(
    score: ProblemScore, solutions: TeacherSolutions, config: BuildConfig, counts: Counter, records: list
) -> None:
    solution = solutions.by_id.get(score.problem.id)
    if solution is None:
        counts["no_teacher_solution_repaired_wrong"] += 1
        return
    strategy = solution_strategy(solution)
    pool = [
        (s, prefix)
        for s, prefix in candidates(score, "repaired_wrong")
        if sample_strategy(s.response) != strategy
    ]
    if not pool:
        wrong = [s for s in score.samples if not s.correct]
        records.append(_record(score, "teacher_solution", wrong[0], "", solution, repair=strategy))
        counts["teacher_solution"] += 1
        return
    chosen, prefix = min(pool, key=lambda sp: (len(sp[0].response), sp[0].sample_index))
    text = join(prefix, TEXT_TO_CODE if strategy == "code" else CODE_TO_TEXT, solution, kind="repaired_wrong")
    if not check_format(text):
        counts["composed_invalid_repaired_wrong"] += 1
        return
    records.append(_record(score, "repaired_wrong", chosen, prefix, text, repair=strategy))
    counts["repaired_wrong"] += 1


def _record(
    score: ProblemScore, kind: str, chosen: Sample, prefix: str, text: str, repair: str | None = None
) -> dict:
    p = score.problem
    meta = {
        "problem_id": p.id, "s_bar": float(score.s_bar), "n_correct": score.n_correct,
        "n_samples": len(score.samples), "kind": kind, "first_teacher": "student",
        "sample_index": chosen.sample_index, "first_strategy": sample_strategy(prefix) if prefix else repair,
        "repair_strategy": repair, "select": "strategy",
    }  # fmt: skip
    return SFTExample(p.question, text, id=f"{p.id}#{kind}", answer=p.answer, case=kind, meta=meta).to_dict()
