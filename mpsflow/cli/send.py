"""``mpsflow send``: POST sample notifications to a callback URL, freshly signed.

Bodies come from .json/.jsonl files or folders; with a key each is re-signed the way MPS signs,
so a real app's signature check accepts them. ``--rate``, ``--concurrency`` and ``--repeat``
shape a load test; the summary counts answers by HTTP status.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from mpsflow.cli.common import EXIT_FAILED, EXIT_OK, Command, positive_float, positive_int
from mpsflow.clock import Clock, SystemClock
from mpsflow.errors import ConfigurationError
from mpsflow.signing import sign_notification

__all__ = ["COMMAND", "Pacer", "SendItem", "signed_body"]

_log = logging.getLogger("mpsflow.cli")


def _configure_send(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="callback URL, e.g. http://127.0.0.1:8080/mps/callback")
    parser.add_argument(
        "paths", nargs="+", metavar="FILE|DIR", help=".json/.jsonl files or folders"
    )
    parser.add_argument(
        "--sign-key",
        default=os.environ.get("MPSFLOW_SIGN_KEY"),
        help="NotifyKey to sign with (default: $MPSFLOW_SIGN_KEY; unsigned bodies go as they are)",
    )
    parser.add_argument(
        "--expires-in",
        type=int,
        default=600,
        help="signature lifetime in seconds: Timestamp = now + this (%(default)s, as MPS)",
    )
    parser.add_argument("--rate", type=positive_float, help="at most N requests per second")
    parser.add_argument(
        "--concurrency", type=positive_int, default=8, help="requests at once (%(default)s)"
    )
    parser.add_argument(
        "--repeat", type=positive_int, default=1, help="send the whole set N times (%(default)s)"
    )
    parser.add_argument(
        "--timeout", type=positive_float, default=30.0, help="seconds per request (%(default)s)"
    )
    parser.set_defaults(run=_send)


@dataclass(slots=True)
class SendItem:
    """One notification to send: where it came from, its bytes as read, and its parsed form."""

    name: str
    raw: bytes
    doc: dict[str, Any] | None
    """Parsed JSON object when it can be re-signed."""


def _load_items(paths: Sequence[str], signing: bool) -> list[SendItem]:
    import msgspec

    from mpsflow.sources.file import iter_notification_files

    items: list[SendItem] = []
    for path in iter_notification_files(paths):
        if path.suffix in (".jsonl", ".ndjson"):
            bodies = [
                (f"{path}:{n}", line.strip())
                for n, line in enumerate(path.read_bytes().splitlines(), 1)
                if line.strip()
            ]
        else:
            bodies = [(str(path), path.read_bytes())]
        for name, raw in bodies:
            doc: dict[str, Any] | None = None
            if signing:
                try:
                    parsed = msgspec.json.decode(raw)
                except msgspec.DecodeError:
                    parsed = None
                if isinstance(parsed, dict):
                    doc = parsed
                else:
                    _log.warning("%s is not a JSON object; sending it unsigned, as it is", name)
            items.append(SendItem(name, raw, doc))
    return items


def signed_body(item: SendItem, key: str | None, expires_in: int) -> bytes:
    """The body to send: re-signed the way MPS signs (see :func:`mpsflow.signing.sign`)."""
    if key is None or item.doc is None:
        return item.raw
    return sign_notification(item.raw, key, expires_at=int(time.time()) + expires_in)


class Pacer:
    """Spaces requests ``1/rate`` seconds apart across every sender (no limit without a rate)."""

    def __init__(self, rate: float | None, clock: Clock | None = None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.clock: Clock = clock or SystemClock()
        self._next: float | None = None

    async def wait(self) -> None:
        """Return when the next request may go."""
        if not self.interval:
            return
        now = self.clock.monotonic()
        slot = now if self._next is None else max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await self.clock.sleep(slot - now)


class _Progress:
    """A progress bar on a terminal; a few plain counter lines otherwise."""

    def __init__(self, total: int, out: TextIO) -> None:
        self.total = total
        self.done = 0
        self.out = out
        self.tty = out.isatty()
        self._step = max(1, total // 10)

    def advance(self) -> None:
        self.done += 1
        if self.tty:
            width = 30
            filled = width * self.done // self.total
            bar = "#" * filled + "." * (width - filled)
            self.out.write(f"\r[{bar}] {self.done}/{self.total}")
            if self.done == self.total:
                self.out.write("\n")
        elif self.done % self._step == 0 or self.done == self.total:
            self.out.write(f"sent {self.done}/{self.total}\n")
        self.out.flush()


def _send(args: argparse.Namespace) -> int:
    import anyio

    items = _load_items(args.paths, signing=args.sign_key is not None)
    if not items:
        raise ConfigurationError("no notifications found in the given paths")
    started = time.monotonic()
    counts = anyio.run(_send_all, args, items)
    elapsed = time.monotonic() - started
    total = sum(counts.values())
    print(f"sent {total} notification(s) in {elapsed:.2f}s ({total / max(elapsed, 1e-9):.1f}/s)")
    for status, n in sorted(counts.items()):
        print(f"  {status}: {n}")
    ok = all(status.isdigit() and 200 <= int(status) < 300 for status in counts)
    return EXIT_OK if ok else EXIT_FAILED


async def _send_all(args: argparse.Namespace, items: list[SendItem]) -> Counter[str]:
    import aiohttp
    import anyio

    plan = iter([item for _ in range(args.repeat) for item in items])
    progress = _Progress(len(items) * args.repeat, sys.stderr)
    counts: Counter[str] = Counter()
    pacer = Pacer(args.rate)

    async def worker(session: aiohttp.ClientSession) -> None:
        for item in plan:
            await pacer.wait()
            body = signed_body(item, args.sign_key, args.expires_in)
            try:
                async with session.post(
                    args.url, data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    await response.read()
                    counts[str(response.status)] += 1
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                counts[f"error ({type(exc).__name__})"] += 1
            progress.advance()

    timeout = aiohttp.ClientTimeout(total=args.timeout)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with (
        aiohttp.ClientSession(timeout=timeout, connector=connector) as session,
        anyio.create_task_group() as tg,
    ):
        for _ in range(args.concurrency):
            tg.start_soon(worker, session)
    return counts


COMMAND = Command("POST sample notifications to a callback URL, freshly signed", _configure_send)
"""The ``send`` entry of :data:`mpsflow.cli.COMMANDS`."""
