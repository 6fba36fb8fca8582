"""``mpsflow run``: load an app and serve it from the sources given on the command line.

The sources ``run`` can feed live in ``SOURCE_FLAGS``: each adds its own options and builds
its source from them (``--http``, ``--files``, ``--cmq``). ``--workers N`` hands HTTP to the
pre-fork supervisor (:mod:`mpsflow.cli.supervisor`).

Exit codes: 0 when stopped (SIGTERM/SIGINT) after draining, or when ``--files`` dead-lettered
nothing; 1 when ``--files`` dead-lettered something; 2 for a wrong command line or app
configuration; 3 when it could not start (a :class:`~mpsflow.errors.StartupError`: a port in
use, credentials refused, a dedup store that does not answer, a sink that cannot write; printed
as one line saying what to do); 130 when the same signal came twice and stopped it at once.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mpsflow.cli._heap import prepare_heap_for_serving
from mpsflow.cli.common import (
    DEFAULT_DEDUP_PATH,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STARTUP,
    Command,
    any_duration,
    bounded_int,
    cmq_endpoint,
    cmq_inbox,
    cmq_queue,
    duration,
    load_app,
    plain_http_address,
    positive_float,
    positive_int,
    require_cmq_keys,
    require_paths,
    use_dedup_option,
)
from mpsflow.cli.supervisor import prometheus_multiprocess, serve_workers
from mpsflow.clock import format_duration
from mpsflow.errors import ConfigurationError, StartupError
from mpsflow.inbox.sqlite import DEFAULT_MAX_ITEMS

if TYPE_CHECKING:
    from mpsflow.app import App
    from mpsflow.inbox.base import Inbox
    from mpsflow.sources.base import Source
    from mpsflow.sources.inprocess import InProcessSource
    from mpsflow.sources.reconcile import ReconcileSource

__all__ = ["COMMAND", "SOURCE_FLAGS", "SourceFlag", "add_reconcile_options", "reconcile_source"]

_log = logging.getLogger("mpsflow.cli")

_DEFAULT_HTTP = "127.0.0.1:8080"
_LOOKBACK, _INTERVAL, _GRACE = 24 * 3600.0, 300.0, 600.0
"""``--reconcile``'s defaults (the options default to None: given or not tells apart)."""
_HISTORY = 7 * 86400.0
"""How far back the MPS API lists tasks (7 days by the Chinese docs)."""
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


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
        type=positive_int,
        default=256,
        help="deliveries processed at once by each source (HTTP, CMQ); HTTP answers 503"
        " beyond it (%(default)s)",
    )
    group.add_argument(
        "--header-timeout",
        metavar="SECONDS",
        type=positive_float,
        default=10.0,
        help="seconds a request's headers may take to arrive, from the connection's start or"
        " the request's first byte; then 408 and the connection closed (%(default)s)",
    )
    group.add_argument(
        "--read-timeout",
        metavar="SECONDS",
        type=positive_float,
        default=30.0,
        help="seconds a request body may take to arrive once its headers are in (%(default)s)",
    )
    group.add_argument(
        "--min-rate",
        metavar="BYTES",
        type=bounded_int(0, 2**40),
        default=1024,
        help="bytes per second a request body must arrive at, on average, after its first 5"
        " seconds; slower gets 408 and the connection closed (%(default)s; 0: no minimum)",
    )
    group.add_argument(
        "--max-connections-per-peer",
        metavar="N",
        type=bounded_int(0, 2**31),
        default=256,
        help="open connections one client address may have; more are refused at once"
        " (%(default)s; 0: no cap; behind a reverse proxy, every client is the proxy)",
    )
    group.add_argument("--certfile", help="serve HTTPS with this certificate (PEM)")
    group.add_argument("--keyfile", help="private key of --certfile (PEM)")
    group.add_argument(
        "--handler-budget",
        metavar="SECONDS",
        type=positive_float,
        default=60.0,
        help="how long processing a notification may take: its inbox lease and dedup lease (after"
        " a crash what was in progress runs again this long after it started); a handler still"
        " running a second before then is cut off and retried (%(default)s)",
    )
    inbox = group.add_mutually_exclusive_group()
    inbox.add_argument(
        "--inbox",
        metavar="PATH|cmq://HOST/QUEUE",
        default="mpsflow-inbox.sqlite3",
        help="answer 200 once a notification is safe in this SQLite inbox, then process it from"
        " there (%(default)s; --workers share it); or in a CMQ queue, cmq://HOST[:PORT]/QUEUE"
        " (cmq+http:// for plain HTTP), which receivers on several machines share and CMQ"
        " workers consume (--cmq … --from-inbox)",
    )
    inbox.add_argument(
        "--no-inbox",
        action="store_true",
        help="answer only once processed (200 means processed; the sender keeps the"
        " notification until then)",
    )
    group.add_argument(
        "--inbox-max",
        metavar="N",
        type=positive_int,
        help=f"notifications a SQLite inbox holds before callbacks are answered 503"
        f" ({DEFAULT_MAX_ITEMS}; a CMQ queue's bound is its maxMsgHeapNum)",
    )
    group.add_argument(
        "--receive-only",
        action="store_true",
        help="with --inbox cmq://…: only append to the queue; CMQ workers elsewhere process it",
    )


def _http_source(
    args: argparse.Namespace,
    app: App,
    *,
    sock: socket.socket | None = None,
    metrics_dir: str | None = None,
) -> Source | None:
    from mpsflow.inbox import SQLiteInbox
    from mpsflow.sources.http import HttpSource

    address: tuple[str, int] | None = args.http
    if address is None:
        return None
    host, port = address
    queue = None if args.no_inbox else cmq_inbox(args.inbox)
    if args.receive_only and queue is None:
        raise ConfigurationError(
            "--receive-only goes with --inbox cmq://HOST/QUEUE (a SQLite inbox is processed by"
            " the receivers that share it)"
        )
    if args.inbox_max is not None and (queue is not None or args.no_inbox):
        raise ConfigurationError(
            "--inbox-max bounds a SQLite inbox (a CMQ queue's bound is its maxMsgHeapNum)"
        )
    inbox: Inbox | None = None
    if queue is not None:
        require_cmq_keys("--inbox cmq://…")
        inbox = _cmq_inbox(*queue, args)
        app.on_shutdown(inbox.close)  # its HTTP session lives as long as the app runs
    elif not args.no_inbox:
        inbox = SQLiteInbox(args.inbox, max_items=args.inbox_max or DEFAULT_MAX_ITEMS)
        app.on_shutdown(inbox.close)  # seals this process's body files, deletes processed ones
    return HttpSource(
        host,
        port,
        args.path,
        max_in_flight=args.max_in_flight,
        header_timeout=args.header_timeout,
        read_timeout=args.read_timeout,
        min_rate=args.min_rate,
        max_connections_per_peer=args.max_connections_per_peer,
        handler_budget=args.handler_budget,
        certfile=args.certfile,
        keyfile=args.keyfile,
        sock=sock,
        metrics_dir=metrics_dir,
        inbox=inbox,
        consume_inbox=not args.receive_only,
    )


def _cmq_inbox(endpoint: str, queue: str, args: argparse.Namespace) -> Inbox:
    from mpsflow.inbox import CmqInbox
    from mpsflow.tencentcloud.cmq.client import CmqClient
    from mpsflow.tencentcloud.cmq.credentials import EnvironmentCredentials

    plain_http = plain_http_address("--inbox", args.inbox)
    client = CmqClient(endpoint, EnvironmentCredentials(), plain_http_address=plain_http)
    return CmqInbox(
        client, queue, pollers=args.pollers, batch_size=args.batch, wait_seconds=args.wait
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
    require_paths(paths)
    return FileSource(*paths)


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
        type=cmq_endpoint,
        help="consume a queue at this API address, e.g. https://cmq-gz.public.tencenttdmq.com",
    )
    group.add_argument("--queue", metavar="NAME", type=cmq_queue, help="the queue (with --cmq)")
    group.add_argument(
        "--from-inbox",
        action="store_true",
        help="the queue is the --inbox cmq://… of mpsflow HTTP receivers: its notifications"
        " were checked at the door and are not checked again (their signature may expire"
        " while they wait)",
    )
    group.add_argument(
        "--pollers",
        metavar="N",
        type=positive_int,
        default=2,
        help="long polls at once (%(default)s)",
    )
    group.add_argument(
        "--batch",
        metavar="N",
        type=bounded_int(1, 16),
        default=16,
        help="messages per BatchReceiveMessage, 1-16 (%(default)s)",
    )
    group.add_argument(
        "--wait",
        metavar="SECONDS",
        type=bounded_int(0, 30),
        default=30,
        help="long-poll seconds, 0-30 (%(default)s)",
    )


def _cmq_source(args: argparse.Namespace, app: App) -> Source | None:
    endpoint: str | None = args.cmq
    queue: str | None = args.queue
    if endpoint is None:
        if queue is not None or args.from_inbox:
            flag = "--queue" if queue is not None else "--from-inbox"
            raise ConfigurationError(f"{flag} goes with --cmq ENDPOINT")
        return None
    if queue is None:
        raise ConfigurationError("--cmq needs --queue NAME")
    require_cmq_keys()
    from mpsflow.sources.cmq import CmqSource
    from mpsflow.tencentcloud.cmq.client import CmqClient
    from mpsflow.tencentcloud.cmq.credentials import EnvironmentCredentials

    plain_http = plain_http_address("--cmq", endpoint)
    client = CmqClient(endpoint, EnvironmentCredentials(), plain_http_address=plain_http)
    source = CmqSource(
        client,
        queue,
        max_in_flight=args.max_in_flight,
        pollers=args.pollers,
        batch_size=args.batch,
        wait_seconds=args.wait,
        admitted=args.from_inbox,
    )

    app.on_shutdown(client.aclose)  # its HTTP session lives as long as the app runs
    return source


SOURCE_FLAGS: list[SourceFlag] = [
    SourceFlag("http", _http_arguments, _http_source, workers=True),
    SourceFlag("files", _files_arguments, _files_source),
    SourceFlag("cmq", _cmq_arguments, _cmq_source),
]
"""Sources of ``mpsflow run``, in the order their options are listed."""


def _reconcile_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "reconciliation",
        "Find finished MPS tasks whose notification never arrived (DescribeTasks), and process"
        " them like the others. API keys come from TENCENTCLOUD_SECRETID and"
        " TENCENTCLOUD_SECRETKEY; its state lives in the dedup store.",
    )
    group.add_argument(
        "--reconcile",
        action="store_true",
        help="reconcile beside the other sources, one worker at a time",
    )
    group.add_argument(
        "--lookback",
        metavar="DURATION",
        type=duration,
        help="how far back to look: 90s, 30m, 24h, 3d (24h; the API keeps about 7 days)",
    )
    group.add_argument(
        "--interval",
        metavar="DURATION",
        type=duration,
        help="time between two scans, and the size of a scanned window (5m)",
    )
    add_reconcile_options(group)


_RECONCILE_OPTIONS = ("lookback", "interval", "grace", "mps_endpoint", "region")


def add_reconcile_options(group: argparse._ActionsContainer) -> None:
    """The options ``run --reconcile`` and ``reconcile`` share."""
    group.add_argument(
        "--grace",
        metavar="DURATION",
        type=any_duration,
        help="how long a real notification may take before its task is reconciled (10m)",
    )
    group.add_argument(
        "--mps-endpoint",
        metavar="URL",
        help="the MPS API (https://mps.tencentcloudapi.com; a local `mpsflow mps-server` for"
        " development)",
    )
    group.add_argument(
        "--region", help="the region of your MPS tasks, e.g. ap-guangzhou (X-TC-Region)"
    )


def reconcile_source(
    args: argparse.Namespace,
    app: App,
    *,
    flag: str = "--reconcile",
    lookback_option: str = "--lookback",
    window_option: str = "--interval",
) -> ReconcileSource:
    """The reconcile source of ``args``, its recorder added to ``app`` (after its dedup
    store is set: the markers live there). ``args.lookback`` and ``args.interval`` are given
    as ``lookback_option`` and ``window_option`` (``reconcile`` spells them ``--since`` and
    ``--window``): the errors name the options the user gave."""
    from mpsflow.dedup.idempotency import Idempotency
    from mpsflow.sources.reconcile import ReconcileSource
    from mpsflow.tencentcloud.mps import DEFAULT_ENDPOINT, MpsApiClient

    lookback = args.lookback or _LOOKBACK
    interval = args.interval or _INTERVAL
    grace = _GRACE if args.grace is None else args.grace
    given_lookback = _given(lookback_option, lookback, args.lookback)
    if grace >= lookback:
        raise ConfigurationError(
            f"{given_lookback} must be longer than {_given('--grace', grace, args.grace)}:"
            f" no finished task could be due{_advice(lookback_option, lookback, '--grace')}"
        )
    if interval > lookback:
        raise ConfigurationError(
            f"{_given(window_option, interval, args.interval)} must not be longer than"
            f" {given_lookback}{_advice(lookback_option, lookback, window_option)}"
        )
    configured = app.idempotency
    if configured is None:
        raise ConfigurationError(
            "reconciliation keeps its state in the dedup store: drop --no-dedup, or set"
            " App(idempotency=…)"
        )
    store = configured.store if isinstance(configured, Idempotency) else configured
    require_cmq_keys(flag)
    endpoint = args.mps_endpoint or DEFAULT_ENDPOINT
    try:
        client = MpsApiClient(endpoint=endpoint, region=args.region)
    except ValueError as exc:
        raise ConfigurationError(f"--mps-endpoint: {exc}") from None
    if lookback > _HISTORY:
        _log.warning(
            "the MPS API keeps about 7 days of tasks: a lookback of %.0f days finds no more",
            lookback / 86400,
        )
    source = ReconcileSource(
        client,
        store,
        lookback=lookback,
        interval=interval,
        grace=grace,
        handler_budget=args.handler_budget,
    )
    app.add_middleware(source.recorder, scope="delivery")
    app.on_shutdown(client.aclose)
    return source


def _given(option: str, seconds: float, given: float | None) -> str:
    """``--grace 10m``, with ``(its default)`` when the option was not given (``given`` is
    ``None``)."""
    default = "" if given is not None else " (its default)"
    return f"{option} {format_duration(seconds)}{default}"


def _advice(option: str, seconds: float, other: str) -> str:
    """What to change when the lookback ``option`` is too short for ``other``: under a minute,
    the unit was forgotten (``--since 24`` is 24 seconds)."""
    if seconds < 60:
        return f" (a number without a unit is seconds: did you mean {option} {seconds:g}h?)"
    return f"; give a longer {option} or a shorter {other}"


def _configure_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app", metavar="MODULE:APP", help="the App to run, e.g. myapp.main:app")
    for flag in SOURCE_FLAGS:
        flag.add_arguments(parser)
    _reconcile_arguments(parser)
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="serve HTTP from N processes sharing the port and the dedup store (%(default)s)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        metavar="SECONDS",
        type=positive_float,
        help="on SIGTERM/SIGINT, how long in-flight work may take to finish before it is left"
        " for redelivery (default: App(shutdown_timeout=…), 30); the same signal again stops"
        " at once",
    )
    dedup = parser.add_mutually_exclusive_group()
    dedup.add_argument(
        "--dedup",
        metavar="PATH",
        help=f"SQLite dedup store used when the app configures none ({DEFAULT_DEDUP_PATH})",
    )
    dedup.add_argument(
        "--no-dedup",
        action="store_true",
        help="do not add the default SQLite dedup store (an app that sets its own keeps it)",
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


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format=_LOG_FORMAT, stream=sys.stderr)
    with prometheus_multiprocess(args.workers):  # before the app imports prometheus-client
        return _run_app(args)


def _run_app(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    built = [(flag, source) for flag in SOURCE_FLAGS if (source := flag.build(args, app))]
    if not built:
        args.http = _parse_address(_DEFAULT_HTTP)
        default = _http_source(args, app)
        assert default is not None
        built = [(SOURCE_FLAGS[0], default)]
    others = [f"--{flag.name}" for flag, _ in built if not flag.workers]
    if args.workers > 1 and others:
        raise ConfigurationError(f"--workers applies to --http only, not {', '.join(others)}")
    use_dedup_option(app, args.dedup, none=args.no_dedup)
    if args.shutdown_timeout is not None:
        app.shutdown_timeout = args.shutdown_timeout
    if not args.reconcile:
        given = [
            f"--{name.replace('_', '-')}"
            for name in _RECONCILE_OPTIONS
            if getattr(args, name) is not None
        ]
        if given:
            verb = "goes" if len(given) == 1 else "go"
            raise ConfigurationError(f"{', '.join(given)} {verb} with --reconcile")
    beside: list[Source] = [reconcile_source(args, app)] if args.reconcile else []
    try:
        if args.workers > 1:

            def worker_sources(sock: socket.socket, metrics_dir: str) -> list[Source]:
                source = _http_source(args, app, sock=sock, metrics_dir=metrics_dir)
                assert source is not None
                return [source, *beside]

            return serve_workers(app, args, worker_sources)
        with _listening([source for _, source in built]):
            return _serve(app, [*(source for _, source in built), *beside])
    except StartupError as exc:
        print(f"mpsflow run: error: {exc}", file=sys.stderr)
        return EXIT_STARTUP


@contextmanager
def _listening(sources: list[Source]) -> Iterator[None]:
    """The HTTP sources' addresses listened on before the app starts, so a port in use fails
    before any store, inbox or sink has made a file; the sockets are closed at the end."""
    from mpsflow.sources.http import HttpSource

    with ExitStack() as stack:
        for source in sources:
            if isinstance(source, HttpSource) and source.sock is None:
                sock = source.listen()
                stack.callback(sock.close)
                source.sock = sock
        yield


def _serve(app: App, sources: list[Source]) -> int:
    """Serve ``sources``; after ``--files``, print what became of them. Exit 1 when anything
    was dead-lettered, or the shutdown timeout left work in flight for redelivery."""
    from mpsflow.sources.file import FileSource

    files = [source for source in sources if isinstance(source, FileSource)]
    prepare_heap_for_serving()
    try:
        left = app.serve(*sources)
    except KeyboardInterrupt:
        for source in files:
            print(_files_summary(source, app, stopped=True))
        raise
    for source in files:
        print(_files_summary(source, app))
    failed = left or any(_dead_lettered(source) for source in files)
    return EXIT_FAILED if failed else EXIT_OK


def _dead_lettered(source: InProcessSource) -> Counter[str]:
    """Dead-letter records the source's deliveries made, by kind."""
    from mpsflow.deadletter import dead_letter_kind
    from mpsflow.delivery import Settlement

    return Counter(
        dead_letter_kind(settled.outcome.cause)
        for settled in source.report
        if settled.outcome.settlement in (Settlement.DEAD_LETTERED, Settlement.REJECTED)
    )


def _files_summary(source: InProcessSource, app: App, *, stopped: bool = False) -> str:
    """``file: 4 acked (1 with no handler), 2 dead-lettered (exhausted 1, poison 1), 3
    retries; dead letters are in dead.jsonl``: what became of the deliveries of ``--files``."""
    from mpsflow.delivery import Cause, Settlement
    from mpsflow.sinks.jsonl import JsonlSink

    report = source.report
    acked = [s for s in report if s.outcome.settlement is Settlement.ACK]
    unmatched = sum(1 for s in acked if s.outcome.cause is Cause.UNMATCHED)
    retries = sum(1 for s in report if s.outcome.settlement is Settlement.RETRY)
    dead = _dead_lettered(source)
    parts = [f"{len(acked)} acked" + (f" ({unmatched} with no handler)" if unmatched else "")]
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(dead.items()))
    parts.append(f"{dead.total()} dead-lettered" + (f" ({kinds})" if kinds else ""))
    parts.append(f"{retries} {'retry' if retries == 1 else 'retries'}")
    end = "; stopped before the end" if stopped else ""
    sink = app.dead_letter_sink
    if dead and isinstance(sink, JsonlSink):
        end += f"; dead letters are in {sink.path}"
    return f"{source.name}: {', '.join(parts)}{end}"


COMMAND = Command("run an app on HTTP callbacks (or other sources)", _configure_run)
"""The ``run`` entry of :data:`mpsflow.cli.COMMANDS`."""
