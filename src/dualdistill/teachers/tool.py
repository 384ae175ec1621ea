"""The agentic teacher over native tool calls (OpenAI's tools API), as hosted agents work today.

One declared function tool, ``python(code)``, runs in our sandbox; the session (its variables) lives for
the whole trajectory. Each assistant turn's text goes into ``<think>``, each call and its result into
``<code>…</code>`` and ``<executor>…</executor>``, and the final turn's text into ``<answer>``: the
trajectory format that composition, masking and SFT consume.

Guarantees:
- Several calls in one message run in order; each result is sent back as a ``tool`` message.
- Malformed arguments, an unknown tool name or an empty call become an executor error that the model
  sees; they never end the run. ``generation.max_tool_calls`` bounds the calls, and
  ``generation.executor_timeout_s`` (through the pool) each block.
- The API key stays with the client (``OpenAIBackend``'s rules); the sandbox never sees it.
Not guaranteed: that the model calls the tool at all (a trajectory without calls is a text answer).
"""

from __future__ import annotations

import json
from typing import Any

from dualdistill.format.problems import Problem
from dualdistill.format.trajectory import executor_block
from dualdistill.teachers.protocol import PREVIOUS_TEMPLATE, TeacherError, conditioned

PYTHON_TOOL = {
    "type": "function",
    "function": {
        "name": "python",
        "description": "Run Python code in a stateful sandbox (numpy and sympy available) and return what it "
        "prints. Variables persist between calls.",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python code to run."}},
            "required": ["code"],
        },
    },
}
INSTRUCTION = (
    "{question}\n\nUse the python tool to compute whatever is worth computing; think between calls. "
    "When you are done, give the final answer in \\boxed{{}}."
)


def call_code(name: str | None, arguments: str | None) -> tuple[str | None, str | None]:
    """``(code, None)`` for a well-formed python call, else ``(None, executor error text)``."""
    if name != "python":
        return None, f"Error: unknown tool {name!r}; the only tool is python(code)."
    try:
        args = json.loads(arguments or "")
    except json.JSONDecodeError as e:
        return None, f'Error: the tool arguments are not JSON ({e.msg}); call python with {{"code": "..."}}.'
    code = args.get("code") if isinstance(args, dict) else None
    if not isinstance(code, str) or not code.strip():
        return None, 'Error: empty call; pass the code to run as {"code": "..."}.'
    return code, None


class NativeToolTeacher:
    """``Teacher`` whose model calls ``python`` through the chat tools API of an ``OpenAIBackend``."""

    strategy = "code"

    def __init__(self, backend: Any, pool: Any, generation: Any, *, name: str = "agentic-tools",
                 previous_template: str = PREVIOUS_TEMPLATE):  # fmt: skip
        self.backend, self.pool, self.config, self.name = backend, pool, generation, name
        self.previous_template = previous_template

    async def solve(self, problem: Problem, previous: str | None = None) -> str:
        question = conditioned(problem, previous, self.previous_template).question
        messages: list[dict] = [{"role": "user", "content": INSTRUCTION.format(question=question)}]
        parts: list[str] = []
        calls = 0
        async with self.pool.session() as session:
            while True:
                message = await self.backend.chat(
                    messages, tools=[PYTHON_TOOL] if calls < self.config.max_tool_calls else None,
                    max_new_tokens=self.config.budget, temperature=self.config.temperature, top_p=self.config.top_p,
                )  # fmt: skip
                text, tool_calls = (message.get("content") or "").strip(), message.get("tool_calls") or []
                if not tool_calls:
                    if not text:
                        raise TeacherError("empty", "the model returned no text and no tool call")
                    parts.append(f"<answer>\n{text}\n</answer>")
                    return "\n".join(parts)
                if text:
                    parts.append(f"<think>\n{text}\n</think>")
                messages.append(
                    {"role": "assistant", "content": message.get("content"), "tool_calls": tool_calls}
                )
                for call in tool_calls:
                    fn = call.get("function") or {}
                    code, error = call_code(fn.get("name"), fn.get("arguments"))
                    if code is not None and calls < self.config.max_tool_calls:
                        calls += 1
                        output = (await session.run(code)).output
                    else:  # the model sees the error; the trajectory keeps what it sent
                        output = error or "Error: the number of code calls is over the limit; answer now."
                        code = fn.get("arguments") or ""
                    block = f"<code>\n{code.strip(chr(10))}\n</code>{executor_block(output)}"
                    parts.append(block.rstrip("\n"))
                    messages.append({"role": "tool", "tool_call_id": call.get("id", ""), "content": output})
