"""Self-distillation's strategy rule: the student's better strategy is kept whole, the shortest correct
sample wins ties, a wrong sample of the other strategy is repaired by the suiting teacher, nothing else."""

from __future__ import annotations

import json

from dualdistill import selfdistill as sd
from dualdistill.format.trajectory import ALSO_CODE, ALSO_TEXT, CODE_TO_TEXT, TEXT_TO_CODE, check_format
from dualdistill.selfdistill.strategy import best_correct, sample_strategy, select_by_strategy
from test_selfdistill import CODE_RIGHT, CODE_WRONG, TEXT_RIGHT, TEXT_WRONG, make_dir

CODE_RIGHT_LONG = CODE_RIGHT.replace("print(6*7)", "x = 6\ny = 7\nprint(x * y)")
CODE_SOLUTION = "<code>\nprint(6 * 7)\n</code>\n<executor>\n42\n</executor>\n<answer>\n\\boxed{42}\n</answer>"
TEXT_SOLUTION = "<think>\nSix sevens are 42.\n</think>\n<answer>\n\\boxed{42}\n</answer>"


def build(tmp_path, table, solution=CODE_SOLUTION, name="samples", **config):
    scores = sd.load_samples(make_dir(tmp_path, table, name=name))
    cfg = sd.BuildConfig(select="strategy", **config)
    return select_by_strategy(scores, sd.TeacherSolutions(by_id={p: solution for p in table}), cfg)


def test_sample_strategy_is_the_last_attempts():
    assert sample_strategy(CODE_RIGHT) == "code" and sample_strategy(TEXT_RIGHT) == "text"
    verified = TEXT_RIGHT.replace("<answer>\\boxed{42}</answer>", "") + f"\n{ALSO_CODE}\n{CODE_RIGHT}"
    assert sample_strategy(verified) == "code"
    switched = CODE_RIGHT.replace("<answer>\\boxed{42}</answer>", "") + f"\n{ALSO_TEXT}\n{TEXT_RIGHT}"
    assert sample_strategy(switched) == "text"


def test_the_better_strategy_wins_and_its_shortest_correct_sample_is_kept(tmp_path):
    # code 2/2 right, text 1/2 right: code is kept, and of the two right code samples the shorter.
    table = {"p": [(CODE_RIGHT_LONG, True), (TEXT_RIGHT, True), (CODE_RIGHT, True), (TEXT_WRONG, False)]}
    result = build(tmp_path, table)
    kept = [r for r in result.records if r["kind"] == "kept_correct"]
    assert len(kept) == 1 and kept[0]["text"] == CODE_RIGHT and kept[0]["sample_index"] == 2
    assert ALSO_TEXT not in kept[0]["text"] and ALSO_CODE not in kept[0]["text"]  # nothing appended
    # Text is better here (1/1 against 1/3), even though code has more right samples in all.
    scores = sd.load_samples(make_dir(tmp_path, {"q": [(CODE_RIGHT, True), (CODE_WRONG, False),
                                                       (CODE_WRONG, False), (TEXT_RIGHT, True)]}, name="s2"))  # fmt: skip
    assert best_correct(scores[0]).response == TEXT_RIGHT


def test_repair_switches_from_the_other_strategy_to_the_suiting_teacher(tmp_path):
    # All wrong; the code teacher solved it: the wrong *text* sample is repaired with code.
    result = build(tmp_path, {"p": [(CODE_WRONG, False), (TEXT_WRONG, False)]}, solution=CODE_SOLUTION)
    (rec,) = result.records
    assert rec["kind"] == "repaired_wrong" and rec["first_strategy"] == "text"
    assert TEXT_TO_CODE in rec["text"] and rec["text"].rstrip().endswith("</answer>")
    assert check_format(rec["text"]) and "\\boxed{41}" not in rec["text"]
    # With a text solution, the wrong code sample is the one repaired.
    result = build(
        tmp_path, {"p": [(CODE_WRONG, False), (TEXT_WRONG, False)]}, solution=TEXT_SOLUTION, name="s2"
    )
    (rec,) = result.records
    assert rec["first_strategy"] == "code" and CODE_TO_TEXT in rec["text"]


def test_the_teacher_solution_stands_alone_when_every_wrong_sample_used_its_strategy(tmp_path):
    result = build(tmp_path, {"p": [(CODE_WRONG, False), (CODE_WRONG, False)]}, solution=CODE_SOLUTION)
    (rec,) = result.records
    assert rec["kind"] == "teacher_solution" and rec["text"] == CODE_SOLUTION  # no switch sentence to lie
    assert result.counts["teacher_solution"] == 1


def test_solved_problems_keep_their_best_sample_and_beta2_bounds_repairs(tmp_path):
    table = {"all": [(CODE_RIGHT, True)] * 4, "most": [(CODE_RIGHT, True)] * 3 + [(TEXT_WRONG, False)]}
    result = build(tmp_path, table, beta2=0.5)
    assert result.counts["solved"] == 1 and result.counts["eligible"] == 1
    # Both keep a sample (the retrain sees what the student does well everywhere); s̄ = 3/4 > β2: no repair.
    assert sorted((r["problem_id"], r["kind"]) for r in result.records) == [
        ("all", "kept_correct"),
        ("most", "kept_correct"),
    ]


def test_build_writes_the_strategy_rule_from_a_pairs_file(tmp_path):
    samples = make_dir(tmp_path, {"p": [(TEXT_WRONG, False), (TEXT_WRONG, False)]})
    pairs = tmp_path / "pairs.jsonl"
    pair = {"id": "p", "problem": "What is 6*7? (p)", "answer": "42",
            "first": {"teacher": "agentic", "strategy": "code", "response": CODE_SOLUTION},
            "second": {"teacher": "r1", "strategy": "text", "response": TEXT_SOLUTION}}  # fmt: skip
    pairs.write_text(json.dumps(pair) + "\n")
    out = tmp_path / "sd.jsonl"
    result = sd.build(samples, None, out, sd.BuildConfig(select="strategy", repair="best"), pairs=pairs)
    assert [r["kind"] for r in result.records] == ["repaired_wrong"]
    assert json.loads(out.read_text().splitlines()[0])["select"] == "strategy"


def test_keep_solved_false_keeps_only_problems_the_student_sometimes_misses(tmp_path):
    table = {
        "solved": [(CODE_RIGHT, True), (CODE_RIGHT, True)],
        "unsure": [(CODE_RIGHT, True), (CODE_WRONG, False)],
    }
    every = {r["problem_id"] for r in build(tmp_path, table).records if r["kind"] == "kept_correct"}
    unsure = build(tmp_path, table, name="s2", keep_solved=False).records
    assert every == {"solved", "unsure"}
    assert {r["problem_id"] for r in unsure if r["kind"] == "kept_correct"} == {"unsure"}


def test_replay_writes_the_distillation_data_after_the_selected_records(tmp_path):
    """With --replay the retrain's set is the selected records, then every composed example (kind replay)."""
    composed = tmp_path / "composed.jsonl"
    rows = [
        {"problem": f"q{i}", "text": TEXT_SOLUTION, "id": f"c{i}", "case": "right_only"} for i in range(3)
    ]
    composed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = make_dir(tmp_path, {"p": [(CODE_RIGHT, True), (CODE_WRONG, False)]})
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "p", "problem": "q", "answer": "42",
                                 "first": {"teacher": "a", "strategy": "code", "response": CODE_SOLUTION},
                                 "second": {"teacher": "t", "strategy": "text", "response": TEXT_SOLUTION}}) + "\n")  # fmt: skip
    out = tmp_path / "sd.jsonl"
    result = sd.build(
        samples, None, out, sd.BuildConfig(select="strategy", repair="best"), pairs=pairs, replay=composed
    )
    written = sd.load_built(out)
    assert [r["kind"] for r in written[: len(result.records)]] == [r["kind"] for r in result.records]
    replayed = written[len(result.records) :]
    assert [r["id"] for r in replayed] == ["c0", "c1", "c2"] and {r["kind"] for r in replayed} == {"replay"}
    assert result.counts["replayed"] == 3
    assert sd.report(written)["by_kind"]["replay"] == 3
