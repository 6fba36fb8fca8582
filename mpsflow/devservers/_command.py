"""What the dev servers' commands share: reading a setting from an option or the environment,
and serving until SIGINT/SIGTERM with the line that says where."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Protocol

import anyio

__all__ = ["DevServer", "from_option_or_env", "serve_until_signal"]


class DevServer(Protocol):
    """A dev server: started on an address, stopped, reachable at ``url``."""

    @property
    def url(self) -> str: ...

    async def start(self, host: str, port: int) -> None: ...

    async def stop(self) -> None: ...


def from_option_or_env(value: str | None, *names: str) -> str:
    """``value`` when given, else the first of the environment variables ``names`` that is
    set, else ``""``."""
    if value:
        return value
    for name in names:
        found = os.environ.get(name)
        if found:
            return found
    return ""


async def serve_until_signal(
    server: DevServer, host: str, port: int, *, command: str, summary: Callable[[], str]
) -> None:
    """Start ``server``, print ``mpsflow COMMAND listening on URL`` and ``summary()`` (what
    the tests and the README read), and stop it on SIGINT or SIGTERM."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        await server.start(host, port)
        try:
            print(f"mpsflow {command} listening on {server.url}", flush=True)
            print(summary(), flush=True)
            async for _ in signals:
                break
        finally:
            with anyio.CancelScope(shield=True):
                await server.stop()
