"""Command-line options derived from config fields: help, bounds and choices are stated once, on the field.

``config_options(EvalConfig, {"samples": None, "agent.budget": None, "request_timeout_s": "--request-timeout"})``
gives each named field (a dotted path into nested configs) a Typer option: its flag (``--samples``,
``--budget``: the last part of the path, or the spelling given), its help (``setting(help=...)``), its
bounds (checked as the config checks them, with the same message) and, for a ``Literal``, its choices.
Every option defaults to ``None``, meaning "not given": the config file's value, or the dataclass
default, stands. ``with_config_options`` adds the options to a command and hands it ``given``, the
dotted keys and values the user gave, ready for ``option_overrides``.

This is TRL's idea (help on the config field, the command line derived from it) kept small: no class
loading by name, and commands still declare their path options (``--config``, ``--out``) themselves.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

import typer

from dualdistill.core.config import _OPS, FieldError


@dataclasses.dataclass(frozen=True)
class DerivedOption:
    key: str  # dotted field path: "agent.budget"
    flag: str  # "--budget"
    param: str  # the Python parameter name: "agent__budget"
    field: dataclasses.Field
    annotation: Any


def field_at(cls: type, key: str) -> tuple[dataclasses.Field, Any]:
    """The field at a dotted path and its type."""
    *parents, name = key.split(".")
    for part in parents:
        cls = typing.get_type_hints(cls)[part]
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise KeyError(f"{cls.__name__} has no field {name!r} (from {key!r})")
    return fields[name], hints[name]


def config_options(cls: type, keys: dict[str, str | None]) -> list[DerivedOption]:
    out = []
    for key, flag in keys.items():
        f, tp = field_at(cls, key)
        flag = flag or "--" + key.rsplit(".", 1)[-1].replace("_", "-")
        out.append(DerivedOption(key, flag, key.replace(".", "__"), f, tp))
    return out


def _check_bounds(option: DerivedOption) -> Callable:
    bounds = option.field.metadata.get("bounds", {})

    def check(value):
        if value is None:
            return value
        for op, bound in bounds.items():
            symbol, ok = _OPS[op]
            if not ok(value, bound):
                raise typer.BadParameter(
                    str(FieldError(option.key, f"must be {symbol} {bound}, got {value!r}"))
                )
        return value

    return check


def _annotation(tp: Any) -> Any:
    """The option's type: the field's, optional (``None``: not given); ``X | None`` stays itself."""
    args = typing.get_args(tp)
    if type(None) in args:
        (tp,) = [a for a in args if a is not type(None)] or [str]
    return tp | None


def typer_parameter(option: DerivedOption) -> inspect.Parameter:
    meta = option.field.metadata
    bounds = meta.get("bounds", {})
    tp = _annotation(option.annotation)
    decls = [option.flag]
    if typing.get_args(tp) and bool in typing.get_args(tp):
        name = option.flag.removeprefix("--")
        decls = [f"--{name}/--no-{name}"]
    default = typer.Option(
        None, *decls, help=meta.get("help") or None, callback=_check_bounds(option),
        min=bounds.get("ge"), max=bounds.get("le"),
    )  # fmt: skip
    return inspect.Parameter(option.param, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=tp)


def with_config_options(cls: type, keys: dict[str, str | None], *, into: str = "given") -> Callable:
    """Decorate a command ``fn(..., given: dict)``: the fields' options are added to its signature, and
    ``given`` (or the parameter named by ``into``, to derive from two configs) maps each field's dotted
    key to what the user gave (``None``: not given)."""
    options = config_options(cls, keys)

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        own = [p for name, p in sig.parameters.items() if name != into]

        @functools.wraps(fn)
        def command(**kwargs):
            given = {o.key: kwargs.pop(o.param) for o in options}
            return fn(**kwargs, **{into: given})

        command.__signature__ = sig.replace(parameters=[*own, *(typer_parameter(o) for o in options)])
        # every derived option of the command, for the test that checks them against their fields
        command.derived_options = [*getattr(fn, "derived_options", []), *((cls, o) for o in options)]
        return command

    return decorate


# The generation options eval, solve and self-distill sample share (fields of their ``agent`` section).
AGENT_OPTIONS: dict[str, str | None] = {
    "agent.tools": None, "agent.template": None, "agent.budget": None, "agent.temperature": None,
    "agent.top_p": None, "agent.max_tool_calls": None, "agent.executor_timeout_s": "--executor-timeout",
    "agent.executor_limit": None,
}  # fmt: skip

# The backend options eval, solve and self-distill sample share (fields of their ``backend`` section).
BACKEND_OPTIONS: dict[str, str | None] = {
    "backend.model": None, "backend.served_model_name": None, "backend.api": None, "backend.tokenizer": None,
    "backend.api_key_env": None, "backend.max_batch": None, "backend.max_retries": None,
    "backend.request_timeout_s": "--request-timeout", "backend.device": None, "backend.parked_slots": None,
}  # fmt: skip
