"""The Source protocol, and PullSource: the shared loop of every pull-based source."""

from __future__ import annotations

import abc
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

import anyio

from mpsflow.delivery import Delivery, Outcome

__all__ = ["Consumer", "PullSource", "Source"]

Consumer = Callable[[Delivery], Awaitable[Outcome]]
"""The pipeline, as a source sees it: one delivery in, its outcome out."""

_log = logging.getLogger("mpsflow.sources")


@runtime_checkable
class Source(Protocol):
    """Feeds deliveries to the pipeline and settles each by its outcome.

    ``run`` returns when ``stop`` is set and every delivery it started has been settled, or
    when a finite source (file, memory) is exhausted. Push sources (HTTP, SCF) implement
    ``run`` around their server; pull sources (CMQ, files, memory) subclass ``PullSource``.
    """

    name: str

    async def run(self, consumer: Consumer, stop: anyio.Event) -> None:
        """Deliver until ``stop`` is set (or the source ends), settling every delivery."""
        ...


class PullSource(abc.ABC):
    """Base for sources that pull batches: enforces ``max_in_flight`` *before* pulling more.

    Subclasses implement ``receive`` (return up to ``max_count`` deliveries, possibly after a
    long poll; an empty list means "nothing yet"; raise ``anyio.EndOfStream`` when a finite
    source is exhausted) and ``settle``. ``pollers`` receive loops run side by side.
    """

    name: str = "pull"

    def __init__(self, *, max_in_flight: int = 64, pollers: int = 1) -> None:
        if max_in_flight < 1 or pollers < 1:
            raise ValueError("max_in_flight and pollers must be at least 1")
        self.max_in_flight = max_in_flight
        self.pollers = pollers

    async def open(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Acquire connections before the first receive."""

    async def close(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release connections after the last settle."""

    @abc.abstractmethod
    async def receive(self, max_count: int) -> Sequence[Delivery]:
        """Return up to ``max_count`` deliveries (``[]`` when none arrived in time)."""

    @abc.abstractmethod
    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """Ack, leave for redelivery, or delete after dead-lettering, per ``outcome``."""

    async def run(self, consumer: Consumer, stop: anyio.Event) -> None:
        slots = anyio.Semaphore(self.max_in_flight)
        await self.open()
        try:
            async with (
                anyio.create_task_group() as workers,
                anyio.create_task_group() as pollers,
            ):
                for _ in range(self.pollers):
                    pollers.start_soon(self._poll, consumer, stop, slots, workers)
                await stop.wait()
                pollers.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.close()

    async def _poll(
        self,
        consumer: Consumer,
        stop: anyio.Event,
        slots: anyio.Semaphore,
        workers: anyio.abc.TaskGroup,
    ) -> None:
        while not stop.is_set():
            await slots.acquire()
            taken = 1
            # Take every other free slot too, so one receive can fetch a full batch.
            while slots.value > 0:
                await slots.acquire()
                taken += 1
            try:
                batch = await self.receive(taken)
            except anyio.EndOfStream:
                for _ in range(taken):
                    slots.release()
                stop.set()
                return
            except BaseException:
                for _ in range(taken):
                    slots.release()
                raise
            for _ in range(taken - len(batch)):
                slots.release()
            for delivery in batch:
                workers.start_soon(self._consume, consumer, delivery, slots)

    async def _consume(
        self, consumer: Consumer, delivery: Delivery, slots: anyio.Semaphore
    ) -> None:
        try:
            outcome = await consumer(delivery)
            with anyio.CancelScope(shield=True):
                await self.settle(delivery, outcome)
        except Exception:
            # The pipeline never raises; a failing settle leaves the message for redelivery.
            _log.exception("source %s could not settle delivery %s", self.name, delivery.id)
        finally:
            slots.release()
