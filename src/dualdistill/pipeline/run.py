"""One DualDistill run from a recipe: teach -> compose -> train -> eval -> self-distill -> train -> eval.

``pipeline.recipe.Recipe`` is a typed dataclass; a recipe YAML is that dataclass serialised, and ``key=value``
overrides win over the file. ``build_stages`` turns a recipe and a work directory into ``pipeline.stages.Stage`` objects;
``pipeline.stages.run_stages`` runs them with a manifest, so a second run skips what is up to date and a killed run
finishes where it stopped (every stage appends records or resumes from checkpoints).

Stages (``*`` only with ``baselines: true``, the demo's single-teacher rows)::

    world       problems: the synthetic world's splits, or a training file plus benchmarks
    student     the initial student ("tiny": a from-scratch Qwen2 with a tokenizer trained here)
    teach       both teachers on every training problem          -> teach/pairs.jsonl
    compose     four cases, cleaning, decontamination, balancing -> data/composed.jsonl
                (with baselines, also each teacher's correct trajectories alone -> data/{text,code}_only.jsonl)
    train-text  text-teacher-only student (the analogue of DeepSeek-R1-Distill; base of the rest) *
    train-code  agentic-teacher-only student (the analogue of a tool-using instruct model) *
    train-dual  teacher distillation on composed data             -> models/dualdistill
    eval-*      each student on the evaluation sets
    sd-sample / sd-build / sd-train / eval-sd   self-distillation and its evaluation

Guarantees: a config error names the key and the file (``core.config.ConfigError``); stages record their
resolved config and the content hashes of inputs and outputs in ``WORKDIR/manifest.json``.
Not guaranteed: that a recipe which names remote endpoints can reach them; ``--dry-run`` only validates
the recipe and prints what would run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from dualdistill.backends import BackendConfig
from dualdistill.base.pretrain import MANIFEST, shipped_base
from dualdistill.compose.singles import SINGLES_FILES
from dualdistill.core.config import ConfigError, save_config
from dualdistill.evaluate.run import EvalConfig
from dualdistill.pipeline.recipe import (
    Recipe,
    shipped_file,
)
from dualdistill.pipeline.stages import Command, Runner, Stage, run_stages
from dualdistill.sft.modelcard import add_results
from dualdistill.sft.train import SFTConfig


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

    def single(self, key: str) -> Path:
        """A single-attempt set of ``compose --singles``: ``text``, ``code`` or ``union`` (both)."""
        return self.root / "data" / SINGLES_FILES[key]

    @property
    def composed_paper(self) -> Path:
        """The composed set in the paper's right-right order (the ``dualdistill_paper`` control)."""
        return self.root / "data" / "composed_paper.jsonl"

    def model(self, name: str) -> Path:
        return self.root / "models" / name / "model"

    def eval_dir(self, name: str) -> Path:
        return self.root / "eval" / name

    @property
    def sd(self) -> Path:
        return self.root / "selfdistill"

    @property
    def configs(self) -> Path:
        return self.root / "configs"


def eval_sets(recipe: Recipe, layout: Layout) -> list[str]:
    """Evaluation sets: the synthetic test split by group, or the recipe's benchmarks."""
    if recipe.world.kind == "synthetic":
        return [str(layout.world / f"test_{g}.jsonl") for g in ("tool", "text", "mixed")]
    return list(recipe.world.eval_benches)


def sd_data(layout: Layout, name: str) -> Path:
    """The self-distillation set of student ``name`` (``dualdistill_sd`` -> ``selfdistill/data.jsonl``)."""
    suffix = name.removeprefix("dualdistill_sd")
    return layout.sd / f"data{suffix}.jsonl"


def sd_stage_suffix(name: str) -> str:
    """Stage-name suffix of self-distilled student ``name``: ``dualdistill_sd_text`` -> ``-text``."""
    return name.removeprefix("dualdistill_sd").replace("_", "-")


# ----------------------------------------------------------------------------- each stage's command
# A stage's work is the CLI command below, run in-process by ``pipeline.stages.Command`` and printed as is by
# ``dry_run``: one description, so the printed commands are the run.
DD = "dualdistill"


def _args(*parts) -> list[str]:
    return [str(p) for p in parts]


def _opt(flag: str, value) -> list[str]:
    return [] if value is None else [flag, str(value)]


def world_command(recipe: Recipe, L: Layout) -> Command:
    w = recipe.world
    if w.kind == "synthetic":
        return Command(_args(DD, "synthetic", "make", "--n", w.n, "--seed", w.seed,
                             "--test-fraction", w.test_fraction, *_opt("--train-limit", w.train_limit),
                             "--out", L.world))  # fmt: skip
    return Command(
        _args(DD, "bench", "export", w.train_file, *_opt("--limit", w.train_limit), "--out", L.train)
    )


def student_command(recipe: Recipe, L: Layout) -> Command:
    s = recipe.student
    if s.init == "base":
        return Command(_args(DD, "base", "copy", "--out", L.init_model))
    return Command(_args(DD, "tiny-model", "--out", L.init_model, "--size", s.size, "--vocab-size", s.vocab_size,
                         "--corpus-n", s.corpus_n, "--corpus-seed", recipe.world.seed, "--seed", s.seed))  # fmt: skip


def train_command(
    recipe: Recipe, L: Layout, stage: str, config: SFTConfig, data: Path, init, out: Path,
    steps_of: Path | None = None,
) -> Command:  # fmt: skip
    """Teacher distillation with the SFT trainer, in-process or under ``accelerate launch``; with
    ``steps_of``, as many optimizer steps as that model was trained (a budget-matched control)."""
    path = L.configs / f"{stage}.yaml"
    args = _args("train", "--config", path, "--data", data, "--model", init, *_opt("--steps-of", steps_of),
                 "--out", out.parent)  # fmt: skip
    if recipe.launch.train == "accelerate":
        launch = _args("accelerate", "launch", "--config_file", shipped_file(recipe.launch.accelerate_config),
                       "--num_processes", recipe.launch.num_processes, "-m", "dualdistill.cli")  # fmt: skip
        return Command([*launch, *args], {path: config})
    return Command([DD, *args], {path: config})


def sd_train_command(recipe: Recipe, L: Layout, stage: str, data: Path, dual: Path, out: Path) -> Command:
    if recipe.launch.train == "accelerate":
        return train_command(recipe, L, stage, recipe.selfdistill.sft, data, dual, out)
    path = L.configs / f"{stage}.yaml"
    argv = _args(DD, "self-distill", "train", "--model", dual, "--data", data, "--config", path,
                 "--out", out.parent)  # fmt: skip
    return Command(argv, {path: recipe.selfdistill.sft})


def sd_sample_command(recipe: Recipe, L: Layout, dual: Path) -> Command:
    sd, path = recipe.selfdistill, L.configs / "sd-sample.yaml"
    argv = _args(DD, "self-distill", "sample", "--model", recipe.eval.backend.format(model=dual),
                 "--problems", L.train, "--config", path, *_opt("--limit", sd.problems_limit),
                 "--out", L.sd / "samples")  # fmt: skip
    # The eval stage's batch size, in the config file (a speed setting: not part of the stage's key)
    backend = dataclasses.replace(sd.sample.backend, max_batch=recipe.eval.max_batch)
    return Command(argv, {path: dataclasses.replace(sd.sample, backend=backend)})


def sd_build_command(recipe: Recipe, L: Layout, name: str, build) -> Command:
    """Select and repair: the text teacher writes repairs (the paper), or the teachers' records do."""
    path = L.configs / f"sd-build{sd_stage_suffix(name)}.yaml"
    files = {path: build}
    if build.repair == "text":
        source = _args("--teacher-config", L.configs / "teach.yaml")
        files[L.configs / "teach.yaml"] = recipe.teach
    else:
        source = _args("--pairs", L.pairs)
    replay = _opt("--replay", L.composed if recipe.selfdistill.replay else None)
    argv = _args(DD, "self-distill", "build", "--samples", L.sd / "samples", "--config", path, *source,
                 *replay, "--out", sd_data(L, name))  # fmt: skip
    return Command(argv, files)


def eval_command(recipe: Recipe, L: Layout, model: Path, out: Path) -> Command:

    e, path = recipe.eval, L.configs / "eval.yaml"
    config = EvalConfig(benches=eval_sets(recipe, L), samples=e.samples, limit=e.limit, seed=recipe.world.seed,
                        backend=BackendConfig(max_batch=e.max_batch), agent=e.agent)  # fmt: skip
    argv = _args(DD, "eval", "--config", path, "--model", e.backend.format(model=model), "--out", out)
    return Command(argv, {path: config})


# ----------------------------------------------------------------------------- the stage list
def build_stages(recipe: Recipe, workdir: Path) -> list[Stage]:
    """Every stage of ``recipe`` in run order: the data, the students' training, self-distillation, then
    one evaluation per student."""
    L = Layout(Path(workdir))
    stages, init = _data_stages(recipe, L)
    students = _baseline_stages(recipe, L, stages, init)
    dual_init: Path | str = L.model(recipe.dual_init) if recipe.baselines else init
    dual = L.model("dualdistill")
    dual_inputs = [L.composed, dual_init] if isinstance(dual_init, Path) else [L.composed]
    stages.append(Stage("train-dual", train_command(recipe, L, "train-dual", recipe.sft, L.composed, dual_init, dual),
                        inputs=dual_inputs, outputs=[dual],
                        description="teacher distillation", state=[dual.parent]))  # fmt: skip
    students += _control_stages(recipe, L, stages, dual)
    students.append(("dualdistill", dual))
    if recipe.selfdistill.enabled:
        students += _selfdistill_stages(recipe, L, stages, dual)
    stages += _eval_stages(recipe, L, students)
    return stages


def _data_stages(recipe: Recipe, L: Layout) -> tuple[list[Stage], Path | str]:
    """The problems, the initial student, both teachers and composition; and where students start."""
    C = L.configs
    sets = [Path(s) for s in eval_sets(recipe, L) if recipe.world.kind == "synthetic"]
    stages = [
        Stage("world", world_command(recipe, L), outputs=[L.train, *sets],
              description="problems"),
    ]  # fmt: skip
    init: Path | str = recipe.student.init
    if recipe.student.init in ("tiny", "base"):
        init = L.init_model
        what = "the shipped pretrained base" if recipe.student.init == "base" else "tiny Qwen2"
        # The shipped base is an input: a new base (new weights in the package) re-runs this stage.
        base = [_shipped_base()] if recipe.student.init == "base" else []
        stages.append(Stage("student", student_command(recipe, L), inputs=base, outputs=[L.init_model],
                            description=what))  # fmt: skip
    teach = Command(_args(DD, "teach", "--problems", L.train, "--config", C / "teach.yaml", "--out", L.pairs.parent),
                    {C / "teach.yaml": recipe.teach})  # fmt: skip
    # With baselines, compose also writes the single-teacher sets, from the same grading.
    singles = _args("--singles", L.single("text").parent) if recipe.baselines else []
    compose = Command(_args(DD, "compose", "--pairs", L.pairs, "--config", C / "compose.yaml", *singles,
                            "--out", L.composed), {C / "compose.yaml": recipe.compose})  # fmt: skip
    singles_out = [L.single(k) for k in SINGLES_FILES] if recipe.baselines else []
    stages += [
        Stage("teach", teach, inputs=[L.train], outputs=[L.pairs],
              description="both teachers on the training problems", state=[L.pairs.parent]),
        Stage("compose", compose, inputs=[L.pairs], outputs=[L.composed, *singles_out],
              description="compose, clean, decontaminate, balance" + (" (and the single-teacher sets)" if singles_out else "")),
    ]  # fmt: skip
    return stages, init


def _baseline_stages(
    recipe: Recipe, L: Layout, stages: list[Stage], init: Path | str
) -> list[tuple[str, Path]]:
    """The single-strategy students (``baselines: true``), appended to ``stages``; returns them."""
    if not recipe.baselines:
        return []
    init_inputs = [L.init_model] if recipe.student.init in ("tiny", "base") else []
    students = []
    for name, strategy, cfg in (
        ("text_only", "text", recipe.text_sft),
        ("code_only", "code", recipe.code_sft),
    ):
        data, out = L.single(strategy), L.model(name)
        stages.append(Stage(
            f"train-{strategy}", train_command(recipe, L, f"train-{strategy}", cfg, data, init, out),
            inputs=[data, *init_inputs], outputs=[out],
            description=f"{name} student", state=[out.parent]))  # fmt: skip
        students.append((name, out))
    return students


def _selfdistill_stages(recipe: Recipe, L: Layout, stages: list[Stage], dual: Path) -> list[tuple[str, Path]]:
    """Sampling, then per variant its selection and retrain (and the longer-training control), appended
    to ``stages``; returns the students they make, in the demo's row order."""
    sd = recipe.selfdistill
    samples = L.sd / "samples" / "samples.jsonl"
    stages.append(Stage("sd-sample", sd_sample_command(recipe, L, dual), inputs=[dual, L.train],
                        outputs=[samples],
                        description=f"K={sd.sample.k} samples per problem", state=[L.sd / "samples"]))  # fmt: skip
    students: list[tuple[str, Path]] = []
    for name, build in sd.variants():
        suffix = sd_stage_suffix(name)
        data, sd_model = sd_data(L, name), L.model(name)
        stages += [
            Stage(f"sd-build{suffix}", sd_build_command(recipe, L, name, build),
                  inputs=[samples, *([L.pairs] if build.repair != "text" else []),
                          *([L.composed] if sd.replay else [])], outputs=[data],
                  description=f"select ({build.select} rule) and repair ({build.repair} solutions)"),
            Stage(f"sd-train{suffix}", sd_train_command(recipe, L, f"sd-train{suffix}", data, dual, sd_model),
                  inputs=[data, dual], outputs=[sd_model],
                  description="retrain", state=[sd_model.parent]),
        ]  # fmt: skip
        if name == "dualdistill_sd" and recipe.controls:
            more = L.model("dualdistill_more")
            stages.append(Stage("train-dual-more",
                                train_command(recipe, L, "train-dual-more", sd.sft, L.composed, dual, more,
                                              steps_of=sd_model),
                                inputs=[L.composed, dual, sd_model], outputs=[more],
                                description="control: DualDistill trained on, as many steps as the retrain",
                                state=[more.parent]))  # fmt: skip
            students.append(("dualdistill_more", more))
        students.append((name, sd_model))
    return students


def _eval_stages(recipe: Recipe, L: Layout, students: list[tuple[str, Path]]) -> list[Stage]:
    """One evaluation per student; a files world's benchmark files are inputs of each."""
    sets = [Path(s) for s in eval_sets(recipe, L) if recipe.world.kind == "synthetic"]
    bench_files = [
        Path(b) for b in recipe.world.eval_benches if recipe.world.kind == "files" and Path(b).is_file()
    ]
    return [
        Stage(f"eval-{name}", eval_command(recipe, L, model, (out := L.eval_dir(name))),
              inputs=[model, *sets, *bench_files], outputs=[out / "report.json"],
              description=f"evaluate {name}", state=[out])
        for name, model in students
    ]  # fmt: skip


# The budget-matched controls (``controls: true``), each a row of the demo; docs/RESULTS.md says what
# question each answers. All start from the text-only student and train the DualDistill stage's steps.
CONTROLS = ("code_from_text", "union", "dualdistill_paper")


def _control_stages(recipe: Recipe, L: Layout, stages: list[Stage], dual: Path) -> list[tuple[str, Path]]:
    """Append the control stages to ``stages``; return their ``(student, model)``."""
    if not (recipe.baselines and recipe.controls):
        return []
    text_model = L.model("text_only")
    data = {
        "code_from_text": L.single("code"),
        "union": L.single("union"),
        "dualdistill_paper": L.composed_paper,
    }
    C = L.configs
    paper = dataclasses.replace(recipe.compose, right_right="paper")
    stages.append(Stage("compose-paper",
                        Command(_args(DD, "compose", "--pairs", L.pairs, "--config", C / "compose-paper.yaml",
                                      "--out", L.composed_paper), {C / "compose-paper.yaml": paper}),
                        inputs=[L.pairs], outputs=[L.composed_paper],
                        description="compose with the paper's right-right order"))  # fmt: skip
    out = []
    for name in CONTROLS:
        stage, model = "train-" + name.replace("_", "-"), L.model(name)
        stages.append(Stage(stage, train_command(recipe, L, stage, recipe.sft, data[name], text_model, model,
                                                 steps_of=dual),
                            inputs=[data[name], text_model, dual], outputs=[model],
                            description=f"control {name}: from text_only, the DualDistill stage's steps",
                            state=[model.parent]))  # fmt: skip
        out.append((name, model))
    return out


def _shipped_base() -> Path:

    path = shipped_base()
    if not (path / MANIFEST).exists():
        raise ConfigError(
            f"student.init: base: {path / MANIFEST} is missing (make it with `dualdistill base pretrain`)"
        )
    return path


def student_names(recipe: Recipe) -> list[str]:
    """Every student of a run, in the order of its stages and of the demo's rows."""
    names = ["text_only", "code_only"] if recipe.baselines else []
    controls = recipe.baselines and recipe.controls
    names += [*CONTROLS, "dualdistill"] if controls else ["dualdistill"]
    if recipe.selfdistill.enabled:
        names += ["dualdistill_more"] if controls else []
        names += [n for n, _ in recipe.selfdistill.variants()]
    return names


# ----------------------------------------------------------------------------- entry points
def run(
    recipe: Recipe,
    workdir: str | Path,
    *,
    force: set[str] = frozenset(),
    until: str | None = None,
    log=print,
    runner: Runner | None = None,
) -> dict:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    save_config(recipe, workdir / "recipe.yaml")
    timings = run_stages(
        build_stages(recipe, workdir), workdir, log=log, force=force, until=until, runner=runner
    )
    add_results_to_cards(recipe, Layout(workdir))
    return timings


def add_results_to_cards(recipe: Recipe, L: Layout) -> None:
    """Each evaluated student's model card gets its evaluation results (students not evaluated yet: none)."""

    for name in student_names(recipe):
        report = L.eval_dir(name) / "report.json"
        if report.exists():
            add_results(L.model(name), json.loads(report.read_text(encoding="utf-8"))["benchmarks"])


def dry_run(recipe: Recipe, workdir: str | Path) -> list[str]:
    """The command of each stage, in order: run in a shell, they are the run. Nothing runs; only the
    config files they read (``WORKDIR/configs/``) and ``recipe.yaml`` are written."""
    save_config(recipe, Path(workdir) / "recipe.yaml")
    lines = []
    for stage in build_stages(recipe, Path(workdir)):
        stage.run.write_files()
        lines += [f"# {stage.name}: {stage.description}", stage.run.shell()]
    return lines


def seed_overrides(seed: int) -> list[str]:
    """Overrides that reseed every random choice of a run except the world (the test split stays fixed)."""
    keys = ("student.seed", "teach.first_teacher_seed", "text_sft.seed", "code_sft.seed", "sft.seed",
            "selfdistill.sample.seed", "selfdistill.build.seed", "selfdistill.sft.seed")  # fmt: skip
    return [f"{k}={seed}" for k in keys]
