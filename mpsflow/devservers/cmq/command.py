"""The command line of the local CMQ server: ``python -m mpsflow.devservers.cmq`` and
``mpsflow cmq-server`` share these options and run the server until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from functools import partial
from typing import Final

import anyio
import msgspec

from mpsflow.cli.common import PORT, bounded_int, positive_float, positive_int
from mpsflow.devservers._command import from_option_or_env, serve_until_signal
from mpsflow.devservers.cmq.queue import (
    DEFAULT_MAX_MSG_HEAP_NUM,
    DEFAULT_MAX_MSG_SIZE,
    DEFAULT_VISIBILITY_TIMEOUT,
)
from mpsflow.devservers.cmq.server import CmqServer
from mpsflow.devservers.cmq.storage import data_path_problem
from mpsflow.errors import ConfigurationError, StartupError

__all__ = ["DESCRIPTION", "add_arguments", "build_parser", "main", "run_server"]


DESCRIPTION: Final = (
    "A local CMQ-compatible server for development and tests (not for production): "
    "the TDMQ-CMQ /v2/index.php message API over in-memory queues, with signature "
    "checks, long polling, visibility timeouts and optional JSON persistence."
)
"""What the server is, as its ``--help`` says (shared with ``mpsflow cmq-server``)."""


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m mpsflow.devservers.cmq`` / ``mpsflow cmq-server``."""
    parser = argparse.ArgumentParser(prog="mpsflow cmq-server", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the server's options to ``parser`` (its own, or the ``mpsflow cmq-server`` one)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=PORT, default=9800, help="port; 0 picks a free one (9800)")
    keys = parser.add_argument_group(
        "API keys (required)",
        "The server accepts requests signed with one SecretId/SecretKey pair: give it with "
        "--secret-id and --secret-key, or set MPSFLOW_CMQ_SECRET_ID and MPSFLOW_CMQ_SECRET_KEY, "
        "or TENCENTCLOUD_SECRETID and TENCENTCLOUD_SECRETKEY, the pair `mpsflow run --cmq` "
        "and `mpsflow send --cmq` sign with, so one pair in the environment serves all three.",
    )
    keys.add_argument(
        "--secret-id",
        metavar="ID",
        help="SecretId to accept (required; default: $MPSFLOW_CMQ_SECRET_ID, "
        "else $TENCENTCLOUD_SECRETID)",
    )
    keys.add_argument(
        "--secret-key",
        metavar="KEY",
        help="its SecretKey (required; default: $MPSFLOW_CMQ_SECRET_KEY, "
        "else $TENCENTCLOUD_SECRETKEY)",
    )
    parser.add_argument(
        "--queue",
        action="append",
        default=[],
        metavar="NAME",
        help="create a queue (repeatable); with queues given, other names answer 4440 (no such"
        " queue), so a misspelt name fails at once instead of waiting on an empty queue",
    )
    parser.add_argument(
        "--auto-create",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="create unknown queues on first use (default: only when no --queue is given)",
    )
    parser.add_argument(
        "--visibility-timeout",
        type=bounded_int(0, 43200),
        default=DEFAULT_VISIBILITY_TIMEOUT,
        help="seconds a received message stays hidden (30)",
    )
    parser.add_argument(
        "--max-msg-size",
        type=positive_int,
        default=DEFAULT_MAX_MSG_SIZE,
        help="largest message in bytes (65536)",
    )
    parser.add_argument(
        "--polling-wait",
        type=bounded_int(0, 30),
        default=0,
        help="long-poll seconds when a receive does not say (0)",
    )
    parser.add_argument(
        "--max-messages",
        type=positive_int,
        default=DEFAULT_MAX_MSG_HEAP_NUM,
        metavar="N",
        help="most messages a queue holds, in flight and delayed ones too, as CMQ's "
        "maxMsgHeapNum: a send beyond it answers 4410, queue full (%(default)s)",
    )
    parser.add_argument(
        "--data",
        metavar="FILE",
        help="keep the queues in this JSON file: loaded at start, saved while running and at"
        " stop (a file path; made if missing, with its folder)",
    )
    parser.add_argument(
        "--save-interval",
        type=positive_float,
        default=5.0,
        help="seconds between saves of --data (5)",
    )
    parser.add_argument(
        "--max-clock-skew",
        type=positive_float,
        default=None,
        help="reject requests whose Timestamp is further off than this many seconds",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (INFO)")


def _queues(server: CmqServer) -> str:
    """Which queues the server has, and what it does with other names."""
    names = ", ".join(server.queue_names) or "none yet"
    if server.auto_create:
        return f"queues: {names} (others are created on first use)"
    return f"queues: {names} (others answer 4440, no such queue)"


def _data_problem(path: str, exc: Exception) -> str:
    """The one line saying why ``--data PATH`` cannot be read, and what it takes instead."""
    if isinstance(exc, msgspec.DecodeError):
        return (
            f"--data {path}: not a file of queues this server saved ({exc}): give --data such"
            " a file, or a new path"
        )
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"--data {path}: cannot read it ({reason}): give --data a file this user can read"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGINT or SIGTERM; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run_server(args)
    except ConfigurationError as exc:
        parser.error(str(exc))


def run_server(args: argparse.Namespace) -> int:
    """Run the server from parsed :func:`add_arguments` options until SIGINT or SIGTERM.

    Raises ConfigurationError when no key pair is given; returns the exit status otherwise
    (3 when it cannot listen, as for ``mpsflow run``).
    """
    secret_id = from_option_or_env(args.secret_id, "MPSFLOW_CMQ_SECRET_ID", "TENCENTCLOUD_SECRETID")
    secret_key = from_option_or_env(
        args.secret_key, "MPSFLOW_CMQ_SECRET_KEY", "TENCENTCLOUD_SECRETKEY"
    )
    if not secret_id or not secret_key:
        raise ConfigurationError(
            "a SecretId and a SecretKey are required: pass --secret-id ID --secret-key KEY, or "
            "set TENCENTCLOUD_SECRETID and TENCENTCLOUD_SECRETKEY (the pair `mpsflow run --cmq` "
            "and `mpsflow send --cmq` sign with)"
        )
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    auto_create = not args.queue if args.auto_create is None else args.auto_create
    if args.data is not None and (problem := data_path_problem(args.data, "--data")):
        print(f"mpsflow cmq-server: error: {problem}", file=sys.stderr)
        return 2
    try:
        server = CmqServer(
            {secret_id: secret_key},
            visibility_timeout=args.visibility_timeout,
            max_msg_size=args.max_msg_size,
            polling_wait_seconds=args.polling_wait,
            max_msg_heap_num=args.max_messages,
            queues=args.queue,
            auto_create=auto_create,
            data_path=args.data,
            save_interval=args.save_interval,
            max_clock_skew=args.max_clock_skew,
        )
    except (msgspec.DecodeError, OSError) as exc:  # only the data file is read
        print(f"mpsflow cmq-server: error: {_data_problem(args.data, exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"mpsflow cmq-server: error: {exc}", file=sys.stderr)
        return 2
    try:
        anyio.run(
            partial(
                serve_until_signal,
                command="cmq-server",
                summary=partial(_queues, server),
            ),
            server,
            args.host,
            args.port,
        )
    except StartupError as exc:  # the port is taken, …: one line saying what to do
        print(f"mpsflow cmq-server: error: {exc}", file=sys.stderr)
        return 3
    return 0
