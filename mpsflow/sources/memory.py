"""An in-memory source: for tests, replays from Python, and the test client."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from mpsflow.clock import Clock
from mpsflow.delivery import Delivery
from mpsflow.sources.inprocess import InProcessSource

__all__ = [
    "Body",
    "MemorySource",
]

Body = bytes | str | Mapping[str, Any]


class MemorySource(InProcessSource):
    """Deliveries queued from Python; runs the identical pipeline as every other source.

    Bodies may be bytes, str, a parsed dict (like an SCF event) or ready ``Delivery``
    objects. Failed deliveries are retried in process after their backoff (via ``clock``).
    ``report`` lists every settlement (``keep_report=False`` keeps only ``counts``). The
    queue outlives a run: what a stop leaves, including deliveries the shutdown timeout cut
    off (queued again first, same attempt), is delivered when the same source runs again.
    """

    def __init__(
        self,
        items: Iterable[Body | Delivery] = (),
        *,
        name: str = "memory",
        max_in_flight: int = 64,
        clock: Clock | None = None,
        close_when_done: bool = True,
        keep_report: bool = True,
    ) -> None:
        super().__init__(
            name=name,
            max_in_flight=max_in_flight,
            clock=clock,
            close_when_done=close_when_done,
            keep_report=keep_report,
        )
        self._ids = itertools.count(1)
        for item in items:
            self.add(item)

    def add(self, item: Body | Delivery, *, attempt: int = 1) -> Delivery:
        """Queue one body (or delivery) and return the delivery that will be processed."""
        if isinstance(item, Delivery):
            delivery = item
        else:
            body = item.encode() if isinstance(item, str) else item
            delivery = Delivery(body, source=self.name, attempt=attempt, id=str(next(self._ids)))
        self.put(delivery)
        return delivery
