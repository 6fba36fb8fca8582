"""The idempotency store protocol shared by the in-memory, SQLite and Redis stores."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Claim", "ClaimState", "IdempotencyStore", "settles_in_place"]


class ClaimState(enum.Enum):
    """Result of trying to claim an effect record (scope + handler; see mpsflow.dedup.effects)."""

    CLAIMED = "claimed"
    """This caller owns the record now (no record, or an expired lease): run the handler."""
    IN_PROGRESS = "in_progress"
    """Another caller holds a live lease: do not run; wait or retry later."""
    COMPLETED = "completed"
    """Already done and not yet expired: skip the handler."""


@dataclass(frozen=True, slots=True)
class Claim:
    """What ``claim`` found or took."""

    state: ClaimState
    token: str = ""
    """Owner token for ``complete``/``release`` (compare-and-set), set when CLAIMED."""
    payload_hash: str = ""
    """Hash stored with the existing record (for conflict detection), when not CLAIMED."""
    expires_at: float = 0.0
    """Wall time the lease (IN_PROGRESS) or the record (COMPLETED) ends."""


@runtime_checkable
class IdempotencyStore(Protocol):
    """Atomic per-key claim / complete / release with leases and TTLs.

    Every method raises :class:`mpsflow.errors.StoreUnavailable` when the backend cannot be
    reached, so the caller retries the delivery later instead of running unclaimed.
    Times are wall-clock seconds (``time.time()`` scale) from the store's clock.

    A store whose methods never suspend (an in-process store) may set the class attribute
    ``settles_in_place = True``: callers then skip shielding ``complete``/``release`` from
    cancellation, which nothing could interrupt anyway.
    """

    async def claim(
        self, key: str, *, lease_seconds: float, payload_hash: str, token: str = ""
    ) -> Claim:
        """Atomically take ``key`` as IN_PROGRESS unless a live record exists.

        ``token`` is the owner token to store (the store makes one when it is empty). A caller
        that chose it can release a claim whose answer it never got (the call failed after the
        store wrote it) as soon as the store answers again.
        """
        ...

    async def complete(self, key: str, token: str, *, ttl_seconds: float) -> bool:
        """Mark the caller's claim COMPLETED for ``ttl_seconds``; False if it lost the claim."""
        ...

    async def release(self, key: str, token: str) -> bool:
        """Delete the caller's IN_PROGRESS claim (after a failure); False if not the owner."""
        ...

    async def ping(self) -> bool:
        """True when the backend answers (used by readiness checks)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def settles_in_place(store: IdempotencyStore) -> bool:
    """True when ``store`` declares that its methods never suspend (see the protocol)."""
    return getattr(store, "settles_in_place", False) is True
