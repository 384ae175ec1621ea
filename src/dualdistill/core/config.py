"""Typed configuration: dataclasses are the one place defaults live; YAML and CLI overrides fill them.

Each component defines its own dataclass config beside its code (``SandboxConfig`` in the sandbox,
``ComposeConfig`` in composition, …). This module only turns mappings, YAML files and ``key=value``
overrides into those dataclasses, validating types once, at load time.

Guarantees:
- An unknown key, a wrong type, or a malformed YAML file raises ``ConfigError`` naming the key path
  (``train.lr``) and the file; a key a config lists in its ``MOVED`` mapping says where it went.
- Overrides use dotted keys and are parsed as YAML scalars (``train.lr=1e-5``, ``eval.tools=false``).
- Numeric bounds are declared on the field (``samples: int = bounded(1, ge=1)``) and checked when the
  config is built, from a file or in code, so an impossible value fails at load time (also under
  ``--dry-run``) with the dotted key, before any stage runs or deletes anything.

Not supported: dotted class paths, ``exec`` of config files, or any other configuration magic.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    pass


class FieldError(ValueError):
    """A field's value breaks its declared bound; ``from_dict`` adds the key path and the file."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name} {message}")
        self.name = name
        self.message = message


_OPS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
        "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}  # fmt: skip


def setting(
    default: Any = dataclasses.MISSING, *, help: str = "", identity: bool = True, scope: bool = False,
    finite: bool = True, default_factory: Any = dataclasses.MISSING, **bounds: float,
) -> Any:  # fmt: skip
    """A dataclass field and what is known about it, stated once, on the field:

    - ``help``: one line for the command-line option derived from it (``cli/options.py``);
    - bounds (``ge``, ``gt``, ``le``, ``lt``), checked whenever the config is built; ``None`` always passes;
      ``finite=False`` lets a float hold ``inf`` (every other float field must be finite);
    - ``identity=False``: the field is part of no identity: it changes how fast something runs or how it is
      watched (concurrency, batch size, retries, request timeouts, progress, device), never what it
      produces. Resume identities and the pipeline's stage keys leave such fields out (``stage_settings``),
      so changing one re-runs nothing;
    - ``scope``: the field says which records a job makes (benchmarks, samples per problem, a limit), not
      what a record holds: a resume may widen it (``identity`` leaves it out; a stage key keeps it).
    """
    unknown = set(bounds) - set(_OPS)
    if unknown:
        raise TypeError(f"unknown bound {sorted(unknown)[0]!r}")
    meta = {"bounds": bounds, "finite": finite, "help": help, "no_identity": not identity, "scope": scope}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_of(cls: type, name: str) -> Any:
    """A field stated as ``cls``'s field ``name`` is (default, help, bounds, marks): for a config that
    repeats another's setting, so the two cannot drift apart."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=f.default_factory, metadata=f.metadata)
    return dataclasses.field(default=f.default, metadata=f.metadata)


def bounded(default: Any, *, finite: bool = True, **bounds: float) -> Any:
    """A field with numeric bounds and nothing else said about it (``setting`` says more)."""
    return setting(default, finite=finite, **bounds)


def stage_settings(config: Any, *, drop: tuple[str, ...] = ("no_identity",)) -> dict:
    """``to_dict(config)`` without the fields marked ``identity=False`` (at every depth): what a stage's
    result depends on (its key keeps ``scope`` fields)."""
    out = {}
    for f in dataclasses.fields(config):
        if any(f.metadata.get(mark) for mark in drop):
            continue
        out[f.name] = _plain(getattr(config, f.name), drop)
    return out


def identity(config: Any) -> dict:
    """What a record of a resumable job depends on: no ``identity=False`` and no ``scope`` field (at every
    depth)."""
    return stage_settings(config, drop=("no_identity", "scope"))


def _plain(value: Any, drop: tuple[str, ...]) -> Any:
    if dataclasses.is_dataclass(value):
        return stage_settings(value, drop=drop)
    if isinstance(value, list | tuple):
        return [_plain(v, drop) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v, drop) for k, v in value.items()}
    return value


def flat_differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings (a key missing on one side differs)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += flat_differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".") or "(value)"]


def check_bounds(config: Any) -> None:
    """Raise ``FieldError`` for the first field of ``config`` outside its declared bounds, or holding a
    float that is not finite (``nan``, ``inf``) where the field does not allow it.

    Configs call this from ``__post_init__``, so the check holds however they are built.
    """
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value) and f.metadata.get("finite", True):
            raise FieldError(f.name, f"must be a finite number, got {value!r}")
        for op, bound in f.metadata.get("bounds", {}).items():
            symbol, ok = _OPS[op]
            if not ok(value, bound):
                raise FieldError(f.name, f"must be {symbol} {bound}, got {value!r}")


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key, source)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{source}: key '{key}': {value!r} does not fit {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{source}: key '{key}': {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(tp, type) and isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key '{key}': expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, source=source, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{source}: key '{key}': expected a list, got {type(value).__name__}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key '{key}': expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads "1e-5" as a string
        except ValueError:
            pass
    if (isinstance(tp, type) and not isinstance(value, tp)) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: key '{key}': expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict, *, source: str = "<config>", prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    moved = getattr(cls, "MOVED", {})
    for key in unknown:
        if key in moved:
            raise ConfigError(f"{source}: key '{prefix}{key}' has moved to '{prefix}{moved[key]}'")
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}' (known keys: {', '.join(sorted(fields))})"
        )
    kwargs = {k: _coerce(hints[k], v, prefix + k, source) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except FieldError as e:
        raise ConfigError(f"{source}: key '{prefix}{e.name}': {e.message}") from None
    except (TypeError, ValueError) as e:
        where = f"section '{prefix[:-1]}': " if prefix else ""
        raise ConfigError(f"{source}: {where}{e}") from None


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


MAX_NODES = 100_000  # a recipe is a few hundred values; YAML aliases must not expand it past this


def check_size(node: Any, source: str, limit: int = MAX_NODES) -> None:
    """Refuse a structure whose aliases expand past ``limit`` values, or that contains itself.

    YAML aliases load as shared objects, so a 500-byte file can describe 10**9 values; this counts the
    expanded size over the shared graph (linear in the file) before anything copies or walks it.
    """
    sizes: dict[int, int] = {}

    def size(n: Any, path: str, stack: set[int]) -> int:
        if not isinstance(n, dict | list):
            return 1
        if id(n) in stack:
            raise ConfigError(f"{source}: key '{path or '(top)'}' contains itself (a YAML alias cycle)")
        if id(n) not in sizes:
            stack.add(id(n))
            items = n.items() if isinstance(n, dict) else enumerate(n)
            total = 1
            for k, v in items:
                total += size(v, f"{path}.{k}" if path else str(k), stack)
                if total > limit:
                    raise ConfigError(
                        f"{source}: key '{path or '(top)'}' expands to more than {limit:,} values "
                        "(YAML aliases nested too deep?)"
                    )
            stack.discard(id(n))
            sizes[id(n)] = total
        return sizes[id(n)]

    size(node, "", set())


def apply_overrides(data: dict, overrides: list[str], *, source: str = "command line") -> dict:
    """Apply ``a.b.c=value`` overrides to a nested mapping (a copy is returned)."""
    check_size(data, source)
    data = _unshared(data) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: override {key!r}: '{p}' is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(
                f"{source}: override {key!r}: value {raw!r} is not valid YAML ({problem})"
            ) from None
    return data


def _unshared(node: Any) -> Any:
    """A copy in which no two places share an object. YAML aliases (``code_sft: *sft``) load as one
    shared dict, and ``copy.deepcopy`` keeps the sharing, so an override of one key would change both."""
    if isinstance(node, dict):
        return {k: _unshared(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unshared(v) for v in node]
    return node


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """Load ``cls`` from an optional YAML file plus overrides; defaults come from the dataclass."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: file not found") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a directory, not a YAML file") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: malformed YAML: {e}") from None
        except RecursionError:
            raise ConfigError(f"{path}: nested too deep to read") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded or {}
        check_size(data, source)
    if overrides:
        data = apply_overrides(data, list(overrides))
        source = f"{source} + overrides"
    return from_dict(cls, data, source=source)


def save_config(config: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
