"""The HTTP callback source: the server MPS POSTs notifications to (``NotifyType=URL``).

A server (:mod:`mpsflow.sources._http_lane`) that turns each POST on ``path`` into a
``Delivery`` of the raw body and answers with the status the pipeline's outcome calls for.
Callback POSTs in the strict form senders use are served by the callback lane, a small
HTTP/1.1 protocol of its own with no per-request objects; any other request, and the rest of
its connection, by aiohttp's low-level server (no router, no middleware stack). With
``access_log`` every request is aiohttp's, which writes the log.

The answer to each outcome is the delivery contract's table, in
:func:`mpsflow.sources._http_answers.respond`.

With an ``inbox`` (``mpsflow run``'s default), a POST is not processed before the answer: the
body passes the app's admission checks (``runtime.admit``: the signature, the decode; refusals
are answered by that table), is appended to the durable inbox, and is answered 200 once
the append is committed; the pipeline then consumes the inbox (its ``consumer``, run by this
source unless ``consume_inbox`` is off). A full inbox, or one whose storage fails, is answered
503 with ``Retry-After``, so the sender keeps the notification. That side of the source is
:mod:`mpsflow.sources._http_inbox`.

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
:mod:`mpsflow.sources._http_server` and :mod:`mpsflow.sources._http_lane` for how each bound
is kept on both protocols):

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
import logging
import os
import socket
import ssl
from collections import Counter
from collections.abc import Mapping
from typing import Any

import anyio
import msgspec
from aiohttp import web

from mpsflow._listen import duplicate_socket, listen
from mpsflow.delivery import Delivery, Settlement
from mpsflow.errors import ConfigurationError
from mpsflow.inbox.base import Inbox
from mpsflow.observability.metrics import InMemoryMetrics
from mpsflow.observability.prometheus import MULTIPROCESS_VARIABLE, PrometheusMetrics
from mpsflow.observability.workers import WorkerMetrics
from mpsflow.sources._http_answers import (
    SHUTTING_DOWN,
    error_answer,
    json_response,
    metrics_response,
    read_body,
    respond,
    web_response,
)
from mpsflow.sources._http_inbox import InboxIntake, inbox_state
from mpsflow.sources._http_lane import LaneRules, Server
from mpsflow.sources._http_server import Answer, Connections, request_id_or_new
from mpsflow.sources.base import Source
from mpsflow.sources.redelivery import RedeliveryCounter
from mpsflow.sources.runtime import SourceRuntime

__all__ = ["HttpSource"]

_log = logging.getLogger("mpsflow.sources.http")

_READY_BODY = b'{"ready":true}'
_DRAINING_BODY = b'{"ready":false,"reason":"draining"}'
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
    ``access_log`` logs every request (aiohttp's access log, at INFO): it turns the callback
    lane off, so callbacks cost what aiohttp's per-request machinery costs.

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
    answered (see :mod:`mpsflow.observability.workers`). That takes the default
    ``InMemoryMetrics``; with other metrics only the source's own answers by status are
    combined there, and ``PrometheusMetrics`` combines the rest in prometheus-client's
    multiprocess mode.
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
        self._answers_only = InMemoryMetrics()
        """Published with the answers by status when the app's metrics are another kind:
        empty, as they are counted elsewhere."""
        self.sock = sock
        """The listening socket to serve on (a duplicate of it: it stays open, its owner's to
        close); None: the source listens on ``host``/``port`` when it starts."""
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
        self._connections: Connections | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runtime: SourceRuntime | None = None
        """The runtime of the current ``run`` (consumer, clock, metrics, readiness, …)."""
        self._intake = InboxIntake()
        """What takes admitted callbacks into the inbox (with one), across runs."""

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
        connections = self._connections
        return self._reading + (connections.reading if connections is not None else 0)

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
        start. A CMQ queue's consumer starts first: the server serves once it received from
        the queue, so a queue that does not exist ends the run before "serving".
        """
        inbox = self.inbox
        if inbox is None:
            await self._serve(runtime)
            return

        def consumer() -> Source:
            return inbox.consumer(
                name=self.name, max_in_flight=self.max_in_flight, lease_seconds=self.handler_budget
            )

        await self._intake.run(
            inbox,
            lambda: self._serve(runtime),
            runtime,
            consumer=consumer if self.consume_inbox else None,
        )

    async def _serve(self, runtime: SourceRuntime) -> None:
        self._runtime = runtime
        self._draining = False
        # The server closes the socket it serves on: serve a duplicate of a given one, so
        # a restart (or the caller) still has it.
        sock = duplicate_socket(self.sock) if self.sock is not None else self.listen()
        host, port = sock.getsockname()[:2]
        self.address = (str(host), int(port))
        connections = Connections(
            header_timeout=self.header_timeout,
            max_per_peer=self.max_connections_per_peer,
        )
        self._connections = connections
        shutdown_timeout = self.shutdown_timeout
        if shutdown_timeout is None:
            shutdown_timeout = runtime.shutdown_timeout
        lane = LaneRules(
            path=self.path,
            endpoint=self,
            max_body_size=self.max_body_size or runtime.max_body_size,
            header_timeout=self.header_timeout,
            read_timeout=self.read_timeout,
            min_rate=self.min_rate,
            min_rate_grace=self.min_rate_grace,
            keepalive_timeout=self.keepalive_timeout,
        )
        server = Server(
            self._handle,
            connections,
            lane=None if self.access_log else lane,  # aiohttp writes the access log
            keepalive_timeout=self.keepalive_timeout,
            access_log=_log if self.access_log else None,
        )
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
            await runner.cleanup()  # stops listening; aiohttp's connections finish
            await connections.drain(shutdown_timeout)
        finally:
            self._draining = True
            self._serving = None
            if runner.server is not None:  # not cleaned up gracefully: cancelled or failed
                for task in list(self._tasks):
                    task.cancel()
                with anyio.CancelScope(shield=True), anyio.move_on_after(5.0):
                    await runner.cleanup()
            connections.abort_lanes()  # cancelled while draining them, or never drained
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
        metrics = runtime.metrics
        if isinstance(metrics, PrometheusMetrics) and metrics.multiprocess_dir is None:
            _log.warning(
                "/metrics shows the PrometheusMetrics of the worker that answers, not of all"
                " workers: set %s to an empty directory before the workers start",
                MULTIPROCESS_VARIABLE,
            )
        return WorkerMetrics(self.metrics_dir)

    async def _publish_metrics(self) -> None:
        while True:
            self._publish_once()
            await anyio.sleep(self.metrics_interval)

    def _in_memory_metrics(self) -> InMemoryMetrics | None:
        """What this worker publishes beside its answers by status: the runtime's metrics,
        or nothing (``_answers_only``) when they are another kind."""
        runtime = self._runtime
        metrics = runtime.metrics if runtime is not None else None
        if metrics is None:
            return None
        return metrics if isinstance(metrics, InMemoryMetrics) else self._answers_only

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

    def listen(self) -> socket.socket:
        """A new listening socket on this source's ``host``/``port`` (``backlog``,
        ``reuse_port``); :class:`~mpsflow.errors.StartupError` when the address cannot be
        used. The source serves on one of its own unless ``sock`` is set."""
        return listen(self.host, self.port, backlog=self.backlog, reuse_port=self.reuse_port)

    # -- requests --------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer a request aiohttp serves; every answer carries the request's ``X-Request-Id``
        (the caller's, or a new one)."""
        request_id = request_id_or_new(request.headers.get("X-Request-Id", ""))
        response = await self._route(request, request_id)
        if not response.prepared and "X-Request-Id" not in response.headers:
            response.headers["X-Request-Id"] = request_id
        return response

    async def _route(self, request: web.BaseRequest, request_id: str) -> web.StreamResponse:
        path = request.path
        try:
            if path == self.path:
                if request.method == "POST":
                    response = await self._callback(request, request_id)
                else:
                    response = web_response(
                        error_answer(405, "use POST", headers={"Allow": "POST"})
                    )
                self.responses[response.status] += 1
                self._record_metrics()  # before the answer goes out: a SIGKILL keeps its counts
                return response
            if request.method in ("GET", "HEAD"):
                if path == "/healthz":
                    return json_response(200, b'{"status":"ok"}')
                if path == "/readyz":
                    return await self._readyz()
                if path == "/metrics":
                    return await self._metrics()
            return web_response(error_answer(404, "not found"))
        except Exception:
            _log.exception("internal error answering %s %s", request.method, path)
            self.responses[500] += 1
            self._record_metrics()
            return web_response(error_answer(500, "internal error"))

    async def _callback(self, request: web.BaseRequest, request_id: str) -> web.StreamResponse:
        """A callback that aiohttp's protocol serves (the lane handed its connection over)."""
        if self._draining:
            return web_response(SHUTTING_DOWN)
        runtime = self._runtime
        assert runtime is not None
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            # A request is in flight only once its body is in: a slow sender holds no slot.
            self._reading += 1
            try:
                limit = self.max_body_size or runtime.max_body_size
                body = await read_body(
                    request,
                    limit,
                    {"X-Request-Id": request_id},
                    read_timeout=self.read_timeout,
                    min_rate=self.min_rate,
                    min_rate_grace=self.min_rate_grace,
                )
            finally:
                self._reading -= 1
            if isinstance(body, web.StreamResponse):
                return body
            return web_response(await self._answer(body, request_id, request.remote or "", runtime))
        finally:
            self._tasks.discard(task)

    async def answer_callback(self, body: bytes, request_id: str, remote: str) -> Answer:
        """A callback that the lane serves: its whole ``body`` has arrived (``request_id``:
        the caller's ``X-Request-Id``, or ``""``); counted like aiohttp's, never raises."""
        request_id = request_id_or_new(request_id)
        try:
            runtime = self._runtime
            if self._draining or runtime is None:
                answer = SHUTTING_DOWN
            else:
                task = asyncio.current_task()
                assert task is not None
                self._tasks.add(task)
                try:
                    answer = await self._answer(body, request_id, remote, runtime)
                finally:
                    self._tasks.discard(task)
        except Exception:
            _log.exception("internal error answering POST %s", self.path)
            answer = error_answer(500, "internal error")
        headers = answer.headers
        if headers is None or "X-Request-Id" not in headers:  # every answer says which request
            answer = answer._replace(headers={**(headers or {}), "X-Request-Id": request_id})
        self.responses[answer.status] += 1
        self._record_metrics()  # before the answer goes out: a SIGKILL keeps its counts
        return answer

    async def _answer(
        self, body: bytes, request_id: str, remote: str, runtime: SourceRuntime
    ) -> Answer:
        """The answer to a callback whose body arrived: 503 past ``max_in_flight``."""
        if self._in_flight >= self.max_in_flight:
            return error_answer(503, "too many requests in flight", headers={"Retry-After": "1"})
        self._in_flight += 1
        try:
            return await self._process(body, request_id, remote, runtime)
        finally:
            self._in_flight -= 1

    async def _process(
        self, body: bytes, request_id: str, remote: str, runtime: SourceRuntime
    ) -> Answer:
        """Admit ``body`` to the inbox, or process it, and answer as the outcome calls for."""
        if self.inbox is not None:
            delivery = Delivery(body, source=self.name, id=request_id, meta={"remote": remote})
            return await self._intake.admit(
                delivery, self.inbox, runtime, retry_after=self.inbox_retry_after
            )
        attempt, key = self.redeliveries.attempt(body)
        delivery = Delivery(
            body,
            source=self.name,
            attempt=attempt,
            id=request_id,
            meta={"remote": remote},
            deadline=runtime.clock.monotonic() + self.handler_budget,
        )
        outcome = await runtime.consumer(delivery)
        self.redeliveries.record(body, key, failed=outcome.settlement is Settlement.RETRY)
        return respond(outcome)

    async def _readyz(self) -> web.StreamResponse:
        runtime = self._runtime
        if self._draining or runtime is None:
            return json_response(503, _DRAINING_BODY)
        readiness = await runtime.readiness()
        reason = readiness.reason if not readiness.ready else (await inbox_state(self.inbox))[1]
        if not reason:
            return json_response(200, _READY_BODY)
        body = _ENCODER.encode({"ready": False, "reason": reason})
        return json_response(503, body)

    async def _metrics(self) -> web.StreamResponse:
        runtime = self._runtime
        metrics: object = runtime.metrics if runtime is not None else None
        responses: Mapping[int, int] = self.responses
        if self._shared is not None:
            if isinstance(metrics, InMemoryMetrics):
                metrics, responses = self._shared.combined(metrics, responses)
            else:  # the app's metrics combine their own way, or not at all
                _, responses = self._shared.combined(self._answers_only, responses)
        size, _ = await inbox_state(self.inbox)
        caught_up = self._intake.caught_up_at()
        return metrics_response(metrics, responses, self._connections, size, caught_up)
