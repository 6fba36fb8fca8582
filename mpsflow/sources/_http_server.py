"""The HTTP server under :class:`~mpsflow.sources.http.HttpSource`: connections, their bounds,
and the callback lane.

Every connection starts on the **lane** (:class:`Lane`), a small HTTP/1.1 protocol that serves
the one request a callback receiver exists for: ``POST`` on the callback path with a
``Content-Length`` body, in the strict form senders use. It answers it from pre-built bytes,
with no request object, stream reader or response machinery: aiohttp's per-request work cost
more than the whole pipeline (the source acking at once took about 216 µs of CPU a request
through aiohttp and 78 µs through the lane, one core, ``benchmarks/README.md``). Anything
else (another path or method, ``Transfer-Encoding``, an ``Expect`` but ``100-continue``, a
body over the limit, HTTP/1.0, no ``Host`` or two, a duplicate ``Content-Length``, folded or
odd header lines, a head over 16 KiB) is handed over,
with every byte received so far, to aiohttp's protocol (:class:`AiohttpConnection`), which
keeps the connection from then on. The lane only ever takes a request whose framing is
unambiguous, so it and aiohttp can never disagree about where one request ends: a request the
lane is not sure of is aiohttp's. Both answer ``Expect: 100-continue`` (aiohttp's low-level
server does not by itself), and aiohttp's answer to a request it cannot parse is a JSON 400 and
one rate-limited warning line, like every other refusal here.

Both kinds of connection keep the same bounds (see the module docstring of
:mod:`mpsflow.sources.http`): the per-peer cap (:class:`Connections`), the header timeout, the
body's ``read_timeout`` and ``min_rate``, the keep-alive timeout, and the release of a
connection as soon as its peer goes.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import itertools
import logging
import math
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Final, NamedTuple, Protocol, cast

import msgspec
from aiohttp import StreamReader, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.web_protocol import RequestHandler

__all__ = [
    "AiohttpConnection",
    "Answer",
    "CallbackEndpoint",
    "Connections",
    "Lane",
    "LaneRules",
    "Server",
    "peer_of",
    "request_id_or_new",
]

_log = logging.getLogger("mpsflow.sources.http")
_ENCODER = msgspec.json.Encoder()


class Answer(NamedTuple):
    """A response on the callback path, whichever protocol writes it."""

    status: int
    body: bytes
    headers: Mapping[str, str] | None = None
    close: bool = False
    """Close the connection once it is written."""


class CallbackEndpoint(Protocol):
    """What the lane needs of the source: the answer to one callback."""

    def answer_callback(self, body: bytes, request_id: str, remote: str) -> Awaitable[Answer]:
        """Admit or process ``body`` and say how to answer (``request_id``: the caller's
        ``X-Request-Id`` or ``""``)."""
        ...


_ID_PREFIX = os.urandom(6).hex()
_id_numbers = itertools.count(1)
_MAX_REQUEST_ID = 128


def request_id_or_new(given: str) -> str:
    """The caller's ``X-Request-Id`` (``given``, cut to 128 characters), or a new id: unique
    per process start, cheap to make."""
    if given:
        return given[:_MAX_REQUEST_ID]
    return f"{_ID_PREFIX}-{next(_id_numbers):x}"


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
    return ("\r\n".join(head) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


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


class Connections:
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
        "_lanes_gone",
        "_last_malformed_warning",
        "_last_trim",
        "_last_warning",
        "_loop",
        "_malformed_since_warning",
        "_refused_since_warning",
        "_trim",
        "header_timeout",
        "header_timeouts",
        "lanes",
        "malformed_requests",
        "max_per_peer",
        "open",
        "per_peer",
        "reading",
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
        self.reading = 0
        """Lane connections whose request's body is arriving."""
        self.lanes: set[Lane] = set()
        """Open lane connections (aiohttp's server knows its own)."""
        self._loop = asyncio.get_running_loop()
        self._closed = 0
        self._last_trim = -math.inf
        self._trim: asyncio.TimerHandle | None = None
        self._last_warning = -math.inf
        self._refused_since_warning = 0
        self._lanes_gone: asyncio.Event | None = None
        self.malformed_requests = 0
        """Requests aiohttp could not parse (answered 4xx and closed)."""
        self._last_malformed_warning = -math.inf
        self._malformed_since_warning = 0

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

    async def drain(self, timeout: float) -> None:
        """Close the lane connections: idle ones now, busy ones once their answer is written,
        and any still open after ``timeout`` seconds at once (their answers cut off)."""
        for lane in list(self.lanes):
            lane.close_when_idle()
        if self.lanes:
            gone = self._lanes_gone = asyncio.Event()
            try:
                await asyncio.wait_for(gone.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            finally:
                self._lanes_gone = None
        self.abort_lanes()

    def abort_lanes(self) -> None:
        """Close every lane connection now, cutting off the answers being worked on."""
        for lane in list(self.lanes):
            lane.abort()

    def lane_closed(self, lane: Lane) -> None:
        """``lane`` is closed or handed over to aiohttp."""
        self.lanes.discard(lane)
        if not self.lanes and self._lanes_gone is not None:
            self._lanes_gone.set()

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

    def malformed(self, peer: str, exc: BaseException | None) -> None:
        """A request aiohttp could not parse: counted, and one warning line per 10 s (the
        first, then with how many came since), without a traceback: anyone can send them."""
        self.malformed_requests += 1
        self._malformed_since_warning += 1
        now = self._loop.time()
        if now - self._last_malformed_warning >= _WARN_EVERY:
            what = type(exc).__name__ if exc is not None else "a bad request"
            _log.warning(
                "answered 400 to %d malformed HTTP request(s) (latest from %s: %s)",
                self._malformed_since_warning,
                peer,
                what,
            )
            self._last_malformed_warning = now
            self._malformed_since_warning = 0

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


def peer_of(transport: asyncio.BaseTransport) -> str:
    """The peer's address (without its port): what the per-peer cap counts by."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "")


class AiohttpConnection(RequestHandler):
    """aiohttp's HTTP/1.1 protocol, plus the per-peer cap, a header timeout, and the release
    of a connection whose peer left while aiohttp "lingered" over an unread body.

    It serves what the lane hands over (``peer``: the lane counted the connection already).

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
        guard: Connections,
        *,
        loop: asyncio.AbstractEventLoop,
        peer: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._guard = guard
        self._timer_loop = loop
        self._peer = peer or ""
        self._counted = peer is not None
        self._head_timer: asyncio.TimerHandle | None = None
        self._busy = False
        """A request's head arrived and its response is not finished yet."""
        self._pipelined = False
        """Bytes of a next request arrived while one was being handled."""
        self._previous_body: StreamReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._counted:  # not handed over: count it here
            peer = peer_of(transport)
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

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse or handle. A client error (a
        malformed request) is answered with a JSON body like every other error here, and
        logged as one rate-limited line instead of a traceback per request; the connection
        is closed, as aiohttp does."""
        if not 400 <= status < 500:
            return super().handle_error(request, status, exc, message)
        self._guard.malformed(self._peer, exc)
        if request.writer.output_size > 0:  # as aiohttp: nothing more can be sent
            raise ConnectionError("a response was sent already")
        body = _ENCODER.encode({"code": status, "error": "malformed HTTP request"})
        response = web.Response(status=status, body=body, content_type="application/json")
        response.force_close()
        return response

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if self._busy or transport is None:
            return
        self._guard.header_timeouts += 1
        transport.write(_HEAD_TIMED_OUT)
        self.force_close()


class Server(web.Server):
    """aiohttp's low-level server whose connections start on the :class:`Lane` (with
    ``lane``) or as :class:`AiohttpConnection` (sharing one :class:`Connections`), and whose
    request factory tells a connection its head arrived."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        connections: Connections,
        *,
        lane: LaneRules | None = None,
        **kwargs: Any,
    ) -> None:
        self._guard = connections
        self._lane = lane
        self._protocol_loop = asyncio.get_running_loop()
        self._protocol_kwargs = kwargs
        super().__init__(handler, request_factory=self._new_request, **kwargs)

    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]
        """A new connection's protocol (the event loop's protocol factory)."""
        if self._lane is not None:
            return Lane(self, self._guard, self._lane)
        return self.aiohttp_connection(None)

    def aiohttp_connection(self, peer: str | None) -> AiohttpConnection:
        """aiohttp's protocol for a connection (``peer``: handed over by a lane, counted)."""
        return AiohttpConnection(
            self, self._guard, loop=self._protocol_loop, peer=peer, **self._protocol_kwargs
        )

    def _new_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        if isinstance(protocol, AiohttpConnection):
            protocol.request_started(payload)
        return web.BaseRequest(message, payload, protocol, writer, task, self._protocol_loop)


# -- the lane ----------------------------------------------------------------------------------


class LaneRules(NamedTuple):
    """What the lane serves, and how long it waits for each part of a request."""

    path: str
    endpoint: CallbackEndpoint
    max_body_size: int
    header_timeout: float
    read_timeout: float
    min_rate: float
    min_rate_grace: float
    keepalive_timeout: float


_MAX_HEAD: Final = 16 * 1024
"""Bytes of a request head the lane reads; a longer one is aiohttp's (and its limits')."""
_TLS_HANDSHAKE: Final = b"\x16"
"""The first byte of a TLS ClientHello: a client speaking HTTPS to this plain-HTTP port, handed
to aiohttp at once (it answers 400), not left waiting for a head until the header timeout."""
_MAX_HEADERS: Final = 100
"""Header lines the lane reads; more go to aiohttp."""
_MAX_PIPELINED: Final = 256 * 1024
"""Bytes buffered behind a request being answered before the lane stops reading."""

_IDLE: Final = 0
"""Between requests: the keep-alive timeout runs."""
_HEAD: Final = 1
"""A request's head is arriving (or the connection is new): the header timeout runs."""
_BODY: Final = 2
"""Its body is arriving: ``read_timeout`` and ``min_rate`` run."""
_BUSY: Final = 3
"""It is being answered: no timer; bytes behind it wait in the buffer."""

_REQUEST_LINE = re.compile(rb"POST (/[!-~]*) HTTP/1\.1")
_HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):([\t\x20-\x7e\x80-\xff]*)")
"""A header line as RFC 9110 has it: a token, a colon, a value of visible characters and
blanks (no control characters, no bare CR or LF: those make the line aiohttp's)."""
_KEEP_ALIVE_TOKENS: Final = frozenset({b"", b"keep-alive", b"close"})


class _Head(NamedTuple):
    length: int
    request_id: str
    close: bool
    expect_continue: bool


def _parse_head(head: bytes, path: bytes) -> _Head | None:
    """The head of a callback the lane serves (``head`` without its blank line), or None.

    None for anything but ``POST <path>[?query] HTTP/1.1`` with exactly one
    ``Content-Length`` of digits, exactly one ``Host``, no ``Transfer-Encoding`` or ``Upgrade``,
    no ``Expect`` but ``100-continue``, a ``Connection`` of ``keep-alive``/``close`` only, and
    well-formed header lines.
    """
    lines = head.split(b"\r\n")
    request = _REQUEST_LINE.fullmatch(lines[0])
    if request is None or request.group(1).partition(b"?")[0] != path:
        return None
    if len(lines) > _MAX_HEADERS + 1:
        return None
    length = -1
    caller_id = ""
    close = False
    expect_continue = False
    hosts = 0
    for line in lines[1:]:
        header = _HEADER_LINE.fullmatch(line)
        if header is None:
            return None
        name = header.group(1).lower()
        if name == b"content-length":
            value = header.group(2).strip(b" \t")
            if length >= 0 or not value.isdigit() or len(value) > 15:
                return None
            length = int(value)
        elif name == b"x-request-id":
            given = header.group(2).strip(b" \t")
            caller_id = given.decode("utf-8", "surrogateescape")[:_MAX_REQUEST_ID]
        elif name == b"connection":
            tokens = {token.strip(b" \t").lower() for token in header.group(2).split(b",")}
            if not tokens <= _KEEP_ALIVE_TOKENS:
                return None
            close = b"close" in tokens
        elif name == b"host":
            hosts += 1
        elif name == b"expect":
            if header.group(2).strip(b" \t").lower() != b"100-continue":
                return None
            expect_continue = True
        elif name in (b"transfer-encoding", b"upgrade"):
            return None
    if length < 0 or hosts != 1:
        return None
    return _Head(length, caller_id, close, expect_continue)


_REASONS: Final = {status.value: status.phrase for status in HTTPStatus}


class _Dates:
    """The ``Date`` header's value, formatted once a second."""

    second = -1
    text = ""

    @classmethod
    def now(cls) -> str:
        second = int(time.time())
        if second != cls.second:
            cls.text = formatdate(second, usegmt=True)
            cls.second = second
        return cls.text


def _encode(answer: Answer, close: bool) -> bytes:
    """``answer`` as the bytes of an HTTP/1.1 response."""
    status, body, headers, _ = answer
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Date: {_Dates.now()}\r\n"
    )
    if headers:
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    if close:
        head += "Connection: close\r\n"
    return (head + "\r\n").encode("utf-8", "surrogateescape") + body


_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_INTERNAL_ERROR: Final = Answer(500, b'{"code":500,"error":"internal error"}', close=True)


class Lane(asyncio.Protocol):
    """One connection, serving callbacks itself until a request is not one it serves.

    A connection is in one of four states (``_IDLE``, ``_HEAD``, ``_BODY``, ``_BUSY``), each
    with its own deadline, kept by one timer: it is moved only when a deadline comes sooner,
    and when it fires for a deadline that moved later it is set again, so a request costs no
    timer at all when it arrives whole. Requests pipelined behind one being answered wait in
    the buffer (reading pauses past 256 KiB) and are taken in order.
    """

    __slots__ = (
        "_buffer",
        "_close_after",
        "_guard",
        "_head_size",
        "_length",
        "_loop",
        "_path",
        "_paused",
        "_peer",
        "_reading",
        "_request_id",
        "_rules",
        "_server",
        "_since",
        "_state",
        "_task",
        "_timer",
        "_timer_at",
        "_transport",
    )

    def __init__(self, server: Server, guard: Connections, rules: LaneRules) -> None:
        self._server = server
        self._guard = guard
        self._rules = rules
        self._path = rules.path.encode("utf-8", "surrogateescape")
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        """Set while this protocol serves the connection (None once closed or handed over)."""
        self._peer = ""
        self._buffer = bytearray()
        self._state = _HEAD
        self._since = 0.0
        """When the current state's deadline started counting (loop time)."""
        self._head_size = 0
        self._length = 0
        self._request_id = ""
        self._close_after = False
        """Close once the current answer is written."""
        self._reading = False
        """Counted in ``Connections.reading``."""
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._task: asyncio.Task[None] | None = None

    # -- the event loop's calls ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = peer_of(transport)
        if not self._guard.admit(peer):
            cast(asyncio.Transport, transport).write(_REFUSED)
            transport.close()
            return
        self._transport = cast(asyncio.Transport, transport)
        self._peer = peer
        self._guard.lanes.add(self)
        self._since = self._loop.time()
        self._arm(self._since + self._rules.header_timeout)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        buffer = self._buffer
        buffer += data
        state = self._state
        if state == _BUSY:
            if len(buffer) > _MAX_PIPELINED and not self._paused:
                self._paused = True
                transport.pause_reading()
            return
        if state == _IDLE:
            self._state = _HEAD
            self._since = self._loop.time()
        self._advance()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._transport is None:
            return  # refused, or handed over: not this protocol's any more
        self._transport = None
        self._disarm()
        self._buffer = bytearray()
        if self._reading:
            self._reading = False
            self._guard.reading -= 1
        self._guard.release(self._peer)
        self._guard.lane_closed(self)

    # -- draining --------------------------------------------------------------------------

    def close_when_idle(self) -> None:
        """Close now, or once the answer being worked on is written."""
        if self._state == _BUSY:
            self._close_after = True
        else:
            self._close()

    def abort(self) -> None:
        """Close now, cutting off the answer being worked on."""
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self._transport.abort()

    # -- requests --------------------------------------------------------------------------

    def _advance(self) -> None:
        """Take the buffered request as far as it has arrived: answer it once it is whole."""
        buffer = self._buffer
        rules = self._rules
        if self._state == _HEAD:
            end = buffer.find(b"\r\n\r\n", 0, _MAX_HEAD)
            if end < 0:
                if len(buffer) >= _MAX_HEAD or buffer[:1] == _TLS_HANDSHAKE:
                    self._hand_over()
                else:
                    self._arm(self._since + rules.header_timeout)
                return
            head = _parse_head(bytes(buffer[:end]), self._path)
            if head is None or head.length > rules.max_body_size:
                self._hand_over()
                return
            self._length, self._request_id, self._close_after, expect_continue = head
            self._head_size = end + 4
            self._state = _BODY
            self._since = self._loop.time()
            if expect_continue and len(buffer) < self._head_size + self._length:
                transport = self._transport
                assert transport is not None
                transport.write(_CONTINUE)  # the sender waits for it before the body
        need = self._head_size + self._length
        if len(buffer) < need:
            if not self._reading:
                self._reading = True
                self._guard.reading += 1
            self._arm(self._body_deadline())
            return
        if self._reading:
            self._reading = False
            self._guard.reading -= 1
        body = bytes(buffer[self._head_size : need])
        del buffer[:need]
        self._state = _BUSY
        self._task = self._loop.create_task(self._answer(body))

    async def _answer(self, body: bytes) -> None:
        try:
            answer = await self._rules.endpoint.answer_callback(body, self._request_id, self._peer)
        except Exception:  # the endpoint answers its own failures: this is a bug in it
            _log.exception("internal error answering a callback")
            answer = _INTERNAL_ERROR
        finally:
            self._task = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return  # the peer went away meanwhile
        close = answer.close or self._close_after
        transport.write(_encode(answer, close))
        if close:
            self._close()
            return
        self._state = _IDLE
        self._since = self._loop.time()
        if self._paused:
            self._paused = False
            transport.resume_reading()
        if self._buffer:
            self._state = _HEAD
            self._advance()
        else:
            self._arm(self._since + self._rules.keepalive_timeout)

    def _hand_over(self) -> None:
        """Give the connection, with every byte received, to aiohttp's protocol for good."""
        transport = self._transport
        assert transport is not None
        self._disarm()
        self._transport = None
        self._guard.lane_closed(self)
        data = bytes(self._buffer)
        self._buffer = bytearray()
        handler = self._server.aiohttp_connection(self._peer)
        transport.set_protocol(handler)
        handler.connection_made(transport)
        handler.data_received(data)

    # -- deadlines -------------------------------------------------------------------------

    def _body_deadline(self) -> float:
        """The earlier of the end of ``read_timeout`` and the moment the body received so far
        falls below ``min_rate`` (counted after ``min_rate_grace``)."""
        rules = self._rules
        end = self._since + rules.read_timeout
        if rules.min_rate <= 0:
            return end
        received = len(self._buffer) - self._head_size
        return min(end, self._since + rules.min_rate_grace + received / rules.min_rate)

    def _arm(self, deadline: float) -> None:
        timer = self._timer
        if timer is not None:
            if self._timer_at <= deadline:
                return  # it fires first and looks again
            timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._deadline_passed)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = math.inf

    def _deadline_passed(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        if self._transport is None:
            return
        state = self._state
        rules = self._rules
        if state == _BUSY:
            return
        if state == _IDLE:
            deadline = self._since + rules.keepalive_timeout
        elif state == _HEAD:
            deadline = self._since + rules.header_timeout
        else:
            deadline = self._body_deadline()
        if self._loop.time() < deadline:
            self._arm(deadline)
            return
        if state == _IDLE:
            self._close()
        elif state == _HEAD:
            self._guard.header_timeouts += 1
            self._close_with(_HEAD_TIMED_OUT)
        else:
            if deadline >= self._since + rules.read_timeout:
                message = f"request body not received in {rules.read_timeout:g}s"
            else:
                message = f"request body slower than {rules.min_rate:g} bytes/s"
            rid = request_id_or_new(self._request_id)
            self._close_with(_canned(408, "Request Timeout", message, f"X-Request-Id: {rid}"))

    def _close_with(self, response: bytes) -> None:
        if self._transport is not None:
            self._transport.write(response)
        self._close()

    def _close(self) -> None:
        self._disarm()
        if self._transport is not None:
            self._transport.close()
