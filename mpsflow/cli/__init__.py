"""The ``mpsflow`` command line: ``run`` an app, ``send`` sample notifications, ``decode`` one.

Commands live in ``COMMANDS`` (name → ``Command``, or a lazy ``"module:attribute"`` naming
one), one module each under :mod:`mpsflow.cli`, so other parts of mpsflow plug theirs in
(``cmq-server``, ``deadletters``). The sources ``run`` can feed live in
:data:`mpsflow.cli.run.SOURCE_FLAGS`. Every command is imported by :func:`main`, inside its
handling of Ctrl-C: importing this package loads none of the framework.
"""

from __future__ import annotations

import argparse
import difflib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from mpsflow._loader import load_object
from mpsflow.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Command, CommandParser
from mpsflow.errors import ConfigurationError

__all__ = [
    "COMMANDS",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Command",
    "build_parser",
    "main",
]

COMMANDS: dict[str, Command | str] = {
    "run": "mpsflow.cli.run:COMMAND",
    "send": "mpsflow.cli.send:COMMAND",
    "decode": "mpsflow.cli.decode:COMMAND",
    "deadletters": "mpsflow.cli.deadletters:COMMAND",
    "cmq-server": "mpsflow.cli.cmq_server:COMMAND",
    "mps-server": "mpsflow.cli.mps_server:COMMAND",
    "reconcile": "mpsflow.cli.reconcile:COMMAND",
}
"""Subcommands: a ``Command``, or ``"module:attribute"`` naming one (imported when needed)."""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every command in ``COMMANDS``): a :class:`CommandParser`, so
    every command's bad option value is one line."""
    from mpsflow import __version__

    parser = CommandParser(
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
        sub.set_defaults(command_parser=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mpsflow`` / ``python -m mpsflow``; returns the exit code.

    A reader that goes away (``mpsflow deadletters list FILE | head``) ends the command
    quietly with status 0, as for any command that writes to a closed pipe: standard output is
    pointed at the null device, so that nothing is reported at exit either.
    """
    command = "mpsflow"
    try:
        with _interrupts_held() as interrupted:
            parser = build_parser()
        if interrupted:
            return 130
        args = _parse(parser, argv)
        parsed_by = getattr(args, "command_parser", None)  # the action's, for deadletters
        command = parsed_by.prog if parsed_by is not None else f"mpsflow {args.command}"
        handler: Callable[[argparse.Namespace], int] = args.run
        try:
            code = handler(args)
        except ConfigurationError as exc:
            print(f"{command}: error: {exc}", file=sys.stderr)
            code = EXIT_USAGE
        sys.stdout.flush()  # a closed pipe shows here, not when the interpreter exits
        return code
    except BrokenPipeError:
        return _reader_gone()
    except OSError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if _only_broken_pipes(exc):  # raised inside a task group
            return _reader_gone()
        raise


@contextmanager
def _interrupts_held() -> Iterator[list[int]]:
    """Hold Ctrl-C back while the commands are imported, and note it instead: a
    ``KeyboardInterrupt`` raised inside an extension module's setup (msgspec building its
    decoders at import) can crash the interpreter (SIGSEGV, seen with msgspec 0.23). The
    imports take well under a second; the caller exits 130 once they are done. Only where
    Ctrl-C would raise ``KeyboardInterrupt`` (the main thread, the default handler)."""
    noted: list[int] = []
    held = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    if held:
        signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    try:
        yield noted
    finally:
        if held:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; a command that sets ``intermixed=DEST`` takes positional arguments after
    its options too (``send URL --sign-key K DIR``), added to the list ``DEST``.

    argparse's own ``parse_intermixed_args`` does not work with subcommands. A misspelt
    command or action gets a guess (:func:`_refuse_unknown_words`).
    """
    given = list(sys.argv[1:] if argv is None else argv)
    _refuse_unknown_words(parser, given)
    args, extras = parser.parse_known_args(given)
    dest = getattr(args, "intermixed", None)
    if dest is not None:
        getattr(args, dest).extend(e for e in extras if not e.startswith("-"))
        extras = [e for e in extras if e.startswith("-")]
    if extras:
        command: argparse.ArgumentParser = getattr(args, "command_parser", parser)
        known = [s for action in command._actions for s in action.option_strings]
        guesses = {e: difflib.get_close_matches(e.split("=")[0], known, n=1) for e in extras}
        hints = [f"{e} (did you mean {g[0]}?)" if g else e for e, g in guesses.items()]
        command.error(f"unrecognized arguments: {' '.join(hints)}")
    return args


def _refuse_unknown_words(parser: argparse.ArgumentParser, given: Sequence[str]) -> None:
    """Exit 2 with one line and a guess when ``given`` misspells a command
    (``mpsflow sned``: did you mean send?) or a command's action (``mpsflow deadletters lst``:
    did you mean list?), instead of argparse's usage and list of choices."""
    for word in given:
        found = _subcommands(parser)
        if word.startswith("-") or found is None:
            return
        kind, parsers = found
        if word not in parsers:
            guess = difflib.get_close_matches(word, list(parsers), n=1)
            hint = f" (did you mean {guess[0]}?)" if guess else f"; one of {', '.join(parsers)}"
            parser.exit(
                EXIT_USAGE,
                f"{parser.prog}: error: unknown {kind} {word!r}{hint}; see {parser.prog} --help\n",
            )
        parser = parsers[word]


def _subcommands(
    parser: argparse.ArgumentParser,
) -> tuple[str, dict[str, argparse.ArgumentParser]] | None:
    """What ``parser``'s subcommands are called (``command``, ``action``: its metavar) and their
    parsers by name; ``None`` when it has none."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and isinstance(action.choices, dict):
            name = action.metavar if isinstance(action.metavar, str) else action.dest
            return name.lower(), action.choices
    return None


def _only_broken_pipes(exc: BaseException) -> bool:
    """Whether ``exc`` is a BrokenPipeError, or an exception group of nothing else."""
    inner: Sequence[BaseException] | None = getattr(exc, "exceptions", None)
    if isinstance(exc, BrokenPipeError):
        return True
    return bool(inner) and all(_only_broken_pipes(e) for e in inner or ())


def _reader_gone() -> int:
    """Standard output's reader has closed the pipe: stop writing to it, and exit 0."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (captured output): nothing to redirect
        pass
    return EXIT_OK
