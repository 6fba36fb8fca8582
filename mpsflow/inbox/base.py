"""The inbox protocol: a durable queue between a receiver that must answer at once (HTTP) and
the pipeline, so that an answered notification is never lost.

The receiver checks a body at the door (``SourceRuntime.admit``: signature, decode), appends
it and answers 200 once the append is durable. :class:`~mpsflow.inbox.source.InboxSource`
then consumes the inbox like a queue: it leases items (hidden from other consumers until
the lease ends), and settles each one by its outcome: deleted when processed (acked,
dead-lettered, rejected), visible again after the retry delay otherwise. A consumer that
dies leaves its leases to end; the next attempt counts on from the stored attempt number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Inbox", "InboxItem"]


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One leased notification."""

    id: int
    """The item's number in its inbox (ascending in append order)."""
    body: bytes
    attempt: int
    """1 for the first lease, 2 for the next after a retry or a lost lease, …"""
    received_at: float
    """Wall-clock time it was appended."""


@runtime_checkable
class Inbox(Protocol):
    """A durable, bounded queue of admitted notification bodies.

    Every method raises :class:`~mpsflow.errors.InboxUnavailable` when the inbox's storage
    fails; the item is then in the state it was before the call. ``settle`` and ``retry``
    act only while the caller's lease (``id`` and ``attempt``) is the item's current one, so
    a consumer whose lease ended cannot undo another's work.
    """

    def describe(self) -> str:
        """Where the inbox is, in words that are safe to log."""
        ...

    async def append(self, body: bytes) -> bool:
        """Add ``body``; True once it is durable, False when the inbox is full."""
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

    async def size(self) -> int:
        """How many items the inbox holds (leased ones included)."""
        ...

    async def close(self) -> None:
        """Release the storage; later calls raise ``InboxUnavailable``."""
        ...
