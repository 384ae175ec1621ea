"""``dualdistill self-distill sample|build|report|train``: dispatch to ``dualdistill.selfdistill``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dualdistill import selfdistill as sd
from dualdistill.backends import BackendError, open_backend
from dualdistill.cli.app import app, fail, option_overrides, writable
from dualdistill.cli.options import AGENT_OPTIONS, BACKEND_OPTIONS, with_config_options
from dualdistill.core.config import ConfigError, load_config
from dualdistill.core.records import DataError
from dualdistill.format.problems import load_benchmark
from dualdistill.pipeline.recipe import shipped_file
from dualdistill.selfdistill.sample import SampleConfig
from dualdistill.selfdistill.select import BuildConfig
from dualdistill.sft.train import SFTConfig
from dualdistill.teachers.build import build_teacher
from dualdistill.teachers.teach import TeachConfig

sd_app = typer.Typer(
    help="Self-distillation: sample the student, select and repair with a text teacher, retrain.",
    no_args_is_help=True,
)
app.add_typer(sd_app, name="self-distill")


@sd_app.command("sample")
@with_config_options(
    SampleConfig, {"k": None, "seed": None, "shard": None, **BACKEND_OPTIONS, **AGENT_OPTIONS}
)
def sample_command(
    problems: str = typer.Option(..., help="Problem file (JSONL/JSON/Parquet) or built-in benchmark name."),
    out: Path = typer.Option(..., help="Output directory (samples.jsonl, problems.jsonl); reruns resume."),
    config: Path | None = typer.Option(
        None, help="SampleConfig YAML; options and --set win over it, and its defaults are the paper's."
    ),
    set_: list[str] = typer.Option([], "--set", help="Config override key=value (repeatable)."),
    limit: int | None = typer.Option(None, min=1, help="Only the first N problems."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    given: dict | None = None,
) -> None:
    """Sample K graded tool-loop trajectories per problem from the intermediate student.

    Example: dualdistill self-distill sample --model runs/sft1/model --problems train.jsonl --k 16 --out runs/sd
    """
    if out is not None:
        writable(out, directory=True)

    backend = None
    try:
        cfg = load_config(sd.SampleConfig, config, [*option_overrides(given or {}), *set_])
        if not cfg.backend.model:
            fail("--model (or backend.model in --config) is required: the student's directory or server URL")
        chosen = load_benchmark(problems, limit=limit)
        backend = open_backend(cfg.backend, cfg.agent.template)
        path = sd.sample(chosen, backend, out, cfg, progress=progress)
        scores = sd.load_samples(out, k=cfg.k)
    except (DataError, ConfigError, BackendError) as e:
        fail(str(e))
    except KeyError as e:
        fail(str(e.args[0]) if e.args else str(e))
    finally:
        if backend is not None:
            backend.close()
    solved = sum(s.s_bar == 1 for s in scores)
    mean = sum(float(s.s_bar) for s in scores) / max(len(scores), 1)
    Console().print(
        f"{len(scores)} problems × {cfg.k} samples in {path}: mean s̄ {mean:.3f}, "
        f"{solved} fully solved, {len(scores) - solved} take part in self-distillation"
    )


@sd_app.command("build")
@with_config_options(
    BuildConfig, {"repair": None, "select": None, "beta1": None, "beta2": None, "seed": None}
)
def build_command(
    samples: Path = typer.Option(..., help="A directory written by `self-distill sample`."),
    out: Path = typer.Option(..., help="Output JSONL (fields problem, text + provenance) for `train`."),
    teacher_solutions: Path | None = typer.Option(None, help="JSONL of {id, response}: teacher solutions."),
    teacher_config: Path | None = typer.Option(
        None, help="Or a TeachConfig YAML: its text_teacher writes the repairs (as in the paper)."
    ),
    pairs: Path | None = typer.Option(None, help="Or the teachers' records: `teach`'s pairs.jsonl."),
    replay: Path | None = typer.Option(
        None, help="An SFT set (the composed data) written after the selected records, for the retrain."
    ),
    config: Path | None = typer.Option(None, help="BuildConfig YAML; options and --set win over it."),
    set_: list[str] = typer.Option([], "--set", help="Config override key=value (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    given: dict | None = None,
) -> None:
    """Select and repair: one kept-correct and/or one repaired-wrong trajectory per problem with s̄ < 1.

    Example: dualdistill self-distill build --samples runs/sd --teacher-solutions text.jsonl
    --beta1 0 --beta2 0.9 --out runs/sd/sd_data.jsonl

    Example: dualdistill self-distill build --samples runs/sd --teacher-config teach.yaml --out runs/sd/sd_data.jsonl

    Example: dualdistill self-distill build --samples runs/sd --pairs runs/teach/pairs.jsonl --repair best
    --out runs/sd/sd_data.jsonl
    """
    if out is not None:
        writable(out, directory=False)

    if sum(x is not None for x in (teacher_solutions, teacher_config, pairs)) != 1:
        fail("give exactly one of --teacher-solutions, --teacher-config and --pairs")
    try:
        cfg = load_config(sd.BuildConfig, config, [*option_overrides(given or {}), *set_])
        teacher = teacher_solutions
        if teacher_config is not None:
            spec = load_config(TeachConfig, teacher_config).text_teacher
            teacher = build_teacher(spec, "text", pool=None)
        result = sd.build(samples, teacher, out, cfg, pairs=pairs, replay=replay)
    except (DataError, ConfigError, ValueError) as e:
        fail(str(e))
    _show(sd.report(result.records, result.scores, result.counts, cfg), as_json)


@sd_app.command("report")
def report_command(
    built: Path = typer.Argument(..., help="A JSONL written by `self-distill build`."),
    samples: Path | None = typer.Option(None, help="Its sampling directory, for s̄ over all problems."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Counts by s̄ bucket and kind, and the code-first/text-first mix of the kept samples.

    Example: dualdistill self-distill report runs/sd/sd_data.jsonl --samples runs/sd
    """

    try:
        records = sd.load_built(built)
        scores = sd.load_samples(samples) if samples is not None else None
    except (DataError, ConfigError) as e:
        fail(str(e))
    counts = None
    side = Path(f"{built}.report.json")
    if side.exists():
        counts = json.loads(side.read_text(encoding="utf-8")).get("counts")
    _show(sd.report(records, scores, counts), as_json)


@sd_app.command("train")
def train_command(
    model: Path = typer.Option(..., help="The intermediate student (a model directory)."),
    data: Path = typer.Option(..., help="The JSONL written by `self-distill build`."),
    config: Path = typer.Option(..., help="SFT recipe YAML (e.g. sft_tiny, a shipped one)."),
    out: Path = typer.Option(..., help="New output directory; the model lands in OUT/model."),
    overrides: list[str] = typer.Argument(None, help="Recipe overrides, key=value (e.g. epochs=2)."),
) -> None:
    """Retrain from the intermediate student's weights on the self-distillation set (fresh optimizer).

    Example: dualdistill self-distill train --model runs/sft1/model --data runs/sd/sd_data.jsonl
    --config sft_tiny --out runs/sft_sd lr=1e-5
    """
    if out is not None:
        writable(out, directory=True)

    try:
        cfg = load_config(SFTConfig, shipped_file(config), list(overrides or []))
        model_dir = sd.retrain(model, data, out, cfg)
    except (DataError, ConfigError) as e:
        fail(str(e))
    except RuntimeError as e:
        fail(str(e), code=1)
    Console().print(f"self-distilled student saved in {model_dir}")


def _show(rep: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(rep, indent=2))
        return
    console = Console()
    if rep.get("by_s_bar"):
        t = Table("s̄", "problems", "kept_correct", "repaired_wrong", title="by s̄ bucket")
        for name, row in rep["by_s_bar"].items():
            t.add_row(name, str(row["problems"]), str(row["kept_correct"]), str(row["repaired_wrong"]))
        console.print(t)
    t = Table("kind", "records", "code-first", "text-first", "none", title="kept trajectories")
    for kind, n in rep["by_kind"].items():
        m = rep["strategy_mix"][kind]
        t.add_row(kind, str(n), str(m["code"]), str(m["text"]), str(m["none"]))
    console.print(t)
    if rep.get("counts"):
        t = Table("count", "value", title="selection and teacher counts")
        for key, value in rep["counts"].items():
            t.add_row(key, str(value))
        console.print(t)
