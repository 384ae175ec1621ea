"""Command line: dispatch only. Each area module registers its commands on the root app.

``main`` adds what every command shares: Ctrl-C and SIGTERM end a command with one line saying how to
resume (every long job appends and resumes), never with a traceback.
"""

from __future__ import annotations

import signal
import sys

from dualdistill.cli import (
    base,  # noqa: F401
    compose,  # noqa: F401
    data,  # noqa: F401  (registers commands)
    evaluate,  # noqa: F401
    grade,  # noqa: F401
    interop,  # noqa: F401
    pipeline,  # noqa: F401
    sandbox,  # noqa: F401
    selfdistill,  # noqa: F401
    sft,  # noqa: F401
    synthetic,  # noqa: F401
    teach,  # noqa: F401
)
from dualdistill.cli.app import app

INTERRUPTED = "interrupted; rerun the same command to resume"


def _interrupted(signum, frame) -> None:
    # SystemExit, not KeyboardInterrupt: click would turn the latter into "Aborted!". It unwinds the
    # same way (files close, locks drop, records already flushed stay), in the main thread.
    print(f"\n{INTERRUPTED}", file=sys.stderr, flush=True)
    raise SystemExit(130)


def main() -> None:
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    app()
