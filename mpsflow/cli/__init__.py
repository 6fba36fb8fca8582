"""The ``mpsflow`` command line: ``run`` an app, ``send`` sample notifications, ``decode`` one.

Commands live in ``COMMANDS`` (name → ``Command``, or a lazy ``"module:attribute"`` naming
one), so other parts of mpsflow plug theirs in (``cmq-server``, ``deadletters``). The sources
``run`` can feed live in ``SOURCE_FLAGS``: each adds its own options and builds its source
from them (``--http``, ``--files``; ``--cmq`` plugs in the same way).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from mpsflow._loader import load_object
from mpsflow.clock import Clock, SystemClock
from mpsflow.errors import ConfigurationError, DecodeError

if TYPE_CHECKING:
    from mpsflow.app import App
    from mpsflow.events import LiveStreamNotification, Notification
    from mpsflow.sources.base import Source

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

_log = logging.getLogger("mpsflow.cli")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_DEFAULT_HTTP = "127.0.0.1:8080"
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


@dataclass(frozen=True, slots=True)
class Command:
    """One subcommand: ``configure`` adds its arguments and ``parser.set_defaults(run=f)``.

    ``f(args) -> int`` is the exit code.
    """

    help: str
    configure: Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True, slots=True)
class SourceFlag:
    """A source ``mpsflow run`` can feed: its options, and how to build it from them.

    ``build(args, app)`` returns ``None`` when the options were not given. ``workers``:
    whether ``--workers N`` can serve it from N processes (pre-bound listening socket).
    """

    name: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    build: Callable[[argparse.Namespace, App], Source | None]
    workers: bool = False


# -- run --------------------------------------------------------------------------------------


def _parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT``, ``:PORT`` (all interfaces) or ``PORT`` (loopback)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", text
    host = host.strip("[]") or "0.0.0.0"  # ":PORT": every interface
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range in {text!r}")
    return host, port


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _http_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("HTTP callbacks (the default source)")
    group.add_argument(
        "--http",
        metavar="HOST:PORT",
        type=_parse_address,
        help=f"serve MPS HTTP callbacks here (default {_DEFAULT_HTTP} when no source is given;"
        " port 0 picks a free one)",
    )
    group.add_argument("--path", default="/mps/callback", help="callback path (%(default)s)")
    group.add_argument(
        "--max-in-flight",
        type=_positive_int,
        default=256,
        help="deliveries processed at once by each source (HTTP, CMQ); HTTP answers 503"
        " beyond it (%(default)s)",
    )
    group.add_argument(
        "--read-timeout",
        type=_positive_float,
        default=30.0,
        help="seconds a request body may take to arrive (%(default)s)",
    )
    group.add_argument("--certfile", help="serve HTTPS with this certificate (PEM)")
    group.add_argument("--keyfile", help="private key of --certfile (PEM)")


def _http_source(
    args: argparse.Namespace,
    _app: App,
    *,
    sock: socket.socket | None = None,
    metrics_dir: str | None = None,
) -> Source | None:
    from mpsflow.sources.http import HttpSource

    address: tuple[str, int] | None = args.http
    if address is None:
        return None
    host, port = address
    return HttpSource(
        host,
        port,
        args.path,
        max_in_flight=args.max_in_flight,
        read_timeout=args.read_timeout,
        certfile=args.certfile,
        keyfile=args.keyfile,
        sock=sock,
        metrics_dir=metrics_dir,
    )


def _files_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("files (backfills, replays)")
    group.add_argument(
        "--files",
        nargs="+",
        metavar="PATH",
        help="process .json/.jsonl files or folders of them, then exit",
    )


def _files_source(args: argparse.Namespace, app: App) -> Source | None:
    from mpsflow.sources.file import FileSource

    paths: list[str] | None = args.files
    if not paths:
        return None
    return FileSource(*paths, clock=app.clock)


_CMQ_KEYS = ("TENCENTCLOUD_SECRETID", "TENCENTCLOUD_SECRETKEY")
_CMQ_QUEUE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def _cmq_endpoint(text: str) -> str:
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


def _cmq_queue(text: str) -> str:
    if not _CMQ_QUEUE_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected a CMQ queue name (a letter, then up to 63 letters, digits, - or _), "
            f"got {text!r}"
        )
    return text


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low} to {high}, got {value}")
        return value

    return parse


def _cmq_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "TDMQ-CMQ queue",
        "API keys come from TENCENTCLOUD_SECRETID and TENCENTCLOUD_SECRETKEY (with "
        "TENCENTCLOUD_SESSIONTOKEN for temporary keys), read again for every request. "
        "--max-in-flight caps the messages received and not yet settled.",
    )
    group.add_argument(
        "--cmq",
        metavar="ENDPOINT",
        type=_cmq_endpoint,
        help="consume a queue at this API address, e.g. https://cmq-gz.public.tencenttdmq.com",
    )
    group.add_argument("--queue", metavar="NAME", type=_cmq_queue, help="the queue (with --cmq)")
    group.add_argument(
        "--pollers",
        metavar="N",
        type=_positive_int,
        default=2,
        help="long polls at once (%(default)s)",
    )
    group.add_argument(
        "--batch",
        metavar="N",
        type=_bounded_int(1, 16),
        default=16,
        help="messages per BatchReceiveMessage, 1-16 (%(default)s)",
    )
    group.add_argument(
        "--wait",
        metavar="SECONDS",
        type=_bounded_int(0, 30),
        default=30,
        help="long-poll seconds, 0-30 (%(default)s)",
    )


def _cmq_source(args: argparse.Namespace, app: App) -> Source | None:
    endpoint: str | None = args.cmq
    queue: str | None = args.queue
    if endpoint is None:
        if queue is not None:
            raise ConfigurationError("--queue goes with --cmq ENDPOINT")
        return None
    if queue is None:
        raise ConfigurationError("--cmq needs --queue NAME")
    missing = [name for name in _CMQ_KEYS if not os.environ.get(name)]
    if missing:
        raise ConfigurationError(
            f"--cmq needs API keys in the environment: set {' and '.join(missing)} "
            "(and TENCENTCLOUD_SESSIONTOKEN for temporary keys)"
        )
    from mpsflow.sources.cmq import CmqSource
    from mpsflow.tencentcloud.cmq.client import CmqClient
    from mpsflow.tencentcloud.cmq.credentials import EnvironmentCredentials

    client = CmqClient(endpoint, EnvironmentCredentials())
    source = CmqSource(
        client,
        queue,
        max_in_flight=args.max_in_flight,
        pollers=args.pollers,
        batch_size=args.batch,
        wait_seconds=args.wait,
        clock=app.clock,
    )

    async def announce() -> None:
        _log.info("consuming CMQ queue %s at %s", queue, client.url)

    app.on_startup(announce)
    app.on_shutdown(client.aclose)  # its HTTP session lives as long as the app runs
    return source


SOURCE_FLAGS: list[SourceFlag] = [
    SourceFlag("http", _http_arguments, _http_source, workers=True),
    SourceFlag("files", _files_arguments, _files_source),
    SourceFlag("cmq", _cmq_arguments, _cmq_source),
]
"""Sources of ``mpsflow run``, in the order their options are listed."""


def _configure_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app", metavar="MODULE:APP", help="the App to run, e.g. myapp.main:app")
    for flag in SOURCE_FLAGS:
        flag.add_arguments(parser)
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="serve HTTP from N processes sharing the port and the dedup store (%(default)s)",
    )
    dedup = parser.add_mutually_exclusive_group()
    dedup.add_argument(
        "--dedup",
        metavar="PATH",
        default="mpsflow-dedup.sqlite3",
        help="SQLite dedup store used when the app configures none (%(default)s)",
    )
    dedup.add_argument(
        "--no-dedup", action="store_true", help="do not add the default SQLite dedup store"
    )
    _log_level_argument(parser)
    parser.set_defaults(run=_run)


def _log_level_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="logging threshold (%(default)s)",
    )


def _load_app(spec: str) -> App:
    from mpsflow.app import App

    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `mpsflow run myapp:app` finds ./myapp.py
    app = load_object(spec)
    if not isinstance(app, App):
        raise ConfigurationError(f"{spec} is a {type(app).__name__}, not an mpsflow App")
    return app


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format=_LOG_FORMAT, stream=sys.stderr)
    app = _load_app(args.app)
    built = [(flag, source) for flag in SOURCE_FLAGS if (source := flag.build(args, app))]
    if not built:
        args.http = _parse_address(_DEFAULT_HTTP)
        default = _http_source(args, app)
        assert default is not None
        built = [(SOURCE_FLAGS[0], default)]
    others = [f"--{flag.name}" for flag, _ in built if not flag.workers]
    if args.workers > 1 and others:
        raise ConfigurationError(f"--workers applies to --http only, not {', '.join(others)}")
    if not args.no_dedup:
        app.use_default_idempotency(args.dedup)
    if args.workers > 1:
        return _serve_workers(app, args)
    app.serve(*(source for _, source in built))
    return EXIT_OK


# -- run --workers: a supervisor of forked workers -------------------------------------------


class _Supervisor:
    """Forks N workers that serve one inherited listening socket; restarts crashed ones.

    SIGTERM/SIGINT are forwarded to every worker (each drains gracefully); the supervisor
    exits once they all have. A worker that keeps dying right after start (5 times in a
    row) makes it give up and stop the others.
    """

    _QUICK_DEATH = 1.0
    _GIVE_UP_AFTER = 5

    def __init__(self, count: int, work: Callable[[], int]) -> None:
        self.count = count
        self.work = work
        self.workers: dict[int, float] = {}  # pid -> start time
        self.stopping = False
        self._wake = threading.Event()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True
        self._wake.set()
        for pid in list(self.workers):
            _kill(pid, signal.SIGTERM)

    def _spawn(self) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = EXIT_FAILED
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                code = self.work()
            except BaseException:
                _log.exception("worker failed")
            finally:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.workers[pid] = time.monotonic()
        _log.info("worker %d started", pid)

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        failed = False
        quick_deaths = 0
        try:
            for _ in range(self.count):
                self._spawn()
            while self.workers:
                pid, status = os.wait()
                started = self.workers.pop(pid, None)
                if started is None:
                    continue
                code = os.waitstatus_to_exitcode(status)
                if self.stopping:
                    failed |= code != 0
                    _log.info("worker %d exited (%d)", pid, code)
                    continue
                _log.error("worker %d exited unexpectedly (%d); restarting it", pid, code)
                quick_deaths = (
                    quick_deaths + 1 if time.monotonic() - started < self._QUICK_DEATH else 0
                )
                if quick_deaths >= self._GIVE_UP_AFTER:
                    _log.error("workers keep dying at start; giving up")
                    failed = True
                    self._on_signal(signal.SIGTERM, None)
                    continue
                if quick_deaths:
                    self._wake.wait(min(0.1 * 2**quick_deaths, 5.0))
                if not self.stopping:
                    self._spawn()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return EXIT_FAILED if failed else EXIT_OK


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _serve_workers(app: App, args: argparse.Namespace) -> int:
    if not hasattr(os, "fork"):
        raise ConfigurationError("--workers needs a platform with fork()")
    host, port = args.http
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=1024)
    bound_port = sock.getsockname()[1]
    args.http = (host, bound_port)
    scheme = "https" if args.certfile else "http"
    shown = f"[{host}]" if ":" in host else host
    _log.info(
        "serving MPS callbacks on %s://%s:%d%s with %d workers",
        scheme,
        shown,
        bound_port,
        args.path,
        args.workers,
    )

    # Each worker publishes its counters here, so any of them answers /metrics for all.
    metrics_dir = tempfile.mkdtemp(prefix="mpsflow-metrics-")

    def work() -> int:
        source = _http_source(args, app, sock=sock, metrics_dir=metrics_dir)
        assert source is not None
        app.serve(source)
        return EXIT_OK

    try:
        return _Supervisor(args.workers, work).run()
    finally:
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


# -- send -------------------------------------------------------------------------------------


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
    parser.add_argument("--rate", type=_positive_float, help="at most N requests per second")
    parser.add_argument(
        "--concurrency", type=_positive_int, default=8, help="requests at once (%(default)s)"
    )
    parser.add_argument(
        "--repeat", type=_positive_int, default=1, help="send the whole set N times (%(default)s)"
    )
    parser.add_argument(
        "--timeout", type=_positive_float, default=30.0, help="seconds per request (%(default)s)"
    )
    parser.set_defaults(run=_send)


@dataclass(slots=True)
class _Item:
    name: str
    raw: bytes
    doc: dict[str, Any] | None
    """Parsed JSON object when it can be re-signed."""


def _load_items(paths: Sequence[str], signing: bool) -> list[_Item]:
    import msgspec

    from mpsflow.sources.file import iter_notification_files

    items: list[_Item] = []
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
            items.append(_Item(name, raw, doc))
    return items


def _signed(item: _Item, key: str | None, expires_in: int) -> bytes:
    """The body to send: re-signed the way MPS signs (``Sign = MD5(str(Timestamp) + key)``)."""
    if key is None or item.doc is None:
        return item.raw
    import msgspec

    expires = int(time.time()) + expires_in
    doc = dict(item.doc)
    doc["Timestamp"] = expires
    doc["Sign"] = hashlib.md5(f"{expires}{key}".encode()).hexdigest()
    return msgspec.json.encode(doc)


class _Pacer:
    """Spaces requests ``1/rate`` seconds apart across every sender (no limit without a rate)."""

    def __init__(self, rate: float | None, clock: Clock | None = None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.clock: Clock = clock or SystemClock()
        self._next: float | None = None

    async def wait(self) -> None:
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


async def _send_all(args: argparse.Namespace, items: list[_Item]) -> Counter[str]:
    import aiohttp
    import anyio

    plan = iter([item for _ in range(args.repeat) for item in items])
    progress = _Progress(len(items) * args.repeat, sys.stderr)
    counts: Counter[str] = Counter()
    pacer = _Pacer(args.rate)

    async def worker(session: aiohttp.ClientSession) -> None:
        for item in plan:
            await pacer.wait()
            body = _signed(item, args.sign_key, args.expires_in)
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


# -- decode -----------------------------------------------------------------------------------


def _configure_decode(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a notification (.json; '-' reads standard input)")
    parser.add_argument(
        "--json", action="store_true", help="print the decoded notification as wire JSON"
    )
    parser.set_defaults(run=_decode)


def _decode(args: argparse.Namespace) -> int:
    from mpsflow.codec import decode_any, encode

    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    try:
        notification = decode_any(data)
    except DecodeError as exc:
        print(f"error: {args.file} is not a valid MPS notification", file=sys.stderr)
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


# -- the parser -------------------------------------------------------------------------------

COMMANDS: dict[str, Command | str] = {
    "run": Command("run an app on HTTP callbacks (or other sources)", _configure_run),
    "send": Command("POST sample notifications to a callback URL, freshly signed", _configure_send),
    "decode": Command("decode a notification file and print a summary", _configure_decode),
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
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
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
