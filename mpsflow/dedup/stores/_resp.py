"""RedisStore's own connection: pipelines of RESP commands over an ``asyncio.Protocol``.

redis-py reads each reply of a pipeline with a coroutine of its own under a timeout of its
own; for the store's small replies that cost more CPU than everything else in a claim. Here a
pipeline is one write and one future: replies are parsed as bytes arrive
(:meth:`RespConnection.data_received`) and the future is answered once the last one is in, under
one timer per pipeline. Replies come back as redis-py's parser gives them with decoding off
(bytes, ints, lists; ``None`` for a null), an error reply as a ``ResponseError`` (a
``NoScriptError`` for NOSCRIPT), so the store treats both connections alike.

Only plain RESP2 over TCP or a Unix socket, with password authentication, a database number,
redis-py's timeouts and keepalive: what :func:`fast_address` accepts. Anything else (TLS, a
credential provider, a client set to RESP3, a client name) stays on redis-py's connections.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final, cast

from redis.asyncio.connection import Connection, ConnectionPool, UnixDomainSocketConnection
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    NoScriptError,
    ResponseError,
    TimeoutError,
)

__all__ = ["RespAddress", "RespConnection", "fast_address", "parse_reply"]

_INCOMPLETE: Final = object()
"""What :func:`parse_reply` returns when the buffer ends inside a reply."""
_CRLF: Final = b"\r\n"


@dataclass(frozen=True, slots=True)
class RespAddress:
    """Where and how to connect: a TCP ``host``/``port`` or a Unix socket ``path``, with
    redis-py's settings for that connection (its defaults filled in)."""

    host: str = ""
    port: int = 6379
    path: str = ""
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    db: int = 0
    connect_timeout: float | None = None
    socket_timeout: float | None = None
    keepalive: dict[int, int | bytes] | None = None
    """TCP keepalive options to set (``{}`` for the system's), or None for no keepalive."""
    encoding: str = "utf-8"

    def handshake(self) -> list[tuple[str | int, ...]]:
        """The commands a new connection sends first: AUTH, SELECT (none when not needed).

        AUTH as redis-py sends it: only with a username or a non-empty password, the username
        first when there is one (an absent password then goes as an empty one)."""
        commands: list[tuple[str | int, ...]] = []
        if self.username:
            commands.append(("AUTH", self.username, self.password or ""))
        elif self.password:
            commands.append(("AUTH", self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        return commands


def fast_address(pool: ConnectionPool) -> RespAddress | None:
    """The :class:`RespAddress` of ``pool``'s connections, or None when this module cannot speak
    for them (TLS, a custom connection class, a credential provider, a client explicitly set to
    RESP3, a client name, a username or password given as bytes).

    The settings are read off a connection redis-py builds from the pool's options (no I/O),
    so that its defaults apply as they would to its own connections: the socket timeout,
    the connect timeout falling back to it, keepalive.
    """
    options: dict[str, Any] = pool.connection_kwargs
    if pool.connection_class not in (Connection, UnixDomainSocketConnection):
        return None
    if options.get("credential_provider") is not None or options.get("client_name"):
        return None
    if options.get("protocol") not in (None, 2, "2") or options.get("redis_connect_func"):
        return None
    try:
        built = pool.connection_class(**options)
    except Exception:  # options this redis-py does not take: leave them to the pool
        return None
    username, password = getattr(built, "username", None), getattr(built, "password", None)
    if not all(value is None or isinstance(value, str) for value in (username, password)):
        return None
    socket_timeout = _seconds(getattr(built, "socket_timeout", None))
    connect_timeout = _seconds(getattr(built, "socket_connect_timeout", None)) or socket_timeout
    encoding = getattr(getattr(built, "encoder", None), "encoding", "utf-8")
    unix = isinstance(built, UnixDomainSocketConnection)
    keepalive: dict[int, int | bytes] | None = None
    if getattr(built, "socket_keepalive", False) and not unix:
        keepalive = dict(getattr(built, "socket_keepalive_options", None) or {})
    return RespAddress(
        host="" if unix else str(getattr(built, "host", "localhost")),
        port=6379 if unix else int(getattr(built, "port", 6379)),
        path=str(getattr(built, "path", "")) if unix else "",
        username=username,
        password=password,
        db=int(built.db or 0),
        connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        keepalive=keepalive,
        encoding=encoding,
    )


def _seconds(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


class RespConnection(asyncio.Protocol):
    """One connection; :meth:`open` it, then send pipelines with :meth:`exchange`.

    Pipelines may overlap: replies are matched to them in order. A connection that is lost or
    times out fails every pipeline waiting on it and is not used again (:attr:`usable`).
    """

    def __init__(self, address: RespAddress) -> None:
        self._address = address
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiting: deque[tuple[int, list[Any], asyncio.Future[list[Any]]]] = deque()
        self._failure: Exception | None = None
        self.pid = os.getpid()
        """The process that opened it."""
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    async def open(cls, address: RespAddress) -> RespConnection:
        """Connect (within ``connect_timeout``), authenticate and select the database.

        Raises redis-py's ``ConnectionError`` (``AuthenticationError`` for a refused password),
        ``TimeoutError`` or ``ResponseError``.
        """
        loop = asyncio.get_running_loop()
        where = address.path or f"{address.host}:{address.port}"
        connection = cls(address)
        connection._loop = loop
        try:
            if address.path:
                connect = loop.create_unix_connection(lambda: connection, address.path)
            else:
                connect = loop.create_connection(lambda: connection, address.host, address.port)
            await asyncio.wait_for(connect, address.connect_timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"Timeout connecting to {where}") from None
        except OSError as exc:
            raise ConnectionError(f"Error connecting to {where}: {exc.strerror or exc}") from None
        except Exception as exc:  # a malformed host name (UnicodeError), and the like
            raise ConnectionError(f"Error connecting to {where}: {exc}") from None
        try:
            connection._keep_alive()
            await connection._authenticate()
        except BaseException:
            connection.close()
            raise
        return connection

    async def _authenticate(self) -> None:
        """Send the handshake; AUTH with a username falls back to the password alone on a
        server older than Redis 6 (no users), as redis-py does."""
        handshake = self._address.handshake()
        if not handshake:
            return
        replies = await self.exchange(self._pack(handshake), len(handshake))
        for command, reply in zip(handshake, replies, strict=True):
            if not isinstance(reply, ResponseError):
                continue
            if command[0] != "AUTH":
                raise reply
            refusal = reply
            if len(command) == 3 and "wrong number of arguments" in str(reply):
                (refusal,) = await self.exchange(self._pack([("AUTH", command[2])]), 1)
                if not isinstance(refusal, ResponseError):
                    continue
            raise AuthenticationError(str(refusal))

    def _keep_alive(self) -> None:
        """Turn TCP keepalive on, with redis-py's options, when the client asks for it."""
        options = self._address.keepalive
        transport = self._transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if options is None or sock is None or sock.family == socket.AF_UNIX:
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in options.items():
            sock.setsockopt(socket.IPPROTO_TCP, option, value)

    def _pack(self, commands: list[tuple[str | int, ...]]) -> bytes:
        return _pack_commands(commands, self._address.encoding)

    @property
    def usable(self) -> bool:
        """Open, not failed, and in this process and event loop."""
        return (
            self._failure is None
            and self._transport is not None
            and self.pid == os.getpid()
            and self._loop is asyncio.get_running_loop()
        )

    def exchange(self, payload: bytes, count: int) -> asyncio.Future[list[Any]]:
        """Send ``payload`` (``count`` packed commands); a future of their ``count`` replies.

        It fails with ``ConnectionError`` when the connection is lost, and with
        ``TimeoutError`` (and the connection closed) when the replies take longer than
        ``socket_timeout``.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if self._failure is not None or self._transport is None:
            future.set_exception(self._failure or ConnectionError("Connection closed"))
            return future
        self._waiting.append((count, [], future))
        self._transport.write(payload)
        timeout = self._address.socket_timeout
        if timeout is not None:
            timer = loop.call_later(timeout, self._timed_out, future)
            future.add_done_callback(lambda _: timer.cancel())
        return future

    def close(self) -> None:
        """Close the connection; what waits on it fails with ``ConnectionError``."""
        self._fail(ConnectionError("Connection closed"))

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"Connection lost: {exc}" if exc else "Connection lost"))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        position = 0
        waiting = self._waiting
        try:
            while waiting:
                count, replies, future = waiting[0]
                while len(replies) < count:
                    reply, end = parse_reply(buffer, position)
                    if reply is _INCOMPLETE:
                        return
                    replies.append(reply)
                    position = end
                waiting.popleft()
                if not future.done():
                    future.set_result(replies)
            if position < len(buffer):  # bytes nobody asked for: out of step
                self._fail(ConnectionError("Protocol error: unexpected reply"))
        except ValueError as exc:
            self._fail(ConnectionError(f"Protocol error: {exc}"))
        finally:
            del buffer[:position]

    # -- failures ------------------------------------------------------------------------------

    def _timed_out(self, future: asyncio.Future[list[Any]]) -> None:
        if not future.done():
            where = self._address.path or f"{self._address.host}:{self._address.port}"
            self._fail(TimeoutError(f"Timeout reading from {where}"))

    def _fail(self, exc: Exception) -> None:
        if self._failure is None:
            self._failure = exc
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()
        while self._waiting:
            *_, future = self._waiting.popleft()
            if not future.done():
                future.set_exception(self._failure)


def _pack_commands(commands: list[tuple[str | int, ...]], encoding: str = "utf-8") -> bytes:
    """``commands`` packed as RESP arrays of bulk strings (the handshake's)."""
    out = bytearray()
    for command in commands:
        out += b"*%d\r\n" % len(command)
        for arg in command:
            data = arg.encode(encoding) if isinstance(arg, str) else b"%d" % arg
            out += b"$%d\r\n%b\r\n" % (len(data), data)
    return bytes(out)


def parse_reply(buffer: bytearray, start: int) -> tuple[Any, int]:
    """The RESP2 reply at ``start`` of ``buffer`` and where it ends, or ``(_INCOMPLETE,
    start)`` when the buffer ends inside it. Raises ValueError on bytes that are not RESP."""
    end = buffer.find(_CRLF, start)
    if end < 0:
        return _INCOMPLETE, start
    kind = buffer[start]
    after = end + 2
    if kind == 0x24:  # $ bulk string
        size = int(buffer[start + 1 : end])
        if size < 0:
            return None, after
        stop = after + size
        if len(buffer) < stop + 2:
            return _INCOMPLETE, start
        return bytes(buffer[after:stop]), stop + 2
    if kind == 0x3A:  # : integer
        return int(buffer[start + 1 : end]), after
    if kind == 0x2A:  # * array
        size = int(buffer[start + 1 : end])
        if size < 0:
            return None, after
        items: list[Any] = []
        position = after
        for _ in range(size):
            item, position = parse_reply(buffer, position)
            if item is _INCOMPLETE:
                return _INCOMPLETE, start
            items.append(item)
        return items, position
    if kind == 0x2B:  # + simple string
        return bytes(buffer[start + 1 : end]), after
    if kind == 0x2D:  # - error
        message = buffer[start + 1 : end].decode("utf-8", "replace")
        if message.startswith("NOSCRIPT"):
            return NoScriptError(message), after
        return ResponseError(message), after
    raise ValueError(f"unexpected reply type byte {kind:#04x}")
