"""Shared base of the memory and file sources: retries happen in process, with backoff."""

from __future__ import annotations

import itertools
import logging
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

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

    Subclasses provide ``_more()`` (an iterator of further deliveries, read lazily, once per
    source object). With ``close_when_done`` the source ends once everything is settled and
    no retry is pending.

    The queue is the channel, and it outlives a run: running the same source object again
    carries on where the last run stopped. What a stop leaves is delivered then: deliveries
    not taken yet, retries waiting for their backoff (for what is left of it), and deliveries
    the shutdown timeout cut off before they were settled. Those go back to the front of the
    queue, in the order they were received, with their attempt unchanged: being cut off is
    not a failed attempt (the handler did not finish, nor fail), so it does not use up the
    retry policy's attempts, as a notification HTTP or SCF resends after a cut-off keeps its
    attempt too (their counters count failures only). CMQ differs because its broker counts
    receives (``dequeueCount``), whatever became of them. A cut-off delivery comes back with
    fresh per-delivery state (``state``, ``dead_lettered``, ``dedup_keys``), as a retry does,
    and is neither in ``report`` nor in ``counts``: it was not settled.
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
        self._given_clock = clock
        """The clock given to the constructor; without one, each run uses the runtime's."""
        self._clock: Clock = clock or SystemClock()
        self._close_when_done = close_when_done
        self._queue: deque[Delivery] = deque()
        self._more_items: Iterator[Delivery] | None = None
        self._more_started = False
        """``_more()`` was called: its iterator (until exhausted) is kept across runs."""
        self._unsettled: dict[int, Delivery] = {}
        """Received and not settled yet, by ``id()``, in the order they were received."""
        self._waiting_retry: dict[int, tuple[Delivery, float]] = {}
        """Retries waiting for their delay, by ``id()``: each with its due (monotonic) time."""
        self._changed: anyio.Event | None = None
        """Set when ``receive`` waits for news; notifying costs nothing otherwise."""
        self._timers: anyio.abc.TaskGroup | None = None
        self.keep_report = keep_report
        self.report: list[Settled] = []
        """Every settlement, in order (dead letters, acks and retries alike); kept only with
        ``keep_report`` (a long-running source would otherwise hold every delivery). A
        delivery cut off by the shutdown timeout is not settled, so it is not here."""
        self._counts: dict[Settlement, int] = {}

    @property
    def counts(self) -> Counter[Settlement]:
        """How many deliveries were settled each way (cut-off deliveries were not settled)."""
        return Counter(self._counts)

    def _more(self) -> Iterator[Delivery]:
        return iter(())

    def put(self, delivery: Delivery) -> None:
        """Queue a delivery for processing."""
        self._queue.append(delivery)
        self._notify()

    @property
    def pending_retries(self) -> tuple[Delivery, ...]:
        """Deliveries waiting for their retry delay (kept if the source stops: the next run
        queues each once what is left of its delay has passed)."""
        return tuple(delivery for delivery, _ in self._waiting_retry.values())

    @property
    def idle(self) -> bool:
        """Nothing queued, in flight, or waiting for a retry."""
        return not self._queue and not self._unsettled and not self._waiting_retry

    def _notify(self) -> None:
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()

    async def run(self, runtime: SourceRuntime) -> None:
        if self._given_clock is None:
            self._clock = runtime.clock
        if not self._more_started:
            self._more_started = True
            self._more_items = self._more()
        try:
            async with anyio.create_task_group() as timers:
                self._timers = timers
                now = self._clock.monotonic()
                for delivery, due in self._waiting_retry.values():  # left by an earlier run
                    timers.start_soon(self._requeue_later, delivery, max(due - now, 0.0))
                await super().run(runtime)
                timers.cancel_scope.cancel()
        finally:
            self._timers = None
            self._requeue_unsettled()

    def _requeue_unsettled(self) -> None:
        """Put what this run received but did not settle back at the front of the queue."""
        unsettled = self._unsettled
        if not unsettled:
            return
        cut_off = [
            replace(delivery, state={}, dead_lettered=False, dedup_keys=None)
            for delivery in unsettled.values()
        ]
        unsettled.clear()
        self._queue.extendleft(reversed(cut_off))
        _log.info(
            "source %s: %d unsettled deliveries queued again for the next run",
            self.name,
            len(cut_off),
        )

    async def receive(self, max_count: int) -> Sequence[Delivery]:
        while True:
            if not self._queue and self._more_items is not None:
                for item in self._more_items:
                    self._queue.append(item)
                    break
                else:
                    self._more_items = None
            queue = self._queue
            if queue:
                batch = [queue.popleft() for _ in range(min(max_count, len(queue)))]
                unsettled = self._unsettled
                before = len(unsettled)
                unsettled.update(zip(map(id, batch), batch, strict=True))
                if len(unsettled) != before + len(batch):
                    batch = self._tell_apart(batch, before)
                return batch
            if self._close_when_done and self._more_items is None and self.idle:
                raise anyio.EndOfStream
            self._changed = changed = anyio.Event()
            await changed.wait()

    def _tell_apart(self, batch: list[Delivery], before: int) -> list[Delivery]:
        """The same object was queued twice: track each later occurrence as a copy.

        ``update`` added the batch's new objects after the ``before`` entries already there
        (an object already unsettled, or twice in the batch, was added once or not at all).
        """
        unsettled = self._unsettled
        added = set(itertools.islice(unsettled, before, None))
        distinct = []
        for delivery in batch:
            if id(delivery) in added:
                added.discard(id(delivery))
                distinct.append(delivery)
            else:
                copy = replace(delivery)
                unsettled[id(copy)] = copy
                distinct.append(copy)
        return distinct

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        self._unsettled.pop(id(delivery), None)
        settlement = outcome.settlement
        counts = self._counts
        counts[settlement] = counts.get(settlement, 0) + 1
        if self.keep_report:
            self.report.append(Settled(delivery, outcome))
        if settlement is Settlement.RETRY:
            again = delivery.redelivery()
            delay = outcome.retry_after
            self._waiting_retry[id(again)] = (again, self._clock.monotonic() + delay)
            assert self._timers is not None
            self._timers.start_soon(self._requeue_later, again, delay)
        if self._changed is not None:
            self._notify()

    async def _requeue_later(self, delivery: Delivery, delay: float) -> None:
        await self._clock.sleep(delay)
        del self._waiting_retry[id(delivery)]
        self.put(delivery)
