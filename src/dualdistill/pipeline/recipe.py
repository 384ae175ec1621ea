"""The recipe: typed dataclasses for a whole DualDistill run, and the shipped recipes by name.

A recipe YAML is ``Recipe`` serialised; ``key=value`` overrides win over the file, and every error names
the key and the file (``core.config.ConfigError``). This module only describes a run; ``pipeline`` turns a
recipe into stages and runs them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from dualdistill.agent.loop import AgentConfig
from dualdistill.backends import BackendConfig, check_model_dir
from dualdistill.compose.run import ComposeConfig
from dualdistill.core.config import ConfigError, bounded, check_bounds, field_of, load_config, setting
from dualdistill.core.records import DataError
from dualdistill.evaluate.run import EvalConfig
from dualdistill.format.problems import BENCHMARKS
from dualdistill.selfdistill.sample import SampleConfig
from dualdistill.selfdistill.select import BuildConfig
from dualdistill.sft.train import SFTConfig
from dualdistill.teachers.teach import TeachConfig


# ----------------------------------------------------------------------------- the recipe
@dataclass
class WorldConfig:
    kind: Literal["synthetic", "files"] = "synthetic"
    n: int = setting(2000, ge=10, help="Synthetic problems in train and test together.")
    seed: int = setting(0, help="Seed of the synthetic world's generator and of its split.")
    test_fraction: float = setting(0.2, gt=0, lt=1, help="Share of each family in the test split.")
    train_file: str = ""  # files: training problems (JSONL/JSON/Parquet), or "deepmath" (the shipped 985)
    train_limit: int | None = setting(None, ge=1, help="Keep only the first N training problems.")
    eval_benches: list[str] = field(default_factory=list)  # files: benchmark names or paths

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclass
class StudentConfig:
    # "base": the pretrained tiny base shipped in the package (dualdistill/base); "tiny": a from-scratch
    # Qwen2 with a tokenizer trained on the world; else a model directory or hub id.
    init: str = "tiny"
    size: Literal["tiny", "small", "base"] = setting("small", help="tiny, small or base.")
    # the byte alphabet (256) plus special tokens and merges
    vocab_size: int = setting(512, ge=300, help="BPE vocabulary (tags and specials added).")
    corpus_n: int = setting(700, ge=1, help="Synthetic documents the tokenizer is trained on.")
    seed: int = setting(0, help="Seed of the weight initialisation.")

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclass
class EvalStageConfig:
    samples: int = field_of(EvalConfig, "samples")
    limit: int | None = field_of(EvalConfig, "limit")
    max_batch: int = field_of(BackendConfig, "max_batch")
    backend: str = "{model}"  # "{model}" (transformers), "vllm:{model}", or a server URL
    agent: AgentConfig = field(default_factory=AgentConfig)

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclass
class SelfDistillConfig:
    enabled: bool = True
    problems_limit: int | None = bounded(None, ge=1)  # sample on the first N training problems only
    sample: SampleConfig = field(default_factory=SampleConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    # When build departs from the paper (repair other than "text", or select other than "paper"): also
    # build, train and evaluate the paper's rule with its text-teacher repair from the same samples
    # (student "dualdistill_sd_text"), so the departure is measured.
    paper_ablation: bool = False
    # Replay the teacher-distillation data (the composed set) in every retrain, after the selected records.
    replay: bool = False

    def __post_init__(self) -> None:
        check_bounds(self)

    def variants(self) -> list[tuple[str, BuildConfig]]:
        """``(student name, build settings)`` of each self-distilled student, the recipe's first."""
        out = [("dualdistill_sd", self.build)]
        if self.paper_ablation and (self.build.repair != "text" or self.build.select != "paper"):
            out.append(
                ("dualdistill_sd_text", dataclasses.replace(self.build, repair="text", select="paper"))
            )
        return out


@dataclass
class LaunchConfig:
    train: Literal["local", "accelerate"] = "local"
    accelerate_config: str = "deepspeed_zero3"  # a shipped config (deepspeed_zero3, fsdp) or a path
    num_processes: int = bounded(8, ge=1)

    def __post_init__(self) -> None:
        check_bounds(self)


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
    # With baselines: also the budget-matched controls, each a row of the demo (pipeline.run.CONTROLS):
    # code_from_text (code-only data) and union (both teachers' right attempts, uncomposed) from the
    # text-only student at the DualDistill stage's steps; dualdistill_paper (the paper's right-right
    # order); with self-distillation, dualdistill_more (trained on, as many steps as the retrain).
    controls: bool = False
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
        if self.controls and not (self.baselines and self.dual_init == "text_only"):
            raise ValueError(
                "controls: true needs baselines: true and dual_init: text_only (they start there)"
            )


SHIPPED = ("embedded", "embedded_quick", "paper")  # whole-run recipes (``dualdistill run NAME``)
# Every YAML the package ships, by name: run recipes, SFT recipes, accelerate launch configs. They live
# in the package (not the repository), so an installed dualdistill finds them too.
SHIPPED_FILES = {
    **{n: f"{n}.yaml" for n in SHIPPED},
    "sft_tiny": "sft_tiny.yaml",
    "sft_r1_distill_qwen7b": "sft_r1_distill_qwen7b.yaml",
    "sft_r1_distill_qwen7b_lora": "sft_r1_distill_qwen7b_lora.yaml",
    "deepspeed_zero3": "accelerate/deepspeed_zero3.yaml",
    "fsdp": "accelerate/fsdp.yaml",
}


def shipped_file(name_or_path: str | Path) -> Path:
    """A shipped YAML by name (see ``SHIPPED_FILES``), or the path given when it exists."""
    name = str(name_or_path)
    if name in SHIPPED_FILES:
        return Path(str(resources.files("dualdistill").joinpath("recipes", SHIPPED_FILES[name])))
    path = Path(name_or_path)
    if not path.exists():
        raise ConfigError(f"{path}: file not found (shipped: {', '.join(SHIPPED_FILES)})")
    return path


def recipe_path(name_or_path: str | Path) -> Path:
    """A shipped recipe by name (``embedded``, ``embedded_quick``, ``paper``) or a YAML path."""
    if str(name_or_path) in SHIPPED:
        return shipped_file(name_or_path)
    path = Path(name_or_path)
    if not path.exists():
        raise ConfigError(f"{path}: recipe not found (shipped recipes: {', '.join(SHIPPED)})")
    return path


def load_recipe(name_or_path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Load and check a recipe: types, bounds and the files and benchmarks it names, before any run."""
    path = recipe_path(name_or_path)
    recipe = load_config(Recipe, path, list(overrides))
    source = f"{path} + overrides" if overrides else str(path)
    problem = missing_reference(recipe)
    if problem:
        raise ConfigError(f"{source}: {problem}")
    return recipe


def missing_reference(recipe: Recipe) -> str | None:
    """The first benchmark, file or model a recipe names that does not exist, as ``key '...': why``."""

    benches = [(f"world.eval_benches[{i}]", b) for i, b in enumerate(recipe.world.eval_benches)]
    benches += [
        (f"compose.decontam_benchmarks[{i}]", b) for i, b in enumerate(recipe.compose.decontam_benchmarks)
    ]
    for key, name in benches:
        if name not in BENCHMARKS and not Path(name).is_file():
            return (
                f"key '{key}': {name!r} is neither a built-in benchmark ({', '.join(BENCHMARKS)}) nor a file"
            )
    w = recipe.world
    if w.kind == "files" and w.train_file != "deepmath" and not Path(w.train_file).is_file():
        return f"key 'world.train_file': {w.train_file!r} is not a file (or 'deepmath')"
    if recipe.launch.train == "accelerate":
        try:
            shipped_file(recipe.launch.accelerate_config)
        except ConfigError:
            return f"key 'launch.accelerate_config': {recipe.launch.accelerate_config!r} is neither shipped ({', '.join(SHIPPED_FILES)}) nor a file"
    init = recipe.student.init
    if init not in ("base", "tiny"):
        try:
            check_model_dir(init, allow_hub_id=True)
        except DataError:
            return f"key 'student.init': {init!r} is not base, tiny, a model directory or a hub id (org/name)"
    return None
