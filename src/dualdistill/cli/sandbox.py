"""``dualdistill sandbox run BLOCKS.json``: run code blocks in one sandbox session, print JSON results."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dualdistill.cli.app import app, fail, option_overrides
from dualdistill.cli.options import with_config_options
from dualdistill.core.config import ConfigError, load_config
from dualdistill.core.records import DataError, read_text
from dualdistill.sandbox import SandboxConfig, SandboxUnavailable, Session

sandbox_app = typer.Typer(help="The isolated, stateful Python executor.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")


def _read_blocks(path: Path) -> list[str]:
    try:
        blocks = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON: {e.msg}", line=e.lineno) from None
    if not isinstance(blocks, list):
        raise DataError(path, f"expected a JSON list of code strings, got {type(blocks).__name__}")
    for i, b in enumerate(blocks):
        if not isinstance(b, str):
            raise DataError(path, f"item [{i}] is {type(b).__name__}, expected a string of code")
    return blocks


# Options derived from SandboxConfig's fields (help and bounds live there); a spelling kept where it differs.
RUN_OPTIONS = {"timeout_s": "--timeout", "limit": "--executor-limit", "memory_mb": None, "cpu_time_s": "--cpu-time",
               "max_procs": None, "file_size_mb": None, "output_limit": None, "isolation": None, "repl": None}  # fmt: skip


@sandbox_app.command("run")
@with_config_options(SandboxConfig, RUN_OPTIONS)
def run(
    blocks_file: Path = typer.Argument(..., help="JSON list of code strings, run in order in one session."),
    details: bool = typer.Option(False, help="Also print duration_s and state_lost per block."),
    given: dict | None = None,
) -> None:
    """Run BLOCKS_FILE's code blocks in one session and print a JSON list of {status, output}.

    Example: echo '["x = 6*7", "print(x)"]' > b.json && dualdistill sandbox run b.json --timeout 5
    """

    try:
        blocks = _read_blocks(blocks_file)
        config = load_config(SandboxConfig, None, option_overrides(given or {}))
    except (DataError, ConfigError) as e:
        fail(str(e))
    results = []
    try:
        with Session(config) as session:
            for code in blocks:
                r = session.run(code)
                item = r.to_dict()
                if details:
                    item.update(duration_s=round(r.duration_s, 4), state_lost=r.state_lost)
                results.append(item)
    except SandboxUnavailable as e:
        fail(str(e))
    typer.echo(json.dumps(results, ensure_ascii=False))
