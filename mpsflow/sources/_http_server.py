"""The connections under :class:`~mpsflow.sources.http.HttpSource`: their bounds, and aiohttp's
protocol for every request the callback lane (:mod:`mpsflow.sources._http_lane`) hands over.

A connection that the lane does not keep is aiohttp's (:class:`AiohttpConnection`) from then
on. aiohttp's answer to a request it cannot parse is a JSON 400 and one rate-limited warning
line, like every other refusal here.

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
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

import msgspec
from aiohttp import StreamReader, web
from aiohttp.web_protocol import RequestHandler

if TYPE_CHECKING:
    from mpsflow.sources._http_lane import Lane

__all__ = [
    "HEAD_TIMED_OUT_RESPONSE",
    "MAX_REQUEST_ID",
    "REFUSED_RESPONSE",
    "AiohttpConnection",
    "Answer",
    "CallbackEndpoint",
    "Connections",
    "canned_response",
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
MAX_REQUEST_ID = 128


def request_id_or_new(given: str) -> str:
    """The caller's ``X-Request-Id`` (``given``, cut to 128 characters), or a new id: unique
    per process start, cheap to make."""
    if given:
        return given[:MAX_REQUEST_ID]
    return f"{_ID_PREFIX}-{next(_id_numbers):x}"


def canned_response(status: int, reason: str, message: str, *extra: str) -> bytes:
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


REFUSED_RESPONSE = canned_response(
    503, "Service Unavailable", "too many connections from this address", "Retry-After: 1"
)
HEAD_TIMED_OUT_RESPONSE = canned_response(
    408, "Request Timeout", "request headers not received in time"
)
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
                cast(asyncio.Transport, transport).write(REFUSED_RESPONSE)
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
        transport.write(HEAD_TIMED_OUT_RESPONSE)
        self.force_close()
