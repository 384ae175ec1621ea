"""Text for training the tiny student's tokenizer: what the synthetic world's trajectories look like.

``synthetic_corpus`` renders prompts (both templates), the text teacher's derivations, the agentic
teacher's programs with plausible executor output, the sandbox's timeout and restart messages, and
the transition sentences. No sandbox is run: the executor text of a program that would finish is its
exact answer, and of one that would not is the sandbox's timeout message.

Guarantee: a pure function of (n, seed). Not guaranteed: byte-exact executor text of a future
sandbox version; the tokenizer is byte-level, so any text still encodes, only less compactly.
"""

from __future__ import annotations

from dualdistill.format.prompts import build_prompt
from dualdistill.format.trajectory import ALSO_CODE, ALSO_TEXT, CODE_TO_TEXT, TEXT_TO_CODE, executor_block
from dualdistill.synthetic.families import PowMod, generate, parse_question
from dualdistill.synthetic.teachers import HUGE_EXPONENT, ProgrammaticTextTeacher, naive_programs

RESTART_NOTE = (
    "Note: the previous code block timed out, so the Python session was restarted and all earlier "
    "variables, functions and imports are lost."
)


def _timeout_message() -> str:
    try:
        from dualdistill.sandbox import TIMEOUT_MESSAGE  # optional: the corpus builds without the sandbox
    except ImportError:  # the corpus must not depend on the sandbox being importable
        TIMEOUT_MESSAGE = "Error: Code execution timed out."
    return f"{TIMEOUT_MESSAGE} (limit: 3 s)"


def synthetic_corpus(n: int = 700, seed: int = 0) -> list[str]:
    """About ``4 * n`` short documents covering the synthetic world's vocabulary."""
    text_teacher = ProgrammaticTextTeacher()
    timeout = _timeout_message()
    docs = [TEXT_TO_CODE, CODE_TO_TEXT, ALSO_CODE, ALSO_TEXT, RESTART_NOTE]
    for problem in generate(n, seed=10_000 + seed):  # a different draw from any split's
        parsed = parse_question(problem.question)
        docs.append(build_prompt(problem.question, template="compact", tools=True))
        docs.append(
            build_prompt(problem.question, template="plain", tools=True)
        )  # the tokenizer's text, unchanged
        docs.append(text_teacher.solve_sync(problem))
        finishes = not (isinstance(parsed, PowMod) and parsed.n > HUGE_EXPONENT)
        output = problem.answer if finishes else timeout
        docs.append(f"<code>\n{naive_programs(parsed)[0]}\n</code>{executor_block(output)}")
    return docs
