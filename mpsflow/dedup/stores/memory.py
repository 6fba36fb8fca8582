"""A bounded, in-process idempotency store: for tests, single workers and the SCF runtime.

Records live in a dict, each a plain tuple of strings and numbers, which the garbage
collector stops tracking (a full store adds nothing to each collection). Expiry is tracked with
a lazily pruned min-heap, so purging expired records costs O(log n) per record instead of a
scan. When the store is full it first drops expired records, then the oldest COMPLETED ones; it
never drops a live IN_PROGRESS lease, because that would let a second worker run a handler that
is still running. A store full of live leases raises :class:`~mpsflow.errors.StoreUnavailable`,
so the delivery is retried later.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from mpsflow.clock import Clock, SystemClock
from mpsflow.dedup.stores.base import Claim, ClaimState, store_unavailable

__all__ = ["MemoryStore"]

_heappush = heapq.heappush

_Record = tuple[bool, str, str, float, int]
"""``(completed, token, payload hash, expires_at, version)``: a new tuple when it changes."""
_DONE: Final = 0
_TOKEN: Final = 1
_HASH: Final = 2
_EXPIRES: Final = 3
_VERSION: Final = 4
_STATES = (ClaimState.IN_PROGRESS, ClaimState.COMPLETED)
"""A record's ClaimState, by its ``completed`` flag."""


class MemoryStore:
    """Idempotency records in process memory, bounded to ``max_entries``, with TTLs.

    Nothing survives a restart and nothing is shared between processes: use
    :class:`~mpsflow.dedup.stores.sqlite.SQLiteStore` or
    :class:`~mpsflow.dedup.stores.redis.RedisStore`
    for that. All methods run without awaiting in between, so each is atomic on one event loop
    (``settles_in_place``), and each coroutine has a synchronous twin (``claim_now``,
    ``complete_now``, ``release_now``; see :class:`~mpsflow.dedup.stores.base.InPlaceStore`)
    that :class:`~mpsflow.dedup.Idempotency` calls instead, so a handler run on this store
    awaits nothing. Owner tokens are a random per-store prefix and a counter: they only have to
    be unique within this store.
    """

    settles_in_place = True

    def __init__(self, max_entries: int = 100_000, *, clock: Clock | None = None) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._now: Callable[[], float] = (
            time.time if type(self._clock) is SystemClock else self._clock.time
        )
        """The clock's wall time (``time.time`` itself for the system clock: no extra frame)."""
        self._records: dict[str, _Record] = {}
        self._completed: OrderedDict[str, None] = OrderedDict()
        """Keys of COMPLETED records, oldest completion first (the eviction order)."""
        self._expiry: list[tuple[float, int, str]] = []
        """Heap of (expires_at, version, key); an entry is stale once its record changed."""
        self._version = 0
        self._closed = False
        self._token_prefix = secrets.token_hex(8)
        self._tokens = itertools.count(1)

    def __repr__(self) -> str:
        return f"MemoryStore(entries={len(self._records)}, max_entries={self._max_entries})"

    def describe(self) -> str:
        """``memory`` (this process only)."""
        return "memory"

    def __len__(self) -> int:
        """Number of records held, live or expired but not yet purged."""
        return len(self._records)

    async def claim(
        self, key: str, *, lease_seconds: float, payload_hash: str, token: str = ""
    ) -> Claim:
        """Take ``key`` as IN_PROGRESS unless a live record exists."""
        _check_positive("lease_seconds", lease_seconds)
        token = token or f"{self._token_prefix}{next(self._tokens):x}"
        found = self.claim_now(
            key, lease_seconds=lease_seconds, payload_hash=payload_hash, token=token
        )
        if found is not None:
            return found
        return Claim(ClaimState.CLAIMED, token=token, expires_at=self._records[key][_EXPIRES])

    def claim_now(
        self, key: str, *, lease_seconds: float, payload_hash: str, token: str
    ) -> Claim | None:
        """``claim`` with the caller's ``token``, synchronously: None when the caller now
        holds ``key``, else the live record's Claim (IN_PROGRESS or COMPLETED)."""
        if not lease_seconds > 0:
            _check_positive("lease_seconds", lease_seconds)
        if not token:
            raise ValueError("token must not be empty")
        if self._closed:
            raise store_unavailable(self.describe(), "closed")
        now = self._now()
        expiry = self._expiry
        if expiry and expiry[0][0] <= now:
            self._purge_expired(now)
        records = self._records
        record = records.get(key)
        if record is not None:
            return Claim(
                _STATES[record[_DONE]], payload_hash=record[_HASH], expires_at=record[_EXPIRES]
            )
        if len(records) >= self._max_entries:
            self._evict_oldest_completed()
        expires_at = now + lease_seconds
        version = self._version = self._version + 1
        records[key] = (False, token, payload_hash, expires_at, version)
        _heappush(expiry, (expires_at, version, key))  # purged then, unless it changes first
        if len(expiry) > 2 * len(records) + 64:
            self._rebuild_expiry()
        return None

    async def complete(self, key: str, token: str, *, ttl_seconds: float) -> bool:
        """Turn the caller's live lease into a COMPLETED record kept for ``ttl_seconds``."""
        return self.complete_now(key, token, ttl_seconds=ttl_seconds)

    def complete_now(self, key: str, token: str, *, ttl_seconds: float) -> bool:
        """``complete``, synchronously."""
        if not ttl_seconds > 0:
            _check_positive("ttl_seconds", ttl_seconds)
        if self._closed:
            raise store_unavailable(self.describe(), "closed")
        now = self._now()
        records = self._records
        record = records.get(key)
        if record is None or record[_DONE] or record[_TOKEN] != token or now >= record[_EXPIRES]:
            return False
        expires_at = now + ttl_seconds
        version = self._version = self._version + 1
        records[key] = (True, token, record[_HASH], expires_at, version)
        # A live lease is never in ``_completed`` (a key leaves it with its record), so the
        # completion is appended, newest last.
        self._completed[key] = None
        expiry = self._expiry  # the completed record is purged at its new expiry
        _heappush(expiry, (expires_at, version, key))
        if len(expiry) > 2 * len(records) + 64:
            self._rebuild_expiry()
        return True

    async def release(self, key: str, token: str) -> bool:
        """Delete the caller's live lease so a redelivery can run the handler again."""
        return self.release_now(key, token)

    def release_now(self, key: str, token: str) -> bool:
        """``release``, synchronously."""
        if self._closed:
            raise store_unavailable(self.describe(), "closed")
        record = self._records.get(key)
        if (
            record is None
            or record[_DONE]
            or record[_TOKEN] != token
            or self._now() >= record[_EXPIRES]
        ):
            return False
        self._drop(key)
        return True

    async def ping(self) -> bool:
        """True until the store is closed."""
        return not self._closed

    async def close(self) -> None:
        """Drop every record; later calls raise StoreUnavailable."""
        self._closed = True
        self._records.clear()
        self._completed.clear()
        self._expiry.clear()

    def _rebuild_expiry(self) -> None:
        """Rebuild the expiry heap from the live records, dropping its stale entries.

        Every claim and completion pushes an entry (``claim_now`` and ``complete_now`` push
        inline) and a changed record leaves its old one behind: once stale entries outnumber
        the records, the heap is made anew.
        """
        self._expiry = [(r[_EXPIRES], r[_VERSION], k) for k, r in self._records.items()]
        heapq.heapify(self._expiry)

    def _drop(self, key: str) -> None:
        del self._records[key]
        self._completed.pop(key, None)

    def _purge_expired(self, now: float) -> None:
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, version, key = heapq.heappop(heap)
            record = self._records.get(key)
            if record is not None and record[_VERSION] == version:
                self._drop(key)

    def _evict_oldest_completed(self) -> None:
        if not self._completed:
            raise store_unavailable(
                self.describe(),
                f"full of live leases (max_entries={self._max_entries}); raise max_entries",
            )
        key, _ = self._completed.popitem(last=False)
        del self._records[key]


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive")
