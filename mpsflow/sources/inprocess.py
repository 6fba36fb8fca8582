"""Shared base of the memory and file sources: retries happen in process, with backoff."""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import anyio
import anyio.abc

from mpsflow.clock import Clock, SystemClock
from mpsflow.delivery import Delivery, Outcome, Settlement
from mpsflow.sources.base import PullSource
from mpsflow.sources.runtime import SourceRuntime

__all__ = ["InProcessSource", "Settled"]

_log = logging.getLogger("mpsflow.sources")


@dataclass(frozen=True, slots=True)
class Settled:
    """A delivery and the outcome it was settled with (the source's report)."""

    delivery: Delivery
    outcome: Outcome


class InProcessSource(PullSource):
    """A pull source fed from Python: queued deliveries, retried after their backoff.

    Subclasses provide ``_more()`` (an iterator of further deliveries, read lazily). With
    ``close_when_done`` the source ends once everything is settled and no retry is pending.
    """

    def __init__(
        self,
        *,
        name: str,
        max_in_flight: int = 64,
        clock: Clock | None = None,
        close_when_done: bool = True,
        keep_report: bool = True,
    ) -> None:
        super().__init__(max_in_flight=max_in_flight, pollers=1)
        self.name = name
        self._clock = clock or SystemClock()
        self._close_when_done = close_when_done
        self._queue: deque[Delivery] = deque()
        self._more_items: Iterator[Delivery] | None = None
        self._outstanding = 0
        self._waiting_retry: list[Delivery] = []
        self._changed: anyio.Event | None = None
        """Set when ``receive`` waits for news; notifying costs nothing otherwise."""
        self._timers: anyio.abc.TaskGroup | None = None
        self.keep_report = keep_report
        self.report: list[Settled] = []
        """Every settlement, in order (dead letters, acks and retries alike); kept only with
        ``keep_report`` (a long-running source would otherwise hold every delivery)."""
        self._counts: dict[Settlement, int] = {}

    @property
    def counts(self) -> Counter[Settlement]:
        """How many deliveries were settled each way."""
        return Counter(self._counts)

    def _more(self) -> Iterator[Delivery]:
        return iter(())

    def put(self, delivery: Delivery) -> None:
        """Queue a delivery for processing."""
        self._queue.append(delivery)
        self._notify()

    @property
    def pending_retries(self) -> tuple[Delivery, ...]:
        """Deliveries waiting for their retry delay (left unprocessed if the source stops)."""
        return tuple(self._waiting_retry)

    @property
    def idle(self) -> bool:
        """Nothing queued, in flight, or waiting for a retry."""
        return not self._queue and not self._outstanding and not self._waiting_retry

    def _notify(self) -> None:
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()

    async def run(self, runtime: SourceRuntime) -> None:
        self._more_items = self._more()
        async with anyio.create_task_group() as timers:
            self._timers = timers
            await super().run(runtime)
            timers.cancel_scope.cancel()
        self._timers = None

    async def receive(self, max_count: int) -> Sequence[Delivery]:
        while True:
            if not self._queue and self._more_items is not None:
                for item in self._more_items:
                    self._queue.append(item)
                    break
                else:
                    self._more_items = None
            if self._queue:
                batch = [self._queue.popleft() for _ in range(min(max_count, len(self._queue)))]
                self._outstanding += len(batch)
                return batch
            if self._close_when_done and self._more_items is None and self.idle:
                raise anyio.EndOfStream
            self._changed = changed = anyio.Event()
            await changed.wait()

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        self._outstanding -= 1
        settlement = outcome.settlement
        counts = self._counts
        counts[settlement] = counts.get(settlement, 0) + 1
        if self.keep_report:
            self.report.append(Settled(delivery, outcome))
        if settlement is Settlement.RETRY:
            again = delivery.redelivery()
            self._waiting_retry.append(again)
            assert self._timers is not None
            self._timers.start_soon(self._requeue_later, again, outcome.retry_after)
        if self._changed is not None:
            self._notify()

    async def _requeue_later(self, delivery: Delivery, delay: float) -> None:
        await self._clock.sleep(delay)
        self._waiting_retry.remove(delivery)
        self.put(delivery)
