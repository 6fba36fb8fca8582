"""Listening sockets for the HTTP servers: one place that says what to do when an address
cannot be used."""

from __future__ import annotations

import errno
import socket

from mpsflow.errors import StartupError

__all__ = ["duplicate_socket", "listen"]


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


def duplicate_socket(sock: socket.socket) -> socket.socket:
    """A socket object on a duplicate of ``sock``'s descriptor; the blocking mode untouched.

    Not ``sock.dup()``: it gives the copy ``sock``'s timeout, and on a blocking ``sock`` (one
    bound before forking) that clears ``O_NONBLOCK``, which belongs to the open file every
    process sharing the socket uses. Another worker's event loop, serving that socket, then
    blocks in ``accept()`` until the next connection comes, and the one it had just accepted
    waits unanswered. The event loop makes the copy non-blocking when it starts serving it.
    """
    return socket.socket(sock.family, sock.type, sock.proto, fileno=socket.dup(sock.fileno()))
