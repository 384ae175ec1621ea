"""Typed configs: YAML plus overrides into dataclasses; errors name the key and the file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from dualdistill.core.config import ConfigError, apply_overrides, from_dict, load_config, save_config


@dataclass
class Train:
    lr: float = 1e-5
    epochs: int = 1
    tags: list[str] = field(default_factory=list)


@dataclass
class Recipe:
    name: str = "demo"
    tools: bool = True
    mode: Literal["sft", "rl"] = "sft"
    seed: int | None = None
    train: Train = field(default_factory=Train)


def test_defaults_yaml_and_overrides(tmp_path: Path) -> None:
    assert load_config(Recipe) == Recipe()
    path = tmp_path / "r.yaml"
    path.write_text("name: mine\ntrain:\n  lr: 3e-4\n  tags: [a, b]\n")
    cfg = load_config(Recipe, path, ["train.epochs=3", "tools=false", "seed=7", "mode=rl"])
    assert cfg == Recipe(name="mine", tools=False, mode="rl", seed=7, train=Train(3e-4, 3, ["a", "b"]))
    assert isinstance(cfg.train.lr, float)


def test_save_and_reload_round_trip(tmp_path: Path) -> None:
    cfg = Recipe(name="x", train=Train(lr=2e-5, epochs=2, tags=["t"]))
    save_config(cfg, tmp_path / "out" / "c.yaml")
    assert load_config(Recipe, tmp_path / "out" / "c.yaml") == cfg


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("nmae: x\n", "unknown key 'nmae'"),
        ("train:\n  lrr: 1\n", "unknown key 'train.lrr'"),
        ("train:\n  epochs: two\n", "key 'train.epochs': expected int, got 'two'"),
        ("train:\n  epochs: true\n", "key 'train.epochs'"),
        ("mode: dpo\n", "key 'mode': 'dpo' is not one of"),
        ("train: 5\n", "key 'train': expected a mapping"),
        ("train:\n  tags: a\n", "key 'train.tags': expected a list"),
        ("- a\n- b\n", "the top level must be a mapping"),
        ("a: [unclosed\n", "malformed YAML"),
    ],
)
def test_errors_name_key_and_file(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(Recipe, path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_override_errors() -> None:
    with pytest.raises(ConfigError, match="command line: override 'lr' is not of the form key=value"):
        apply_overrides({}, ["lr"])
    with pytest.raises(ConfigError, match="'name' is not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])
    with pytest.raises(ConfigError, match=r"unknown key 'train\.nope'"):
        load_config(Recipe, None, ["train.nope=1"])


def test_missing_file_and_from_dict_source() -> None:
    with pytest.raises(ConfigError, match=r"absent\.yaml: file not found"):
        load_config(Recipe, "absent.yaml")
    with pytest.raises(ConfigError, match=r"^mine\.yaml: key 'seed'"):
        from_dict(Recipe, {"seed": "x"}, source="mine.yaml")


@dataclass
class TwoTrains:
    first: Train = field(default_factory=Train)
    second: Train = field(default_factory=Train)


def test_override_of_a_yaml_alias_changes_only_its_own_key(tmp_path: Path) -> None:
    path = tmp_path / "alias.yaml"
    path.write_text("first: &t {lr: 0.1, epochs: 3, tags: [a]}\nsecond: *t\n")
    config = load_config(TwoTrains, path, ["second.epochs=7", "second.tags=[b]"])
    assert (config.first.epochs, config.first.tags) == (3, ["a"])
    assert (config.second.epochs, config.second.tags, config.second.lr) == (7, ["b"], 0.1)
