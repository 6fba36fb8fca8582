"""``mpsflow mps-server``: the local MPS-API-compatible server as an ``mpsflow`` subcommand.

The same options and behaviour as ``python -m mpsflow.devservers.mps`` (a development and test
tool, never a stand-in for MPS in production); ``mpsflow.cli.COMMANDS`` names :data:`COMMAND`
lazily, so the server module is only imported when this command is used.
"""

from __future__ import annotations

import argparse

from mpsflow.cli.common import Command
from mpsflow.devservers.mps import DESCRIPTION, add_arguments, run_server

__all__ = ["COMMAND"]


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    add_arguments(parser)
    parser.set_defaults(run=run_server)


COMMAND = Command(
    "run a local MPS-API-compatible server (a development and test tool, not for production)",
    _configure,
)
"""The ``mps-server`` entry of :data:`mpsflow.cli.COMMANDS`."""
