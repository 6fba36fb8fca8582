"""The HTTP callback source: the server MPS POSTs notifications to (``NotifyType=URL``).

One aiohttp low-level server (no router, no middleware stack: the hot path is a couple of
string compares) that turns each POST on ``path`` into a ``Delivery`` of the raw body and
answers with the status the pipeline's outcome calls for:

=================================  =========================================================
outcome (settlement, cause)        response
=================================  =========================================================
acked                              200 ``{"code":0}``
dead-lettered (Reject, exhausted)  200 ``{"code":0}``: recorded, MPS need not resend it
dead-lettered, ``MALFORMED``       400 ``{"code":400,"error":…,"path":"$.X"}``
dead-lettered, ``TOO_LARGE``       413
body over the limit at the door    413, not read and not recorded (``Content-Length`` or
                                   the bytes read so far are over ``max_body_size``)
rejected, ``UNAUTHENTICATED``      401, never retried by the pipeline
rejected otherwise                 400
retry, ``ERROR``/``TIMEOUT``       500 with ``Retry-After``
retry otherwise (busy, deferred)   503 with ``Retry-After``
=================================  =========================================================

With an ``inbox`` (``mpsflow run``'s default), a POST is not processed before the answer: the
body passes the app's admission checks (``runtime.admit``: the signature, the decode; refusals
are answered by the table above), is appended to the durable inbox, and is answered 200 once
the append is committed; the pipeline then consumes the inbox (its ``consumer``, run by this
source unless ``consume_inbox`` is off). A full inbox, or one whose storage fails, is answered
503 with ``Retry-After``, so the sender keeps the notification.

This table is the only place where an outcome becomes a status code: the pipeline speaks
in domain words (:class:`~mpsflow.delivery.Cause`), and the JSON path of a malformed body
travels as ``Outcome.path``, never inside the reason.

When a notification that failed comes again (MPS's retry policy is undocumented; an operator
or ``mpsflow send`` may resend it), the source knows it by content (``redeliveries``), so it
is the next ``attempt`` and the app's ``RetryPolicy`` runs out into the dead-letter sink
instead of failing forever.

The source also bounds the requests in flight (503 + ``Retry-After`` when full), the body
size, keeps connections alive, serves ``GET /healthz``, ``/readyz`` and ``/metrics``, and shuts
down gracefully: on ``stop`` it reports not-ready, stops accepting, and lets in-flight requests
finish. All it knows of the app comes from the :class:`~mpsflow.sources.runtime.SourceRuntime`
it runs with (consumer, clock, body limit, metrics, readiness probe, shutdown timeout).

The URL is public, so slow or hostile senders must not hold the service (see
:class:`_Connection` for how each bound is built on aiohttp's low-level server):

- A request counts as *in flight* (``max_in_flight``) only once its whole body has arrived:
  connections still sending headers or a body hold no slot, so a real sender is served
  beside any number of slow ones.
- ``header_timeout``: a request's head (request line and headers) must be complete within
  that many seconds of the connection opening, or of the request's first byte on a kept-alive
  connection; otherwise the connection gets a 408 and is closed. (aiohttp has no such
  timeout.) Idle kept-alive connections are closed after ``keepalive_timeout``.
- ``read_timeout`` bounds the body's whole transfer, and ``min_rate`` its pace: after
  ``min_rate_grace`` seconds, at least ``min_rate`` bytes per second on average must have
  arrived. A body too slow for either gets 408 and the connection is closed.
- ``max_connections_per_peer``: a peer address with that many open connections has further
  ones refused at once (a canned 503 and a close, before any parsing), which costs other
  peers nothing.
- Memory: a connection is released as soon as its peer goes. (aiohttp reads the unread body
  of a request answered early for up to 10 s, "lingering", and does not notice the peer
  closing meanwhile: a flood of early-answered partial bodies kept thousands of connections,
  their headers and buffers alive.) After a flood of connections ends, the memory the C
  allocator kept is handed back to the system (``malloc_trim`` where glibc has it), so the
  process returns near its baseline.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import gc
import itertools
import logging
import math
import os
import socket
import ssl
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import anyio
import msgspec
from aiohttp import StreamReader, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.web_protocol import RequestHandler

from mpsflow._throttle import LogThrottle, held_back
from mpsflow.context import AnyNotification
from mpsflow.delivery import Cause, Delivery, Outcome, Settlement
from mpsflow.errors import ConfigurationError, InboxRefusedBody, InboxUnavailable, StartupError
from mpsflow.inbox.base import Inbox
from mpsflow.inbox.source import InboxSource
from mpsflow.observability.metrics import InMemoryMetrics
from mpsflow.observability.prometheus import CONTENT_TYPE, format_family, render_metrics
from mpsflow.observability.workers import WorkerMetrics
from mpsflow.sources.base import Source
from mpsflow.sources.redelivery import RedeliveryCounter
from mpsflow.sources.runtime import SourceRuntime

__all__ = ["HttpSource", "listen"]

_log = logging.getLogger("mpsflow.sources.http")

_JSON = "application/json"
_OK_BODY = b'{"code":0}'
_READY_BODY = b'{"ready":true}'
_DRAINING_BODY = b'{"ready":false,"reason":"draining"}'
_MAX_REQUEST_ID = 128
_SERVER_ERRORS = frozenset({Cause.ERROR, Cause.TIMEOUT})
"""Retry causes answered 500 (something failed); every other retry is 503 (busy, deferred)."""
_ENCODER = msgspec.json.Encoder()


class HttpSource:
    """Receives MPS callbacks over HTTP(S) and feeds them to the pipeline.

    ``max_body_size`` defaults to the runtime's (the app's); ``handler_budget`` sets each
    delivery's deadline (what a dedup lease may rely on); ``shutdown_timeout`` defaults to the
    runtime's. ``max_in_flight`` bounds the callbacks whose body has arrived and that are being
    admitted or processed (503 beyond it).

    Slow and hostile senders (see the module docstring): ``header_timeout`` bounds how long a
    request's head may take; ``read_timeout`` how long its body may take once the head is in,
    and ``min_rate`` (bytes per second, on average, counted after ``min_rate_grace`` seconds;
    0 turns it off) how slowly it may arrive; both answer 408 and close the connection.
    ``max_connections_per_peer`` caps the open connections of one peer address (0: no cap;
    behind a reverse proxy every connection comes from the proxy, so raise it or turn it off
    there and let the proxy cap its clients).

    Listen on ``host``/``port`` (``port=0`` picks a free one, see ``address``), or on a
    ready ``sock`` (bound and listening, e.g. one socket shared by forked workers; it stays
    open, yours to close); ``reuse_port`` sets ``SO_REUSEPORT`` on a socket the source binds
    itself. TLS: ``ssl_context``, or ``certfile``/``keyfile``. ``drain_delay`` keeps
    accepting (answering ``/readyz`` with 503) for that long after ``stop`` so a load
    balancer notices before the listener closes.

    ``inbox`` answers 200 once an admitted body is durable there, and processes it from there
    (see the module docstring); a full inbox is answered 503 with ``Retry-After:
    inbox_retry_after``. Without one, the answer waits for the processing ("200 means
    processed": the sender holds the notification until then). ``consume_inbox=False`` only
    receives: the inbox's consumers run elsewhere (a shared queue such as
    :class:`~mpsflow.inbox.cmq.CmqInbox`, consumed by CMQ workers).

    ``metrics_dir`` makes several processes serving one port (``--workers``) answer
    ``/metrics`` with their combined counts: each publishes its own to that directory every
    ``metrics_interval`` seconds and when it stops, and journals them there before it answers
    a callback, so a worker killed at any moment leaves the counts of every callback it
    answered (see :mod:`mpsflow.observability.workers`; needs the default ``InMemoryMetrics``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        path: str = "/mps/callback",
        *,
        max_in_flight: int = 256,
        max_body_size: int | None = None,
        header_timeout: float = 10.0,
        read_timeout: float = 30.0,
        min_rate: float = 1024.0,
        min_rate_grace: float = 5.0,
        max_connections_per_peer: int = 256,
        handler_budget: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        certfile: str | os.PathLike[str] | None = None,
        keyfile: str | os.PathLike[str] | None = None,
        sock: socket.socket | None = None,
        reuse_port: bool = False,
        backlog: int = 1024,
        keepalive_timeout: float = 75.0,
        drain_delay: float = 0.0,
        shutdown_timeout: float | None = None,
        access_log: bool = False,
        remember_failures: int = 4096,
        metrics_dir: str | os.PathLike[str] | None = None,
        metrics_interval: float = 1.0,
        name: str = "http",
        inbox: Inbox | None = None,
        inbox_retry_after: float = 5.0,
        consume_inbox: bool = True,
    ) -> None:
        if not path.startswith("/"):
            raise ConfigurationError(f"the callback path must start with '/', got {path!r}")
        if max_in_flight < 1:
            raise ConfigurationError("max_in_flight must be at least 1")
        if max_body_size is not None and max_body_size < 1:
            raise ConfigurationError("max_body_size must be positive")
        if header_timeout <= 0 or read_timeout <= 0 or handler_budget <= 0:
            raise ConfigurationError(
                "header_timeout, read_timeout and handler_budget must be positive"
            )
        if min_rate < 0 or min_rate_grace < 0:
            raise ConfigurationError("min_rate and min_rate_grace must not be negative")
        if max_connections_per_peer < 0:
            raise ConfigurationError("max_connections_per_peer must not be negative (0: no cap)")
        if drain_delay < 0:
            raise ConfigurationError("drain_delay must not be negative")
        if metrics_interval <= 0:
            raise ConfigurationError("metrics_interval must be positive")
        if ssl_context is not None and certfile is not None:
            raise ConfigurationError("pass either ssl_context or certfile/keyfile, not both")
        if keyfile is not None and certfile is None:
            raise ConfigurationError("keyfile needs certfile")
        if certfile is not None:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(certfile, keyfile)
        self.name = name
        self.host = host
        self.port = port
        self.path = path
        self.max_in_flight = max_in_flight
        self.max_body_size = max_body_size
        self.header_timeout = header_timeout
        self.read_timeout = read_timeout
        self.min_rate = min_rate
        self.min_rate_grace = min_rate_grace
        self.max_connections_per_peer = max_connections_per_peer
        self.handler_budget = handler_budget
        self.ssl_context = ssl_context
        self.reuse_port = reuse_port
        self.backlog = backlog
        self.keepalive_timeout = keepalive_timeout
        self.drain_delay = drain_delay
        self.shutdown_timeout = shutdown_timeout
        self.access_log = access_log
        self.metrics_dir = metrics_dir
        self.metrics_interval = metrics_interval
        self.inbox = inbox
        self.inbox_retry_after = inbox_retry_after
        self.consume_inbox = consume_inbox
        self._shared: WorkerMetrics | None = None
        self._sock = sock
        self.address: tuple[str, int] | None = None
        """``(host, port)`` actually listened on, once serving."""
        self.redeliveries = RedeliveryCounter(remember_failures)
        """Failed deliveries per notification: the next POST of the same content is the next
        attempt, so the app's ``RetryPolicy`` can run out (counted in this process only)."""
        self.responses: Counter[int] = Counter()
        """Status codes answered on the callback path (exported on ``/metrics``)."""
        self._serving: anyio.Event | None = None
        self._draining = False
        self._in_flight = 0
        self._reading = 0
        self._connections: _Connections | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runtime: SourceRuntime | None = None
        """The runtime of the current ``run`` (consumer, clock, metrics, readiness, …)."""
        self._inbox_lines: LogThrottle | None = None
        """Rate-limits the lines saying the inbox is full or failing."""
        self._append: Callable[[bytes, AnyNotification | None], Awaitable[bool]] | None = None
        """The inbox's consumer in this process, which takes appends in memory (see
        ``InboxSource.append``); None: append to the inbox itself."""

    # -- public state ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The callback URL (with the real port once serving)."""
        host, port = self.address or (self.host, self.port)
        scheme = "https" if self.ssl_context is not None else "http"
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{port}{self.path}"

    @property
    def in_flight(self) -> int:
        """Callback requests whose body has arrived, being admitted or processed now."""
        return self._in_flight

    @property
    def reading(self) -> int:
        """Callback requests whose body is still arriving (they hold no in-flight slot)."""
        return self._reading

    @property
    def connections(self) -> int:
        """Connections open now (0 when not serving)."""
        connections = self._connections
        return connections.open if connections is not None else 0

    @property
    def draining(self) -> bool:
        """True once ``stop`` was set: not ready, new callbacks get 503."""
        return self._draining

    async def wait_serving(self) -> tuple[str, int]:
        """Wait until the server listens; return its ``(host, port)``."""
        if self._serving is None:
            self._serving = anyio.Event()
        await self._serving.wait()
        assert self.address is not None
        return self.address

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, runtime: SourceRuntime) -> None:
        """Serve until ``runtime.stop`` is set, then drain in-flight requests and return.

        With an inbox, its consumer runs beside the server (unless ``consume_inbox`` is off)
        and drains its deliveries too; what is still in the inbox waits there for the next
        start.
        """
        inbox = self.inbox
        if inbox is None:
            await self._serve(runtime)
            return
        await _check_inbox(inbox)
        cannot_start: list[StartupError] = []
        try:
            async with anyio.create_task_group() as tg:
                if self.consume_inbox:
                    consumer = inbox.consumer(
                        name=self.name,
                        max_in_flight=self.max_in_flight,
                        lease_seconds=self.handler_budget,
                    )
                    if isinstance(consumer, InboxSource):  # hands appends over in memory
                        self._append = consumer.append
                    tg.start_soon(_consume, consumer, runtime, cannot_start, tg.cancel_scope)
                await self._serve(runtime)
            if cannot_start:  # the app ends with its one line instead of restarting the source
                raise cannot_start[0]
        finally:
            self._append = None
            with anyio.CancelScope(shield=True):
                await self._report_inbox(inbox)

    async def _report_inbox(self, inbox: Inbox) -> None:
        try:
            waiting = await inbox.size()
        except InboxUnavailable:
            return
        if waiting:
            _log.info(
                "%d notification(s) wait in the inbox %s for the next start",
                waiting,
                inbox.describe(),
            )

    async def _serve(self, runtime: SourceRuntime) -> None:
        self._runtime = runtime
        self._draining = False
        # The server closes the socket it serves on: serve a duplicate of a given one, so
        # a restart (or the caller) still has it.
        sock = _duplicate(self._sock) if self._sock is not None else self._listen()
        host, port = sock.getsockname()[:2]
        self.address = (str(host), int(port))
        connections = _Connections(
            header_timeout=self.header_timeout,
            max_per_peer=self.max_connections_per_peer,
        )
        self._connections = connections
        server = _Server(
            self._handle,
            connections,
            keepalive_timeout=self.keepalive_timeout,
            access_log=_log if self.access_log else None,
        )
        shutdown_timeout = self.shutdown_timeout
        if shutdown_timeout is None:
            shutdown_timeout = runtime.shutdown_timeout
        runner = web.ServerRunner(server, shutdown_timeout=shutdown_timeout)
        await runner.setup()
        self._shared = self._worker_metrics(runtime)
        publisher = (
            asyncio.get_running_loop().create_task(self._publish_metrics())
            if self._shared is not None
            else None
        )
        try:
            site = web.SockSite(runner, sock, ssl_context=self.ssl_context, backlog=self.backlog)
            await site.start()
            _log.info("serving MPS callbacks on %s", self.url)
            if self._serving is None:
                self._serving = anyio.Event()
            self._serving.set()
            await runtime.stop.wait()
            self._draining = True
            if self.drain_delay > 0:
                await anyio.sleep(self.drain_delay)
            _log.debug("draining %d in-flight callback(s)", self._in_flight)
            await runner.cleanup()
        finally:
            self._draining = True
            self._serving = None
            if runner.server is not None:  # not cleaned up gracefully: cancelled or failed
                for task in list(self._tasks):
                    task.cancel()
                with anyio.CancelScope(shield=True), anyio.move_on_after(5.0):
                    await runner.cleanup()
            sock.close()
            connections.close()
            if publisher is not None:
                publisher.cancel()
                with anyio.CancelScope(shield=True):
                    await asyncio.wait([publisher])
                self._publish_once()  # the final counts stay for the combined view
                if self._shared is not None:
                    self._shared.close()

    def _worker_metrics(self, runtime: SourceRuntime) -> WorkerMetrics | None:
        if self.metrics_dir is None:
            return None
        if not isinstance(runtime.metrics, InMemoryMetrics):
            _log.warning(
                "metrics_dir is ignored: only InMemoryMetrics are combined across workers "
                "(for prometheus-client, use its multiprocess mode)"
            )
            return None
        return WorkerMetrics(self.metrics_dir)

    async def _publish_metrics(self) -> None:
        while True:
            self._publish_once()
            await anyio.sleep(self.metrics_interval)

    def _in_memory_metrics(self) -> InMemoryMetrics | None:
        """The runtime's metrics when they can be combined across workers."""
        runtime = self._runtime
        metrics = runtime.metrics if runtime is not None else None
        return metrics if isinstance(metrics, InMemoryMetrics) else None

    def _publish_once(self) -> None:
        metrics = self._in_memory_metrics()
        if self._shared is None or metrics is None:
            return
        try:
            self._shared.publish(metrics, self.responses)
        except OSError:
            _log.warning("could not publish this worker's metrics", exc_info=True)

    def _record_metrics(self) -> None:
        shared = self._shared
        if shared is not None:
            metrics = self._in_memory_metrics()
            if metrics is not None:
                shared.record(metrics, self.responses)

    def _listen(self) -> socket.socket:
        return listen(self.host, self.port, backlog=self.backlog, reuse_port=self.reuse_port)

    # -- requests --------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        try:
            if path == self.path:
                if request.method == "POST":
                    response = await self._callback(request)
                else:
                    response = _error(405, "use POST", headers={"Allow": "POST"})
                self.responses[response.status] += 1
                self._record_metrics()  # before the answer goes out: a SIGKILL keeps its counts
                return response
            if request.method in ("GET", "HEAD"):
                if path == "/healthz":
                    return _json(200, b'{"status":"ok"}')
                if path == "/readyz":
                    return await self._readyz()
                if path == "/metrics":
                    return self._metrics()
            return _error(404, "not found")
        except Exception:
            _log.exception("internal error answering %s %s", request.method, path)
            self.responses[500] += 1
            self._record_metrics()
            return _error(500, "internal error")

    async def _callback(self, request: web.BaseRequest) -> web.StreamResponse:
        if self._draining:
            response = _error(503, "shutting down", headers={"Retry-After": "1"})
            response.force_close()
            return response
        runtime = self._runtime
        assert runtime is not None
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            # A request is in flight only once its body is in: a slow sender holds no slot.
            self._reading += 1
            try:
                body = await self._read_body(request, self.max_body_size or runtime.max_body_size)
            finally:
                self._reading -= 1
            if isinstance(body, web.StreamResponse):
                return body
            if self._in_flight >= self.max_in_flight:
                return _error(503, "too many requests in flight", headers={"Retry-After": "1"})
            self._in_flight += 1
            try:
                return await self._process(request, body, runtime)
            finally:
                self._in_flight -= 1
        finally:
            self._tasks.discard(task)

    async def _process(
        self, request: web.BaseRequest, body: bytes, runtime: SourceRuntime
    ) -> web.StreamResponse:
        """Admit ``body`` to the inbox, or process it, and answer as the outcome calls for."""
        if self.inbox is not None:
            return await self._admit(
                Delivery(
                    body,
                    source=self.name,
                    id=_request_id(request),
                    meta={"remote": request.remote or ""},
                ),
                self.inbox,
                runtime,
            )
        attempt, key = self.redeliveries.attempt(body)
        delivery = Delivery(
            body,
            source=self.name,
            attempt=attempt,
            id=_request_id(request),
            meta={"remote": request.remote or ""},
            deadline=runtime.clock.monotonic() + self.handler_budget,
        )
        outcome = await runtime.consumer(delivery)
        self.redeliveries.record(body, key, failed=outcome.settlement is Settlement.RETRY)
        return _respond(outcome, delivery.id)

    async def _admit(
        self, delivery: Delivery, inbox: Inbox, runtime: SourceRuntime
    ) -> web.StreamResponse:
        """Check the body at the door, append it to the inbox, answer 200 once it is durable."""
        outcome = await runtime.admit(delivery)
        if outcome.settlement is not Settlement.ACK:
            return _respond(outcome, delivery.id)
        body = delivery.body
        assert isinstance(body, bytes)
        retry_after = {"Retry-After": str(max(1, math.ceil(self.inbox_retry_after)))}
        try:
            if self._append is not None:
                added = await self._append(body, delivery.notification)
            else:
                added = await inbox.append(body)
        except InboxRefusedBody as exc:  # it never fits: recorded, not left to the sender
            await runtime.dead_letter(delivery, str(exc), cause=Cause.TOO_LARGE)
            return _error(413, str(exc))
        except InboxUnavailable as exc:
            self._inbox_trouble("unavailable", str(exc), runtime)
            return _error(503, "inbox unavailable", headers=retry_after)
        if not added:
            self._inbox_trouble(
                "full", f"inbox {inbox.describe()} is full (raise its bound)", runtime
            )
            return _error(503, "inbox full", headers=retry_after)
        return _json(200, _OK_BODY, {"X-Request-Id": delivery.id})

    def _inbox_trouble(self, kind: str, what: str, runtime: SourceRuntime) -> None:
        """Log that callbacks are answered 503: the first time, then once per 10 s."""
        if self._inbox_lines is None:
            self._inbox_lines = LogThrottle(runtime.clock, 10.0)
        held = self._inbox_lines.admit(kind)
        if held is not None:
            _log.warning("%s; answering 503%s", what, held_back(held, "answered 503"))

    async def _read_body(self, request: web.BaseRequest, limit: int) -> bytes | web.StreamResponse:
        """The whole body, or the error response (413, 408, 400) that replaces it."""
        length = request.content_length
        if length is not None and length > limit:
            return _error(413, f"body larger than {limit} bytes")
        content = request.content
        try:
            if content.is_eof():  # everything arrived with the headers: no timer needed
                body = await content.read()
            else:
                body = await self._read_paced(content, limit)
        except _TooLarge:
            return _error(413, f"body larger than {limit} bytes")
        except _TooSlow as exc:
            return await _close_with(request, _error(408, str(exc)))
        except (web.RequestPayloadError, ConnectionError, asyncio.IncompleteReadError):
            return await _close_with(request, _error(400, "incomplete request body"))
        if len(body) > limit:
            return _error(413, f"body larger than {limit} bytes")
        return body

    async def _read_paced(self, content: StreamReader, limit: int) -> bytes:
        """The body, at most ``limit`` bytes, arriving within ``read_timeout`` and at
        ``min_rate`` after ``min_rate_grace`` (else :class:`_TooSlow`).

        Before each wait for more, the deadline is the earlier of the end of ``read_timeout``
        and the moment the bytes received so far fall below the minimum rate: ``start + grace
        + received / min_rate``. One timer per wait, on the event loop's clock.
        """
        start = anyio.current_time()
        end = start + self.read_timeout
        rate = self.min_rate
        grace = start + self.min_rate_grace
        chunks: list[bytes] = []
        size = 0
        while True:
            deadline = min(end, grace + size / rate) if rate > 0 else end
            with anyio.CancelScope(deadline=deadline) as scope:
                chunk = await content.readany()
            if scope.cancelled_caught:
                if deadline >= end:
                    raise _TooSlow(f"request body not received in {self.read_timeout:g}s")
                raise _TooSlow(f"request body slower than {rate:g} bytes/s")
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)

    async def _readyz(self) -> web.StreamResponse:
        runtime = self._runtime
        if self._draining or runtime is None:
            return _json(503, _DRAINING_BODY)
        readiness = await runtime.readiness()
        if readiness.ready:
            return _json(200, _READY_BODY)
        body = _ENCODER.encode({"ready": False, "reason": readiness.reason})
        return _json(503, body)

    def _metrics(self) -> web.StreamResponse:
        runtime = self._runtime
        metrics: object = runtime.metrics if runtime is not None else None
        responses: Mapping[int, int] = self.responses
        if self._shared is not None and isinstance(metrics, InMemoryMetrics):
            metrics, responses = self._shared.combined(metrics, responses)
        text = render_metrics(metrics)
        if text is None:
            return _error(404, "this app's metrics have no Prometheus form")
        samples: dict[tuple[tuple[str, str], ...], float] = {
            (("code", str(code)),): float(n) for code, n in sorted(responses.items())
        }
        own = format_family(
            "mpsflow_http_callback_responses",
            "counter",
            "Responses on the callback path, by status code.",
            samples,
        )
        own += self._connection_metrics()
        response = web.Response(body=text + own.encode())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    def _connection_metrics(self) -> str:
        """This process's connection counts (not combined across ``--workers``)."""
        connections = self._connections
        if connections is None:
            return ""
        families = (
            ("open_connections", "gauge", "Connections open now", connections.open),
            (
                "refused_connections",
                "counter",
                "Connections refused: too many open from their peer address",
                connections.refused,
            ),
            (
                "header_timeouts",
                "counter",
                "Connections closed with 408: a request head not received in time",
                connections.header_timeouts,
            ),
        )
        return "".join(
            format_family(f"mpsflow_http_{name}", kind, f"{text} (this process).", {(): value})
            for name, kind, text, value in families
        )


def listen(
    host: str,
    port: int,
    *,
    backlog: int = 1024,
    reuse_port: bool = False,
    port_option: str = "--http HOST:PORT",
) -> socket.socket:
    """A listening socket on ``host``/``port`` (IPv6 when ``host`` has a colon).

    Raises :class:`~mpsflow.errors.StartupError` saying what to do when the address cannot
    be used (already in use: pick another port with ``port_option``; a privileged port; not
    an address of this machine).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server(
            (host, port), family=family, backlog=backlog, reuse_port=reuse_port
        )
    except OSError as exc:
        shown = f"[{host}]" if ":" in host else host
        raise StartupError(
            f"cannot listen on {shown}:{port}: {_listen_problem(exc, host, port, port_option)}"
        ) from exc


_LOOKUP_FAILED = frozenset(
    getattr(socket, name)
    for name in ("EAI_NONAME", "EAI_NODATA", "EAI_FAIL", "EAI_AGAIN")
    if hasattr(socket, name)
)


def _listen_problem(exc: OSError, host: str, port: int, port_option: str) -> str:
    """Why ``host:port`` cannot be listened on, and what to do about it."""
    # create_server re-raises a failed name lookup as a plain OSError with the lookup's errno
    if isinstance(exc, socket.gaierror) or exc.errno in _LOOKUP_FAILED:
        return f"unknown host {host!r} (use an IP address or a name this machine resolves)"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"address already in use (is another mpsflow running? pick another port with"
            f" {port_option})"
        )
    if exc.errno == errno.EACCES and 0 < port < 1024:
        return "permission denied (ports below 1024 need privileges: pick one from 1024 up)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"address not available (is {host} an address of this machine?)"
    return exc.strerror or str(exc)


def _duplicate(sock: socket.socket) -> socket.socket:
    """A socket object on a duplicate of ``sock``'s descriptor; the blocking mode untouched.

    Not ``sock.dup()``: it gives the copy ``sock``'s timeout, and on a blocking ``sock`` (one
    bound before forking) that clears ``O_NONBLOCK``, which belongs to the open file every
    process sharing the socket uses. Another worker's event loop, serving that socket, then
    blocks in ``accept()`` until the next connection comes, and the one it had just accepted
    waits unanswered. The event loop makes the copy non-blocking when it starts serving it.
    """
    return socket.socket(sock.family, sock.type, sock.proto, fileno=socket.dup(sock.fileno()))


# -- connections: the bounds aiohttp's protocol does not have ----------------------------------


def _canned(status: int, reason: str, message: str, *extra: str) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, for the protocol to write as is."""
    body = _ENCODER.encode({"code": status, "error": message})
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


_REFUSED = _canned(
    503, "Service Unavailable", "too many connections from this address", "Retry-After: 1"
)
_HEAD_TIMED_OUT = _canned(408, "Request Timeout", "request headers not received in time")
_WARN_EVERY = 10.0
"""Seconds between two warnings about refused connections (with the count in between)."""
_TRIM_AFTER = 256
"""Connections closed since memory was last handed back that make doing it again worth it."""
_TRIM_DELAY = 1.0
"""Seconds from the ``_TRIM_AFTER``-th close to handing memory back..."""
_TRIM_EVERY = 10.0
"""...and at least these seconds between two hand-backs (each is a full garbage collection)."""


def _libc_malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, which returns the free pages of every malloc arena to the
    system; None where there is no such function (macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


_malloc_trim = _libc_malloc_trim()


class _Connections:
    """The open connections of one server: how many, how many per peer address, the header
    timeout, and handing memory back once a flood of them is over.

    Why the last: each connection costs some tens of kilobytes (more with big headers), and
    once thousands of them are gone the RSS stays at the peak: aiohttp's request and protocol
    objects refer to each other, so only the cycle collector's rare full pass frees them, and
    glibc's allocator then keeps the freed memory (its heap is fragmented: nothing at its top
    to give back). So once ``_TRIM_AFTER`` connections were closed since the last time, a
    second later (and ``_TRIM_EVERY`` seconds after the last time at the soonest), a full
    ``gc.collect()`` and ``malloc_trim(0)`` run, once: some tens of milliseconds after a
    flood, every ten seconds at most during one.
    """

    __slots__ = (
        "_closed",
        "_last_trim",
        "_last_warning",
        "_loop",
        "_refused_since_warning",
        "_trim",
        "header_timeout",
        "header_timeouts",
        "max_per_peer",
        "open",
        "per_peer",
        "refused",
    )

    def __init__(self, *, header_timeout: float, max_per_peer: int) -> None:
        self.header_timeout = header_timeout
        self.max_per_peer = max_per_peer
        """0: no cap."""
        self.per_peer: dict[str, int] = {}
        self.open = 0
        self.refused = 0
        """Connections refused for the per-peer cap."""
        self.header_timeouts = 0
        """Connections closed because their request's head did not arrive in time."""
        self._loop = asyncio.get_running_loop()
        self._closed = 0
        self._last_trim = -math.inf
        self._trim: asyncio.TimerHandle | None = None
        self._last_warning = -math.inf
        self._refused_since_warning = 0

    def admit(self, peer: str) -> bool:
        """Count a new connection from ``peer``; False (not counted) when it is over the cap."""
        count = self.per_peer.get(peer, 0)
        if self.max_per_peer and count >= self.max_per_peer:
            self._refuse(peer)
            return False
        self.per_peer[peer] = count + 1
        self.open += 1
        return True

    def release(self, peer: str) -> None:
        """A connection ``admit`` counted is closed."""
        count = self.per_peer.pop(peer, 1) - 1
        if count > 0:
            self.per_peer[peer] = count
        self.open -= 1
        self._closed += 1
        if self._closed >= _TRIM_AFTER and self._trim is None and _malloc_trim is not None:
            now = self._loop.time()
            when = max(now + _TRIM_DELAY, self._last_trim + _TRIM_EVERY)
            self._trim = self._loop.call_at(when, self._hand_memory_back)

    def close(self) -> None:
        """The server stopped: no memory handed back later."""
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None

    def _hand_memory_back(self) -> None:
        self._trim = None
        self._closed = 0
        self._last_trim = self._loop.time()
        if _malloc_trim is not None:
            gc.collect()  # connections are freed by the cycle collector: free them first
            _malloc_trim()

    def _refuse(self, peer: str) -> None:
        self.refused += 1
        self._refused_since_warning += 1
        now = self._loop.time()
        if now - self._last_warning >= _WARN_EVERY:
            _log.warning(
                "refused %d connection(s) over the cap of %d per address (latest from %s);"
                " behind a reverse proxy, raise max_connections_per_peer or set it to 0",
                self._refused_since_warning,
                self.max_per_peer,
                peer,
            )
            self._last_warning = now
            self._refused_since_warning = 0


def _peer_of(transport: asyncio.BaseTransport) -> str:
    """The peer's address (without its port): what the per-peer cap counts by."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "")


class _Connection(RequestHandler):
    """aiohttp's HTTP/1.1 protocol, plus the per-peer cap, a header timeout, and the release
    of a connection whose peer left while aiohttp "lingered" over an unread body.

    aiohttp calls the request handler (``HttpSource._handle``) as soon as a request's head is
    parsed, and bounds nothing before that but its keep-alive timeout (75 s here; aiohttp
    3.9 not even that on a new connection): a peer trickling its headers holds the connection
    for as long as it likes. The **header timeout** is a per-connection timer, armed when the
    connection is made and again when the first byte of a next request arrives on a kept-alive
    connection (``data_received`` while no request is being handled and the previous body is
    complete; bytes pipelined behind a request being handled arm it once that one is
    answered). The request factory (``_Server._new_request``), which aiohttp calls once a
    head is complete, disarms it; while a request is being handled (until its response is
    finished, ``finish_response``) it stays off: the body has its own bounds, in
    ``HttpSource._read_paced``. When it fires, the connection gets a canned 408 and is closed.

    The **per-peer cap** is checked in ``connection_made``, before anything is set up: a
    refused connection gets a canned 503, is closed, and is never handed to aiohttp (no
    parser use, no task, no timer), so refusing costs next to nothing.

    **Lingering**: a request answered before its body was read (413 by ``Content-Length``,
    503 while draining, 404) has the rest of its body read and dropped by aiohttp for up to
    10 s, and aiohttp's ``connection_lost`` does not wake that read: the connection, its
    request and headers stayed alive for the whole 10 s after the peer had gone, which is how
    a flood of partial bodies answered 503 grew the memory. ``connection_lost`` ends the body
    so the connection is released at once.
    """

    __slots__ = (
        "_busy",
        "_counted",
        "_guard",
        "_head_timer",
        "_peer",
        "_pipelined",
        "_previous_body",
        "_timer_loop",
    )

    def __init__(
        self,
        manager: web.Server,
        guard: _Connections,
        *,
        loop: asyncio.AbstractEventLoop,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._guard = guard
        self._timer_loop = loop
        self._peer = ""
        self._counted = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._busy = False
        """A request's head arrived and its response is not finished yet."""
        self._pipelined = False
        """Bytes of a next request arrived while one was being handled."""
        self._previous_body: StreamReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = _peer_of(transport)
        if not self._guard.admit(peer):
            cast(asyncio.Transport, transport).write(_REFUSED)
            transport.close()
            return
        self._peer = peer
        self._counted = True
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._counted:
            return  # refused: aiohttp never saw it
        self._counted = False
        self._disarm()
        self._guard.release(self._peer)
        body = self._previous_body
        self._previous_body = None
        super().connection_lost(exc)
        if body is not None and not self._busy and not body.is_eof():
            body.feed_eof()  # wake aiohttp's lingering read: nobody will send the rest

    def data_received(self, data: bytes) -> None:
        if not self._counted:
            return
        if data and self._head_timer is None:
            body = self._previous_body
            if body is None or body.is_eof():
                if self._busy:
                    self._pipelined = True
                else:
                    self._arm()
        super().data_received(data)

    def request_started(self, body: StreamReader) -> None:
        """A request's head is complete (called by the request factory)."""
        self._disarm()
        self._busy = True
        self._pipelined = False
        self._previous_body = body

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._busy = False
            if self._pipelined and self._counted:
                self._pipelined = False
                self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self._timer_loop.call_later(
            self._guard.header_timeout, self._head_timed_out
        )

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if self._busy or transport is None:
            return
        self._guard.header_timeouts += 1
        transport.write(_HEAD_TIMED_OUT)
        self.force_close()


class _Server(web.Server):
    """aiohttp's low-level server whose connections are :class:`_Connection` (sharing one
    :class:`_Connections`) and whose request factory tells a connection its head arrived."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        connections: _Connections,
        **kwargs: Any,
    ) -> None:
        self._guard = connections
        self._protocol_loop = asyncio.get_running_loop()
        self._protocol_kwargs = kwargs
        super().__init__(handler, request_factory=self._new_request, **kwargs)

    def __call__(self) -> RequestHandler:
        return _Connection(self, self._guard, loop=self._protocol_loop, **self._protocol_kwargs)

    def _new_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        if isinstance(protocol, _Connection):
            protocol.request_started(payload)
        return web.BaseRequest(message, payload, protocol, writer, task, self._protocol_loop)


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    """The body did not arrive in time, or arrives below the minimum rate (the message)."""


async def _close_with(request: web.BaseRequest, response: web.Response) -> web.StreamResponse:
    """Send ``response`` now and close the connection (no lingering for a stalled client).

    A peer already gone gets nothing: the connection is closed all the same.
    """
    response.force_close()
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        pass  # the peer went away (aiohttp: "Cannot write to closing transport")
    finally:
        request.protocol.force_close()
    return response


_ID_PREFIX = os.urandom(6).hex()
_id_numbers = itertools.count(1)


def _request_id(request: web.BaseRequest) -> str:
    """The caller's ``X-Request-Id``, or a new id: unique per process start, cheap to make."""
    given = request.headers.get("X-Request-Id")
    if given:
        return given[:_MAX_REQUEST_ID]
    return f"{_ID_PREFIX}-{next(_id_numbers):x}"


def _json(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type=_JSON, headers=headers)


def _error(
    status: int, message: str, *, path: str = "", headers: dict[str, str] | None = None
) -> web.Response:
    payload: dict[str, object] = {"code": status, "error": message}
    if path:
        payload["path"] = path
    return web.json_response(payload, status=status, headers=headers)


def _respond(outcome: Outcome, request_id: str) -> web.Response:
    """Express the pipeline's outcome as the delivery contract's HTTP answer (see the table)."""
    settlement = outcome.settlement
    cause = outcome.cause
    headers = {"X-Request-Id": request_id}
    if settlement is Settlement.ACK:
        return _json(200, _OK_BODY, headers)
    if settlement is Settlement.RETRY:
        status = 500 if cause in _SERVER_ERRORS else 503
        headers["Retry-After"] = str(max(1, math.ceil(outcome.retry_after)))
        return _error(status, outcome.reason or "retry later", headers=headers)
    if cause is Cause.TOO_LARGE:
        status = 413
    elif cause is Cause.MALFORMED:
        status = 400
    elif settlement is Settlement.DEAD_LETTERED:
        return _json(200, _OK_BODY, headers)  # recorded: MPS need not send it again
    elif cause is Cause.UNAUTHENTICATED:
        status = 401
    else:
        status = 400  # rejected by middleware: never retried
    return _error(status, outcome.reason or "rejected", path=outcome.path, headers=headers)


async def _consume(
    consumer: Source,
    runtime: SourceRuntime,
    cannot_start: list[StartupError],
    serving: anyio.CancelScope,
) -> None:
    """Run the inbox's consumer; if it cannot start (a queue that does not exist, refused
    keys), note why and stop serving, so the source ends with that error itself."""
    try:
        await consumer.run(runtime)
    except StartupError as exc:
        cannot_start.append(exc)
        serving.cancel()


async def _check_inbox(inbox: Inbox) -> None:
    """Fail at startup, with what to check, when the inbox cannot be used at all (its SQLite
    file cannot be opened); a queue service answers ``size`` with None and is checked by its
    consumer."""
    try:
        await inbox.size()
    except InboxUnavailable as exc:
        raise StartupError(
            f"{exc}: check the inbox's path (--inbox): its folder must exist and be writable"
        ) from exc
