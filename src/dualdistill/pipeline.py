"""One DualDistill run from a recipe: teach -> compose -> train -> eval -> self-distill -> train -> eval.

``recipe.Recipe`` is a typed dataclass; a recipe YAML is that dataclass serialised, and ``key=value``
overrides win over the file. ``build_stages`` turns a recipe and a work directory into ``stages.Stage`` objects;
``stages.run_stages`` runs them with a manifest, so a second run skips what is up to date and a killed run
finishes where it stopped (every stage appends records or resumes from checkpoints).

Stages (``*`` only with ``baselines: true``, the demo's single-teacher rows)::

    world       problems: the synthetic world's splits, or a training file plus benchmarks
    student     the initial student ("tiny": a from-scratch Qwen2 with a tokenizer trained here)
    teach       both teachers on every training problem          -> teach/pairs.jsonl
    compose     four cases, cleaning, decontamination, balancing -> data/composed.jsonl
    singles     each teacher's correct trajectories alone         -> data/{text,code}_only.jsonl
    train-text  text-teacher-only student (the analogue of DeepSeek-R1-Distill; base of the rest) *
    train-code  agentic-teacher-only student (the analogue of a tool-using instruct model) *
    train-dual  teacher distillation on composed data             -> models/dualdistill
    eval-*      each student on the evaluation sets
    sd-sample / sd-build / sd-train / eval-sd   self-distillation and its evaluation

Guarantees: a config error names the key and the file (``config.ConfigError``); stages record their
resolved config and the content hashes of inputs and outputs in ``WORKDIR/manifest.json``.
Not guaranteed: that a recipe which names remote endpoints can reach them; ``--dry-run`` only validates
the recipe and prints what would run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dualdistill.config import ConfigError, save_config, to_dict
from dualdistill.problems import load_problems, write_problems
from dualdistill.recipe import (  # noqa: F401  (the recipe types are part of this module's API)
    SHIPPED,
    EvalStageConfig,
    LaunchConfig,
    Recipe,
    SelfDistillConfig,
    StudentConfig,
    WorldConfig,
    load_recipe,
    recipe_path,
    shipped_file,
)
from dualdistill.records import write_jsonl
from dualdistill.sft.train import SFTConfig
from dualdistill.stages import Stage, run_stages


# ----------------------------------------------------------------------------- paths
@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def world(self) -> Path:
        return self.root / "world"

    @property
    def train(self) -> Path:
        return self.world / "train.jsonl"

    @property
    def init_model(self) -> Path:
        return self.root / "models" / "init"

    @property
    def pairs(self) -> Path:
        return self.root / "teach" / "pairs.jsonl"

    @property
    def composed(self) -> Path:
        return self.root / "data" / "composed.jsonl"

    def single(self, strategy: str) -> Path:
        return self.root / "data" / f"{strategy}_only.jsonl"

    def model(self, name: str) -> Path:
        return self.root / "models" / name / "model"

    def eval_dir(self, name: str) -> Path:
        return self.root / "eval" / name

    @property
    def sd(self) -> Path:
        return self.root / "selfdistill"


def eval_sets(recipe: Recipe, layout: Layout) -> list[str]:
    """Evaluation sets: the synthetic test split by group, or the recipe's benchmarks."""
    if recipe.world.kind == "synthetic":
        return [str(layout.world / f"test_{g}.jsonl") for g in ("tool", "text", "mixed")]
    return list(recipe.world.eval_benches)


# ----------------------------------------------------------------------------- stage bodies
def make_world(recipe: Recipe, layout: Layout) -> None:
    layout.world.mkdir(parents=True, exist_ok=True)
    if recipe.world.kind == "files":
        if recipe.world.train_file == "deepmath":
            from dualdistill.problems import load_training_problems

            problems = load_training_problems()[: recipe.world.train_limit]
        else:
            problems = load_problems(recipe.world.train_file)[: recipe.world.train_limit]
        write_problems(layout.train, problems)
        return
    from dualdistill.synthetic.families import make_splits, problem_meta

    train, test = make_splits(recipe.world.n, recipe.world.seed, recipe.world.test_fraction)
    write_problems(layout.train, train[: recipe.world.train_limit])
    for group in ("tool", "text", "mixed"):
        part = [p for p in test if problem_meta(p)["group"] == group]
        write_problems(layout.world / f"test_{group}.jsonl", part)


def make_student(recipe: Recipe, layout: Layout) -> None:
    from dualdistill.synthetic.corpus import synthetic_corpus
    from dualdistill.synthetic.student import build_student

    s = recipe.student
    if s.init == "base":
        import shutil

        from dualdistill.base.pretrain import shipped_base

        shutil.rmtree(layout.init_model, ignore_errors=True)
        shutil.copytree(shipped_base(), layout.init_model)
        return
    corpus = synthetic_corpus(s.corpus_n, seed=recipe.world.seed)
    build_student(layout.init_model, corpus=corpus, size=s.size, vocab_size=s.vocab_size, seed=s.seed)


def run_teach(recipe: Recipe, layout: Layout) -> None:
    from dualdistill.teach import teach_from_config

    problems = load_problems(layout.train)
    asyncio.run(teach_from_config(problems, recipe.teach, layout.pairs.parent))


def run_compose(recipe: Recipe, layout: Layout) -> None:
    from dualdistill.compose import compose_file

    compose_file(layout.pairs, layout.composed, recipe.compose)


def make_singles(recipe: Recipe, layout: Layout) -> None:
    """Each teacher's correct responses alone: the data of the single-strategy students."""
    from dualdistill.compose import read_pairs
    from dualdistill.grading import grade_many

    pairs = read_pairs(layout.pairs)
    attempts = [(p, a) for p in pairs for a in (p.first, p.second)]
    verdicts = grade_many([(a.response, p.answer) for p, a in attempts])
    by_strategy: dict[str, list[dict]] = {"text": [], "code": []}
    for (p, a), v in zip(attempts, verdicts, strict=True):
        if v.correct:
            by_strategy[a.strategy].append(
                {
                    "id": p.id,
                    "problem": p.problem,
                    "answer": p.answer,
                    "text": a.response,
                    "case": "single",
                    "first_teacher": a.teacher,
                }
            )
    for strategy, records in by_strategy.items():
        write_jsonl(layout.single(strategy), records)


def train_model(recipe: Recipe, config: SFTConfig, data: Path, init: Path | str, out: Path) -> None:
    """Teacher distillation with the SFT trainer, in-process or under ``accelerate launch``."""
    if recipe.launch.train == "accelerate":
        subprocess.run(accelerate_command(recipe, config, data, init, out), check=True)
        return
    from dualdistill.sft.train import train

    train(config, data, out.parent, init_model=str(init))


def accelerate_command(recipe: Recipe, config: SFTConfig, data: Path, init: Path | str, out: Path) -> list:
    cfg_file = out.parent / "sft_recipe.yaml"
    save_config(config, cfg_file)
    return [
        "accelerate", "launch", "--config_file", str(shipped_file(recipe.launch.accelerate_config)),
        "--num_processes", str(recipe.launch.num_processes),
        "-m", "dualdistill.cli", "train", "--config", str(cfg_file),
        "--data", str(data), "--model", str(init), "--out", str(out.parent),
    ]  # fmt: skip


def run_evaluation(recipe: Recipe, layout: Layout, model: Path | str, out: Path) -> None:
    from dualdistill.evaluate import EvalConfig, run_eval

    e = recipe.eval
    config = EvalConfig(
        model=e.backend.format(model=model), benches=eval_sets(recipe, layout), samples=e.samples,
        limit=e.limit, seed=recipe.world.seed, max_batch=e.max_batch, agent=e.agent,
    )  # fmt: skip
    run_eval(config, out, progress=True)


def run_sd_sample(recipe: Recipe, layout: Layout, model: Path) -> None:
    from dualdistill.backends import make_backend
    from dualdistill.selfdistill import sample

    problems = load_problems(layout.train)[: recipe.selfdistill.problems_limit]
    backend = make_backend(recipe.eval.backend.format(model=model), max_batch=recipe.eval.max_batch)
    try:
        sample(problems, backend, layout.sd / "samples", recipe.selfdistill.sample, model=str(model))
    finally:
        if hasattr(backend, "close"):
            backend.close()


def sd_data(layout: Layout, name: str) -> Path:
    """The self-distillation set of student ``name`` (``dualdistill_sd`` -> ``selfdistill/data.jsonl``)."""
    suffix = name.removeprefix("dualdistill_sd")
    return layout.sd / f"data{suffix}.jsonl"


def sd_stage_suffix(name: str) -> str:
    """Stage-name suffix of self-distilled student ``name``: ``dualdistill_sd_text`` -> ``-text``."""
    return name.removeprefix("dualdistill_sd").replace("_", "-")


def run_sd_build(
    recipe: Recipe, layout: Layout, name: str = "dualdistill_sd", repair: str | None = None
) -> None:
    """Select and repair: the text teacher writes repairs (the paper), or the teachers' records do."""
    from dualdistill.selfdistill import build

    config = dataclasses.replace(recipe.selfdistill.build, repair=repair or recipe.selfdistill.build.repair)
    out = sd_data(layout, name)
    if config.repair == "text":
        build(layout.sd / "samples", build_text_teacher(recipe), out, config)
    else:
        build(layout.sd / "samples", None, out, config, pairs=layout.pairs)


def build_text_teacher(recipe: Recipe):
    """The teacher whose text reasoning repairs and verifies the student's samples (as in the paper)."""
    from dualdistill.teach import build_teacher

    return build_teacher(recipe.teach.text_teacher, "text", pool=None)


# ----------------------------------------------------------------------------- the stage list
def _cfg(*configs) -> dict:
    return {str(i): to_dict(c) if dataclasses.is_dataclass(c) else c for i, c in enumerate(configs)}


def build_stages(recipe: Recipe, workdir: Path) -> list[Stage]:
    L = Layout(Path(workdir))
    sets = [Path(s) for s in eval_sets(recipe, L) if recipe.world.kind == "synthetic"]
    stages = [
        Stage("world", lambda: make_world(recipe, L), outputs=[L.train, *sets], config=_cfg(recipe.world),
              description="problems"),
    ]  # fmt: skip
    init: Path | str = recipe.student.init
    if recipe.student.init in ("tiny", "base"):
        init = L.init_model
        what = "the shipped pretrained base" if recipe.student.init == "base" else "tiny Qwen2"
        stages.append(Stage("student", lambda: make_student(recipe, L), outputs=[L.init_model],
                            config=_cfg(recipe.student, recipe.world.seed, _base_id(recipe)),
                            description=what))  # fmt: skip
    stages += [
        Stage("teach", lambda: run_teach(recipe, L), inputs=[L.train], outputs=[L.pairs],
              config=_cfg(recipe.teach), description="both teachers on the training problems",
              state=[L.pairs.parent]),
        Stage("compose", lambda: run_compose(recipe, L), inputs=[L.pairs], outputs=[L.composed],
              config=_cfg(recipe.compose), description="compose, clean, decontaminate, balance"),
    ]  # fmt: skip
    init_inputs = [L.init_model] if recipe.student.init in ("tiny", "base") else []
    students: list[tuple[str, Path]] = []
    dual_init: Path | str = init
    if recipe.baselines:
        stages.append(Stage("singles", lambda: make_singles(recipe, L), inputs=[L.pairs],
                            outputs=[L.single("text"), L.single("code")], description="single-teacher sets"))  # fmt: skip
        for name, strategy, cfg in (
            ("text_only", "text", recipe.text_sft),
            ("code_only", "code", recipe.code_sft),
        ):
            data, out = L.single(strategy), L.model(name)
            stages.append(Stage(
                f"train-{strategy}", lambda c=cfg, d=data, o=out: train_model(recipe, c, d, init, o),
                inputs=[data, *init_inputs], outputs=[out], config=_cfg(cfg, recipe.launch),
                description=f"{name} student", state=[out.parent]))  # fmt: skip
            students.append((name, out))
        dual_init = L.model(recipe.dual_init)
    dual = L.model("dualdistill")
    dual_inputs = [L.composed, dual_init] if isinstance(dual_init, Path) else [L.composed]
    stages.append(Stage("train-dual", lambda: train_model(recipe, recipe.sft, L.composed, dual_init, dual),
                        inputs=dual_inputs, outputs=[dual], config=_cfg(recipe.sft, recipe.launch),
                        description="teacher distillation", state=[dual.parent]))  # fmt: skip
    students.append(("dualdistill", dual))
    sd = recipe.selfdistill
    if sd.enabled:
        samples = L.sd / "samples" / "samples.jsonl"
        stages.append(Stage("sd-sample", lambda: run_sd_sample(recipe, L, dual), inputs=[dual, L.train],
                            outputs=[samples], config=_cfg(sd.sample, sd.problems_limit),
                            description=f"K={sd.sample.k} samples per problem", state=[L.sd / "samples"]))  # fmt: skip
        for name, repair in sd.variants():
            suffix = sd_stage_suffix(name)
            data, sd_model = sd_data(L, name), L.model(name)
            stages += [
                Stage(f"sd-build{suffix}", lambda n=name, r=repair: run_sd_build(recipe, L, n, r),
                      inputs=[samples, *([L.pairs] if repair != "text" else [])], outputs=[data],
                      config=_cfg(sd.build, repair, recipe.teach.text_teacher),
                      description=f"select and repair ({repair} solutions)"),
                Stage(f"sd-train{suffix}", lambda d=data, m=sd_model: _sd_train(recipe, d, dual, m),
                      inputs=[data, dual], outputs=[sd_model], config=_cfg(sd.sft, recipe.launch),
                      description="retrain", state=[sd_model.parent]),
            ]  # fmt: skip
            students.append((name, sd_model))
    for name, model in students:
        out = L.eval_dir(name)
        stages.append(Stage(f"eval-{name}", lambda m=model, o=out: run_evaluation(recipe, L, m, o),
                            inputs=[model, *sets], outputs=[out / "report.json"], config=_cfg(recipe.eval),
                            description=f"evaluate {name}", state=[out]))  # fmt: skip
    return stages


def _base_id(recipe: Recipe) -> str:
    """The shipped base's weights hash, so a new base re-runs the student stage (else empty)."""
    if recipe.student.init != "base":
        return ""
    from dualdistill.base.pretrain import MANIFEST, shipped_base

    path = shipped_base() / MANIFEST
    if not path.exists():
        raise ConfigError(f"student.init: base: {path} is missing (make it with `dualdistill base pretrain`)")
    return json.dumps(json.loads(path.read_text())["sha256"], sort_keys=True)


def _sd_train(recipe: Recipe, data: Path, dual: Path, out: Path) -> None:
    if recipe.launch.train == "accelerate":
        train_model(recipe, recipe.selfdistill.sft, data, dual, out)
        return
    from dualdistill.selfdistill import retrain

    retrain(dual, data, out.parent, recipe.selfdistill.sft)


def student_names(recipe: Recipe) -> list[str]:
    names = ["text_only", "code_only"] if recipe.baselines else []
    sd = [n for n, _ in recipe.selfdistill.variants()] if recipe.selfdistill.enabled else []
    return [*names, "dualdistill", *sd]


# ----------------------------------------------------------------------------- entry points
def run(
    recipe: Recipe, workdir: str | Path, *, force: set[str] = frozenset(), until: str | None = None, log=print
) -> dict:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    save_config(recipe, workdir / "recipe.yaml")
    return run_stages(build_stages(recipe, workdir), workdir, log=log, force=force, until=until)


def dry_run(recipe: Recipe, workdir: str | Path) -> list[str]:
    """The commands equivalent to each stage. Nothing runs; only the config files they name are written."""
    L = Layout(Path(workdir))
    configs = L.root / "configs"
    for fname, cfg in (("teach.yaml", recipe.teach), ("compose.yaml", recipe.compose),
                       ("text_sft.yaml", recipe.text_sft), ("code_sft.yaml", recipe.code_sft),
                       ("sft.yaml", recipe.sft), ("sd_sft.yaml", recipe.selfdistill.sft)):  # fmt: skip
        save_config(cfg, configs / fname)
    save_config(recipe, L.root / "recipe.yaml")
    lines = []
    for stage in build_stages(recipe, workdir):
        lines.append(f"# {stage.name}: {stage.description}")
        lines.append(_command_for(stage.name, recipe, L))
    return lines


def _command_for(name: str, recipe: Recipe, L: Layout) -> str:
    dd = "dualdistill"
    sets = ",".join(eval_sets(recipe, L))
    if name.startswith(("sd-build", "sd-train")):
        variants = dict(recipe.selfdistill.variants())
        student = next(
            n for n in variants if name in (f"sd-build{sd_stage_suffix(n)}", f"sd-train{sd_stage_suffix(n)}")
        )
        repair = variants[student]
        data, model = sd_data(L, student), L.model(student)
        if name.startswith("sd-build"):
            # The recipe's teachers write the repairs, so this stage is a Python call, not a command.
            return (f"python -c \"from dualdistill.pipeline import *; r = load_recipe('{L.root}/recipe.yaml'); "
                    f"run_sd_build(r, Layout(Path('{L.root}')), '{student}', '{repair}')\"")  # fmt: skip
        if recipe.launch.train == "accelerate":
            return shlex.join(
                accelerate_command(recipe, recipe.selfdistill.sft, data, L.model("dualdistill"), model)
            )
        return (f"{dd} self-distill train --model {L.model('dualdistill')} --data {data} "
                f"--config {L.root}/configs/sd_sft.yaml --out {model.parent}")  # fmt: skip
    if name.startswith("train-"):
        which = {"train-text": ("text_sft", L.single("text"), "text_only"),
                 "train-code": ("code_sft", L.single("code"), "code_only"),
                 "train-dual": ("sft", L.composed, "dualdistill")}[name]  # fmt: skip
        cfg = getattr(recipe, which[0])
        init = L.model(recipe.dual_init) if name == "train-dual" and recipe.baselines else recipe.student.init
        init = L.init_model if init in ("tiny", "base") else init
        if recipe.launch.train == "accelerate":
            return shlex.join(accelerate_command(recipe, cfg, which[1], init, L.model(which[2])))
        return (f"{dd} train --config {L.root}/configs/{which[0]}.yaml --data {which[1]} --model {init} "
                f"--out {L.model(which[2]).parent}")  # fmt: skip
    if name.startswith("eval-"):
        student = name[5:]
        model = recipe.eval.backend.format(model=L.model(student))
        a = recipe.eval.agent
        return (f"{dd} eval --model {model} --bench {sets} --samples {recipe.eval.samples} --budget {a.budget} "
                f"--template {a.template} --temperature {a.temperature} --max-tool-calls {a.max_tool_calls} "
                f"--executor-timeout {a.executor_timeout_s} --out {L.eval_dir(student)}")  # fmt: skip
    s = recipe.selfdistill
    return {
        "world": f"{dd} synthetic make --n {recipe.world.n} --seed {recipe.world.seed} --out {L.world}"
        if recipe.world.kind == "synthetic"
        else f"{dd} bench export {recipe.world.train_file} --out {L.train}",
        "student": f'cp -r "$({dd} base path)" {L.init_model}'
        if recipe.student.init == "base"
        else f"{dd} tiny-model --out {L.init_model} --size {recipe.student.size}",
        "teach": f"{dd} teach --problems {L.train} --config {L.root}/configs/teach.yaml --out {L.pairs.parent}",
        "compose": f"{dd} compose --pairs {L.pairs} --config {L.root}/configs/compose.yaml --out {L.composed}",
        "singles": f"python -c \"from dualdistill.pipeline import *; r = load_recipe('{L.root}/recipe.yaml'); "
        f"make_singles(r, Layout(Path('{L.root}')))\"",
        "sd-sample": f"{dd} self-distill sample --model {recipe.eval.backend.format(model=L.model('dualdistill'))} "
        f"--problems {L.train} --k {s.sample.k} --budget {s.sample.budget} --template {s.sample.template} "
        f"--out {L.sd / 'samples'}",
    }[name]


def seed_overrides(seed: int) -> list[str]:
    """Overrides that reseed every random choice of a run except the world (the test split stays fixed)."""
    keys = ("student.seed", "teach.first_teacher_seed", "text_sft.seed", "code_sft.seed", "sft.seed",
            "selfdistill.sample.seed", "selfdistill.build.seed", "selfdistill.sft.seed")  # fmt: skip
    return [f"{k}={seed}" for k in keys]
