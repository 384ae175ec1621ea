"""Prompt templates shared by inference, teachers and SFT (the same prompt at train and test time).

``paper`` is the released DualDistill template (a system-style preamble, the code instruction when tools
are on, then the question). ``compact`` carries the same information in a few tokens; the embedded world
uses it because the tiny student's context and CPU time are small. ``chat`` is for instruct models: the
paper's preamble as the system message and the question as the user turn, rendered with the tokenizer's
own chat template (so it needs that tokenizer).

Guarantee: ``build_prompt`` is a pure function of (question, template, tools[, tokenizer's chat template]);
SFT and evaluation call it with the same arguments, so the student is trained on exactly the prompt it is
later asked with.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

PromptTemplate = Literal["paper", "compact", "chat"]
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


def paper_system(tools: bool) -> str:
    system = PAPER_SYSTEM.replace("{code_instruction}", PAPER_CODE_INSTRUCTION if tools else "")
    return system.replace("{{", "{").replace("}}", "}")


def build_prompt(
    question: str, *, template: PromptTemplate = "paper", tools: bool = True, tokenizer: Any = None
) -> str:
    """The full prompt text; the model's response starts right after it.

    ``tokenizer`` is used (and required) only by ``template="chat"``: any Hugging Face tokenizer whose
    ``chat_template`` is set, e.g. ``AutoTokenizer.from_pretrained("Qwen/Qwen2.5-7B-Instruct")``.
    """
    question = question.strip()
    if template == "paper":
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
