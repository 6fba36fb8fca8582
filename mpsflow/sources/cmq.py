"""The CMQ source: long-poll a TDMQ-CMQ queue, process, then delete in batches.

MPS's default notification channel is a TDMQ-CMQ queue whose ``msgBody`` is the notification
JSON (protocol notes, part A.5). Delivery contract: a settled delivery (acked, dead-lettered or
rejected) is deleted with ``BatchDeleteMessage`` (batched, bounded delay); a retryable failure
is left alone and comes back after the queue's visibility timeout with ``dequeueCount`` + 1,
which is the attempt number the retry policy counts, so attempts survive process restarts.
A run put off by middleware (``Cause.DEFERRED``: a duplicate in progress, here or elsewhere, the
dedup store down) did not fail, so it does not use up an attempt: the source remembers how many
times it put each message off (the last ``remember_deferrals`` messages, in this process) and
takes them off ``dequeueCount``.
A delete whose receipt handle expired (4430) means the message was already handed out again;
that redelivery is skipped by dedup and deleted with its own fresh handle, so nothing is lost
and nothing is processed twice in effect.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

import anyio
import anyio.abc

from mpsflow.clock import Clock, SystemClock
from mpsflow.delivery import Cause, Delivery, Outcome
from mpsflow.errors import StartupError
from mpsflow.retry import RetryPolicy
from mpsflow.sources.base import PullSource
from mpsflow.sources.runtime import SourceRuntime
from mpsflow.tencentcloud.cmq.client import MAX_BATCH, MAX_POLLING_WAIT, CmqClient
from mpsflow.tencentcloud.cmq.errors import (
    CmqAuthError,
    CmqError,
    CmqNetworkError,
    CmqQueueNotFoundError,
    CmqServerError,
)

__all__ = ["CmqSource"]

_log = logging.getLogger("mpsflow.sources.cmq")

_RECEIPT = "receipt_handle"


class CmqSource(PullSource):
    """Consumes one CMQ queue with ``pollers`` concurrent long polls.

    ``wait_seconds`` is the long-poll wait (0-30 s); ``batch_size`` caps each
    ``BatchReceiveMessage`` (1-16) and is further capped by the free in-flight slots. A run's
    first receive does not wait: once one has worked, the source logs that it is consuming the
    queue (and ``wait_started`` returns), and a missing queue or refused credentials end the run
    at once (``StartupError``).
    Deletes are sent as soon as 16 are pending or ``delete_delay`` seconds after the first.
    Receive errors that may pass (network, throttling) back off and poll again; others (bad
    credentials, a missing queue) end the run. Before the first receive of a run succeeded,
    both these and an endpoint that cannot be reached at all (after the client's own retries)
    or does not answer (after one timeout: that receive is not tried again) end it with a
    :class:`~mpsflow.errors.StartupError` saying what to check: ``App.run`` then
    ends with it, when this is the source's first run. Later, a refusal ends the run with the
    ``CmqError`` itself, so the app's supervisor restarts the source with backoff and logs it,
    and an unreachable endpoint is polled again with backoff. ``clock`` defaults to the
    runtime's (the app's).

    ``admitted=True`` is for a queue that is an mpsflow inbox (:class:`~mpsflow.inbox.cmq.
    CmqInbox`): its messages were checked at the door by the receiver that sent them, so they
    are not checked again (their signature may have expired while they waited).

    ``remember_deferrals`` bounds how many messages' deferrals (runs put off by middleware,
    not counted as attempts) this process remembers; 0 counts every deferral as an attempt.

    ``caught_up_at`` is when a receive last took everything waiting in the queue (it got
    fewer messages than it asked for): CMQ's message API tells no count, so this is what a
    consumer knows of its backlog (an inbox receiver shows it on ``/metrics``).
    """

    def __init__(
        self,
        client: CmqClient,
        queue: str,
        *,
        name: str = "cmq",
        max_in_flight: int = 64,
        pollers: int = 2,
        batch_size: int = MAX_BATCH,
        wait_seconds: int = 30,
        delete_delay: float = 0.05,
        clock: Clock | None = None,
        error_backoff: RetryPolicy | None = None,
        admitted: bool = False,
        remember_deferrals: int = 4096,
    ) -> None:
        super().__init__(max_in_flight=max_in_flight, pollers=pollers)
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}")
        if not 0 <= wait_seconds <= MAX_POLLING_WAIT:
            raise ValueError(f"wait_seconds must be between 0 and {MAX_POLLING_WAIT}")
        self.name = name
        self.client = client
        self.queue = queue
        self.batch_size = batch_size
        self.wait_seconds = wait_seconds
        self.delete_delay = delete_delay
        self.admitted = admitted
        self._given_clock = clock
        """The clock given to the constructor; without one, each run uses the runtime's."""
        self._clock: Clock = clock or SystemClock()
        self._backoff = error_backoff or RetryPolicy(
            max_attempts=1_000_000, base_delay=0.5, max_delay=30.0
        )
        self._receive_failures = 0
        self._received = False
        """A receive of this run succeeded: the queue exists and took the credentials."""
        self._received_changed = anyio.Event()
        """Set (and replaced) when ``_received`` changes, for ``wait_started``."""
        self._pending: list[str] = []
        self._wake = anyio.Event()
        self._full = anyio.Event()
        self.deleted = 0
        """Messages deleted so far (for tests and metrics)."""
        self._deleted_changed = anyio.Event()
        self.caught_up_at = 0.0
        """Wall-clock time a receive last got fewer messages than it asked for, so nothing
        more was waiting (0 before the first): ``time()`` minus this is how long this
        consumer has been behind, or unable to receive."""
        self.expired_handles = 0
        """Deletes refused with 4430: the message was redelivered meanwhile (dedup covers it)."""
        self.remember_deferrals = remember_deferrals
        self._deferrals: OrderedDict[str, int] = OrderedDict()
        """Per message id, the runs put off by middleware (oldest first, bounded)."""

    def __repr__(self) -> str:
        return f"CmqSource({self.client.url!r}, queue={self.queue!r})"

    async def run(self, runtime: SourceRuntime) -> None:
        if self._given_clock is None:
            self._clock = runtime.clock
        self._received = False
        async with anyio.create_task_group() as tg:
            done = anyio.Event()
            tg.start_soon(self._delete_loop, done)
            try:
                await super().run(runtime)
            finally:
                self._set_received(False)  # a later wait_started waits for the next run
                done.set()
                self._wake.set()
                self._full.set()

    async def wait_started(self) -> None:
        """Return once a receive of the current run has worked (the queue exists and took the
        keys; before a run starts: of the next one). A receiver of this inbox serves only then,
        so a queue that does not exist ends the run before anything said "serving"."""
        while not self._received:
            await self._received_changed.wait()

    def _set_received(self, received: bool) -> None:
        self._received = received
        self._received_changed.set()
        self._received_changed = anyio.Event()

    async def wait_deleted(self, count: int) -> None:
        """Wait until at least ``count`` messages were deleted (tests, tools)."""
        while self.deleted < count:
            await self._deleted_changed.wait()

    async def receive(self, max_count: int) -> Sequence[Delivery]:
        count = min(max_count, self.batch_size)
        # Until a receive of this run has worked, poll without waiting (a missing queue or
        # refused keys are known at once, and so is that the queue is being consumed), and do
        # not send again a request that got no answer: it ends the run after one timeout, not
        # one per attempt. Later polls ride out timeouts with the client's retries.
        started = self._received
        wait = self.wait_seconds if started else 0
        try:
            messages = await self.client.batch_receive(
                self.queue, count, wait, retry_timeouts=None if started else False
            )
        except CmqError as exc:
            if not self._received and (not exc.retryable or _unanswered(exc)):
                raise StartupError(self._cannot_start(exc)) from exc
            if not exc.retryable:
                raise
            self._receive_failures += 1
            delay = self._backoff.delay(self._receive_failures)
            _log.warning(
                "receive from %s failed (%s); polling again in %.1fs", self.queue, exc, delay
            )
            await self._clock.sleep(delay)
            return []
        if self._receive_failures:
            _log.info(
                "receive from %s works again after %d failed attempt(s)",
                self.queue,
                self._receive_failures,
            )
        self._receive_failures = 0
        now, mono = self._clock.time(), self._clock.monotonic()
        if len(messages) < count:
            self.caught_up_at = now
        if not self._received:
            self._set_received(True)
            _log.info("consuming CMQ queue %s at %s", self.queue, self.client.url)
        return [
            Delivery(
                message.msg_body.encode(),
                source=self.name,
                attempt=max(message.dequeue_count - self._deferrals.get(message.msg_id, 0), 1),
                id=message.msg_id,
                meta={_RECEIPT: message.receipt_handle},
                # The message becomes visible again at nextVisibleTime: that is this
                # delivery's deadline (dedup leases end with it, plus a margin).
                deadline=mono + max(message.next_visible_time - now, 0.0)
                if message.next_visible_time
                else None,
                admitted=self.admitted,
            )
            for message in messages
        ]

    def _cannot_start(self, exc: CmqError) -> str:
        """What a receive error that will not pass means, and what to check."""
        where = f"CMQ queue {self.queue} at {self.client.url}"
        if isinstance(exc, CmqAuthError):
            return (
                f"CMQ refused the credentials for queue {self.queue} at {self.client.url} "
                f"(code {exc.code}: {exc.cmq_message}): "
                "check TENCENTCLOUD_SECRETID/TENCENTCLOUD_SECRETKEY"
            )
        if isinstance(exc, CmqQueueNotFoundError):
            return (
                f"{where} does not exist (code {exc.code}): create it, or check the queue "
                "name and the endpoint's region"
            )
        if isinstance(exc, CmqServerError):
            return f"cannot receive from {where}: code {exc.code}: {exc.cmq_message}"
        if isinstance(exc, CmqNetworkError) and (hint := exc.reach_hint(self.client.url)):
            return hint
        return f"cannot receive from {where}: {exc} (is it the queue's API address?)"

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        deferrals = self._deferrals
        if not outcome.settled:  # visible again after the visibility timeout, dequeueCount + 1
            if outcome.cause is Cause.DEFERRED and delivery.id:  # not an attempt
                deferrals[delivery.id] = deferrals.pop(delivery.id, 0) + 1
                if len(deferrals) > self.remember_deferrals:
                    deferrals.popitem(last=False)
            return
        deferrals.pop(delivery.id, None)
        self._pending.append(delivery.meta[_RECEIPT])
        self._wake.set()
        if len(self._pending) >= MAX_BATCH:
            self._full.set()

    async def _delete_loop(self, done: anyio.Event) -> None:
        """Delete pending handles: at once when 16 are waiting, else ``delete_delay`` later."""
        while True:
            if not self._pending:
                if done.is_set():
                    return
                if self._wake.is_set():
                    self._wake = anyio.Event()
                    continue
                await self._wake.wait()
                continue
            if len(self._pending) < MAX_BATCH and not done.is_set():
                with anyio.move_on_after(self.delete_delay):
                    await self._full.wait()
            if self._full.is_set():
                self._full = anyio.Event()
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            with anyio.CancelScope(shield=True):
                await self._delete(batch)

    async def _delete(self, handles: list[str]) -> None:
        try:
            failures = await self.client.batch_delete(self.queue, handles)
        except CmqError as exc:
            _log.warning(
                "deleting %d message(s) from %s failed (%s); they will be redelivered and "
                "skipped by dedup",
                len(handles),
                self.queue,
                exc,
            )
            return
        self.deleted += len(handles) - len(failures)
        self._deleted_changed.set()
        self._deleted_changed = anyio.Event()
        for failure in failures:
            if failure.code == 4430:
                self.expired_handles += 1
                _log.info("receipt handle expired before delete; the redelivery will be deduped")
            else:
                _log.warning("delete failed with CMQ code %d: %s", failure.code, failure.message)


def _unanswered(exc: CmqError) -> bool:
    """True when CMQ could not be reached, or took the connection and did not answer."""
    return isinstance(exc, CmqNetworkError) and bool(exc.unreachable or exc.timed_out)
