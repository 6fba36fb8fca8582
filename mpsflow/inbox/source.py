"""``InboxSource``: the pipeline's side of an inbox, a pull source like CMQ's.

It leases items (up to the free in-flight slots), hands each to the pipeline as an admitted
delivery (its signature was checked at the door, see ``Delivery.admitted``), and settles it
by the outcome: acked, dead-lettered or rejected items are removed; a retry makes the item
visible again after the outcome's ``retry_after``. The attempt number is the inbox's, so it
survives restarts, and the app's retry policy ends a notification that keeps failing with a
dead letter; a run put off by middleware (``Cause.DEFERRED``) does not use up an attempt, and
neither does a delivery cut off at shutdown: its lease is given back for the next run. A
delivery's deadline is its lease: past it, another consumer may take the item (and dedup keeps
the handlers from running twice).

A receiver in the same process appends through :meth:`InboxSource.append`: the item is
appended already leased to this source and handed over in memory with the notification decoded
at the door, so it costs two writes to this process's journal (see ``SQLiteInbox``), not a
lease round trip, a read of its body and a second decode. A journaled item goes straight into
the workers' queue (no receive round, no wake-up of a poller): it has no lease to run out, and
its deadline starts when a worker takes it. An item the inbox gave a row instead (when the
journal cannot take it) waits in order for a free slot, and is given back if it waited for
half its lease. Past ``hand_over_ahead`` handed-over items beyond ``max_in_flight`` (a burst the
pipeline cannot keep up with), an append waits up to ``room_wait`` for one to be settled (the
sender is paced by the processing), then is left in the inbox for whichever consumer leases
it. At stop, what is still queued is given back to the inbox, not run in the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable, Sequence

import anyio

from mpsflow.clock import Clock, SystemClock
from mpsflow.context import AnyNotification
from mpsflow.delivery import Cause, Delivery, Outcome
from mpsflow.errors import InboxUnavailable
from mpsflow.inbox.base import InboxItem, LeasedInbox
from mpsflow.sources.base import PullSource
from mpsflow.sources.runtime import DeadLetterPath, SourceRuntime, no_dead_letters

__all__ = ["InboxSource"]

_log = logging.getLogger("mpsflow.inbox")

_LEASE = "inbox_lease"
"""``Delivery.meta`` key of ``"id:attempt"``, the lease the delivery settles."""


class InboxSource(PullSource):
    """Processes what a :class:`~mpsflow.inbox.base.LeasedInbox` holds.

    ``lease_seconds`` is how long a leased item stays hidden (the delivery's deadline).
    ``poll_interval`` bounds how long an idle consumer waits before looking again (appends
    by this process wake it at once; another process's appends are seen within it).
    Storage failures are logged and retried every ``poll_interval``; nothing is lost, since
    an item is removed only once its outcome is settled.
    """

    def __init__(
        self,
        inbox: LeasedInbox,
        *,
        name: str = "inbox",
        max_in_flight: int = 64,
        lease_seconds: float = 60.0,
        poll_interval: float = 0.5,
        hand_over_ahead: int | None = None,
        room_wait: float = 1.0,
    ) -> None:
        super().__init__(max_in_flight=max_in_flight, pollers=1)
        if not lease_seconds > 0 or not poll_interval > 0:
            raise ValueError("lease_seconds and poll_interval must be positive")
        if hand_over_ahead is not None and hand_over_ahead < 0:
            raise ValueError("hand_over_ahead must not be negative")
        if room_wait < 0:
            raise ValueError("room_wait must not be negative")
        self.room_wait = room_wait
        """Seconds an append waits for room in memory, when every place is taken, before it
        goes to the inbox for whichever consumer leases it."""
        self.hand_over_ahead = 4 * max_in_flight if hand_over_ahead is None else hand_over_ahead
        """Appends handed over beyond ``max_in_flight``, waiting in memory for a slot."""
        self.inbox = inbox
        self.name = name
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self._clock: Clock = SystemClock()
        """The app's clock once running (deadlines are on its monotonic time)."""
        self._held: dict[str, None] = {}
        """Leases (``"id:attempt"``) handed on and not settled yet."""
        self._handed: deque[Delivery] = deque()
        """Items appended by :meth:`append` as leased to this source, for the next receive."""
        self._reserved = 0
        """Slots taken by appends under way (counted against ``max_in_flight``)."""
        self._taking = False
        """The source runs and takes appends in memory."""
        self._woken = 0
        """Waiting appends woken for room that have not taken it yet (newcomers queue)."""
        self._room_waiters: deque[asyncio.Future[bool]] = deque()
        """Appends waiting for room, first come first served (asyncio futures: under overload
        every append waits, and anyio's events and timed scopes cost several times more)."""
        self._dead_letter: DeadLetterPath = no_dead_letters
        """The runtime's dead-letter path (items whose body the inbox lost)."""

    def __repr__(self) -> str:
        return f"InboxSource({self.inbox!r}, name={self.name!r})"

    async def append(self, body: bytes, notification: AnyNotification | None = None) -> bool:
        """Append an admitted ``body`` (``notification``: it decoded); False when full.

        While this source runs and holds fewer than ``max_in_flight + hand_over_ahead``
        items, the item is appended leased to it and handed over in memory. When it holds
        that many, the append waits up to ``room_wait`` for one to be settled (the sender's
        answer is paced by the processing, which stays on its cheap path), then is appended
        for whichever consumer leases it.
        """
        inbox = self.inbox
        waiting = self._room_waiters or self._woken
        if self._taking and (waiting or not self._has_room()) and self.room_wait:
            await self._wait_for_room()
        if not self._taking or not self._has_room():
            return await inbox.append(body)
        self._reserved += 1
        try:
            item = await inbox.append_leased(body, self.lease_seconds)
        finally:
            self._reserved -= 1
        if item is None:
            return False
        if self._stopped():  # meanwhile: for the next run
            await inbox.retry(item.id, item.attempt, 0.0, counted=False)
            return True
        lease = f"{item.id}:{item.attempt}"
        self._held[lease] = None
        if item.id < 0:  # journaled: no lease to run out, its deadline starts when it runs
            delivery = self._delivery(item, None)
            delivery.notification = notification
            if not self._push(delivery):  # stopping meanwhile: for the next run
                del self._held[lease]
                with anyio.CancelScope(shield=True):
                    await inbox.retry(item.id, item.attempt, 0.0, counted=False)
            return True
        delivery = self._delivery(item, self._clock.monotonic() + self.lease_seconds)
        delivery.notification = notification
        self._handed.append(delivery)
        wake = getattr(inbox, "wake", None)  # an inbox written before wake was in the protocol
        if wake is not None:
            wake()
        return True

    def _has_room(self) -> bool:
        return len(self._held) + self._reserved < self.max_in_flight + self.hand_over_ahead

    async def _wait_for_room(self) -> None:
        """Wait, behind the appends that wait already, until an item is settled (at most
        ``room_wait``)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._room_waiters.append(waiter)
        timer = loop.call_later(self.room_wait, _resolve, waiter, False)
        try:
            woken = await waiter
        except BaseException:  # cancelled
            if _woken(waiter):  # once woken: the room is the next one's
                self._woken -= 1
                self._freed()
            else:
                self._leave_line(waiter)
            raise
        finally:
            timer.cancel()
        if woken:
            self._woken -= 1
        else:  # timed out
            self._leave_line(waiter)

    def _leave_line(self, waiter: asyncio.Future[bool]) -> None:
        with contextlib.suppress(ValueError):
            self._room_waiters.remove(waiter)

    def _freed(self) -> None:
        """An item was settled or given back: room for the first append that waits."""
        waiters = self._room_waiters
        while waiters:
            if _resolve(waiters.popleft(), True):
                self._woken += 1
                return

    def _keep_at_stop(self, delivery: Delivery) -> bool:
        """Queued items are not run in the drain: they are given back (``run``), durable in
        the inbox for the next run, instead of making the drain up to five times longer."""
        return False

    def _on_take(self, delivery: Delivery) -> None:
        if delivery.deadline is None:  # the handler budget of a journaled item
            delivery.deadline = self._clock.monotonic() + self.lease_seconds

    def _stopped(self) -> bool:
        return not self._taking

    async def run(self, runtime: SourceRuntime) -> None:
        self._clock = runtime.clock
        self._dead_letter = runtime.dead_letter
        reclaim = getattr(self.inbox, "reclaim", None)
        if reclaim is not None:
            try:
                with anyio.CancelScope(shield=True):  # a move under way is finished
                    taken_back = await reclaim()
            except InboxUnavailable as exc:
                _log.warning("%s; its leases will end by themselves", exc)
            else:
                if taken_back:
                    _log.info(
                        "took back %d notification(s) leased by a process that is gone",
                        taken_back,
                    )
        self._taking = True
        try:
            await super().run(runtime)
        finally:
            self._taking = False
            self._handed.clear()  # their leases are held: given back below
            held, self._held = self._held, {}
            while self._room_waiters:  # to append for the next run
                self._freed()
            with anyio.CancelScope(shield=True):
                await self._give_back(held)

    async def receive(self, max_count: int) -> Sequence[Delivery]:
        if self._handed:
            taken, given_up = self._take_handed(max_count)
            if given_up:
                with anyio.CancelScope(shield=True):  # an item given up is never left held
                    await self._give_back(given_up)
            return taken
        try:
            with anyio.CancelScope(shield=True):  # a lease taken is handed on, even at stop
                items = await self.inbox.lease(max_count, self.lease_seconds)
        except InboxUnavailable as exc:
            _log.warning("%s; trying again in %gs", exc, self.poll_interval)
            return []  # until_more waits
        if not items:
            return []
        deadline = self._clock.monotonic() + self.lease_seconds
        deliveries = []
        for item in items:
            if item.lost:
                await self._record_lost(self._delivery(item, deadline))
                continue
            self._held[f"{item.id}:{item.attempt}"] = None
            deliveries.append(self._delivery(item, deadline))
        return deliveries

    async def until_more(self) -> None:
        """Wait for the inbox to have items (this process's appends wake it at once), unless
        appends are handed over and waiting."""
        if not self._handed:
            await self.inbox.wait_for_items(self.poll_interval)

    async def _record_lost(self, delivery: Delivery) -> None:
        """A dead letter for an item whose body the inbox lost, then removed; left leased
        (back when its lease ends) when the record cannot be written."""
        reason = (
            f"the inbox lost this notification's body ({self.inbox.describe()}: its file is"
            " gone, after a power cut before it was synced or a removed folder)"
        )
        outcome = await self._dead_letter(delivery, reason, cause=Cause.MALFORMED)
        if outcome.settled:
            lease = delivery.meta[_LEASE]
            item_id, _, attempt = lease.partition(":")
            try:
                await self.inbox.settle(int(item_id), int(attempt))
            except InboxUnavailable as exc:
                _log.warning("%s; notification %s comes back when its lease ends", exc, item_id)

    def _take_handed(self, max_count: int) -> tuple[list[Delivery], list[str]]:
        """Up to ``max_count`` handed-over deliveries, in order, and the leases given up: of
        those that waited for half their lease (it could run out while the delivery runs).
        They are given back to the inbox, visible at once for a fresh lease."""
        handed = self._handed
        taken: list[Delivery] = []
        given_up: list[str] = []
        keep_until = self._clock.monotonic() + self.lease_seconds / 2
        while handed and len(taken) < max_count:
            delivery = handed.popleft()
            if delivery.deadline is not None and delivery.deadline < keep_until:
                lease = delivery.meta[_LEASE]
                if lease in self._held:
                    del self._held[lease]
                    given_up.append(lease)
                    self._freed()
                continue
            taken.append(delivery)
        return taken, given_up

    def _delivery(self, item: InboxItem, deadline: float | None) -> Delivery:
        return Delivery(
            item.body,
            source=self.name,
            attempt=item.attempt,
            id=str(item.id),
            meta={_LEASE: f"{item.id}:{item.attempt}"},
            deadline=deadline,
            admitted=True,
        )

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        lease = delivery.meta[_LEASE]
        if lease in self._held:
            del self._held[lease]
            self._freed()
        item_id, _, attempt = lease.partition(":")
        try:
            if outcome.settled:
                await self.inbox.settle(int(item_id), int(attempt))
            else:
                # A run put off by middleware (a duplicate in progress, the store down) did
                # not fail: it does not use up an attempt.
                counted = outcome.cause is not Cause.DEFERRED
                with anyio.CancelScope(shield=True):  # a move in two steps: finished whole
                    await self.inbox.retry(
                        int(item_id), int(attempt), outcome.retry_after, counted=counted
                    )
        except InboxUnavailable as exc:
            # A row comes back when its lease ends (and dedup skips what finished); a
            # journaled item when the inbox can take it again, or at the next start.
            _log.warning("%s; notification %s comes back later", exc, item_id)

    async def _give_back(self, held: Iterable[str]) -> None:
        """Leases taken and never run (given up, or cut off at shutdown): visible again at
        once, with their attempt given back."""
        held = list(held)
        for lease in held:
            item_id, _, attempt = lease.partition(":")
            try:
                await self.inbox.retry(int(item_id), int(attempt), 0.0, counted=False)
            except InboxUnavailable as exc:
                _log.warning(
                    "%s; %d notification(s) come back when their leases end", exc, len(held)
                )
                return


def _resolve(waiter: asyncio.Future[bool], woken: bool) -> bool:
    """End ``waiter``'s wait (``woken``: room was made); False when it had ended already."""
    if waiter.done():
        return False
    waiter.set_result(woken)
    return True


def _woken(waiter: asyncio.Future[bool]) -> bool:
    return waiter.done() and not waiter.cancelled() and waiter.result()
