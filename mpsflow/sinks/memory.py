"""MemorySink: keeps records in a list, with switches to fail or stall sends (for tests)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio

from mpsflow.errors import SinkError
from mpsflow.sinks.base import KeyedSinkBase

__all__ = ["MemorySink"]


class MemorySink(KeyedSinkBase):
    """A sink that appends every delivered record to ``records`` (and each batch to ``batches``).

    ``keys`` holds each delivered record's idempotency key (``None`` when it had none), in
    step with ``records``; the sink keeps duplicates, so a test sees what a re-run repeats.

    Test switches: ``fail_next(n, transient=...)`` makes the next ``n`` sends raise;
    ``poison`` (a predicate) refuses, permanently, any batch holding a matching record;
    ``pause()`` makes sends wait until ``resume()``; ``wait_for(n)`` waits until ``n``
    records were delivered. ``attempts`` counts every call to ``send``.
    """

    def __init__(self, *, poison: Callable[[object], bool] | None = None) -> None:
        self.records: list[object] = []
        self.keys: list[str | None] = []
        self.batches: list[list[object]] = []
        self.attempts = 0
        self.started = False
        self.closed = False
        self.poison = poison
        self._failures: list[bool] = []
        self._open = anyio.Event()
        self._open.set()
        self._changed = anyio.Event()

    def fail_next(self, count: int = 1, *, transient: bool = True) -> None:
        """Make the next ``count`` sends raise ``SinkError(transient=transient)``."""
        self._failures.extend([transient] * count)

    def pause(self) -> None:
        """Hold every send (after counting its attempt) until ``resume`` is called."""
        if self._open.is_set():
            self._open = anyio.Event()

    def resume(self) -> None:
        """Let held and future sends through."""
        self._open.set()

    async def wait_for(self, count: int) -> None:
        """Wait until at least ``count`` records were delivered."""
        while len(self.records) < count:
            await self._changed.wait()

    async def start(self) -> None:
        self.started = True

    async def send_keyed(self, batch: Sequence[object], keys: Sequence[str | None]) -> None:
        self.attempts += 1
        await self._open.wait()
        if self._failures:
            transient = self._failures.pop(0)
            raise SinkError("memory sink failure (as configured)", transient=transient)
        if self.poison is not None and any(self.poison(record) for record in batch):
            raise SinkError("memory sink refused a poisoned record", transient=False)
        self.batches.append(list(batch))
        self.records.extend(batch)
        self.keys.extend(keys)
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return f"MemorySink(records={len(self.records)})"
