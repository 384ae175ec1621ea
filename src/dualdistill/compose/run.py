"""Trajectory composition (the heart of DualDistill): pairs of attempts -> one training set.

One workflow, top to bottom (``compose_file``)::

    pairs.jsonl -> grade y1, y2 -> compose (four cases) -> clean -> decontaminate -> balance -> out.jsonl

The four cases of the paper, with g = 1 for a correct attempt:

    g1 g2  case          text
    0  1   wrong_right   cut(y1) ⊕ t−+ ⊕ y2      (a switch: "…let's try code reasoning.")
    1  1   right_right   cut(y1) ⊕ t++ ⊕ y2      (a verification: "…as an alternative way to verify…")
    1  0   right_only    y1 alone
    0  0   dropped       counted, never written

``ComposeConfig.right_right`` can write the right-right case otherwise (the paper's is ``paper``):
``first`` keeps y1 alone; ``tool_last`` writes the text attempt, the "verify with code" sentence and the
code attempt, whichever the teachers wrote first, so the final answer is always the tool's; ``code`` keeps
the code attempt alone. A student that verifies a right code result by hand and boxes its own (wrong)
hand result has learned "code result distrust" (CoRT, arXiv 2506.09820) from ``paper``'s code-first
pairs; ``tool_last`` keeps the verification and gives the last word to the tool.

Joining (the documented cut): when a second attempt follows, y1 loses its ``<answer>`` block and
everything after it, so the composed trajectory has exactly one final answer (the second's), which
``format.trajectory.check_format`` requires. A y1 without an answer block is kept whole. The pieces are
joined as ``cut(y1).rstrip() + "\\n\\n" + transition + "\\n\\n" + y2.lstrip()``.

Directions: the transition is chosen by (first strategy -> second strategy). A pair's strategies
come from its ``strategy`` fields when present (``teach`` writes them); otherwise the first is read
from its response (any ``<code>`` block means code) and the second is taken as the other one.
Two attempts with the same explicit strategy are rejected: DualDistill composes a code and a text
teacher.

Guarantees:
- Every written record passes ``check_format`` (cleaning) and no written problem has a fuzzy ratio
  above the threshold to any question of the decontamination benchmarks.
- Balancing is seeded and deterministic; the report holds counts per cell before and after.
- Bad pair records raise ``DataError`` naming the file, line and key.

Not guaranteed: that the composed text reads naturally (the transitions are fixed sentences), or
that the grader's verdicts are right (``grading.grader.grade`` decides g1 and g2).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dualdistill.compose.decontam import Contamination, find_contaminated
from dualdistill.compose.singles import SINGLES_FILES, singles, trusted
from dualdistill.core.config import bounded, check_bounds, field_of, to_dict
from dualdistill.core.records import check_distinct, provenance, write_jsonl
from dualdistill.format import trajectory as tj
from dualdistill.format.examples import SFTExample, write_examples
from dualdistill.format.pairs import Attempt, Pair, read_pairs
from dualdistill.format.problems import BENCHMARKS
from dualdistill.format.trajectory import Strategy
from dualdistill.grading.grader import GradeConfig, grade_many

Case = Literal["wrong_right", "right_right", "right_only", "dropped"]
RightRight = Literal["paper", "first", "tool_last", "code"]
CASES: tuple[str, ...] = ("wrong_right", "right_right", "right_only", "dropped")
# grader(list of (response, gold)) -> list of correct flags
Grader = Callable[[list[tuple[str, str]]], list[bool]]


@dataclass
class Transitions:
    """Sentences placed between y1 and y2; defaults are the paper's released strings."""

    # wrong -> right (a switch of strategy after a failed first attempt)
    text_to_code: str = tj.TEXT_TO_CODE
    code_to_text: str = tj.CODE_TO_TEXT
    # right -> right (the second attempt verifies the first)
    also_code: str = tj.ALSO_CODE
    also_text: str = tj.ALSO_TEXT


@dataclass
class BalanceConfig:
    """Target shares after composition. Empty mappings switch that balancing step off.

    ``cell_shares`` keys are ``"<first teacher>/<case>"`` (e.g. ``"agentic/wrong_right"``); cells not
    named are removed. ``strategy_shares`` keys are the first attempt's strategy (``code``, ``text``).
    Shares are relative weights (they need not sum to 1). Each step keeps as many records as it can
    while meeting the shares exactly up to rounding; a named cell with no records is left out.
    """

    cell_shares: dict[str, float] = field(default_factory=dict)
    strategy_shares: dict[str, float] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        for name, shares in (("cell_shares", self.cell_shares), ("strategy_shares", self.strategy_shares)):
            for key, value in shares.items():
                if value < 0:
                    raise ValueError(f"balance.{name}.{key}: a share must be >= 0, got {value}")
        bad = [k for k in self.strategy_shares if k not in ("code", "text")]
        if bad:
            raise ValueError(f"balance.strategy_shares: unknown strategy {bad[0]!r} (use code, text)")
        bad = [k for k in self.cell_shares if "/" not in k or k.rsplit("/", 1)[1] not in CASES[:3]]
        if bad:
            raise ValueError(
                f"balance.cell_shares: bad cell {bad[0]!r} (use '<teacher>/<case>', case one of "
                "wrong_right, right_right, right_only)"
            )


@dataclass
class ComposeConfig:
    transitions: Transitions = field(default_factory=Transitions)
    # How a pair with both attempts right is written (see the module docstring); "paper" is the paper's.
    right_right: RightRight = "paper"
    clean: bool = True  # drop composed texts that fail format.trajectory.check_format
    # Decontamination: drop problems whose rapidfuzz ratio to a benchmark question is > threshold.
    decontaminate: bool = True
    decontam_threshold: float = bounded(90.0, ge=0, le=100)
    decontam_benchmarks: list[str] = field(default_factory=lambda: list(BENCHMARKS))  # all built-in
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    grade_timeout_s: float = field_of(GradeConfig, "timeout_s")

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclass(frozen=True)
class Composed:
    id: str
    problem: str
    answer: str
    text: str
    case: Case
    first_teacher: str
    second_teacher: str
    first_strategy: Strategy
    transition: str | None
    g1: bool
    g2: bool

    def to_example(self) -> SFTExample:
        meta = {"first_teacher": self.first_teacher, "second_teacher": self.second_teacher,
                "first_strategy": self.first_strategy, "transition": self.transition,
                "grades": {"g1": self.g1, "g2": self.g2}}  # fmt: skip
        return SFTExample(self.problem, self.text, id=self.id, answer=self.answer, case=self.case, meta=meta)

    def to_dict(self) -> dict:
        return self.to_example().to_dict()


# ----------------------------------------------------------------------------- the four cases
def cut_before_answer(response: str) -> str:
    """y1 without its ``<answer>`` block (and anything after it); unchanged when it has none."""
    answers = [s for s in tj.parse(response) if s.kind == "answer"]
    return response[: answers[0].start] if answers else response


def transition_for(first: Strategy, second: Strategy, *, wrong_first: bool, t: Transitions) -> str:
    if wrong_first:
        return t.text_to_code if (first, second) == ("text", "code") else t.code_to_text
    return t.also_code if second == "code" else t.also_text


def join(y1: str, transition: str, y2: str) -> str:
    return f"{cut_before_answer(y1).rstrip()}\n\n{transition}\n\n{y2.lstrip()}"


# ----------------------------------------------------------------------------- self-distillation cuts and join
def cut_after_reasoning(response: str) -> str | None:
    """The response up to the end of its last reasoning block, or ``None`` when it has none.

    The paper cuts a wrong sample after its last ``</think>``: the wrong conclusion and the answer
    go, the reasoning stays. In our format code may follow the last think block, or there may be no
    think block at all (a pure-code trajectory); cutting at ``</think>`` would then drop the very code
    that ``CODE_TO_TEXT`` ("the code is not correct") refers to. So the cut is after the last closed
    ``</think>``, ``</code>`` or ``</executor>``, whichever comes last. With no such block there is
    nothing to repair from, and the sample is not used.
    """
    blocks = [s for s in tj.parse(response) if s.kind in ("think", "code", "executor") and s.closed]
    return response[: blocks[-1].end] if blocks else None


def join_self_distilled(prefix: str, transition: str, solution: str, *, kind: str) -> str:
    """Student prefix, transition sentence, teacher solution, as the released code joins them
    (``processing_self_distillation_traj.py``): the sentence opens a new think block,
    ``prefix + "\n<think>\n" + sentence + "\n\n" + solution``. A kept prefix is stripped; a repaired one
    keeps the newline after its last block (the released ``"</think>\n"``), so a blank line comes first.

    The teacher's solution continues that think block, so its own opening ``<think>`` is dropped; a
    solution that starts otherwise (code, say) gets the block closed before it.
    """
    head = prefix.strip() if kind == "kept_correct" else prefix.rstrip() + "\n"
    body = solution.lstrip()
    if body.startswith("<think>"):
        return f"{head}\n<think>\n{transition}\n\n{body[len('<think>') :].lstrip(chr(10))}"
    return f"{head}\n<think>\n{transition}\n</think>\n\n{body}"


def compose_pair(
    pair: Pair, g1: bool, g2: bool, transitions: Transitions | None = None, right_right: RightRight = "paper"
) -> Composed:
    """Apply the paper's table to one graded pair (``case == "dropped"`` has an empty text)."""
    t = transitions or Transitions()
    transition: str | None = None
    first, second = pair.first, pair.second
    if g1 and g2:
        case: Case = "right_right"
        text, transition, first, second = _right_right(pair, right_right, t)
    elif g2:
        case = "wrong_right"
        transition = transition_for(pair.first.strategy, pair.second.strategy, wrong_first=True, t=t)
        text = join(pair.first.response, transition, pair.second.response)
    elif g1:
        case, text = "right_only", pair.first.response
    else:
        case, text = "dropped", ""
    # first_teacher and first_strategy name what the text opens with (after a tool_last swap, the text
    # attempt); g1 and g2 stay the grades of the teachers' own y1 and y2.
    return Composed(
        pair.id, pair.problem, pair.answer, text, case,
        first.teacher, second.teacher, first.strategy, transition, g1, g2,
    )  # fmt: skip


def _right_right(pair: Pair, mode: RightRight, t: Transitions) -> tuple[str, str | None, Attempt, Attempt]:
    """The text of a right-right pair, its transition sentence (None when one attempt stands alone),
    and the attempts in the order the text holds them (the second unused when one stands alone)."""
    first, second = pair.first, pair.second
    if mode == "first":
        return first.response, None, first, second
    if mode == "code":
        code, other = (first, second) if first.strategy == "code" else (second, first)
        return code.response, None, code, other
    if mode == "tool_last" and first.strategy == "code":
        first, second = second, first  # the text attempt first, the code attempt as the check
    transition = transition_for(first.strategy, second.strategy, wrong_first=False, t=t)
    return join(first.response, transition, second.response), transition, first, second


def default_grader(timeout_s: float) -> Grader:
    def grader(items: list[tuple[str, str]]) -> list[bool]:

        return [v.correct for v in grade_many(items, timeout=timeout_s)]

    return grader


# ----------------------------------------------------------------------------- balancing
def _take(groups: dict[str, list[Composed]], shares: dict[str, float], rng: random.Random) -> list:
    """Largest subset with group sizes proportional to ``shares`` (floor); unnamed groups removed.

    A named group with no records is left out of the proportion rather than emptying the whole set.
    """
    weights = {k: v for k, v in shares.items() if v > 0 and groups.get(k)}
    total_w = sum(weights.values())
    if not weights:
        return []
    # The scale N is limited by the scarcest group relative to its target share.
    n_total = min(len(groups.get(k, [])) * total_w / w for k, w in weights.items())
    kept: list[Composed] = []
    for key, w in weights.items():
        items = groups.get(key, [])
        k = min(len(items), int(n_total * w / total_w + 1e-9))
        kept.extend(rng.sample(items, k))
    return kept


def cell_of(c: Composed) -> str:
    return f"{c.first_teacher}/{c.case}"


def balance(records: list[Composed], config: BalanceConfig) -> list[Composed]:
    """Subsample to the target shares over (first teacher × case), then over first strategy."""
    rng = random.Random(config.seed)
    order = {id(r): i for i, r in enumerate(records)}
    out = list(records)
    if config.cell_shares:
        groups: dict[str, list[Composed]] = {}
        for r in out:
            groups.setdefault(cell_of(r), []).append(r)
        out = _take(groups, config.cell_shares, rng)
    if config.strategy_shares:
        groups = {}
        for r in out:
            groups.setdefault(r.first_strategy, []).append(r)
        out = _take(groups, config.strategy_shares, rng)
    return sorted(out, key=lambda r: order[id(r)])


def cell_counts(records: list[Composed]) -> dict[str, int]:
    counts = Counter(cell_of(r) for r in records)
    counts.update(f"{r.first_strategy}-first" for r in records)
    return dict(sorted(counts.items()))


# ----------------------------------------------------------------------------- the workflow
@dataclass
class ComposeReport:
    pairs: int
    guessed: int  # right answers that were guesses after failed code, counted as wrong (``trusted``)
    cases: dict[str, int]  # all four cases, before cleaning
    cleaned: list[dict]  # {id, case, reason}
    contaminated: list[dict]  # Contamination.to_dict()
    balance_before: dict[str, int]
    balance_after: dict[str, int]
    written: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def grade_pairs(pairs: list[Pair], config: ComposeConfig, grader: Grader | None = None) -> list[bool]:
    """Both attempts of every pair graded: ``[g1 of each pair..., g2 of each pair...]``."""
    grader = grader or default_grader(config.grade_timeout_s)
    verdicts = grader(
        [(p.first.response, p.answer) for p in pairs] + [(p.second.response, p.answer) for p in pairs]
    )
    if len(verdicts) != 2 * len(pairs):
        raise RuntimeError(f"grader returned {len(verdicts)} verdicts for {2 * len(pairs)} responses")
    return list(verdicts)


def compose(
    pairs: list[Pair],
    config: ComposeConfig,
    grader: Grader | None = None,
    *,
    verdicts: list[bool] | None = None,
) -> tuple[list[Composed], ComposeReport]:
    """Grade (unless ``verdicts`` are given), compose, clean, decontaminate and balance; returns the
    records to write and a report."""
    verdicts = grade_pairs(pairs, config, grader) if verdicts is None else verdicts
    verdicts, guessed = trusted(pairs, verdicts)
    n = len(pairs)
    composed = [
        compose_pair(p, verdicts[i], verdicts[n + i], config.transitions, config.right_right)
        for i, p in enumerate(pairs)
    ]
    cases = {c: 0 for c in CASES} | Counter(c.case for c in composed)
    kept = [c for c in composed if c.case != "dropped"]

    cleaned: list[dict] = []
    if config.clean:
        survivors = []
        for c in kept:
            check = tj.check_format(c.text)
            if check.valid:
                survivors.append(c)
            else:
                cleaned.append({"id": c.id, "case": c.case, "reason": check.reason})
        kept = survivors

    contaminated: list[Contamination] = []
    if config.decontaminate and kept:
        contaminated = find_contaminated(
            [c.problem for c in kept], config.decontam_benchmarks,
            threshold=config.decontam_threshold, ids=[c.id for c in kept],
        )  # fmt: skip
        bad = {x.id for x in contaminated}
        kept = [c for c in kept if c.id not in bad]

    before = cell_counts(kept)
    kept = balance(kept, config.balance)
    report = ComposeReport(
        pairs=n,
        guessed=guessed,
        cases=dict(cases),
        cleaned=cleaned,
        contaminated=[x.to_dict() for x in contaminated],
        balance_before=before,
        balance_after=cell_counts(kept),
        written=len(kept),
    )
    return kept, report


def compose_file(
    pairs_path: str | Path,
    out_path: str | Path,
    config: ComposeConfig,
    grader: Grader | None = None,
    *,
    singles_dir: str | Path | None = None,
) -> ComposeReport:
    """``compose`` over files: writes ``out_path`` atomically and ``<out>.report.json`` beside it, and
    with ``singles_dir`` the single-teacher sets (``text_only.jsonl``, ``code_only.jsonl``) from the
    same grading."""
    import json

    check_distinct(out_path, pairs_path)
    pairs = read_pairs(pairs_path)
    verdicts = grade_pairs(pairs, config, grader)
    records, report = compose(pairs, config, verdicts=verdicts)
    write_jsonl(out_path, [r.to_dict() for r in records])
    if singles_dir is not None:
        for strategy, examples in singles(pairs, verdicts).items():
            write_examples(Path(singles_dir) / SINGLES_FILES[strategy], examples)
    meta = provenance("compose", config=to_dict(config), pairs_file=str(pairs_path), **report.to_dict())
    Path(str(out_path) + ".report.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return report
