"""Commands of the pretrained tiny base: make it, find the shipped one, check it against its manifest."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from dualdistill.base.pretrain import MANIFEST, PretrainConfig, check_manifest, pretrain, shipped_base
from dualdistill.cli.app import app, fail, writable
from dualdistill.core.config import ConfigError, load_config
from dualdistill.sft.modelcard import write_card

base_app = typer.Typer(
    help="The pretrained tiny base that embedded students start from.", no_args_is_help=True
)
app.add_typer(base_app, name="base")


@base_app.command("pretrain")
def pretrain_command(
    out: Path = typer.Option(..., help="Model directory to write; a killed run here resumes."),
    config: Path | None = typer.Option(None, help="PretrainConfig YAML; the defaults made the shipped base."),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. train.max_steps=200"),
) -> None:
    """Pretrain the tiny base on the generic corpus (seeded, resumable, with a progress bar).

    With no config this reproduces the shipped base (compare with `dualdistill base check OUT`).

    Example: dualdistill base pretrain --out runs/base
    """
    if out is not None:
        writable(out, directory=True)

    try:
        cfg = load_config(PretrainConfig, config, list(overrides or []))
    except (ConfigError, ValueError) as e:
        fail(str(e))
    pretrain(cfg, out, log=Console().print)
    manifest = json.loads((out / "manifest.json").read_text())
    Console().print(
        f"wrote {out}: {manifest['steps']} steps, final loss {manifest['final_loss']:.4f}, "
        f"{manifest['seconds']:.0f} s"
    )


@base_app.command("path")
def path_command() -> None:
    """Print the directory of the base shipped in the package.

    Example: cp -r "$(dualdistill base path)" models/init
    """

    print(shipped_base())


@base_app.command("copy")
def copy_command(
    out: Path = typer.Option(
        ..., help="Directory to write: a copy of the shipped base (replaced if present)."
    ),
) -> None:
    """Copy the shipped base to a directory, as the start of a student (the recipes' ``student.init: base``).

    Example: dualdistill base copy --out models/init
    """
    if out is not None:
        writable(out, directory=True)
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(shipped_base(), out)
    m = json.loads((out / MANIFEST).read_text())
    write_card(out, title="dualdistill's pretrained tiny base (untrained on any task)", made=[
        f"- pretrained by `{m.get('command', 'dualdistill base pretrain')}` for {m.get('steps')} steps "
        f"(final loss {m.get('final_loss')}) on a generic seeded corpus; weights sha256 in `{MANIFEST}`"])  # fmt: skip
    Console().print(f"copied the shipped base to {out}")


@base_app.command("check")
def check_command(
    base: Path | None = typer.Argument(None, help="A base directory (default: the shipped one)."),
) -> None:
    """Check a base directory against its manifest (weights' sha256, recorded fields).

    Example: dualdistill base check
    """

    base = base or shipped_base()
    problems = check_manifest(base)
    for p in problems:
        typer.secho(p, fg=typer.colors.RED, err=True)
    if problems:
        raise typer.Exit(1)
    Console().print(f"{base}: matches its manifest")
