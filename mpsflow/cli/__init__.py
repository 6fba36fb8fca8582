"""The ``mpsflow`` command line: ``run`` an app, ``send`` sample notifications, ``decode`` one.

Commands live in ``COMMANDS`` (name → ``Command``, or a lazy ``"module:attribute"`` naming
one), one module each under :mod:`mpsflow.cli`, so other parts of mpsflow plug theirs in
(``cmq-server``, ``deadletters``). The sources ``run`` can feed live in ``SOURCE_FLAGS``
(:mod:`mpsflow.cli.run`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from mpsflow._loader import load_object
from mpsflow.cli import decode, run, send
from mpsflow.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Command
from mpsflow.cli.run import SOURCE_FLAGS, SourceFlag
from mpsflow.errors import ConfigurationError

__all__ = [
    "COMMANDS",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "SOURCE_FLAGS",
    "Command",
    "SourceFlag",
    "build_parser",
    "main",
]

COMMANDS: dict[str, Command | str] = {
    "run": run.COMMAND,
    "send": send.COMMAND,
    "decode": decode.COMMAND,
    "deadletters": "mpsflow.cli.deadletters:COMMAND",
    "cmq-server": "mpsflow.cli.cmq_server:COMMAND",
}
"""Subcommands: a ``Command``, or ``"module:attribute"`` naming one (imported when needed)."""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every command in ``COMMANDS``)."""
    from mpsflow import __version__

    parser = argparse.ArgumentParser(
        prog="mpsflow", description="Typed, reliable handling of Tencent Cloud MPS notifications."
    )
    parser.add_argument("--version", action="version", version=f"mpsflow {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, entry in COMMANDS.items():
        command = entry if isinstance(entry, Command) else load_object(entry)
        if not isinstance(command, Command):
            raise ConfigurationError(f"{entry} is not an mpsflow.cli.Command")
        sub = commands.add_parser(name, help=command.help, description=command.help)
        command.configure(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mpsflow`` / ``python -m mpsflow``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.run
    try:
        return handler(args)
    except ConfigurationError as exc:
        print(f"mpsflow {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `mpsflow decode … | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as exc:
        print(f"mpsflow {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
