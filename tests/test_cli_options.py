"""Every option derived from a config field has the field's bounds, choices and help: one test walks the
commands, tries each bounded option just outside and at its bound, and compares with the field."""

from __future__ import annotations

import typing

import pytest
import typer

from dualdistill.cli import app  # noqa: F401  (registers every command)
from dualdistill.cli.app import app as root


def commands():
    """(path, callback) of every command with derived options."""
    import typer.main

    group = typer.main.get_command(root)

    def walk(cmd, path):
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
        elif getattr(cmd.callback, "derived_options", None) or getattr(
            getattr(cmd.callback, "__wrapped__", None), "derived_options", None
        ):
            yield path, cmd

    return list(walk(group, []))


def derived(cmd):
    fn = cmd.callback
    while fn is not None and not hasattr(fn, "derived_options"):
        fn = getattr(fn, "__wrapped__", None)
    return fn.derived_options


def test_the_commands_that_share_config_fields_derive_their_options():
    names = {" ".join(path) for path, _ in commands()}
    assert {"eval", "solve", "self-distill sample", "self-distill build", "synthetic make", "synthetic teachers",
            "tiny-model", "teach", "sandbox run", "grade"} <= names  # fmt: skip


def test_an_option_several_commands_share_has_one_set_of_bounds_and_choices():
    """``synthetic teachers --n`` and ``synthetic make --n`` (and every other shared flag) accept the same
    values."""
    seen: dict[str, dict] = {}
    for path, cmd in commands():
        for _cls, option in derived(cmd):
            args = typing.get_args(option.annotation) or (option.annotation,)
            literal = next((typing.get_args(a) for a in args if typing.get_origin(a) is typing.Literal), ())
            facts = (tuple(sorted(option.field.metadata.get("bounds", {}).items())), literal)
            seen.setdefault(option.flag, {}).setdefault(facts, []).append(" ".join(path))
    differing = {flag: kinds for flag, kinds in seen.items() if len(kinds) > 1}
    assert not differing, differing


def outside(op: str, bound: float, integer: bool):
    step = 1 if integer else 1e-3
    return {"ge": bound - step, "gt": bound, "le": bound + step, "lt": bound}[op]


@pytest.mark.parametrize(
    ("path", "cmd"), commands(), ids=lambda x: " ".join(x) if isinstance(x, list) else ""
)
def test_every_derived_option_has_its_fields_bounds_choices_and_help(path, cmd):
    params = {p.opts[0]: p for p in cmd.params if p.opts}
    for _cls, option in derived(cmd):
        flag = option.flag
        param = next(p for opts, p in params.items() if flag in p.opts or f"{flag}/--no-{flag[2:]}" in opts)
        assert option.field.metadata.get("help"), f"{' '.join(path)} {flag}: its field has no help"
        assert param.help == option.field.metadata["help"], flag
        args = typing.get_args(option.annotation) or (option.annotation,)
        literal = next((a for a in args if typing.get_origin(a) is typing.Literal), None)
        if literal is not None:
            assert set(param.type.choices) == set(typing.get_args(literal)), flag
        integer = int in args
        ctx = cmd.context_class(cmd)
        for op, bound in option.field.metadata.get("bounds", {}).items():
            with pytest.raises(typer.BadParameter):
                param.process_value(ctx, str(outside(op, bound, integer)))
            if op in ("ge", "le"):
                assert param.process_value(ctx, str(bound)) == bound, (path, flag, op)
