"""Loopback peers for the sink tests, and a clock that moves only when told to.

Every HTTP peer listens on a free port of 127.0.0.1 and can be told to fail its next requests
(``faults``): with its own "try later" answer (a 5xx, a throttling code), by dropping the
connection, or with its own final refusal (a 4xx or its equivalent). The per-sink tests and
the sink contract (``tests/sinks/test_contract.py``) share them; ``serve`` runs any other
loopback endpoint a test needs, and ``send_once`` puts one batch through a sink's lifecycle.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import hmac
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import anyio
import anyio.lowlevel
import msgspec
from aiohttp import web

from mpsflow.sinks.base import KeyedSink, Sink
from mpsflow.tencentcloud.cmq import CmqClient
from mpsflow.tencentcloud.tc3 import tc3_authorization

__all__ = [
    "CountingCmqClient",
    "Fault",
    "LoopbackPeer",
    "ManualClock",
    "RobotPeer",
    "S3Front",
    "ScfApi",
    "Seen",
    "WebhookPeer",
    "send_once",
    "serve",
]

_Peer = TypeVar("_Peer", bound="LoopbackPeer")


class Fault(enum.Enum):
    """How a peer fails one request."""

    TRANSIENT = "transient"
    """The peer's own "try again later": a 5xx, or its throttling answer."""
    NETWORK = "network"
    """The connection drops after the request was read, before any answer."""
    PERMANENT = "permanent"
    """The peer refuses for good: a 4xx, or its equivalent."""


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on a free port of 127.0.0.1; yields its ``http://host:port``."""
    runner = web.AppRunner(app, access_log=None)  # receivers log keys; we test the senders
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def send_once(
    sink: Sink, batch: Sequence[object], keys: Sequence[str | None] | None = None
) -> None:
    """Start ``sink``, send ``batch``, and close it (closed also when the send fails).

    With ``keys`` (one per record, or ``None``), the batch goes through ``send_keyed``.
    """
    await sink.start()
    try:
        if keys is None:
            await sink.send(batch)
        else:
            assert isinstance(sink, KeyedSink)
            await sink.send_keyed(batch, keys)
    finally:
        await sink.close()


class LoopbackPeer(abc.ABC):
    """An HTTP peer on loopback: answers with ``accept`` unless a fault is scripted.

    ``faults`` holds what the next requests meet, in order (``None``: a normal answer);
    ``hits`` counts every request that reached the peer, failed ones included.
    """

    def __init__(self) -> None:
        self.url = ""
        self.hits = 0
        self.faults: list[Fault | None] = []

    @contextlib.asynccontextmanager
    async def running(self: _Peer) -> AsyncIterator[_Peer]:
        """Serve on a free port for the duration of the block."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        async with serve(app) as base:
            self.url = self.address(base)
            await self.setup()
            try:
                yield self
            finally:
                await self.teardown()

    def address(self, base: str) -> str:
        """The URL a sink is given, from the server's ``http://host:port``."""
        return base

    async def setup(self) -> None:  # noqa: B027 - optional hook
        """Open what ``accept`` needs (called once the server listens)."""

    async def teardown(self) -> None:  # noqa: B027 - optional hook
        """Release held requests and close what ``setup`` opened."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        fault = self.faults.pop(0) if self.faults else None
        if fault is None:
            return await self.accept(request)
        await request.read()
        if fault is Fault.NETWORK:
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        return self.refuse(fault)

    @abc.abstractmethod
    async def accept(self, request: web.Request) -> web.StreamResponse:
        """Handle a request the way the real peer does."""

    @abc.abstractmethod
    def refuse(self, fault: Fault) -> web.Response:
        """The peer's answer for a ``TRANSIENT`` or ``PERMANENT`` fault."""


@dataclass
class Seen:
    """One request as a webhook receiver saw it."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


class WebhookPeer(LoopbackPeer):
    """A webhook receiver that records requests and answers from a script (``replies``).

    ``requests`` holds every request it answered; ``delivered`` those it kept: a 2xx whose
    ``Idempotency-Key`` it had not kept before, as receivers are asked to do. ``hold``
    (an event) makes it wait before answering, until the event is set or the peer stops.
    """

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Seen] = []
        self.delivered: list[Seen] = []
        self.replies: list[tuple[int, bytes]] = []
        self.hold: anyio.Event | None = None
        self._kept_keys: set[str] = set()

    async def accept(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(request.path, dict(request.query), dict(request.headers), await request.read())
        self.requests.append(seen)
        if self.hold is not None:
            await self.hold.wait()
        status, body = self.replies.pop(0) if self.replies else (200, b'{"ok":true}')
        key = seen.headers.get("Idempotency-Key")
        if 200 <= status < 300 and (key is None or key not in self._kept_keys):
            self.delivered.append(seen)
            if key is not None:
                self._kept_keys.add(key)
        return web.Response(status=status, body=body, content_type="application/json")

    def refuse(self, fault: Fault) -> web.Response:
        status = 503 if fault is Fault.TRANSIENT else 422
        return web.Response(status=status, body=b"{}", content_type="application/json")

    async def teardown(self) -> None:
        if self.hold is not None:
            self.hold.set()


class RobotPeer(LoopbackPeer):
    """A WeCom group robot: records messages and answers with scripted ``errcodes``."""

    PATH = "/cgi-bin/webhook/send"
    THROTTLED = 45009  # "api freq out of limit"
    REFUSED = 93000  # an error the robot will give again

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.messages: list[dict[str, Any]] = []
        self.errcodes: list[int] = []
        self.headers: list[dict[str, str]] = []

    def address(self, base: str) -> str:
        return f"{base}{self.PATH}?key={self.key}"

    async def accept(self, request: web.Request) -> web.StreamResponse:
        assert request.path == self.PATH
        assert request.query["key"] == self.key
        self.headers.append(dict(request.headers))
        self.messages.append(msgspec.json.decode(await request.read()))
        return self._reply(self.errcodes.pop(0) if self.errcodes else 0)

    def refuse(self, fault: Fault) -> web.Response:
        return self._reply(self.THROTTLED if fault is Fault.TRANSIENT else self.REFUSED)

    @staticmethod
    def _reply(errcode: int) -> web.Response:
        errmsg = "ok" if errcode == 0 else f"error {errcode}, hint: [robot]"
        return web.json_response({"errcode": errcode, "errmsg": errmsg})


class ScfApi(LoopbackPeer):
    """A stand-in for scf.tencentcloudapi.com: checks TC3 signatures, records Invoke params.

    ``replies`` scripts (HTTP status, JSON reply) pairs for the next signed requests.
    """

    def __init__(self, secret_id: str, secret_key: str) -> None:
        super().__init__()
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.invocations: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.replies: list[tuple[int, dict[str, Any]]] = []

    def address(self, base: str) -> str:
        return f"{base}/"

    async def accept(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        expected = tc3_authorization(
            self.secret_id,
            self.secret_key,
            service="scf",
            timestamp=int(headers["X-TC-Timestamp"]),
            method=request.method,
            host=headers["Host"],
            content_type=headers["Content-Type"],
            payload=body,
            uri=request.path,
            query=request.query_string,
        )
        if not hmac.compare_digest(expected, headers.get("Authorization", "")):
            return self.error("AuthFailure.SignatureFailure")
        self.headers.append(headers)
        self.invocations.append(msgspec.json.decode(body))
        if self.replies:
            status, reply = self.replies.pop(0)
            return web.json_response(reply, status=status)
        result = {"FunctionRequestId": f"req-{len(self.invocations)}", "InvokeResult": 0}
        return web.json_response({"Response": {"Result": result, "RequestId": "r-ok"}})

    def refuse(self, fault: Fault) -> web.Response:
        if fault is Fault.TRANSIENT:
            return self.error("RequestLimitExceeded")
        return self.error("ResourceNotFound.Function")

    @staticmethod
    def error(code: str) -> web.Response:
        """The API's error reply (HTTP 200, as the real one)."""
        error = {"Code": code, "Message": "refused by the test endpoint"}
        return web.json_response({"Response": {"Error": error, "RequestId": "r-err"}})


_HOP_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "expect", "content-encoding"}
)


class S3Front(LoopbackPeer):
    """A front for a real S3 server (moto): forwards every request, unless a fault is due."""

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream
        self._session: aiohttp.ClientSession | None = None

    async def setup(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)

    async def teardown(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def accept(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            data=await request.read(),
            headers=headers,
            allow_redirects=False,
        ) as reply:
            body = await reply.read()
            kept = {k: v for k, v in reply.headers.items() if k.lower() not in _HOP_HEADERS}
            return web.Response(status=reply.status, body=body, headers=kept)

    def refuse(self, fault: Fault) -> web.Response:
        status, code = (503, "SlowDown") if fault is Fault.TRANSIENT else (403, "AccessDenied")
        body = f"<Error><Code>{code}</Code><Message>scripted</Message></Error>".encode()
        return web.Response(status=status, body=body, content_type="application/xml")


class CountingCmqClient(CmqClient):
    """The real CMQ client, counting the bodies of each BatchSendMessage and the closes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []
        self.closes = 0

    async def aclose(self) -> None:
        self.closes += 1
        await super().aclose()

    async def batch_send(
        self, queue: str, bodies: Sequence[str | bytes], *, delay_seconds: int = 0
    ) -> list[str]:
        self.batches.append(len(bodies))
        return await super().batch_send(queue, bodies, delay_seconds=delay_seconds)


class ManualClock:
    """A clock whose sleeps end only when the test advances it.

    Sleeps shorter than ``instant`` seconds (retry backoffs, say) end at once, moving the
    clock on, so that only the long ones (a ``max_delay``) wait for ``advance``. ``sleeps``
    records every requested sleep.
    """

    def __init__(self, instant: float = 0.0) -> None:
        self.now = 0.0
        self.instant = instant
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, anyio.Event]] = []

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds < self.instant:
            self.advance(max(seconds, 0.0))
            await anyio.lowlevel.checkpoint()
            return
        wake = anyio.Event()
        self._sleepers.append((self.now + seconds, wake))
        await wake.wait()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, wake in self._sleepers:
            if deadline <= self.now:
                wake.set()
        self._sleepers = [(d, w) for d, w in self._sleepers if d > self.now]
