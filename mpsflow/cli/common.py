"""What every ``mpsflow`` command shares: the ``Command`` type, the argument parser, exit codes,
app loading and the argparse number types, so each command module depends on this one and not
on the others.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar
from urllib.parse import urlsplit

from mpsflow._loader import load_object
from mpsflow.errors import ConfigurationError

if TYPE_CHECKING:
    from mpsflow.app import App

__all__ = [
    "CMQ_KEYS",
    "DEFAULT_DEDUP_PATH",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STARTUP",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "PORT",
    "Command",
    "CommandParser",
    "any_duration",
    "bounded_int",
    "cmq_endpoint",
    "cmq_inbox",
    "cmq_queue",
    "duration",
    "json_kind",
    "load_app",
    "plain_http_address",
    "positive_float",
    "positive_int",
    "require_cmq_keys",
    "require_paths",
    "signature_lifetime",
    "use_dedup_option",
]

_log = logging.getLogger("mpsflow.cli")

_N = TypeVar("_N", int, float)

EXIT_OK = 0
EXIT_FAILED = 1
"""The command failed (``run --files``: something was dead-lettered; ``run``: the shutdown
timeout left work in flight for redelivery)."""
EXIT_USAGE = 2
"""Wrong arguments or a misconfigured app: fix the command line or the app."""
EXIT_STARTUP = 3
"""``run`` could not start: a port in use, credentials refused, a store that does not answer
(:class:`~mpsflow.errors.StartupError`; the one line printed says what to do)."""
EXIT_INTERRUPTED = 130
"""Stopped at once by a second SIGINT/SIGTERM; in-flight work was left for redelivery.
``send``: stopped by Ctrl-C (SIGINT)."""
EXIT_TERMINATED = 143
"""``send`` stopped by SIGTERM (128 + 15, the status a shell reports for a process that
SIGTERM ended), after its summary of what was answered."""


@dataclass(frozen=True, slots=True)
class Command:
    """One subcommand: ``configure`` adds its arguments and ``parser.set_defaults(run=f)``.

    ``f(args) -> int`` is the exit code.
    """

    help: str
    configure: Callable[[argparse.ArgumentParser], None]


class CommandParser(argparse.ArgumentParser):
    """The parser of ``mpsflow`` and, as argparse makes subcommands' parsers of their parent's
    class, of every command: a bad option value is one line saying what is wrong and where to
    read more (``mpsflow run: error: --wait: expected 0 to 30, got 31; see mpsflow run --help``),
    not argparse's whole usage first. Other mistakes keep argparse's usage and line: arguments
    missing, where the usage shows what to give, and unknown options (with a guess).

    A value that starts with ``-`` and is not a plain number (``--expires-in -1m``) argparse
    takes for an option, and the option before it for one given no value: for any option, the
    line says to write ``--expires-in=-1m``, or why the option cannot take that value at all.
    """

    _given: tuple[str, ...] = ()
    """The arguments being parsed, for :meth:`error` to read."""

    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        """Parse as argparse does, noting the arguments for :meth:`error`."""
        given = list(sys.argv[1:] if args is None else args)
        self._given = tuple(given)
        return super().parse_known_args(given, namespace)

    def error(self, message: str) -> NoReturn:
        """Exit 2. argparse calls this while it handles the ``ArgumentError`` of a value it
        could not take: one naming its argument gets the short line, the rest argparse's."""
        wrong = sys.exc_info()[1]
        if isinstance(wrong, argparse.ArgumentError) and wrong.argument_name is not None:
            said = f"{wrong.argument_name}: {wrong.message}"
            if wrong.__context__ is None:  # argparse's own complaint, not a type's refusal
                option, value = self._negative_value(wrong.argument_name.split("/"))
                if option:
                    said = f"{option}: " + (
                        self._refusal(option, value)
                        or f"a negative value needs the = form: write {option}={value}"
                    )
            self.exit(EXIT_USAGE, f"{self.prog}: error: {said}; see {self.prog} --help\n")
        super().error(message)

    def _negative_value(self, options: list[str]) -> tuple[str, str]:
        """``(option, value)`` when one of ``options`` (one option's spellings) is followed on
        the command line by a value that starts like a negative number but is not one
        (``-1m``), which argparse takes for an option; ``("", "")`` otherwise."""
        for token, value in zip(self._given, self._given[1:], strict=False):
            if not _NEGATIVE.fullmatch(value) or _NUMBER.fullmatch(value):
                continue
            for option in options:
                abbreviated = len(token) > 2 and token.startswith("--") and option.startswith(token)
                if token == option or abbreviated:
                    return option, value
        return "", ""

    def _refusal(self, option: str, value: str) -> str:
        """Why ``option`` refuses ``value`` (``expected a positive number, got '-5s'``), which
        the ``=`` form would only show next; empty when it takes it."""
        for action in self._actions:
            if option not in action.option_strings:
                continue
            try:
                converted = action.type(value) if callable(action.type) else value
            except argparse.ArgumentTypeError as exc:
                return str(exc)
            except (TypeError, ValueError):
                return f"invalid value: {value!r}"
            if action.choices is not None and converted not in action.choices:
                return f"expected one of {', '.join(map(str, action.choices))}, got {value!r}"
        return ""


_NEGATIVE: Final = re.compile(r"-\.?\d\S*")
"""A command-line value that starts like a negative number (``-1m``, ``-.5``)."""
_NUMBER: Final = re.compile(r"-\d+|-\d*\.\d+")
"""A negative number, which argparse takes as an option's value (``--expires-in -60``)."""


DEFAULT_DEDUP_PATH: Final = "mpsflow-dedup.sqlite3"
"""The SQLite dedup store of ``run``, ``reconcile`` and ``deadletters replay`` (one file, so
a replay or a reconciliation skips what ``run`` already did)."""


def use_dedup_option(app: App, path: str | None, *, none: bool = False) -> None:
    """``--dedup PATH``: the SQLite store at ``path`` (or the default) unless the app sets a
    store of its own; both at once is a mistake, refused rather than one silently ignored.

    ``none`` (``--no-dedup``): add no store. An app that sets its own keeps it, which a
    warning says: the flag changed nothing.
    """
    own = app.idempotency
    if own is not None and (path is not None or none):
        from mpsflow.dedup.stores.base import describe_store

        described = describe_store(getattr(own, "store", own))
        if none:
            _log.warning(
                "--no-dedup adds no dedup store, and the app sets its own (%s): that one"
                " stays in use",
                described,
            )
            return
        raise ConfigurationError(
            f"--dedup {path}: the app sets its own dedup store ({described}), which is the"
            " one used; drop --dedup"
        )
    if not none:
        app.use_default_idempotency(path or DEFAULT_DEDUP_PATH)


def load_app(spec: str) -> App:
    """The :class:`~mpsflow.app.App` named ``MODULE:APP`` (the current directory importable)."""
    from mpsflow.app import App

    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `mpsflow run myapp:app` finds ./myapp.py
    app = load_object(spec)
    if not isinstance(app, App):
        raise ConfigurationError(f"{spec} is a {type(app).__name__}, not an mpsflow App")
    return app


def _parsed(text: str, convert: Callable[[str], _N], what: str) -> _N:
    """``convert(text)``, or the argparse error saying that ``text`` is not ``what``."""
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    value = _parsed(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number above 0."""
    value = _parsed(text, float, "a number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(text: str) -> float:
    """argparse type: seconds, written ``90``, ``90s``, ``5m``, ``24h`` or ``7d``; above 0."""
    value = _duration(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a duration above 0, got {text!r}")
    return value


def any_duration(text: str) -> float:
    """argparse type: as :func:`duration`, 0 allowed."""
    return _duration(text)


def _duration(text: str) -> float:
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        value = math.nan
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 90s, 5m, 24h or 7d, got {text!r}"
        )
    return value


def signature_lifetime(text: str) -> int:
    """argparse type of ``--expires-in``: whole seconds, written as a duration (``600``, ``10m``,
    ``1h``); a leading ``-`` signs already expired, to see a refusal."""
    sign = -1 if text.startswith("-") else 1
    try:
        return sign * round(_duration(text[1:] if sign < 0 else text))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 600, 10m or 1h (--expires-in=-1m: already expired),"
            f" got {text!r}"
        ) from None


def json_kind(value: object) -> str:
    """What a decoded JSON value is, in JSON's words: ``an array``, ``a string``, …"""
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else type(value).__name__


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """argparse type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        value = _parsed(text, int, "a whole number")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low} to {high}, got {value}")
        return value

    return parse


PORT: Final = bounded_int(0, 65535)
"""argparse type: a TCP port; 0 picks a free one."""


# -- the CMQ options (`run --cmq`, `send --cmq`) ------------------------------------------------

CMQ_KEYS: Final = ("TENCENTCLOUD_SECRETID", "TENCENTCLOUD_SECRETKEY")
"""The environment variables a CMQ command signs with (plus TENCENTCLOUD_SESSIONTOKEN)."""

_CMQ_QUEUE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def cmq_endpoint(text: str) -> str:
    """argparse type: a CMQ API address, ``http(s)://HOST[:PORT]``."""
    parts = urlsplit(text)
    try:
        port_ok = parts.port != 0
    except ValueError:  # not a number, or out of range
        port_ok = False
    if (
        not port_ok
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or "@" in parts.netloc
    ):
        raise argparse.ArgumentTypeError(
            f"expected http(s)://HOST[:PORT] (the queue's API address), got {text!r}"
        )
    return text


def cmq_queue(text: str) -> str:
    """argparse type: a CMQ queue name."""
    if not _CMQ_QUEUE_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected a CMQ queue name (a letter, then up to 63 letters, digits, - or _), "
            f"got {text!r}"
        )
    return text


def cmq_inbox(text: str) -> tuple[str, str] | None:
    """An ``--inbox`` that names a CMQ queue, as ``(endpoint, queue)``; None for a file path.

    ``cmq://HOST[:PORT][/API-PATH]/QUEUE`` is the queue at ``https://HOST[:PORT]``;
    ``cmq+http://…`` the same over plain HTTP (a local ``mpsflow cmq-server``).
    """
    scheme, sep, rest = text.partition("://")
    if not sep and not text.startswith("cmq:"):
        return None  # a file path
    if not sep or scheme not in ("cmq", "cmq+http", "cmq+https"):
        raise ConfigurationError(
            f"--inbox {text}: a file path, or cmq://HOST[:PORT]/QUEUE (cmq+http:// for plain HTTP)"
        )
    api, _, queue = rest.rpartition("/")
    transport = "http" if scheme == "cmq+http" else "https"
    problem = "" if api else "no queue after the address"
    if not problem:
        try:
            cmq_endpoint(f"{transport}://{api}")
            cmq_queue(queue)
        except argparse.ArgumentTypeError as exc:
            problem = str(exc)
    if problem:
        raise ConfigurationError(
            f"--inbox {text}: expected cmq://HOST[:PORT]/QUEUE (cmq+http:// for plain HTTP),"
            f" {problem}"
        )
    return f"{transport}://{api}", queue


def plain_http_address(option: str, text: str) -> str:
    """What to give ``option`` instead of ``text``, its ``https://`` (``cmq://``) CMQ address,
    when the server there answers plain HTTP: ``--cmq http://…``, ``--inbox cmq+http://…``,
    for the error to name (each option spells a plain-HTTP address its own way)."""
    scheme, _, rest = text.partition("://")
    return f"{option} {'cmq+http' if scheme.startswith('cmq') else 'http'}://{rest}"


def require_cmq_keys(flag: str = "--cmq") -> None:
    """Raise ConfigurationError naming the CMQ key variables missing from the environment."""
    missing = [name for name in CMQ_KEYS if not os.environ.get(name)]
    if missing:
        raise ConfigurationError(
            f"{flag} needs API keys in the environment: set {' and '.join(missing)} "
            "(and TENCENTCLOUD_SESSIONTOKEN for temporary keys)"
        )


def require_paths(paths: Sequence[str]) -> None:
    """Raise ConfigurationError naming the first of ``paths`` (files or folders given on the
    command line) that does not exist: a wrong command line, found before anything starts."""
    for path in paths:
        if not os.path.exists(path):
            raise ConfigurationError(f"no such file or folder: {path}")
