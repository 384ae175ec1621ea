"""Command line: dispatch only. Each area module registers its commands on the root app.

``main`` adds what every command shares: Ctrl-C and SIGTERM end a command with one line saying how to
resume (every long job appends and resumes), never with a traceback; and a full disk, a read-only place
or an output path in the way ends it with one line naming the path and the cause (exit code 2). What was
written before stays (appended records are flushed), and a rerun resumes.
"""

from __future__ import annotations

import errno
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


# Causes of an OSError that are the place's fault, not a bug: one line, exit code 2.
_PLACE_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
                 errno.EACCES: "permission denied", errno.EPERM: "not permitted", errno.ENOTDIR:
                 "a path component is a file, not a directory", errno.EISDIR: "is a directory",
                 errno.EEXIST: "already exists", errno.EDQUOT: "disk quota exceeded"}  # fmt: skip


def main() -> None:
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        app()
    except OSError as e:
        if e.errno not in _PLACE_ERRORS:
            raise
        where = e.filename or ""
        print(f"error: {where}{': ' if where else ''}{_PLACE_ERRORS[e.errno]}; nothing written so far is lost, "
              "and a rerun resumes", file=sys.stderr)  # fmt: skip
        raise SystemExit(2) from None
