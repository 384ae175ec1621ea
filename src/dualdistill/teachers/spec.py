"""Which teacher a config names (``TeacherSpec``): its kind, its backend, how it generates, what it costs.

Guarantees: a setting the chosen teacher does not read, set away from its default, is an error naming the
key (``unread``, checked by ``TeachConfig``), so a knob that does nothing cannot change the teach stage's
key and re-run paid calls. Old keys (``url``, ``model``, ``api``, ``api_key_env``) say where they moved.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from dualdistill.agent.loop import AgentConfig
from dualdistill.backends import BackendConfig
from dualdistill.core.config import check_bounds, setting


@dataclass
class TeacherSpec:
    """One teacher as a config names it. Keys are never written here, only the variable holding one."""

    kind: Literal["programmatic", "openai", "anthropic", "dataset"] = "programmatic"
    name: str = ""  # default: the kind plus the model or file
    # openai: an OpenAI-compatible server (model: its …/v1 URL, served_model_name: the model; api:
    # completions for vLLM or SGLang, chat for hosted DeepSeek-R1, OpenAI, OpenRouter, whose reasoning
    # field becomes the <think> block); anthropic: the Messages API (served_model_name: the model id,
    # model: an optional base URL).
    backend: BackendConfig = dataclasses.field(default_factory=BackendConfig)
    path: str = setting("", help="dataset: the file with precomputed responses.")
    field: str = setting("r1_solution_1", help="dataset: which field holds the response.")
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
    # hosted reasoning models think long, hence 16384. Only the fields the teacher reads may be set
    # (``unread``).
    generation: AgentConfig = dataclasses.field(default_factory=lambda: AgentConfig(budget=16384))

    # Keys of configs written before the backend section.
    MOVED = {"url": "backend.model", "model": "backend.served_model_name", "api": "backend.api",
             "api_key_env": "backend.api_key_env"}  # fmt: skip

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.generation.template == "chat":
            raise ValueError(
                "generation.template: chat is not supported for teachers (use paper, plain or compact)"
            )
        api = self.backend.api
        if self.kind == "openai" and api == "anthropic":
            raise ValueError(
                "backend.api: anthropic is kind anthropic's API; kind openai speaks completions or chat"
            )
        if self.kind == "anthropic" and api not in ("completions", "anthropic"):
            raise ValueError(f"backend.api: kind anthropic speaks the Messages API, not {api}")

    @property
    def is_api(self) -> bool:
        return self.kind in ("openai", "anthropic")

    def backend_config(self) -> BackendConfig:
        """The backend this teacher opens: its ``backend`` section, speaking the Messages API for kind
        anthropic."""
        return (
            dataclasses.replace(self.backend, api="anthropic") if self.kind == "anthropic" else self.backend
        )


# The settings each teacher reads, by kind and role; ``unread`` names any other one set away from its
# default. The driver's settings (trajectories and grading at once) are eval's and sampling's, never a
# teacher's: a teacher solves one problem at a time, and teach grades with compose.
_DRIVER = {"concurrency", "grade_timeout_s", "tools"}
_POOL = {"executor_timeout_s", "executor_limit", "executor_output_limit", "sandbox_concurrency"}  # make_pool
_TEXT = {"template", "chat_tokenizer", "budget", "temperature", "top_p", "max_prompt_chars"}
_API = {"backend", "tool_calls", "price_in_per_mtok", "price_out_per_mtok", "max_requests_per_minute",
        "max_tokens_per_minute"}  # fmt: skip


def unread(spec: TeacherSpec, role: Literal["code", "text"]) -> list[str]:
    """Dotted keys of ``spec`` set away from their defaults that this teacher in this role never reads."""
    read_generation = {
        "programmatic": _POOL if role == "code" else set(),  # the code role's sandbox comes from it
        "dataset": _POOL if role == "code" else set(),
        "openai": (_TEXT | _POOL | {"max_tool_calls"}) if role == "code" else _TEXT,
        "anthropic": (_TEXT | _POOL | {"max_tool_calls"}) if role == "code" else _TEXT,
    }[spec.kind] - _DRIVER
    read_spec = {"kind", "name", "generation"} | (_API if spec.is_api else set())
    read_spec |= {"path", "field"} if spec.kind == "dataset" else set()
    if role == "text":
        read_spec -= {"tool_calls"}
    default = TeacherSpec(kind=spec.kind)
    # A generation section given in part takes AgentConfig's defaults for the rest: either default is unset.
    defaults = (AgentConfig(), default.generation)
    out = [f.name for f in dataclasses.fields(spec)
           if f.name not in read_spec and getattr(spec, f.name) != getattr(default, f.name)]  # fmt: skip
    out += [f"generation.{f.name}" for f in dataclasses.fields(spec.generation)
            if f.name not in read_generation
            and all(getattr(spec.generation, f.name) != getattr(d, f.name) for d in defaults)]  # fmt: skip
    return out
