"""The command line of the local MPS server: ``python -m mpsflow.devservers.mps`` and
``mpsflow mps-server`` share these options and run the server until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from functools import partial
from typing import Final

import anyio

from mpsflow.cli.common import PORT, positive_float
from mpsflow.devservers._command import from_option_or_env, serve_until_signal
from mpsflow.devservers.mps.server import DEFAULT_MAX_CLOCK_SKEW, MpsServer
from mpsflow.errors import ConfigurationError, StartupError

__all__ = ["DEFAULT_PORT", "DESCRIPTION", "add_arguments", "build_parser", "main", "run_server"]

DEFAULT_PORT: Final = 9801
"""Where the server listens unless told (the local CMQ server's 9800, plus one)."""

DESCRIPTION: Final = (
    "A local MPS-API-compatible server for development and tests (not for production): "
    "DescribeTasks, DescribeTaskDetail and DescribeBatchTaskDetail (version 2019-06-12) "
    "over in-memory tasks, loaded from notification files, with TC3-HMAC-SHA256 signature "
    "checks and ScrollToken paging."
)
"""What the server is, as its ``--help`` says (shared with ``mpsflow mps-server``)."""


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m mpsflow.devservers.mps`` / ``mpsflow mps-server``."""
    parser = argparse.ArgumentParser(prog="mpsflow mps-server", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the server's options to ``parser`` (its own, or the ``mpsflow mps-server`` one)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument(
        "--port", type=PORT, default=DEFAULT_PORT, help=f"port; 0 picks a free one ({DEFAULT_PORT})"
    )
    keys = parser.add_argument_group(
        "API keys (required)",
        "The server accepts requests signed with one SecretId/SecretKey pair: give it with "
        "--secret-id and --secret-key, or set MPSFLOW_MPS_SECRET_ID and MPSFLOW_MPS_SECRET_KEY, "
        "or TENCENTCLOUD_SECRETID and TENCENTCLOUD_SECRETKEY, the pair Tencent Cloud SDKs and "
        "mpsflow's clients sign with, so one pair in the environment serves both sides.",
    )
    keys.add_argument(
        "--secret-id",
        metavar="ID",
        help="SecretId to accept (required; default: $MPSFLOW_MPS_SECRET_ID, "
        "else $TENCENTCLOUD_SECRETID)",
    )
    keys.add_argument(
        "--secret-key",
        metavar="KEY",
        help="its SecretKey (required; default: $MPSFLOW_MPS_SECRET_KEY, "
        "else $TENCENTCLOUD_SECRETKEY)",
    )
    parser.add_argument(
        "--tasks",
        action="append",
        default=[],
        metavar="FILE|DIR",
        help="load the task of each notification in FILE, or in DIR's *.json/*.jsonl files "
        "(repeatable; e.g. examples/notifications); each finished at startup",
    )
    parser.add_argument(
        "--time-filter",
        choices=("create", "finish"),
        default="create",
        help="which time DescribeTasks' StartTime/EndTime bound: the creation time, or the "
        "finish time (then unfinished tasks never match a bounded query); MPS does not "
        "document which (create)",
    )
    parser.add_argument(
        "--max-clock-skew",
        type=positive_float,
        default=DEFAULT_MAX_CLOCK_SKEW,
        metavar="SECONDS",
        help="reject requests whose X-TC-Timestamp is further off than this with "
        "AuthFailure.SignatureExpire; 0 accepts any (%(default)g, as Tencent Cloud)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (INFO)")


def _summary(server: MpsServer) -> str:
    """How many tasks the server holds, of which types and statuses."""
    if not len(server.tasks):
        return "tasks: none (load some with --tasks FILE|DIR)"
    counts: dict[str, int] = {}
    for task in server.tasks:
        key = f"{task.task_type} {task.status}"
        counts[key] = counts.get(key, 0) + 1
    parts = ", ".join(f"{n} {key}" for key, n in sorted(counts.items()))
    return f"tasks: {len(server.tasks)} ({parts})"


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
    (2 for a --tasks file that reports no task, 3 when it cannot listen, as for ``mpsflow run``).
    """
    secret_id = from_option_or_env(args.secret_id, "MPSFLOW_MPS_SECRET_ID", "TENCENTCLOUD_SECRETID")
    secret_key = from_option_or_env(
        args.secret_key, "MPSFLOW_MPS_SECRET_KEY", "TENCENTCLOUD_SECRETKEY"
    )
    if not secret_id or not secret_key:
        raise ConfigurationError(
            "a SecretId and a SecretKey are required: pass --secret-id ID --secret-key KEY, or "
            "set TENCENTCLOUD_SECRETID and TENCENTCLOUD_SECRETKEY (the pair the clients sign with)"
        )
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    server = MpsServer(
        {secret_id: secret_key},
        max_clock_skew=args.max_clock_skew if args.max_clock_skew > 0 else None,
        time_field=args.time_filter,
    )
    try:
        server.load(*args.tasks)
    except (ValueError, OSError) as exc:
        print(f"mpsflow mps-server: error: {exc}", file=sys.stderr)
        return 2
    try:
        anyio.run(
            partial(
                serve_until_signal,
                command="mps-server",
                summary=partial(_summary, server),
            ),
            server,
            args.host,
            args.port,
        )
    except StartupError as exc:  # the port is taken, …: one line saying what to do
        print(f"mpsflow mps-server: error: {exc}", file=sys.stderr)
        return 3
    return 0
