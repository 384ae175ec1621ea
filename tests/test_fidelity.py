"""Issue 14: faithful to the released DualDistill code where it matters, correct where it was not."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from dualdistill.cli.app import app
from dualdistill.core.records import write_jsonl

CHAT = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


# ----------------------------------------------------------------------------- 7. template chat everywhere
def test_template_chat_works_in_view_and_inspect_masks(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    model = tmp_path / "chat-model"
    shutil.copytree(tiny_model_dir, model)
    tok = AutoTokenizer.from_pretrained(model)
    tok.chat_template = CHAT
    tok.save_pretrained(model)
    data = tmp_path / "d.jsonl"
    write_jsonl(
        data, [{"id": "a", "problem": "What is 2+2?", "text": "<think>4</think><answer>\\boxed{4}</answer>"}]
    )
    res = CliRunner().invoke(
        app, ["inspect-masks", str(data), "--tokenizer", str(model), "--json", "template=chat"]
    )
    assert res.exit_code == 0, res.output
    row = json.loads(res.output.splitlines()[0])
    assert row["trained_tokens"] > 0 and "\\boxed{4}" in "".join(t["text"] for t in row["trained"])
    res = CliRunner().invoke(
        app,
        ["view", str(data), "--tokenizer", str(model), "--out", str(tmp_path / "v.html"), "template=chat"],
    )
    assert res.exit_code == 0, res.output
    import html
    import re

    shown = html.unescape(re.sub(r"<[^>]+>", "", (tmp_path / "v.html").read_text()))
    assert "<|system|>A conversation between User and Assistant" in shown
    res = CliRunner().invoke(
        app, ["inspect-masks", str(data), "--tokenizer", str(tiny_model_dir), "template=chat"]
    )
    assert res.exit_code == 2 and "chat template" in res.output


# ----------------------------------------------------------------------------- 8. shipped accelerate configs
def test_accelerate_configs_ship_in_the_package_and_resolve_by_name(tmp_path):
    import dualdistill
    from dualdistill.core.config import ConfigError
    from dualdistill.pipeline.recipe import load_recipe, shipped_file

    package = shipped_file("paper").parent.parent
    assert package == type(shipped_file("paper"))(dualdistill.__file__).parent
    for name in ("deepspeed_zero3", "fsdp", "sft_tiny", "sft_r1_distill_qwen7b"):
        path = shipped_file(name)
        assert path.is_file() and path.is_relative_to(package), name
    assert load_recipe("paper").launch.accelerate_config == "deepspeed_zero3"
    res = CliRunner().invoke(app, ["config-path", "fsdp"])
    assert res.exit_code == 0 and res.output.strip() == str(shipped_file("fsdp"))
    with pytest.raises(ConfigError, match=r"launch\.accelerate_config"):
        load_recipe("paper", ["launch.accelerate_config=recipes/accelerate/nope.yaml"])
    (tmp_path / "mine.yaml").write_text("compute_environment: LOCAL_MACHINE\n")
    assert load_recipe("paper", [f"launch.accelerate_config={tmp_path / 'mine.yaml'}"])


# ----------------------------------------------------------------------------- 2. masks, 3. SD joins
def _trained(tiny_model_dir, tmp_path, texts):
    data = tmp_path / "m.jsonl"
    write_jsonl(data, [{"id": str(i), "problem": "What is 6*7?", "text": t} for i, t in enumerate(texts)])
    res = CliRunner().invoke(app, ["inspect-masks", str(data), "--tokenizer", str(tiny_model_dir), "--json"])
    assert res.exit_code == 0, res.output
    return ["".join(s["text"] for s in json.loads(line)["trained"]) for line in res.output.splitlines()]


def test_default_masks_follow_the_released_masker(tiny_model_dir, tmp_path):
    from dualdistill.compose.run import join_self_distilled as join
    from dualdistill.format.trajectory import (
        ALSO_CODE,
        ALSO_TEXT,
        CODE_MAY_BE_WRONG,
        CODE_TO_TEXT,
        TEXT_TO_CODE,
    )

    code = "<code>\nprint(6*7)\n</code>\n<executor>\n42\n</executor>\n"
    answer = "<answer>\\boxed{42}</answer>"
    right_right = f"<think>six sevens: 42</think>\n\n{ALSO_CODE}\n\n{code}{answer}"
    kept = join(f"{code}<answer>\\boxed{{42}}</answer>", ALSO_TEXT, "<think>six sevens are 42</think>\n" + answer,
                kind="kept_correct")  # fmt: skip
    failed = [
        f"<think>six sevens: 41</think>\n\n{s}\n\n{code}{answer}"
        for s in (TEXT_TO_CODE, CODE_TO_TEXT, CODE_MAY_BE_WRONG)
    ]
    got = _trained(tiny_model_dir, tmp_path, [right_right, kept, *failed])
    assert "six sevens: 42" in got[0]  # the right first attempt of a right-right composition is trained
    assert "print(6*7)" in got[1] and got[1].index("print(6*7)") < got[1].index(ALSO_TEXT)  # kept code
    for text, sentence in zip(got[2:], (TEXT_TO_CODE, CODE_TO_TEXT, CODE_MAY_BE_WRONG), strict=True):
        assert "41" not in text and text.lstrip().startswith(sentence[:10]), text  # failed attempt masked


def test_self_distillation_joins_open_a_think_block_as_released():
    from dualdistill.compose.run import join_self_distilled as join
    from dualdistill.format.trajectory import ALSO_TEXT, CODE_TO_TEXT, check_format

    sample = "<think>6*7</think>\n<code>\nprint(6*7)\n</code>\n<executor>\n42\n</executor>\n<answer>\\boxed{42}</answer>"
    solution = (
        "Six sevens are 42.\n</think>\n<answer>\\boxed{42}</answer>"  # a text solution, inside its think
    )
    # released kept: attempt = sample.split("<answer>")[0].strip(); attempt + "\n<think>\nWait, ...\n\n" + solution
    released_kept = sample.split("<answer>")[0].strip() + "\n<think>\n" + ALSO_TEXT + "\n\n" + solution
    assert (
        join(sample.split("<answer>")[0], ALSO_TEXT, "<think>" + solution, kind="kept_correct")
        == released_kept
    )
    wrong = "<think>6*7 = 41</think>\nSo 41.\n<answer>\\boxed{41}</answer>"
    # released repair: "</think>".join(split[:-1]) + "</think>\n" + "\n<think>\nWait, ...\n\n" + solution
    attempt = "</think>".join(wrong.split("</think>")[:-1]) + "</think>\n"
    released_repair = attempt + "\n<think>\n" + CODE_TO_TEXT + "\n\n" + solution
    assert (
        join("<think>6*7 = 41</think>", CODE_TO_TEXT, "<think>" + solution, kind="repaired_wrong")
        == released_repair
    )
    assert check_format(released_kept) and check_format(released_repair)
    code_repair = join(
        "<think>6*7 = 41</think>",
        CODE_TO_TEXT,
        "<code>\nprint(42)\n</code>\n<executor>\n42\n</executor>\n<answer>\\boxed{42}</answer>",
        kind="repaired_wrong",
    )
    assert check_format(code_repair) and "<think>\n" + CODE_TO_TEXT + "\n</think>" in code_repair


# ----------------------------------------------------------------------------- 5. grader edge cases
@pytest.mark.parametrize(
    "response, gold, correct",
    [
        ("<answer>\\boxed{35.0\\%}</answer>", "35", True),  # ToRA's GSM8K outputs hold such answers
        ("<answer>\\boxed{35\\%}</answer>", "35", True),
        ("<answer>\\boxed{36\\%}</answer>", "35", False),
        ("<answer>The solutions are \\boxed{(2, 2)} and \\boxed{(6, 2)}.</answer>", "(2, 2), (6, 2)", True),
        ("<answer>\\boxed{(6, 2)} and \\boxed{(2, 2)}</answer>", "(2, 2), (6, 2)", True),
        ("<think>so far \\boxed{(2, 2)}</think><answer>\\boxed{(6, 2)}</answer>", "(2, 2), (6, 2)", False),
        ("<think>\\boxed{7}</think><answer>\\boxed{(2, 2)}</answer>", "(2,2)", True),
        ("<answer>\\boxed{\\frac{1}{2004!}}</answer>", "\\frac{1}{2006!}", False),  # math-verify accepts
        ("<answer>\\boxed{\\frac{1}{2^{99}}}</answer>", "\\frac{1}{2^{98}}", False),  # its issue #14
        ("<answer>\\boxed{2^{-98}}</answer>", "\\frac{1}{2^{98}}", True),
        ("<answer>\\boxed{\\frac{1}{2006!}}</answer>", "\\frac{1}{2006!}", True),
        ("<answer>\\boxed{0.3333333}</answer>", "\\frac{1}{3}", True),  # decimals keep the rounding
        ("<answer>\\boxed{5 m}</answer>", "5", True),  # math-verify's unit list; docs/GRADING.md
        ("<answer>\\boxed{5 s}</answer>", "5", True),
        ("<answer>\\boxed{5 x}</answer>", "5", False),  # a letter that is no unit stays a product
    ],
)
def test_grader_edge_cases(response, gold, correct):
    from dualdistill.grading.grader import grade

    v = grade(response, gold, timeout=10)
    assert v.status == "ok" and v.correct is correct, v


def test_math_verify_issue_65_returns_within_its_timeout():
    import time

    from dualdistill.grading.grader import grade

    hang = "<answer>\\boxed{\\dfrac{5^{\\left(5^{\\left(5^{\\left(5^5\\right)}\\right)} - 4\\right)} - 5}{16}}</answer>"
    start = time.monotonic()
    v = grade(hang, "1", timeout=1.0)
    assert v.status == "timeout" and not v.correct and time.monotonic() - start < 30


# ----------------------------------------------------------------------------- 1. the released prompts
# Copied character for character from StigLidu/DualDistill at e9beabe (math_utils/utils.py and
# sft/evaluate.py), so the comparison is with the released strings, not with our own constants.
RELEASED_SYSTEM_PROMPT_TPL = (
    "A conversation between User and Assistant. The user asks a question, "
    "and the Assistant solves it.\n"
    "The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. \n"
    "The reasoning process and answer are enclosed within <think> </think> and "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here "
    "</think> <answer> answer here </answer>.\n\n"
    "The final answer should be enclosed within \\boxed tags, i.e., "
    "\\boxed{{answer here}}.\n\n"
    "{code_instruction}\n\n"
    "Do not write text outside the tags."
)
RELEASED_CODE_INSTRUCTION = """Meanwhile, you can use Python code to help you reasoning. The code should be enclosed within <code> </code> tags. For example, <code> code here </code>.
A executor will run the code and provide feedback immediately after the code. The executor feedback should be enclosed within <executor> </executor> tags.
You can use the executor feedback to improve your reasoning.
"""
RELEASED_INPUT_FORMAT = """A conversation between User and Assistant. The user asks a question, and the Assistant solves it.
The assistant first thinks about the reasoning process in the mind and then provides the user with the answer. 
The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>.
The final answer should be enclosed within \\boxed tags, i.e., \\boxed{{answer here}}.
{code_instruction}

<｜User｜>{problem}

<｜Assistant｜><think>
"""  # noqa: W291  (the released text has a trailing space)


@pytest.mark.parametrize("question", ["What is 6 * 7?", "  Find $x$ if $2x = 4$.\n"])
def test_paper_prompts_are_the_released_ones_character_for_character(question):
    from dualdistill.format.prompts import build_prompt, generation_prefix

    system = RELEASED_SYSTEM_PROMPT_TPL.format(code_instruction=RELEASED_CODE_INSTRUCTION)
    train = system + "\n\n<｜User｜>" + question + "\n\n<｜Assistant｜>"
    assert build_prompt(question, template="paper", tools=True, purpose="train") == train
    for tools in (True, False):
        released = RELEASED_INPUT_FORMAT.format(
            problem=question, code_instruction=RELEASED_CODE_INSTRUCTION if tools else ""
        )
        assert build_prompt(question, template="paper", tools=tools, purpose="generate") == released
    assert generation_prefix("paper") == "<think>\n" and generation_prefix("compact") == ""


def test_the_agent_starts_a_paper_response_with_the_prefill(tiny_model_dir):
    import asyncio

    from dualdistill.agent.loop import AgentConfig, run_agent
    from dualdistill.backends.hf import HFBackend
    from dualdistill.format.problems import Problem

    config = AgentConfig(tools=False, template="paper", budget=4, temperature=0.0)
    with HFBackend(tiny_model_dir, max_batch=1) as backend:
        seen: list[str] = []
        complete = backend.complete

        async def spy(prompt, **kw):
            seen.append(prompt)
            return await complete(prompt, **kw)

        backend.complete = spy
        record = asyncio.run(run_agent(Problem("p", "What is 1+1?", "2"), backend, None, config))
    assert record.prompt.endswith("<｜Assistant｜><think>\n") and record.response.startswith("<think>\n")
    # The model continues the released prompt itself: the prefill is in it once, not twice.
    assert seen == [record.prompt] and not seen[0].endswith("<think>\n<think>\n")


# ----------------------------------------------------------------------------- 4. loss weighting
def test_sequence_and_token_normalization_differ_as_they_should_on_unequal_lengths():
    import torch
    import torch.nn.functional as F

    from dualdistill.sft.loss import sequence_mean_loss

    torch.manual_seed(0)
    vocab = 11
    # one packed row: a short sequence (2 trained targets) then a long one (6 trained targets)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
    labels = torch.tensor([[-100, 2, 3, -100, 5, 6, 7, 8, 9, 10]])
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4, 5, 6]])
    logits = torch.randn(1, ids.shape[1], vocab)
    per = F.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100, reduction="none")
    short, long = per[0:2], per[3:9]  # targets at positions 1-2 and 4-9
    token_mean = per.sum() / 8
    sequence_mean = (short.mean() + long.mean()) / 2
    got = sequence_mean_loss(logits, labels, position_ids)
    assert torch.isclose(got, sequence_mean) and not torch.isclose(got, token_mean)
    # the same two sequences as a padded batch of two rows give the same value
    padded_logits = torch.zeros(2, 7, vocab)
    padded_logits[0, :3], padded_logits[1, :7] = logits[0, :3], logits[0, 3:]
    padded_labels = torch.full((2, 7), -100)
    padded_labels[0, :3], padded_labels[1, :7] = labels[0, :3], labels[0, 3:]
    assert torch.isclose(sequence_mean_loss(padded_logits, padded_labels), sequence_mean)


@pytest.mark.parametrize("packing", [True, False])
def test_training_with_sequence_normalization_runs(tiny_model_dir, tmp_path, packing):
    from dualdistill.sft.train import SFTConfig, train_run

    texts = [
        "<think>a</think><answer>\\boxed{1}</answer>",
        "<think>" + "b " * 40 + "</think><answer>\\boxed{2}</answer>",
    ]
    write_jsonl(tmp_path / "d.jsonl", [{"problem": f"q{i}", "text": t} for i, t in enumerate(texts)])
    config = SFTConfig(template="compact", max_steps=2, batch_size=2, packing=packing, lr=1e-3, progress=False,
                       loss_normalization="sequence", schedule="constant", max_length=512)  # fmt: skip
    result = train_run(config, tmp_path / "d.jsonl", tmp_path / "out", init_model=str(tiny_model_dir))
    assert result.steps == 2 and result.train_loss is not None and 0 < result.train_loss < 20


def test_the_paper_recipe_trains_as_released():
    from dualdistill.pipeline.recipe import load_recipe

    sft = load_recipe("paper").sft
    assert (sft.loss_normalization, sft.schedule, sft.warmup, sft.batch_size, sft.grad_accum) == (
        "sequence",
        "constant",
        0,
        1,
        1,
    )
    assert sft.template == "paper" and sft.masking.first_attempt_until == "switch"


@pytest.mark.parametrize(
    "response, gold, correct",
    [
        # decisions pinned from Math-Verify's suite (docs/GRADING.md, "Public suites")
        ("<answer>\\boxed{1000,99}</answer>", "1000.99", False),  # no decimal comma
        ("<answer>\\boxed{1,000.99}</answer>", "1000.99", True),  # a thousands comma
        ("<think>x</think> So \\boxed{-2} and \\boxed{1}", "1,-2", False),  # no answer block: the last box
        ("<think>x</think><answer>\\boxed{-2} and \\boxed{1}</answer>", "1,-2", True),  # in one: one answer
    ],
)
def test_grader_decisions_from_the_public_suite(response, gold, correct):
    from dualdistill.grading.grader import grade

    assert grade(response, gold, timeout=10).correct is correct


def test_the_suite_runner_reads_parametrized_cases(tmp_path):
    import importlib.util
    from pathlib import Path

    suite = tmp_path / "t.py"
    suite.write_text(
        'import pytest\n@pytest.mark.parametrize("gold,pred,expected", [("1", "$1$", 1), ("2", "$3$", 0)])\ndef test_x(gold, pred, expected):\n    pass\n'
    )
    spec = importlib.util.spec_from_file_location(
        "grader_suites", Path(__file__).parent.parent / "bench" / "grader_suites.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cases = mod.labelled_cases(suite)
    assert cases == [("1", "$1$", 1, "test_x"), ("2", "$3$", 0, "test_x")]
    assert [mod.our_verdict(g, p) for g, p, _, _ in cases] == [True, False]


def test_the_suite_runner_reads_mario_eval_unittests(tmp_path):
    import importlib.util
    from pathlib import Path

    suite = tmp_path / "m.py"
    suite.write_text(
        "class T:\n    def test_a(self):\n        test_in = '1/2'\n        test_out = '0.5'\n"
        "        self.assertTrue(f(test_in, test_out))\n        test_in = '3'\n        test_out = '4'\n"
        "        self.assertFalse(f(test_in, test_out))\n"
    )
    spec = importlib.util.spec_from_file_location(
        "grader_suites", Path(__file__).parent.parent / "bench" / "grader_suites.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.mario_cases(suite) == [("0.5", "1/2", 1, "test_a"), ("4", "3", 0, "test_a")]


def test_the_suite_runner_scores_tora_outputs(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    rows = [
        {"idx": 0, "gt": "35", "pred": ["35"], "code": ["```output\n35.0\n```\nSo \\boxed{35.0\\%}."]},
        {"idx": 1, "gt": "5", "pred": ["5"], "code": ["```output\n5\n```\n5 cars drove through."]},
    ]
    write_jsonl(tmp_path / "t.jsonl", rows)
    spec = importlib.util.spec_from_file_location(
        "grader_suites", Path(__file__).parent.parent / "bench" / "grader_suites.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.tora_report(tmp_path / "t.jsonl", show=5)
    head, *differ = capsys.readouterr().out.splitlines()
    summary = json.loads(head)
    assert (summary["acc_on_responses"], summary["acc_on_pred"], summary["readings_differ"]) == (
        50.0,
        100.0,
        1,
    )
    assert json.loads(differ[0])["idx"] == 1
