"""Self-distillation: sample the student, score, select and repair, report; then retrain with SFT.

The workflow of the paper's self-distillation stage (Agentic-R1-SD), top to bottom:

1. ``sample``: K trajectories per training problem from the intermediate student, through the one
   tool-integrated driver ``agent.run_many`` (paper defaults in ``SampleConfig``). Records are appended
   to ``DIR/samples.jsonl`` and a rerun resumes where a kill left off.
2. ``score``: s̄ = (1/K) Σ g(i, j), kept as an exact fraction so β boundaries compare exactly.
3. ``select`` (the ``build`` step): only problems with s̄ < 1 take part.
   - s̄ > β1: one correct, format-valid sample, cut before its ``<answer>``, + ``ALSO_TEXT`` + the
     text teacher's correct solution (kind ``kept_correct``);
   - s̄ ≤ β2: one wrong, format-valid sample without a wrong-to-right sentence, cut after its last
     reasoning block (see ``cut_after_reasoning``), + ``CODE_TO_TEXT`` + the text teacher's correct
     solution (kind ``repaired_wrong``).
   ``BuildConfig.repair`` chooses whose solutions repair and verify: ``text`` (the paper), ``agentic``
   or ``best`` (``teacher_solutions``). A code solution follows ``ALSO_CODE`` or ``TEXT_TO_CODE``.
4. ``report``: counts by s̄ bucket and kind, and the strategy mix of the kept samples.
5. ``retrain``: continue from the intermediate student's weights with ``sft.train`` (fresh optimizer).

Guarantees:
- Every problem with s̄ < 1, the last one included, is considered; output is written in one atomic
  write (no buffered per-problem flush that can drop the tail), and every skip is counted by reason.
- The choice among candidate samples is seeded per (seed, problem id, kind): the same inputs give the
  same output, independent of problem order.
- Output lines carry ``problem`` and ``text`` (what the SFT trainer reads) and their provenance.
- Teacher solutions are graded against the gold answer; wrong, malformed or non-text ones are skipped
  and counted, never used.

Not guaranteed: that the teacher's solution agrees with the student's reasoning it follows; that a
sampling run finished (``build`` refuses problems with fewer than K samples instead of guessing).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

from dualdistill.agent import AgentConfig, read_agent_records

# How samples are cut and joined lives with composition (one module for every cut and join).
from dualdistill.compose import cut_after_reasoning, cut_before_answer
from dualdistill.compose import join_self_distilled as join
from dualdistill.config import bounded, check_bounds, identity, save_config, setting
from dualdistill.examples import SFTExample
from dualdistill.problems import Problem, load_problems, write_problems
from dualdistill.records import DataError, locked, provenance, write_jsonl
from dualdistill.resume import check_identity, model_fingerprint
from dualdistill.sd_report import BUCKETS, bucket_of, load_built, report  # noqa: F401  (this module's API)
from dualdistill.shards import check_shard, mark, take
from dualdistill.teacher_solutions import (  # noqa: F401  (part of this module's API)
    RepairSource,
    Teacher,
    TeacherSolutions,
    from_pairs,
    grade_solutions,
    read_solutions_file,
    solution_strategy,
    solve_with,
)
from dualdistill.trajectory import (
    ALSO_CODE,
    ALSO_TEXT,
    CODE_TO_TEXT,
    TEXT_TO_CODE,
    WRONG_TO_RIGHT,
    check_format,
    guessed_after_failed_code,
    strategy_facts,
)

SAMPLES_FILE = "samples.jsonl"
PROBLEMS_FILE = "problems.jsonl"
CONFIG_FILE = "sample_config.yaml"

Kind = Literal["kept_correct", "repaired_wrong"]


# ----------------------------------------------------------------------------- configs
@dataclass
class SampleConfig:
    """Sampling settings; the defaults are the paper's. How each trajectory is generated is the one
    generation config (``agent.AgentConfig``), as in ``eval`` and the teachers."""

    k: int = setting(
        16, ge=1, scope=True, help="Samples per problem (the paper's 16); may grow between runs."
    )
    seed: int = 0
    # Only this share of the problems, I/N (0 <= I < N), chosen by a hash of each id; `merge` joins the
    # N shards' outputs. Empty: all problems.
    shard: str = setting(
        "", help="Only the share I/N of the problems (by a hash of each id); merge joins the N shards."
    )
    api: Literal["completions", "chat"] = "completions"  # of a server model (as in eval's config)
    max_batch: int = setting(64, ge=1, speed=True, help="Sequences per forward pass (local models).")
    tokenizer: str | None = setting(
        None, speed=True, help="A server model's tokenizer (dir or hub id): counts executor text exactly."
    )
    agent: AgentConfig = field(default_factory=AgentConfig)

    def __post_init__(self) -> None:
        check_bounds(self)
        check_shard(self.shard)


@dataclass
class BuildConfig:
    """Selection and repair settings; β1 = 0 and β2 = 0.9 are the paper's."""

    beta1: float = bounded(0.0, ge=0, le=1)  # keep a correct sample when s̄ > beta1
    beta2: float = bounded(0.9, ge=0, le=1)  # repair a wrong sample when s̄ <= beta2
    # Whose solutions repair and verify: "text" (the paper), "agentic", or "best" (the teacher that
    # solved the problem, by the teachers' records; text when both did). See teacher_solutions.
    repair: RepairSource = "text"
    # "paper": the rules above; "strategy": per problem the student's better strategy over its K samples
    # is kept whole, and a wrong sample of the other strategy is repaired (strategy_select.py).
    select: Literal["paper", "strategy"] = "paper"
    # select "strategy": also keep a sample of the problems solved on all K samples (rejection-sampling
    # fine-tuning over every solved problem); false: only problems the student sometimes misses, as the
    # paper's rule takes part.
    keep_solved: bool = True
    seed: int = 0
    teacher_concurrency: int = setting(
        8, ge=1, speed=True, help="Teacher calls at once (a Teacher object only)."
    )

    def __post_init__(self) -> None:
        check_bounds(self)


# ----------------------------------------------------------------------------- 1. sampling
def sample(
    problems: list[Problem],
    backend,
    out_dir: str | Path,
    config: SampleConfig | None = None,
    *,
    pool=None,
    model: str = "",
    progress: bool = True,
) -> Path:
    """Sample ``config.k`` graded trajectories per problem into ``out_dir/samples.jsonl``; resumes.

    ``pool`` is a ``SandboxPool``; one with ``config.executor_timeout_s`` is made when omitted.
    Returns the samples file. The problems (with gold answers) and the config are saved beside it,
    so ``build`` needs nothing else.
    """
    config = config or SampleConfig()
    out_dir = Path(out_dir)
    everything, problems = problems, take(problems, config.shard)
    with locked(out_dir, "self-distill sample"):
        identity, defaults = sample_identity(config, model), sample_identity(SampleConfig(), model)
        check_identity(out_dir, "sample", identity, SAMPLES_FILE, defaults)
        mark(out_dir, config.shard, everything)
        _save_sampling_inputs(out_dir, problems, config, model)
        return _sample(problems, backend, out_dir, config, pool, progress)


def sample_identity(config: SampleConfig, model: str) -> dict:
    """What the samples depend on: every setting but the speed ones and the scope ``k`` (which may grow
    between runs; the first K are used), and the model's weights."""
    return {**identity(config), "model": model_fingerprint(model)}


def _sample(
    problems: list[Problem], backend, out_dir: Path, config: SampleConfig, pool, progress: bool
) -> Path:
    from dualdistill.agent import make_pool, run_many

    agent_config = config.agent
    own_pool = pool is None and agent_config.tools
    if own_pool:
        pool = make_pool(agent_config)

    async def go():
        try:
            return await run_many(
                problems,
                backend,
                pool,
                agent_config,
                samples=config.k,
                out_path=out_dir / SAMPLES_FILE,
                seed=config.seed,
                progress=progress,
            )
        finally:
            if own_pool:
                await pool.close()  # its sessions' processes end here, not at interpreter exit

    asyncio.run(go())
    return out_dir / SAMPLES_FILE


def _save_sampling_inputs(out_dir: Path, problems: list[Problem], config: SampleConfig, model: str) -> None:
    path = out_dir / PROBLEMS_FILE
    if path.exists():  # resuming: the problem set must not change under the records
        before = [p.id for p in load_problems(path)]
        if before != [p.id for p in problems]:
            raise DataError(path, "holds a different problem set; sample into a new directory")
    else:
        write_problems(path, problems)
    save_config(config, out_dir / CONFIG_FILE)
    (out_dir / "provenance.json").write_text(
        json.dumps(provenance("self-distill sample", model=model), indent=1), encoding="utf-8"
    )


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
        from dualdistill.config import load_config

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
    beta1, beta2 = _exact(config.beta1), _exact(config.beta2)
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


def _exact(beta: float) -> Fraction:
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
        from dualdistill.strategy_select import select_by_strategy

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
    from dualdistill.examples import read_examples

    out = []
    for _, example in read_examples(path):
        record = example.to_dict()
        out.append({**record, "kind": "replay", "replay_case": record.get("case")})
    return out


def _needed(scores: list[ProblemScore], config: BuildConfig) -> list[Problem]:
    """The problems a Teacher object must solve: only those whose record needs a solution."""
    if config.select == "strategy":
        from dualdistill.strategy_select import needs_solution

        return [s.problem for s in scores if needs_solution(s, config)]
    picks, _ = plan(scores, config)
    return list({id(s): s.problem for s, *_ in picks}.values())


# ----------------------------------------------------------------------------- 5. retraining
RETRAIN_MARKER = "selfdistill_retrain.json"


def retrain(model_dir: str | Path, data_path: str | Path, out_dir: str | Path, sft_config) -> Path:
    """Continue from the intermediate student's weights on the self-distillation set; returns the model dir.

    The optimizer, schedule and step count start fresh: only the weights of ``model_dir`` carry over.
    The released code resumed the finished first stage's trainer state instead, which left its
    second stage zero epochs to run. Here ``out_dir`` may only hold checkpoints of this same retrain
    (a killed run resumes); any other run's checkpoints are refused, and a run that trains zero steps
    raises instead of passing for a retrained model.
    """
    from dualdistill.sft.train import train_run

    model_dir, out_dir = Path(model_dir).resolve(), Path(out_dir).resolve()
    if out_dir == model_dir or out_dir in model_dir.parents:
        raise DataError(out_dir, "the output directory holds the initial model; give a new --out")
    marker = out_dir / RETRAIN_MARKER
    identity = {"init_model": str(model_dir), "data": str(Path(data_path).resolve())}
    checkpoints = sorted(out_dir.glob("checkpoint-*")) if out_dir.is_dir() else []
    if checkpoints and (not marker.exists() or json.loads(marker.read_text()) != identity):
        raise DataError(
            out_dir,
            "holds checkpoints of another run; resuming them would continue that run's trainer state "
            "(zero steps left after a finished run). Give a new --out",
        )
    if (
        marker.exists()
        and json.loads(marker.read_text()) == identity
        and (out_dir / "model" / "train_summary.json").exists()
    ):
        return out_dir / "model"  # this very retrain finished before
    resumed_at = max((int(c.name.split("-")[-1]) for c in checkpoints), default=0) if sft_config.resume else 0
    out_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(identity), encoding="utf-8")
    result = train_run(sft_config, data_path, out_dir, init_model=str(model_dir))
    if result.steps <= resumed_at:
        raise RuntimeError(
            f"retraining ran {result.steps - resumed_at} optimizer steps (check epochs/max_steps in the recipe)"
        )
    return result.model_dir
