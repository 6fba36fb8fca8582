"""What the HTTP clients and sinks share: their aiohttp session, and why they could not connect.

The webhook and SCF sinks and the CMQ client all take an optional ``session`` to share; without
one they open their own on start and close it on close. ``SessionHolder`` is that rule, once.

aiohttp's own text for a refused connection names its connection key (``Cannot connect to host
127.0.0.1:9800 ssl:default [Connect call failed ...]``); the CMQ and MPS clients, the webhook
sink and ``mpsflow send`` say ``cannot connect to HOST:PORT (connection refused)`` instead
(:func:`cannot_connect`, :func:`connect_failure`). Neither names more of the URL than the host
and port, so no signature or token in a query string can leak through them. An ``https://``
address whose server answers plain HTTP is told to use an ``http://`` one, or what the caller
names instead (a command names its option: ``--inbox cmq+http://…``).
"""

from __future__ import annotations

import socket
from typing import Final

import aiohttp

__all__ = ["PLAIN_HTTP_ADDRESS", "SessionHolder", "cannot_connect", "connect_failure"]

PLAIN_HTTP_ADDRESS: Final = "an http:// address"
"""What an ``https://`` address whose server answers plain HTTP is told to use by default."""


class SessionHolder:
    """Holds ``session``: the one given (used as is, never closed here) or one of its own.

    ``open`` returns the session, first opening one of its own when there is none (again after
    ``close``, or when its own was closed); ``close`` closes only a session it opened.
    """

    __slots__ = ("_owned", "session")

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self.session = session
        """The session in use; ``None`` before ``open`` and after ``close`` of its own."""
        self._owned = session is None

    def open(self) -> aiohttp.ClientSession:
        """The session, opening one of its own when there is none to use."""
        if self.session is None or (self._owned and self.session.closed):
            self.session = aiohttp.ClientSession()
        return self.session

    async def close(self) -> None:
        """Close the session if it is one of its own (a given one stays open)."""
        if self._owned and self.session is not None:
            await self.session.close()
            self.session = None


def connect_failure(
    exc: aiohttp.ClientConnectorError, *, plain_http: str = PLAIN_HTTP_ADDRESS
) -> str:
    """Why no connection was made: ``"connection refused"``, ``"no such host"``, that an
    ``https://`` address answers plain HTTP (and to use ``plain_http``), or the operating
    system's reason."""
    cause = exc.os_error
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, socket.gaierror):
        return "no such host"
    if getattr(cause, "reason", None) == "WRONG_VERSION_NUMBER":  # an https:// URL, plain HTTP
        return f"it answers plain HTTP, not TLS: use {plain_http}"
    return " ".join((cause.strerror or type(cause).__name__).split())


def cannot_connect(
    exc: aiohttp.ClientConnectorError, *, plain_http: str = PLAIN_HTTP_ADDRESS
) -> str:
    """``"cannot connect to HOST:PORT (connection refused)"``."""
    reason = connect_failure(exc, plain_http=plain_http)
    return f"cannot connect to {exc.host}:{exc.port} ({reason})"
