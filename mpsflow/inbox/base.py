"""The inbox protocols: a durable queue between a receiver that must answer at once (HTTP) and
the pipeline, so that an answered notification is never lost.

The receiver checks a body at the door (``SourceRuntime.admit``: signature, decode), appends
it and answers 200 once the append is durable (:class:`Inbox`, all a receiver needs). The
inbox's ``consumer`` is the source that processes what it holds, on this machine or others.

A :class:`LeasedInbox` is stored by mpsflow itself (SQLite): its consumer,
:class:`~mpsflow.inbox.source.InboxSource`, leases items (hidden from other consumers until
the lease ends) and settles each one by its outcome: deleted when processed (acked,
dead-lettered, rejected), visible again after the retry delay otherwise. A consumer that
dies leaves its leases to end; the next attempt counts on from the stored attempt number.
A queue service is an inbox too (:class:`~mpsflow.inbox.cmq.CmqInbox`): there the queue does
the leasing, and its consumer is the queue's source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from mpsflow.sources.base import Source

__all__ = ["Inbox", "InboxItem", "LeasedInbox"]


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One leased notification."""

    id: int
    """The item's number in its inbox (ascending in append order; negative for one in the
    journal of the process it was appended by, see ``SQLiteInbox``)."""
    body: bytes
    attempt: int
    """1 for the first lease, 2 for the next after a retry or a lost lease, …"""
    received_at: float
    """Wall-clock time it was appended."""
    lost: bool = False
    """Its body could not be read back (``body`` is empty): its file is gone, after a power
    cut before it was synced or a removed folder. The consumer records it as a dead letter."""


@runtime_checkable
class Inbox(Protocol):
    """A durable, bounded place a receiver puts admitted notification bodies in.

    Every method raises :class:`~mpsflow.errors.InboxUnavailable` when the inbox's storage
    fails; the item is then in the state it was before the call.
    """

    def describe(self) -> str:
        """Where the inbox is, in words that are safe to log."""
        ...

    async def append(self, body: bytes) -> bool:
        """Add ``body``; True once it is durable, False when the inbox is full."""
        ...

    async def size(self) -> int | None:
        """How many items the inbox holds (leased ones included), None when it cannot tell."""
        ...

    def consumer(
        self, *, name: str = "inbox", max_in_flight: int = 64, lease_seconds: float = 60.0
    ) -> Source:
        """The source that processes what the inbox holds, ``max_in_flight`` at a time.

        Its deliveries are admitted (``Delivery.admitted``): their signature was checked at
        the door. ``lease_seconds`` is how long one may take before another consumer may take
        it (where the inbox leases; a queue service uses its own visibility timeout).
        """
        ...

    async def close(self) -> None:
        """Release the storage; later calls raise ``InboxUnavailable``."""
        ...


@runtime_checkable
class LeasedInbox(Inbox, Protocol):
    """An inbox mpsflow stores itself, consumed through leases by
    :class:`~mpsflow.inbox.source.InboxSource`.

    ``settle`` and ``retry`` act only while the caller's lease (``id`` and ``attempt``) is the
    item's current one, so a consumer whose lease ended cannot undo another's work.
    """

    async def append_leased(self, body: bytes, lease_seconds: float) -> InboxItem | None:
        """Add ``body`` already leased to the caller (attempt 1), for a consumer in this
        process that takes it at once; None when the inbox is full. Nobody is woken (see
        ``wake``)."""
        ...

    async def lease(self, max_count: int, lease_seconds: float) -> list[InboxItem]:
        """Up to ``max_count`` visible items, oldest first, hidden for ``lease_seconds``."""
        ...

    async def settle(self, item_id: int, attempt: int) -> bool:
        """Remove a processed item; False when the lease was no longer the caller's."""
        ...

    async def retry(
        self, item_id: int, attempt: int, delay: float, *, counted: bool = True
    ) -> bool:
        """Make the item visible again ``delay`` seconds from now; False as for ``settle``.

        ``counted=False`` gives the attempt back: the delivery was put off (a duplicate in
        progress, the dedup store down) or cut off at shutdown, and no handler failed, so the
        next lease has the same attempt number.
        """
        ...

    async def wait_for_items(self, at_most: float) -> None:
        """Return when items may have been appended (by this process: at once), or after
        ``at_most`` seconds (another process may have appended)."""
        ...

    def wake(self) -> None:
        """Return from ``wait_for_items`` at once: the consumer was handed an item in memory
        (``append_leased`` itself wakes nobody, since its consumer usually runs it at once)."""
        ...

    async def size(self) -> int:
        """How many items the inbox holds (leased ones included)."""
        ...
