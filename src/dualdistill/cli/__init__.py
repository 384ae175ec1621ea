"""Command line: dispatch only. Each area module registers its commands on the root app."""

from __future__ import annotations

from dualdistill.cli import compose  # noqa: F401
from dualdistill.cli import data  # noqa: F401  (registers commands)
from dualdistill.cli import evaluate  # noqa: F401
from dualdistill.cli import grade  # noqa: F401
from dualdistill.cli import selfdistill  # noqa: F401
from dualdistill.cli import sandbox  # noqa: F401
from dualdistill.cli import sft  # noqa: F401
from dualdistill.cli import synthetic  # noqa: F401
from dualdistill.cli.app import app


def main() -> None:
    app()
