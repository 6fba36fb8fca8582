"""``mpsflow decode``: decode one notification file and print what it says.

A summary (event, task, status, error, input, then each subtask with its outputs), or the
decoded notification as wire JSON with ``--json``; an invalid file exits 2 with the JSON path
of the problem.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mpsflow.cli.common import EXIT_OK, EXIT_USAGE, Command
from mpsflow.errors import ConfigurationError, DecodeError

if TYPE_CHECKING:
    from mpsflow.events import LiveStreamNotification, Notification

__all__ = ["COMMAND"]


def _configure_decode(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a notification (.json; '-' reads standard input)")
    parser.add_argument(
        "--json", action="store_true", help="print the decoded notification as wire JSON"
    )
    parser.set_defaults(run=_decode)


def _decode(args: argparse.Namespace) -> int:
    from mpsflow.codec import decode_any, encode

    if args.file != "-" and Path(args.file).is_dir():
        raise ConfigurationError(f"{args.file} is a folder: give one notification file")
    if args.file != "-" and not Path(args.file).exists():
        raise ConfigurationError(f"no such file or folder: {args.file}")
    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    try:
        notification = decode_any(data)
    except DecodeError as exc:
        print(
            f"mpsflow decode: error: {args.file} is not a valid MPS notification", file=sys.stderr
        )
        print(f"  {exc}", file=sys.stderr)
        print(f"  path: {exc.path}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        sys.stdout.write(encode(notification).decode() + "\n")
        return EXIT_OK
    for line in _describe(notification):
        print(line)
    return EXIT_OK


def _describe(notification: Notification | LiveStreamNotification) -> Iterator[str]:
    from mpsflow.events import Notification
    from mpsflow.events.locations import iter_output_paths

    if isinstance(notification, Notification):
        yield f"event:   {notification.event_type}"
        yield f"task:    {notification.task_id or '-'}"
        yield f"status:  {notification.status or '-'}"
        event = notification.event
        code = getattr(event, "err_code", None)
        if code:
            yield f"error:   {code} {getattr(event, 'message', '') or ''}".rstrip()
        location = notification.input
        if location is not None:
            where = location.url or "/".join(
                p for p in (location.bucket, (location.object or "").lstrip("/")) if p
            )
            region = f" ({location.region})" if location.region else ""
            yield f"input:   {location.kind or '?'} {where}{region}"
        if notification.session_context:
            yield f"context: {notification.session_context}"
    else:
        yield f"live:    {notification.notification_type}"
        yield f"task:    {notification.task_id or '-'}"
    subtasks = list(notification.subtasks())
    # A category item (an AiAnalysisResult, ...) is followed by the task inside it: show the
    # task, which carries the same status and error under its precise key.
    shown = [
        sub
        for index, sub in enumerate(subtasks)
        if index + 1 == len(subtasks) or not subtasks[index + 1].where.startswith(sub.where + ".")
    ]
    yield f"subtasks ({len(shown)}):"
    for sub in shown:
        line = f"  {sub.key:<40} {sub.status or '-'}"
        if sub.failed:
            message = getattr(sub.result, "message", "") or ""
            line += f"  error={sub.error or '?'}" + (f" {message}" if message else "")
        if sub.raw is not None:
            line += "  (unknown type; raw JSON kept)"
        yield line
        try:
            outputs = list(iter_output_paths(sub.result, sub.key))
        except (AttributeError, TypeError):
            outputs = []
        for out in outputs:
            storage = f"{out.kind or '?'}:{out.bucket}" if out.bucket else (out.kind or "?")
            yield f"      -> {storage} {out.path}"


COMMAND = Command("decode a notification file and print a summary", _configure_decode)
"""The ``decode`` entry of :data:`mpsflow.cli.COMMANDS`."""
