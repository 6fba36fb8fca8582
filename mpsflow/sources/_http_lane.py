"""The callback lane, and the server whose connections start on it.

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

The lane keeps the bounds of :mod:`mpsflow.sources._http_server`'s connections.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Final, NamedTuple, cast

from aiohttp import StreamReader, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.web_protocol import RequestHandler

from mpsflow.sources._http_server import (
    HEAD_TIMED_OUT_RESPONSE,
    MAX_REQUEST_ID,
    REFUSED_RESPONSE,
    AiohttpConnection,
    Answer,
    CallbackEndpoint,
    Connections,
    canned_response,
    peer_of,
    request_id_or_new,
)

__all__ = ["Lane", "LaneRules", "Server"]

_log = logging.getLogger("mpsflow.sources.http")


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
            caller_id = given.decode("utf-8", "surrogateescape")[:MAX_REQUEST_ID]
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
            cast(asyncio.Transport, transport).write(REFUSED_RESPONSE)
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
            self._close_with(HEAD_TIMED_OUT_RESPONSE)
        else:
            if deadline >= self._since + rules.read_timeout:
                message = f"request body not received in {rules.read_timeout:g}s"
            else:
                message = f"request body slower than {rules.min_rate:g} bytes/s"
            rid = request_id_or_new(self._request_id)
            self._close_with(
                canned_response(408, "Request Timeout", message, f"X-Request-Id: {rid}")
            )

    def _close_with(self, response: bytes) -> None:
        if self._transport is not None:
            self._transport.write(response)
        self._close()

    def _close(self) -> None:
        self._disarm()
        if self._transport is not None:
            self._transport.close()
