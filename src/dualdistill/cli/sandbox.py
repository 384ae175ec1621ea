"""``dualdistill sandbox run BLOCKS.json``: run code blocks in one sandbox session, print JSON results."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dualdistill.cli.app import app, fail
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


@sandbox_app.command("run")
def run(
    blocks_file: Path = typer.Argument(..., help="JSON list of code strings, run in order in one session."),
    timeout: float = typer.Option(3.0, help="Wall-clock seconds per block."),
    memory_mb: int = typer.Option(2048, help="Address-space limit per process (MiB)."),
    cpu_time: int = typer.Option(60, help="CPU seconds for the whole session."),
    max_procs: int = typer.Option(64, help="Processes + threads of the session."),
    file_size_mb: int = typer.Option(64, help="Largest file the code may write (MiB)."),
    output_limit: int = typer.Option(2000, help="Characters of output kept (head + tail)."),
    isolation: str = typer.Option("auto", help="auto | bwrap | unshare | none (none = unisolated!)."),
    repl: bool = typer.Option(False, help="Print the value of a bare last expression."),
    details: bool = typer.Option(False, help="Also print duration_s and state_lost per block."),
) -> None:
    """Run BLOCKS_FILE's code blocks in one session and print a JSON list of {status, output}.

    Example: echo '["x = 6*7", "print(x)"]' > b.json && dualdistill sandbox run b.json --timeout 5
    """

    try:
        blocks = _read_blocks(blocks_file)
        config = SandboxConfig(
            timeout_s=timeout,
            memory_mb=memory_mb,
            cpu_time_s=cpu_time,
            max_procs=max_procs,
            file_size_mb=file_size_mb,
            output_limit=output_limit,
            isolation=isolation,
            repl=repl,
        )
    except (DataError, ValueError) as e:
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
