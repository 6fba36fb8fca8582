"""Time as a dependency: the real clock, and a fake one so tests never sleep."""

from __future__ import annotations

import time
from typing import Protocol

import anyio

__all__ = ["Clock", "FakeClock", "SystemClock", "format_duration"]


class Clock(Protocol):
    """What the engine needs from time: wall time, monotonic time and sleeping."""

    def time(self) -> float:
        """Seconds since the epoch (used for signature expiry and record TTLs)."""
        ...

    def monotonic(self) -> float:
        """A clock that never goes backwards (used for deadlines and leases)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class FakeClock:
    """A clock that moves only when told to, or when someone sleeps on it.

    ``sleep`` advances time by the requested amount and yields once, so retry and backoff
    logic runs at full speed in tests while every requested delay is recorded in ``sleeps``.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds``."""
        self._now += seconds
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))
        await anyio.lowlevel.checkpoint()


def format_duration(seconds: float) -> str:
    """``90s``, ``5m``, ``24h``, ``2d``: ``seconds`` in the largest unit that divides it, as
    the command line's durations are written (and read back), for messages that quote one."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
