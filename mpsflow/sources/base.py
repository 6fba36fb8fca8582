"""The Source protocol, and PullSource: the shared loop of every pull-based source."""

from __future__ import annotations

import abc
import logging
from collections import deque
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import anyio
import anyio.abc

from mpsflow.delivery import Cause, Delivery, Outcome, Settlement
from mpsflow.sources.runtime import Consumer, SourceRuntime

__all__ = ["ConfirmsStart", "PullSource", "Source", "TracksCatchUp"]

_log = logging.getLogger("mpsflow.sources")

_CONSUMER_FAILED = Outcome(
    Settlement.RETRY, retry_after=1.0, reason="the consumer failed", cause=Cause.ERROR
)


@runtime_checkable
class Source(Protocol):
    """Feeds deliveries to the pipeline and settles each by its outcome.

    ``run`` gets a :class:`~mpsflow.sources.runtime.SourceRuntime`, the only part of the app
    a source may use: it hands deliveries to ``runtime.consumer`` and returns when
    ``runtime.stop`` is set and every delivery it started has been settled, or when a finite
    source (file, memory) is exhausted. Push sources (HTTP) implement ``run`` around their
    server; pull sources (CMQ, files, memory) subclass ``PullSource``.

    A source that cannot start (its address is taken, its credentials are refused) raises
    :class:`~mpsflow.errors.StartupError` saying what to do, before it has served. On its
    first run, ``App.run`` then ends with that error (or any ``ConfigurationError``) instead
    of restarting it; other failures, and any failure on a later run, restart it with backoff.
    """

    name: str

    async def run(self, runtime: SourceRuntime) -> None:
        """Deliver until ``runtime.stop`` is set (or the source ends), settling each delivery."""
        ...


@runtime_checkable
class ConfirmsStart(Protocol):
    """A source that knows when it works (CMQ: a first receive succeeded), so that what runs
    beside it (the HTTP receiver of a CMQ inbox) announces itself only then."""

    async def wait_started(self) -> None:
        """Return once the current run works (before a run starts: once the next one does)."""
        ...


@runtime_checkable
class TracksCatchUp(Protocol):
    """A queue's consumer that notes when it last took everything waiting (CMQ: a receive got
    fewer messages than it asked for), where the queue tells no count; an inbox receiver that
    runs it shows this on ``/metrics``."""

    caught_up_at: float
    """Wall-clock time it last found nothing more waiting; 0 before the first."""


class PullSource(abc.ABC):
    """Base for sources that pull batches: enforces ``max_in_flight`` *before* pulling more.

    Subclasses implement ``receive`` (return up to ``max_count`` deliveries, possibly after a
    long poll; an empty list means "nothing yet"; raise ``anyio.EndOfStream`` when a finite
    source is exhausted) and ``settle``. ``pollers`` receive loops run side by side. A source
    whose deliveries may also come from elsewhere in the process (the inbox's hand-over) waits
    in ``until_more`` instead of in ``receive``, holding no slots, and queues what comes with
    ``_push``.
    """

    name: str = "pull"

    def __init__(self, *, max_in_flight: int = 64, pollers: int = 1) -> None:
        if max_in_flight < 1 or pollers < 1:
            raise ValueError("max_in_flight and pollers must be at least 1")
        self.max_in_flight = max_in_flight
        self.pollers = pollers
        self._running: _Loop | None = None
        """The loop of the current ``run`` (for ``_push``)."""

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

    async def until_more(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Wait, holding no slots, after a ``receive`` that found nothing, until another may
        find something (by default at once: a source that long-polls waits in ``receive``)."""

    def _on_take(self, delivery: Delivery) -> None:  # noqa: B027 - optional hook
        """Called as a worker takes ``delivery`` from the queue, before it runs."""

    def _keep_at_stop(self, delivery: Delivery) -> bool:
        """Whether a delivery still queued when the source stops is run in the drain (by
        default: it was received, and would otherwise wait for redelivery). False leaves it
        unsettled, for the source to give back itself."""
        return True

    def _push(self, delivery: Delivery) -> bool:
        """Queue ``delivery`` for the workers as if received, past ``max_in_flight`` too (the
        caller bounds what it pushes; receives wait until the unsettled are below it again);
        False when the source is not running or stops."""
        loop = self._running
        if loop is None or loop.polling_done or loop.stop.is_set():
            return False
        loop.unsettled += 1
        loop.queue.append(delivery)
        loop._wake_one()
        return True

    async def run(self, runtime: SourceRuntime) -> None:
        """Poll, process and settle until ``runtime.stop`` is set or the source ends.

        ``max_in_flight`` long-lived workers take deliveries from a local queue; pollers ask
        ``receive`` only for as many deliveries as there are free slots (received but not
        settled deliveries count against the limit). No task is spawned per delivery.
        """
        loop = _Loop(self, runtime.consumer, runtime.stop)
        await self.open()
        self._running = loop
        try:
            await loop.run()
        finally:
            self._running = None
            with anyio.CancelScope(shield=True):
                await self.close()


class _Loop:
    """The state of one ``PullSource.run``: a queue, free slots, pollers and workers.

    Workers start lazily, up to ``max_in_flight``: new work wakes one idle worker, or starts
    one when none is idle. A worker that takes a delivery while more are queued wakes (or
    starts) one more, at most one wake-up pending at a time, so concurrency ramps up as
    handlers suspend, and a burst that handlers finish without suspending is served by one
    worker with no wake-ups per delivery. Idle workers wait on their own event.
    """

    def __init__(self, source: PullSource, consumer: Consumer, stop: anyio.Event) -> None:
        self.source = source
        self.consumer = consumer
        self.stop = stop
        self.queue: deque[Delivery] = deque()
        self.unsettled = 0
        self.polling_done = False
        self.idle: list[anyio.Event] = []
        self.workers = 0
        self.wake_pending = False
        self.space: anyio.Event | None = None
        self.worker_group: anyio.abc.TaskGroup | None = None

    async def run(self) -> None:
        source = self.source
        async with anyio.create_task_group() as workers:
            self.worker_group = workers
            async with anyio.create_task_group() as pollers:
                for _ in range(source.pollers):
                    pollers.start_soon(self._poll)
                await self.stop.wait()
                pollers.cancel_scope.cancel()
            self.polling_done = True
            queue = self.queue  # the workers' own: changed in place
            kept = [delivery for delivery in queue if source._keep_at_stop(delivery)]
            self.unsettled -= len(queue) - len(kept)
            queue.clear()
            queue.extend(kept)
            for idle in self.idle:
                idle.set()
            self.idle.clear()

    def _wake_one(self) -> None:
        """Hand queued work to one more worker: an idle one, or a new one below the limit."""
        if self.wake_pending:
            return
        if self.idle:
            self.wake_pending = True
            self.idle.pop().set()
        elif self.workers < self.source.max_in_flight and self.worker_group is not None:
            self.wake_pending = True
            self.workers += 1
            self.worker_group.start_soon(self._work)

    async def _poll(self) -> None:
        source = self.source
        limit = source.max_in_flight
        while not self.stop.is_set():
            free = limit - self.unsettled
            if free <= 0:
                # One wake-up for every poller waiting: each would overwrite its own, and a
                # poller left on one nobody sets any more would never poll again.
                space = self.space
                if space is None:
                    self.space = space = anyio.Event()
                await space.wait()
                continue
            self.unsettled += free  # reserve the slots while the receive is under way
            try:
                batch = await source.receive(free)
            except anyio.EndOfStream:
                self.unsettled -= free
                self.stop.set()
                return
            except BaseException:
                self.unsettled -= free
                raise
            self.unsettled -= free - len(batch)
            if batch:
                self.queue.extend(batch)
                self._wake_one()
            else:
                await source.until_more()

    async def _work(self) -> None:
        self.wake_pending = False  # this start was the pending wake-up
        queue = self.queue
        source = self.source
        consumer = self.consumer
        while True:
            if not queue:
                if self.polling_done:
                    return
                idle = anyio.Event()
                self.idle.append(idle)
                await idle.wait()
                self.wake_pending = False
                continue
            delivery = queue.popleft()
            if queue and not self.wake_pending:
                self._wake_one()
            source._on_take(delivery)
            try:
                try:
                    outcome = await consumer(delivery)
                except Exception:
                    # The pipeline never raises; a consumer that does (a wrapper, an app that
                    # is not started) leaves the delivery for redelivery, never unsettled.
                    _log.exception(
                        "source %s: the consumer failed on delivery %s", source.name, delivery.id
                    )
                    outcome = _CONSUMER_FAILED
                await source.settle(delivery, outcome)
            except Exception:
                # A failing settle leaves it for the transport's redelivery.
                _log.exception("source %s could not settle delivery %s", source.name, delivery.id)
            finally:
                self.unsettled -= 1
                space = self.space
                if space is not None and self.unsettled < source.max_in_flight:
                    self.space = None
                    space.set()
