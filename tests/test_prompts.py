"""Prompt templates: paper, compact, and chat (an instruct model's own template), identical in SFT and eval."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from dualdistill.agent.loop import AgentConfig, run_agent
from dualdistill.backends.hf import HFBackend
from dualdistill.format.problems import Problem
from dualdistill.format.prompts import PAPER_CODE_INSTRUCTION, build_prompt, paper_system
from dualdistill.sft.train import SFTConfig, load_examples

# A ChatML-style template, the shape Qwen instruct models use.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QUESTION = "What is 6 * 7?"


@pytest.fixture(scope="module")
def chat_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model, saved again with a chat template in its tokenizer."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("chat-model")
    shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(out)
    tok.chat_template = CHATML
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def chat_tokenizer(chat_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(chat_model_dir)


def test_plain_and_compact_templates():
    plain = build_prompt(QUESTION, template="plain", tools=True)
    assert PAPER_CODE_INSTRUCTION in plain and plain.endswith(f"User: {QUESTION}\nAssistant: ")
    assert PAPER_CODE_INSTRUCTION not in build_prompt(QUESTION, template="plain", tools=False)
    assert build_prompt(QUESTION, template="plain", purpose="train") == plain  # one prompt for both
    assert (
        build_prompt(QUESTION, template="compact", tools=False)
        == f"Problem (no tools): {QUESTION}\nSolution: "
    )


def test_chat_template_puts_the_paper_preamble_in_the_system_turn(chat_tokenizer):
    prompt = build_prompt(QUESTION, template="chat", tools=True, tokenizer=chat_tokenizer)
    expected = (
        f"<|im_start|>system\n{paper_system(True)}<|im_end|>\n<|im_start|>user\n{QUESTION}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert prompt == expected


def test_chat_template_without_one_is_a_clear_error(tiny_tokenizer):
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        build_prompt(QUESTION, template="chat", tokenizer=None)
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        build_prompt(QUESTION, template="chat", tokenizer=tiny_tokenizer)  # has none
    with pytest.raises(ValueError, match="unknown prompt template 'chatml'"):
        build_prompt(QUESTION, template="chatml")  # type: ignore[arg-type]


def test_eval_and_sft_see_the_same_chat_prompt(chat_model_dir, chat_tokenizer, tmp_path):
    """The agent renders with the HF backend's own tokenizer; SFT with the training tokenizer."""
    problem = Problem("p0", QUESTION, "42", source="unit")
    config = AgentConfig(tools=False, template="chat", budget=8, temperature=0.0)
    with HFBackend(chat_model_dir, max_batch=2) as backend:
        record = asyncio.run(run_agent(problem, backend, None, config))
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"problem": QUESTION, "text": "<answer>\\boxed{42}</answer>"}) + "\n")
    rows, _ = load_examples(SFTConfig(template="chat", tools=False, max_length=4096), data, chat_tokenizer)
    assert record.prompt == build_prompt(QUESTION, template="chat", tools=False, tokenizer=chat_tokenizer)
    prompt_ids = chat_tokenizer.encode(record.prompt)
    assert rows[0]["input_ids"][: len(prompt_ids)] == prompt_ids


def test_server_backends_name_their_chat_tokenizer(chat_model_dir):
    """A backend without a tokenizer (an OpenAI-compatible server) uses ``chat_tokenizer``."""
    from scripted_backend import ScriptedBackend

    backend = ScriptedBackend(["<answer>\\boxed{42}</answer>"])
    problem = Problem("p0", QUESTION, "42", source="unit")
    config = AgentConfig(tools=False, template="chat", chat_tokenizer=str(chat_model_dir), budget=64)
    record = asyncio.run(run_agent(problem, backend, None, config))
    assert backend.calls[0].prompt.startswith("<|im_start|>system\n")
    assert record.prompt == backend.calls[0].prompt
    with pytest.raises(ValueError, match="chat_tokenizer"):
        asyncio.run(run_agent(problem, ScriptedBackend([]), None, AgentConfig(tools=False, template="chat")))
