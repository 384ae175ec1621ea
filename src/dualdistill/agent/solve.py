"""One question through the tool loop, streamed as it is produced: ``dualdistill solve``.

``solve`` runs ``agent.loop.run_agent`` (the same loop, prompts and sandbox as ``eval``) on one question and
calls ``on_text(kind, text)`` with each piece the moment it exists: ``"prefill"`` for the template's
prefilled start (the released ``<think>\n``), ``"model"`` for generated text (a
whole completion up to its stop string: the backends do not stream tokens), ``"executor"`` for the
sandbox's output block and ``"note"`` for the tool-cap note. ``Printer`` renders those pieces on a
terminal with the code and executor output set apart.

Guarantees: the record returned is the ``AgentRecord`` eval would write for the question (ungraded,
with an empty gold answer); the pieces passed to ``on_text`` concatenate to its response.
Not guaranteed: token-by-token streaming.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from dualdistill.agent.loop import AgentConfig, make_pool, run_agent
from dualdistill.agent.record import AgentRecord
from dualdistill.format.problems import Problem

OnText = Callable[[str, str], None]
_CODE = re.compile(r"(<code>.*?</code>)", re.S)


async def solve(
    question: str, backend, config: AgentConfig, *, seed: int | None = None, on_text: OnText | None = None
) -> AgentRecord:
    """Generate one trajectory for ``question``; ``on_text`` sees every piece as it arrives."""
    pool = make_pool(config) if config.tools else None
    problem = Problem(id="question", question=question, answer="", source="solve")
    try:
        return await run_agent(problem, backend, pool, config, seed=seed, on_text=on_text)
    finally:
        if pool is not None:
            await pool.close()


class Printer:
    """Render streamed pieces: model text plain, code blocks highlighted, executor output boxed."""

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(highlight=False)

    def __call__(self, kind: str, text: str) -> None:
        from rich.text import Text

        if kind in ("model", "prefill"):
            for part in _CODE.split(text):
                style = "bold yellow" if part.startswith("<code>") else None
                self.console.print(Text(part, style=style), end="")
        elif kind == "executor":
            self.console.print(Text(text, style="cyan on grey11"), end="")
        else:
            self.console.print(Text(text, style="magenta"), end="")
        self.console.file.flush()
