"""Self-distillation step 3, ``build``: select and repair from a sampling directory, write the SFT set.

Solutions that repair and verify come from the teachers' pairs, a solutions file or a Teacher
(``teacher_solutions``; ``BuildConfig.repair``: ``text``, the paper's, ``agentic`` or ``best``); the rule
is the paper's (``select``) or the strategy rule (``strategy``). With ``replay``, the teacher-distillation
set follows the selected records.

Guarantees:
- Every problem with s̄ < 1, the last one included, is considered; output is written in one atomic
  write (no buffered per-problem flush that can drop the tail), and every skip is counted by reason.
- Output lines carry ``problem`` and ``text`` (what the SFT trainer reads) and their provenance; the
  report (``report``) is written beside them.
- Teacher solutions are graded against the gold answer; wrong, malformed or non-text ones are skipped
  and counted, never used.

Not guaranteed: that the teacher's solution agrees with the student's reasoning it follows; that a
sampling run finished (``scores.load_samples`` refuses problems with fewer than K samples instead of
guessing).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from dualdistill.core.records import write_jsonl
from dualdistill.format.examples import read_examples

# How samples are cut and joined lives with composition (one module for every cut and join).
from dualdistill.format.problems import Problem
from dualdistill.selfdistill.report import report
from dualdistill.selfdistill.scores import ProblemScore, load_samples
from dualdistill.selfdistill.select import BuildConfig, BuildResult, plan, select
from dualdistill.selfdistill.strategy import needs_solution, select_by_strategy
from dualdistill.selfdistill.teacher_solutions import Teacher, from_pairs, read_solutions_file, solve_with


def build(
    samples_dir: str | Path,
    teacher: Teacher | str | Path | None,
    out_path: str | Path,
    config: BuildConfig | None = None,
    *,
    pairs: str | Path | None = None,
    replay: str | Path | None = None,
) -> BuildResult:
    """Select and repair from a sampling directory.

    With ``replay`` (an SFT set, the teacher-distillation data), the written set also holds every example
    of it after the selected records (kind ``replay``), so the retrain keeps seeing what the student was
    trained on (RFT and ToRA retrain on their corpus plus the samples).

    Solutions come from ``pairs`` (the teachers' records, ``teach``'s pairs file) when given, else from
    ``teacher``: a solutions file or a Teacher. ``config.repair`` says which strategies may repair.
    Writes ``out_path`` (SFT-ready JSONL) and ``<out_path>.report.json``; returns the result.
    """
    config = config or BuildConfig()
    scores = load_samples(samples_dir)
    gold = {s.problem.id: s.problem.answer for s in scores}
    if pairs is not None:
        solutions = from_pairs(pairs, gold, config.seed, config.repair)
    elif isinstance(teacher, str | Path):
        solutions = read_solutions_file(teacher, gold, config.seed, config.repair)
    elif teacher is not None:
        needed = _needed(scores, config)
        solutions = asyncio.run(
            solve_with(teacher, needed, config.seed, config.teacher_concurrency, config.repair)
        )
    else:
        raise ValueError("build needs teacher solutions: a pairs file, a solutions file or a Teacher")
    if config.select == "strategy":
        result = select_by_strategy(scores, solutions, config)
    else:
        result = select(scores, solutions, config)
    replayed = _replayed(replay) if replay is not None else []
    result.counts["replayed"] += len(replayed)
    write_jsonl(out_path, [*result.records, *replayed])
    Path(f"{out_path}.report.json").write_text(
        json.dumps(report(result.records, result.scores, result.counts, config), indent=2), encoding="utf-8"
    )
    return result


def _replayed(path: str | Path) -> list[dict]:

    out = []
    for _, example in read_examples(path):
        record = example.to_dict()
        out.append({**record, "kind": "replay", "replay_case": record.get("case")})
    return out


def _needed(scores: list[ProblemScore], config: BuildConfig) -> list[Problem]:
    """The problems a Teacher object must solve: only those whose record needs a solution."""
    if config.select == "strategy":
        return [s.problem for s in scores if needs_solution(s, config)]
    picks, _ = plan(scores, config)
    return list({id(s): s.problem for s, *_ in picks}.values())
