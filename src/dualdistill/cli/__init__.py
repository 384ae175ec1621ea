"""Command line: dispatch only. Each area module registers its commands on the root app."""

from __future__ import annotations

from dualdistill.cli import (
    base,  # noqa: F401
    compose,  # noqa: F401
    data,  # noqa: F401  (registers commands)
    evaluate,  # noqa: F401
    grade,  # noqa: F401
    pipeline,  # noqa: F401
    sandbox,  # noqa: F401
    selfdistill,  # noqa: F401
    sft,  # noqa: F401
    synthetic,  # noqa: F401
)
from dualdistill.cli.app import app


def main() -> None:
    app()
