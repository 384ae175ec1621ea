"""teachers.spec: TODO docstring."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from dualdistill.agent.loop import AgentConfig
from dualdistill.core.config import check_bounds, setting


@dataclass
class TeacherSpec:
    """One teacher as a config names it. Keys are never written here, only the variable holding one."""

    kind: Literal["programmatic", "openai", "anthropic", "dataset"] = "programmatic"
    name: str = ""  # default: the kind plus the model or file
    url: str = ""  # openai: base URL of an OpenAI-compatible server (…/v1); anthropic: optional base URL
    model: str = ""  # served model name (openai) or Anthropic model id
    api_key_env: str = setting(
        "", identity=False, help="Environment variable holding the API key ('': none)."
    )
    path: str = ""  # dataset: file with precomputed responses
    field: str = "r1_solution_1"  # dataset: which field holds the response
    # openai: "completions" (vLLM, SGLang) or "chat" (hosted DeepSeek-R1, OpenAI, OpenRouter: the
    # reasoning field becomes the <think> block). Chat serves the text teacher; see OpenAIBackend.
    api: Literal["completions", "chat"] = "completions"
    # code teacher: "tags" (the model writes <code> and the loop stops at </code>; completions API) or
    # "native" (the model calls a python tool through the chat tools API; teachers/tool.py)
    tool_calls: Literal["tags", "native"] = "tags"
    # USD per million tokens, for the spend shown while teaching and `teach --estimate` (0: not priced)
    price_in_per_mtok: float = setting(0.0, ge=0, identity=False)
    price_out_per_mtok: float = setting(0.0, ge=0, identity=False)
    # The provider's limits, enforced before sending (backends/ratelimit.py; 0: none). Tokens count the
    # prompt and the completion budget until the server reports what was used.
    max_requests_per_minute: float = setting(0.0, ge=0, identity=False)
    max_tokens_per_minute: float = setting(0.0, ge=0, identity=False)
    # How the teacher generates: the one generation config (as in eval and self-distillation). Its
    # budget is the whole trajectory's for the code teacher and one call's for the text teacher;
    # hosted reasoning models think long, hence 16384.
    generation: AgentConfig = dataclasses.field(default_factory=lambda: AgentConfig(budget=16384))

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.generation.template == "chat":
            raise ValueError(
                "generation.template: chat is not supported for teachers (use paper, plain or compact)"
            )
