"""``dualdistill teach --estimate``: what a teach run would send to hosted teachers, before sending it.

For each API teacher: the requests, the prompt tokens and the completion tokens, as upper bounds. The
code teacher makes at most ``max_tool_calls + 1`` requests per attempt; completions stop at the budget.
The cost comes from the spec's ``price_in_per_mtok`` and ``price_out_per_mtok`` (USD per million tokens).
Prompt tokens are estimated at 4 characters per token. Every request of a multi-request code attempt is
counted with the whole prompt plus the budget, since each one resends the trajectory so far. The second
teacher also reads y1, counted at its teacher's budget. Nothing is sent.

Not guaranteed: the real bill, which is usually far below these bounds (models stop early, retries add).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dualdistill.format.problems import Problem
from dualdistill.format.prompts import build_prompt


@dataclass
class Estimate:
    teacher: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    usd: float


def estimate(problems: Sequence[Problem], config) -> list[Estimate]:
    """Upper bounds per API teacher (programmatic and dataset teachers cost nothing and are left out)."""
    out = []
    for role, spec in (("code_teacher", config.code_teacher), ("text_teacher", config.text_teacher)):
        if not spec.is_api:
            continue
        g = spec.generation
        other = config.text_teacher if role == "code_teacher" else config.code_teacher
        y1 = other.generation.budget if other.is_api else 1024  # second teacher reads y1
        per_attempt = g.max_tool_calls + 1 if role == "code_teacher" else 1
        prompt_tokens = completion_tokens = 0
        for p in problems:
            # Upper bound per request: the prompt, y1 (when this teacher goes second) and, after a code
            # block, the trajectory so far (at most the budget).
            prompt = (
                len(build_prompt(p.question, template=g.template, tools=role == "code_teacher")) // 4 + 1 + y1
            )
            prompt_tokens += prompt + (per_attempt - 1) * (prompt + g.budget)
            completion_tokens += g.budget
        requests = per_attempt * len(problems)
        usd = (prompt_tokens * spec.price_in_per_mtok + completion_tokens * spec.price_out_per_mtok) / 1e6
        out.append(
            Estimate(
                f"{role} ({spec.backend.served_model_name or spec.kind})",
                requests,
                prompt_tokens,
                completion_tokens,
                usd,
            )
        )
    return out
