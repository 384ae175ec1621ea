"""The recipe: typed dataclasses for a whole DualDistill run, and the shipped recipes by name.

A recipe YAML is ``Recipe`` serialised; ``key=value`` overrides win over the file, and every error names
the key and the file (``config.ConfigError``). This module only describes a run; ``pipeline`` turns a
recipe into stages and runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from dualdistill.agent import AgentConfig
from dualdistill.compose import ComposeConfig
from dualdistill.config import ConfigError, load_config
from dualdistill.selfdistill import BuildConfig, SampleConfig
from dualdistill.sft.train import SFTConfig
from dualdistill.teach import TeachConfig


# ----------------------------------------------------------------------------- the recipe
@dataclass
class WorldConfig:
    kind: Literal["synthetic", "files"] = "synthetic"
    n: int = 2000  # synthetic: problems in train + test
    seed: int = 0
    test_fraction: float = 0.2
    train_file: str = ""  # files: training problems (JSONL/JSON/Parquet), or "deepmath" (the shipped 985)
    train_limit: int | None = None
    eval_benches: list[str] = field(default_factory=list)  # files: benchmark names or paths


@dataclass
class StudentConfig:
    # "base": the pretrained tiny base shipped in the package (dualdistill/base); "tiny": a from-scratch
    # Qwen2 with a tokenizer trained on the world; else a model directory or hub id.
    init: str = "tiny"
    size: Literal["tiny", "small", "base"] = "small"
    vocab_size: int = 512
    corpus_n: int = 700  # synthetic documents the tokenizer is trained on
    seed: int = 0  # weight initialisation


@dataclass
class EvalStageConfig:
    samples: int = 1
    limit: int | None = None
    max_batch: int = 64
    backend: str = "{model}"  # "{model}" (transformers), "vllm:{model}", or a server URL
    agent: AgentConfig = field(default_factory=AgentConfig)


@dataclass
class SelfDistillConfig:
    enabled: bool = True
    problems_limit: int | None = None  # sample on the first N training problems only
    sample: SampleConfig = field(default_factory=SampleConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    # With build.repair other than "text": also build, train and evaluate the paper's text-teacher
    # repair from the same samples (student "dualdistill_sd_text"), so the departure is measured.
    paper_ablation: bool = False

    def variants(self) -> list[tuple[str, str]]:
        """``(student name, repair source)`` of each self-distilled student, the recipe's first."""
        out = [("dualdistill_sd", self.build.repair)]
        if self.paper_ablation and self.build.repair != "text":
            out.append(("dualdistill_sd_text", "text"))
        return out


@dataclass
class LaunchConfig:
    train: Literal["local", "accelerate"] = "local"
    accelerate_config: str = "recipes/accelerate/deepspeed_zero3.yaml"
    num_processes: int = 8


@dataclass
class Recipe:
    name: str = "recipe"
    world: WorldConfig = field(default_factory=WorldConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    teach: TeachConfig = field(default_factory=TeachConfig)
    compose: ComposeConfig = field(default_factory=ComposeConfig)
    baselines: bool = False  # also train text-only and code-only students (the demo's first rows)
    # With baselines, which of them teacher distillation starts from. The paper starts from a text
    # reasoner (R1-Distill); from-scratch tiny students first have to learn to copy digits, which the
    # code-only student already does (docs/RESULTS.md has both).
    dual_init: Literal["text_only", "code_only"] = "text_only"
    text_sft: SFTConfig = field(default_factory=SFTConfig)  # the text-only student, with baselines
    code_sft: SFTConfig = field(default_factory=SFTConfig)  # the code-only student, with baselines
    sft: SFTConfig = field(default_factory=SFTConfig)  # teacher distillation
    eval: EvalStageConfig = field(default_factory=EvalStageConfig)
    selfdistill: SelfDistillConfig = field(default_factory=SelfDistillConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def __post_init__(self) -> None:
        if self.world.kind == "files" and not self.world.train_file:
            raise ValueError("world.train_file is required when world.kind is 'files'")
        if self.world.kind == "files" and not self.world.eval_benches:
            raise ValueError("world.eval_benches is required when world.kind is 'files'")


SHIPPED = ("embedded", "embedded_quick", "paper")


def recipe_path(name_or_path: str | Path) -> Path:
    """A shipped recipe by name (``embedded``, ``embedded_quick``, ``paper``) or a YAML path."""
    if str(name_or_path) in SHIPPED:
        return Path(str(resources.files("dualdistill").joinpath("recipes", f"{name_or_path}.yaml")))
    path = Path(name_or_path)
    if not path.exists():
        raise ConfigError(f"{path}: recipe not found (shipped recipes: {', '.join(SHIPPED)})")
    return path


def load_recipe(name_or_path: str | Path, overrides: list[str] = ()) -> Recipe:
    return load_config(Recipe, recipe_path(name_or_path), list(overrides))
