"""A bounded, in-process idempotency store: for tests, single workers and the SCF runtime.

Records live in a dict. Expiry is tracked with a lazily pruned min-heap, so purging expired
records costs O(log n) per record instead of a scan. When the store is full it first drops
expired records, then the oldest COMPLETED ones; it never drops a live IN_PROGRESS lease,
because that would let a second worker run a handler that is still running. A store full of
live leases raises :class:`~mpsflow.errors.StoreUnavailable`, so the delivery is retried later.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from mpsflow.clock import Clock, SystemClock
from mpsflow.dedup.stores.base import Claim, ClaimState, store_unavailable

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Record:
    state: ClaimState
    token: str
    payload_hash: str
    expires_at: float
    version: int


class MemoryStore:
    """Idempotency records in process memory, bounded to ``max_entries``, with TTLs.

    Nothing survives a restart and nothing is shared between processes: use
    :class:`~mpsflow.dedup.stores.sqlite.SQLiteStore` or
    :class:`~mpsflow.dedup.stores.redis.RedisStore`
    for that. All methods run without awaiting in between, so each is atomic on one event loop
    (``settles_in_place``). Owner tokens are a random per-store prefix and a counter: they only
    have to be unique within this store.
    """

    settles_in_place = True

    def __init__(self, max_entries: int = 100_000, *, clock: Clock | None = None) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._clock: Clock = clock if clock is not None else SystemClock()
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
        self._check_open()
        now = self._clock.time()
        self._purge_expired(now)
        record = self._records.get(key)
        if record is not None:
            return Claim(
                record.state, payload_hash=record.payload_hash, expires_at=record.expires_at
            )
        if len(self._records) >= self._max_entries:
            self._evict_oldest_completed()
        token = token or f"{self._token_prefix}{next(self._tokens):x}"
        expires_at = now + lease_seconds
        self._put(key, _Record(ClaimState.IN_PROGRESS, token, payload_hash, expires_at, 0))
        return Claim(ClaimState.CLAIMED, token=token, expires_at=expires_at)

    async def complete(self, key: str, token: str, *, ttl_seconds: float) -> bool:
        """Turn the caller's live lease into a COMPLETED record kept for ``ttl_seconds``."""
        _check_positive("ttl_seconds", ttl_seconds)
        self._check_open()
        now = self._clock.time()
        record = self._owned(key, token, now)
        if record is None:
            return False
        record.state = ClaimState.COMPLETED
        record.expires_at = now + ttl_seconds
        self._put(key, record)
        return True

    async def release(self, key: str, token: str) -> bool:
        """Delete the caller's live lease so a redelivery can run the handler again."""
        self._check_open()
        if self._owned(key, token, self._clock.time()) is None:
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

    def _check_open(self) -> None:
        if self._closed:
            raise store_unavailable(self.describe(), "closed")

    def _owned(self, key: str, token: str, now: float) -> _Record | None:
        record = self._records.get(key)
        if (
            record is None
            or record.state is not ClaimState.IN_PROGRESS
            or record.token != token
            or now >= record.expires_at
        ):
            return None
        return record

    def _put(self, key: str, record: _Record) -> None:
        self._version += 1
        record.version = self._version
        self._records[key] = record
        if record.state is ClaimState.COMPLETED:
            self._completed[key] = None
            self._completed.move_to_end(key)
        heapq.heappush(self._expiry, (record.expires_at, record.version, key))
        if len(self._expiry) > 2 * len(self._records) + 64:
            self._expiry = [(r.expires_at, r.version, k) for k, r in self._records.items()]
            heapq.heapify(self._expiry)

    def _drop(self, key: str) -> None:
        del self._records[key]
        self._completed.pop(key, None)

    def _purge_expired(self, now: float) -> None:
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, version, key = heapq.heappop(heap)
            record = self._records.get(key)
            if record is not None and record.version == version:
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
