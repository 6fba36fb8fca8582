"""Raw HTTP/1.1 over loopback for the HTTP source's tests: bytes as a sender writes them,
answers as they come back (no client library between, so malformed and slow requests can be
sent)."""

from __future__ import annotations

import re
from collections.abc import Callable

import anyio
import anyio.abc
import anyio.lowlevel

from mpsflow.sources.http import HttpSource

__all__ = ["Responses", "connect", "head", "response", "until", "until_closed"]


async def connect(source: HttpSource, peer: str = "127.0.0.1") -> anyio.abc.SocketStream:
    """A TCP connection to ``source`` from the loopback address ``peer``."""
    assert source.address is not None
    host, port = source.address
    return await anyio.connect_tcp(host, port, local_host=peer)


def head(path: str, length: int, extra: str = "") -> bytes:
    """A POST's head announcing a body of ``length`` bytes."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: mps\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


async def until_closed(stream: anyio.abc.SocketStream) -> bytes:
    """All the server sends until it closes the connection."""
    received = b""
    try:
        while True:
            received += await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
        return received


async def response(stream: anyio.abc.SocketStream) -> bytes:
    """One whole response (head and ``Content-Length`` body) read from ``stream``."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += await stream.receive()
    top, _, rest = received.partition(b"\r\n\r\n")
    [length] = re.findall(rb"(?im)^content-length: *(\d+)", top)
    while len(rest) < int(length):
        rest += await stream.receive()
    return top + b"\r\n\r\n" + rest


async def until(condition: Callable[[], bool]) -> None:
    """Wait (10 s at most) until ``condition()``, a state of the source in this process, holds.

    The source has no change notification for it: look again at every scheduling point.
    """
    with anyio.fail_after(10):
        while not condition():
            await anyio.lowlevel.checkpoint()


class Responses:
    """The responses coming back on ``stream``, one at a time, however they were packed into
    reads (pipelined answers may arrive together)."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.received = b""

    async def next(self) -> bytes:
        """The next whole response (head and ``Content-Length`` body)."""
        while b"\r\n\r\n" not in self.received:
            self.received += await self.stream.receive()
        top, _, rest = self.received.partition(b"\r\n\r\n")
        [length] = re.findall(rb"(?im)^content-length: *(\d+)", top)
        while len(rest) < int(length):
            rest += await self.stream.receive()
        self.received = rest[int(length) :]
        return top + b"\r\n\r\n" + rest[: int(length)]
