"""Self-distillation step 2: score each sampled problem. s̄ = (1/K) Σ g(i, j), kept as an exact fraction.

Guarantees: a problem with fewer than K samples is refused, naming it (a sampling run that did not
finish is never scored as if it had); a right answer guessed after failed code counts as wrong
(``format.trajectory.guessed_after_failed_code``), as compose counts a teacher's.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from dualdistill.agent.record import read_agent_records
from dualdistill.core.config import load_config
from dualdistill.core.records import DataError

# How samples are cut and joined lives with composition (one module for every cut and join).
from dualdistill.format.problems import Problem, load_problems
from dualdistill.format.trajectory import guessed_after_failed_code
from dualdistill.selfdistill.sample import CONFIG_FILE, PROBLEMS_FILE, SAMPLES_FILE, SampleConfig


# ----------------------------------------------------------------------------- 2. scoring
@dataclass(frozen=True)
class Sample:
    problem_id: str
    sample_index: int
    response: str
    correct: bool


@dataclass
class ProblemScore:
    problem: Problem
    samples: list[Sample]  # sorted by sample_index

    @property
    def n_correct(self) -> int:
        return sum(s.correct for s in self.samples)

    @property
    def s_bar(self) -> Fraction:
        """Mean correctness, exact: 15/16 stays 15/16, so it is < 1 and compares exactly with β."""
        return Fraction(self.n_correct, len(self.samples))


def load_samples(samples_dir: str | Path, *, k: int | None = None) -> list[ProblemScore]:
    """Read a sampling directory and group its records per problem (in problem-file order).

    Raises ``DataError`` for a record of an unknown problem, a duplicate (problem, sample index), a
    record without ``response``/``correct``, or a problem with fewer than K samples.
    """
    samples_dir = Path(samples_dir)
    problems = load_problems(samples_dir / PROBLEMS_FILE)
    if k is None and (samples_dir / CONFIG_FILE).exists():
        k = load_config(SampleConfig, samples_dir / CONFIG_FILE).k
    path = samples_dir / SAMPLES_FILE
    by_id: dict[str, dict[int, Sample]] = {p.id: {} for p in problems}
    for line, r in read_agent_records(path, allow_torn_tail=True):
        if r.correct is None:
            raise DataError(path, "record is not graded (no 'correct')", line=line)
        pid, idx = str(r.problem_id), int(r.sample_index)
        if k is not None and idx >= k:
            continue  # sampled with a larger K earlier; s̄ is over the first K, as run_many returns
        if pid not in by_id:
            raise DataError(path, f"problem '{pid}' is not in {PROBLEMS_FILE}", line=line)
        if idx in by_id[pid]:
            raise DataError(path, f"duplicate sample {idx} of problem '{pid}'", line=line)
        # A right answer that is a guess after failed code counts as wrong (the rule compose shares).
        right = bool(r.correct) and not guessed_after_failed_code(str(r.response))
        by_id[pid][idx] = Sample(pid, idx, str(r.response), right)
    scores = []
    for p in problems:
        got = by_id[p.id]
        want = k if k is not None else max((len(v) for v in by_id.values()), default=0)
        if len(got) < want or not got:
            raise DataError(
                path, f"problem '{p.id}' has {len(got)} of {want} samples; rerun `sample` to finish"
            )
        scores.append(ProblemScore(p, [got[i] for i in sorted(got)]))
    return scores
