"""SinkChannel: buffering, batching, retries and backpressure in front of any Sink.

Handlers ``submit`` records and get a ``Receipt`` back at once; a flusher task groups the
buffered records into batches (up to ``batch_size``, or whatever arrived within ``max_delay``
of the first one) and hands each batch to the sink, retrying transient failures with
exponential backoff and jitter. Every record ends one way or the other: its receipt either
resolves (delivered) or raises ``SinkError`` (could not be delivered), never neither.

Delivery is at least once: a batch that failed half way is sent again as a whole. When a
batch of several records fails permanently, each record is retried on its own so that one
bad record does not fail its neighbours.

Each record may carry an idempotency key (``submit(record, idempotency_key=...)``; handlers'
``ctx.emit`` passes one derived from ``ctx.effect_key``). Sinks implementing
:class:`~mpsflow.sinks.base.KeyedSink` get the keys with the batch (``send_keyed``) and use
them so that a repeated record (a batch sent again, a handler re-run after a crash) repeats
no effect; other sinks get ``send(batch)`` as before.
"""

from __future__ import annotations

import collections
import logging
import random
from collections.abc import Sequence

import anyio
import anyio.abc

from mpsflow.clock import Clock, SystemClock
from mpsflow.errors import SinkError
from mpsflow.retry import RetryPolicy
from mpsflow.sinks.base import Sink, keyed_sender

__all__ = ["Receipt", "SinkChannel"]

_log = logging.getLogger("mpsflow.sinks")


class Receipt:
    """The promise that one submitted record is delivered, or a clear failure.

    ``await receipt.wait()`` returns once the record's batch was delivered and raises the
    final ``SinkError`` when it could not be. Any number of tasks may wait on one receipt.
    """

    __slots__ = ("_done", "_error", "_event")

    def __init__(self) -> None:
        self._done = False
        self._error: SinkError | None = None
        self._event: anyio.Event | None = None

    @property
    def done(self) -> bool:
        """True once the record was delivered or given up on."""
        return self._done

    @property
    def error(self) -> SinkError | None:
        """Why the record could not be delivered (``None`` while pending or when delivered)."""
        return self._error

    async def wait(self) -> None:
        """Wait until the record is settled; raise its ``SinkError`` if it failed."""
        if not self._done:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()
        if self._error is not None:
            raise self._error

    def _settle(self, error: SinkError | None) -> None:
        if self._done:
            return
        self._done = True
        self._error = error
        if self._event is not None:
            self._event.set()

    def __repr__(self) -> str:
        state = "pending" if not self._done else ("failed" if self._error else "delivered")
        return f"<Receipt {state}>"


_Item = tuple[object, str | None, Receipt]
"""A buffered record, its idempotency key (or None) and its receipt."""


class SinkChannel:
    """Buffers records for one sink and delivers them in batches, with retries.

    ``buffer_size`` bounds every record the channel holds (buffered or being sent); when it
    is reached, ``submit`` waits for room, which slows producers to the sink's pace.
    ``max_attempts`` counts tries of one batch, the first included; delays between them
    grow from ``backoff[0]`` to at most ``backoff[1]`` seconds, with jitter, slept on
    ``clock``. ``concurrency`` batches may be in flight at once (1 keeps records in order).

    Start and close it from one task (``async with channel:``, or ``start()`` then
    ``close()`` in an app lifespan): the channel owns an anyio task group for its flusher.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        batch_size: int = 100,
        max_delay: float = 0.05,
        buffer_size: int = 10_000,
        max_attempts: int = 5,
        backoff: tuple[float, float] = (0.1, 5.0),
        concurrency: int = 1,
        clock: Clock | None = None,
        name: str = "",
        rng: random.Random | None = None,
    ) -> None:
        if batch_size < 1 or buffer_size < 1 or concurrency < 1:
            raise ValueError("batch_size, buffer_size and concurrency must be at least 1")
        if max_delay < 0:
            raise ValueError("max_delay must not be negative")
        self.sink = sink
        self._keyed = keyed_sender(sink)
        self.name = name or type(sink).__name__
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.buffer_size = buffer_size
        self.policy = RetryPolicy(
            max_attempts=max_attempts,
            base_delay=backoff[0],
            max_delay=backoff[1],
            jitter=0.5,
        )
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._buffer: collections.deque[_Item] = collections.deque()
        self._room = anyio.Semaphore(buffer_size)
        self._senders = anyio.Semaphore(concurrency)
        self._arrived = anyio.Event()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._running = False
        self._closing = False
        self._in_flight: dict[int, list[_Item]] = {}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the sink, then the flusher task."""
        if self._running or self._closing:
            raise RuntimeError(f"sink channel {self.name!r} was already started")
        await self.sink.start()
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        self._running = True
        task_group.start_soon(self._flush_loop, task_group)

    async def close(self) -> None:
        """Deliver (or fail) everything buffered, stop the flusher, then close the sink."""
        if self._task_group is None:
            return  # never started, or already closed
        self._running = False
        self._closing = True
        self._arrived.set()
        task_group = self._task_group
        self._task_group = None
        try:
            if task_group is not None:
                await task_group.__aexit__(None, None, None)
        finally:
            self._fail_unsent()
            await self.sink.close()

    def _fail_unsent(self) -> None:
        """Fail batches whose sender task was cancelled before it ever ran."""
        failure = SinkError(f"sink channel {self.name!r} stopped", transient=True)
        for batch in self._in_flight.values():
            for _, _, receipt in batch:
                receipt._settle(failure)
                self._room.release()
        self._in_flight.clear()

    async def __aenter__(self) -> SinkChannel:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- producers -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records held by the channel: buffered or in a batch being sent."""
        return self.buffer_size - int(self._room.value)

    async def submit(self, record: object, *, idempotency_key: str | None = None) -> Receipt:
        """Queue ``record`` and return its receipt; waits only while the buffer is full.

        ``idempotency_key`` identifies this record's effect: the same key for the same record
        emitted again (by a re-run of the same handler effect), so a keyed sink can deliver
        it once. ``None`` (records submitted outside a handler, dead letters): no key.

        Raises ``SinkError`` (transient) when the channel is not running, so the caller
        retries the delivery later instead of losing the record.
        """
        self._check_open()
        await self._room.acquire()
        if not self._running:
            self._room.release()
            self._check_open()
        receipt = Receipt()
        self._buffer.append((record, idempotency_key, receipt))
        self._arrived.set()
        return receipt

    def _check_open(self) -> None:
        if not self._running:
            state = "closed" if self._closing else "not started"
            raise SinkError(f"sink channel {self.name!r} is {state}", transient=True)

    # -- the flusher -----------------------------------------------------------------------

    async def _flush_loop(self, task_group: anyio.abc.TaskGroup) -> None:
        try:
            while True:
                if not self._buffer:
                    if self._closing:
                        return
                    await self._arrived.wait()
                    self._arrived = anyio.Event()
                    continue
                if not self._closing and len(self._buffer) < self.batch_size:
                    await self._gather()
                await self._senders.acquire()
                size = min(self.batch_size, len(self._buffer))
                batch = [self._buffer.popleft() for _ in range(size)]
                self._in_flight[id(batch)] = batch
                task_group.start_soon(self._deliver, batch)
        finally:
            # Only reached with records left when the flusher is cancelled: fail them loudly.
            self._running = False
            failure = SinkError(f"sink channel {self.name!r} stopped", transient=True)
            while self._buffer:
                _, _, receipt = self._buffer.popleft()
                receipt._settle(failure)
                self._room.release()

    async def _gather(self) -> None:
        """Wait until a full batch is buffered, ``max_delay`` has passed, or closing starts."""
        deadline = self._clock.monotonic() + self.max_delay
        while not self._closing and len(self._buffer) < self.batch_size:
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return
            self._arrived = anyio.Event()
            arrived = self._arrived
            async with anyio.create_task_group() as waiters:
                waiters.start_soon(self._sleep_then_cancel, remaining, waiters.cancel_scope)
                await arrived.wait()
                waiters.cancel_scope.cancel()

    async def _sleep_then_cancel(self, seconds: float, scope: anyio.CancelScope) -> None:
        await self._clock.sleep(seconds)
        scope.cancel()

    # -- delivery --------------------------------------------------------------------------

    async def _deliver(self, batch: list[_Item]) -> None:
        try:
            error = await self._send_with_retries(
                [record for record, _, _ in batch], [key for _, key, _ in batch]
            )
            if error is not None and not error.transient and len(batch) > 1:
                _log.warning(
                    "sink %s refused a batch of %d (%s); retrying its records one by one",
                    self.name,
                    len(batch),
                    error,
                )
                for record, key, receipt in batch:
                    receipt._settle(await self._send_with_retries([record], [key]))
            else:
                for _, _, receipt in batch:
                    receipt._settle(error)
        except BaseException:
            # Cancelled (or a bug): the records must not vanish silently.
            failure = SinkError(f"sink {self.name!r} was interrupted", transient=True)
            for _, _, receipt in batch:
                receipt._settle(failure)
            raise
        finally:
            del self._in_flight[id(batch)]
            self._senders.release()
            for _ in batch:
                self._room.release()

    async def _send_with_retries(
        self, records: Sequence[object], keys: Sequence[str | None]
    ) -> SinkError | None:
        """Send ``records`` (with their ``keys``); ``None`` when delivered, else the error."""
        attempt = 1
        while True:
            try:
                if self._keyed is not None:
                    await self._keyed.send_keyed(records, keys)
                else:
                    await self.sink.send(records)
            except SinkError as exc:
                error = exc
            except Exception as exc:  # a sink should raise SinkError; treat others as transient
                error = SinkError(f"sink {self.name!r} raised {type(exc).__name__}", transient=True)
            else:
                return None
            if not error.transient:
                _log.error("sink %s: permanent failure: %s", self.name, error)
                return error
            if self.policy.exhausted(attempt):
                _log.error("sink %s: giving up after %d attempts: %s", self.name, attempt, error)
                return SinkError(
                    f"sink {self.name!r} failed {attempt} times, last: {error}", transient=True
                )
            delay = self.policy.delay(attempt, self._rng)
            _log.warning(
                "sink %s: attempt %d failed (%s); retrying in %.2fs",
                self.name,
                attempt,
                error,
                delay,
            )
            await self._clock.sleep(delay)
            attempt += 1

    def __repr__(self) -> str:
        return (
            f"SinkChannel({self.sink!r}, batch_size={self.batch_size}, "
            f"max_delay={self.max_delay}, buffer_size={self.buffer_size})"
        )
