"""Prompt templates shared by inference, teachers and SFT.

``paper`` is the released DualDistill code's, exactly, in its two forms:

- *train* (``sft/dataloader.py``): the system text (with "Do not write text outside the tags."), then
  ``"\n\n<｜User｜>" + question + "\n\n<｜Assistant｜>"``; the response follows. ``<｜User｜>`` and
  ``<｜Assistant｜>`` are DeepSeek's markers, single tokens for R1-Distill's tokenizer.
- *generate* (``sft/evaluate.py`` and the self-distillation sampler): single newlines, no "Do not
  write ..." line, and a prefilled ``<think>\n`` after ``<｜Assistant｜>``. ``generation_prefix`` returns
  that prefill; the agent puts it at the start of the response, so records hold whole trajectories.

``plain`` is this project's earlier template (the system text, then ``User: … Assistant: ``), one prompt
for both. ``compact`` carries the same information in a few tokens; the embedded world uses it because
the tiny student's context and CPU time are small. ``chat`` is for instruct models: the paper's system
text as the system message and the question as the user turn, rendered with the tokenizer's own chat
template (so it needs that tokenizer).

Guarantee: ``build_prompt`` is a pure function of (question, template, tools, purpose[, tokenizer's chat
template]). For every template but ``paper`` both purposes give one prompt, so the student is trained on
exactly the prompt it is later asked with; for ``paper`` they differ exactly as the released code's do.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

PromptTemplate = Literal["paper", "plain", "compact", "chat"]
Purpose = Literal["train", "generate"]
TEMPLATES: tuple[str, ...] = get_args(PromptTemplate)

PAPER_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it.\n"
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. \nThe reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
    "</answer>.\n\nThe final answer should be enclosed within \\boxed tags, i.e., \\boxed{{answer here}}."
    "\n\n{code_instruction}\n\nDo not write text outside the tags."
)
PAPER_CODE_INSTRUCTION = (
    "Meanwhile, you can use Python code to help you reasoning. The code should be enclosed within <code> "
    "</code> tags. For example, <code> code here </code>.\nA executor will run the code and provide "
    "feedback immediately after the code. The executor feedback should be enclosed within <executor> "
    "</executor> tags.\nYou can use the executor feedback to improve your reasoning.\n"
)
# Injected once when a trajectory reaches the tool-call cap, so it goes on to answer in text.
TOOL_CAP_NOTE = "\nThe number of code calls is over the limit. No more code can be run; answer now.\n"


# The released evaluation prompt (sft/evaluate.py ``input_format``), before ``.format``.
RELEASED_EVAL_FORMAT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it.\n"
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. \nThe reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
    "</answer>.\nThe final answer should be enclosed within \\boxed tags, i.e., \\boxed{{answer here}}."
    "\n{code_instruction}\n\n<｜User｜>{problem}\n\n<｜Assistant｜><think>\n"
)
USER, ASSISTANT = "<｜User｜>", "<｜Assistant｜>"
THINK_PREFILL = "<think>\n"


def paper_system(tools: bool) -> str:
    system = PAPER_SYSTEM.replace("{code_instruction}", PAPER_CODE_INSTRUCTION if tools else "")
    return system.replace("{{", "{").replace("}}", "}")


def generation_prefix(template: PromptTemplate) -> str:
    """What a generated response starts with, already in the prompt (the released ``<think>\n``)."""
    return THINK_PREFILL if template == "paper" else ""


def model_input(prompt: str, response: str) -> str:
    """The text the model continues. A ``paper`` prompt already ends with the ``<think>\n`` prefill that
    starts the recorded response, so it is sent once, not twice."""
    prefill = THINK_PREFILL if response.startswith(THINK_PREFILL) else ""
    return (prompt.removesuffix(prefill) if prefill else prompt) + response


def assistant_marker(template: PromptTemplate) -> str:
    """Where the prompt's user turn ends, for APIs that take messages (the Anthropic teacher)."""
    return {"paper": f"\n\n{ASSISTANT}", "plain": "\nAssistant: ", "compact": "\nSolution: "}.get(
        template, ""
    )


def build_prompt(
    question: str,
    *,
    template: PromptTemplate = "paper",
    tools: bool = True,
    tokenizer: Any = None,
    purpose: Purpose = "generate",
) -> str:
    """The full prompt text; the model's response starts right after it.

    ``purpose`` is ``train`` in SFT and ``generate`` everywhere a model is asked; only ``paper`` tells
    them apart (see the module docstring). For ``paper`` the question is used as given, as released.
    ``tokenizer`` is used (and required) only by ``template="chat"``: any Hugging Face tokenizer whose
    ``chat_template`` is set, e.g. ``AutoTokenizer.from_pretrained("Qwen/Qwen2.5-7B-Instruct")``.
    """
    if template == "paper" and purpose == "train":
        return f"{paper_system(tools)}\n\n{USER}{question}\n\n{ASSISTANT}"
    if template == "paper":
        instruction = PAPER_CODE_INSTRUCTION if tools else ""
        return RELEASED_EVAL_FORMAT.format(code_instruction=instruction, problem=question)
    question = question.strip()
    if template == "plain":
        return f"{paper_system(tools)}\n\nUser: {question}\nAssistant: "
    if template == "compact":
        mode = "tools" if tools else "no tools"
        return f"Problem ({mode}): {question}\nSolution: "
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "template 'chat' needs a tokenizer with a chat template (an instruct model's; "
                "for a server backend set agent.chat_tokenizer to its tokenizer directory or hub id)"
            )
        messages = [{"role": "system", "content": paper_system(tools)}, {"role": "user", "content": question}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise ValueError(f"unknown prompt template {template!r} (choose one of {', '.join(TEMPLATES)})")
