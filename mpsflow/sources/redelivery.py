"""Attempt numbers for transports that do not count them (HTTP, SCF).

MPS's retry policy for a URL callback is undocumented and SCF does not say which attempt an
invocation is, so these sources recognise a notification that failed before by its content:
its next delivery is the next attempt, and the app's ``RetryPolicy`` can run out into the
dead-letter sink instead of failing forever.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from mpsflow.dedup.keys import payload_hash
from mpsflow.errors import DecodeError

__all__ = ["RedeliveryCounter"]


class RedeliveryCounter:
    """Counts failed deliveries of the same notification, for transports that do not (HTTP, SCF).

    A notification is known by :func:`mpsflow.dedup.keys.payload_hash` (its content without
    ``Timestamp``/``Sign``, so a redelivery signed afresh still matches), or by a digest of
    the raw bytes when it is not a JSON object. Counts live in this process only, bounded to
    ``capacity`` notifications (the oldest forgotten first), and are dropped once settled.
    While nothing is failing, ``attempt`` costs nothing: no hashing at all.
    """

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._failures: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    @staticmethod
    def key(body: bytes | Mapping[str, Any]) -> str:
        """The identity under which redeliveries of ``body`` are counted."""
        try:
            return payload_hash(body)
        except DecodeError:
            raw = body if isinstance(body, bytes) else repr(body).encode()
            return hashlib.blake2b(raw, digest_size=16).hexdigest()

    def attempt(self, body: bytes | Mapping[str, Any]) -> tuple[int, str | None]:
        """This delivery's attempt number, and its key when one had to be computed."""
        if not self._failures:
            return 1, None
        key = self.key(body)
        return self._failures.get(key, 0) + 1, key

    def record(self, body: bytes | Mapping[str, Any], key: str | None, *, failed: bool) -> None:
        """Count a retryable failure, or forget a settled notification."""
        if failed:
            key = key or self.key(body)
            self._failures[key] = self._failures.get(key, 0) + 1
            self._failures.move_to_end(key)
            while len(self._failures) > self._capacity:
                self._failures.popitem(last=False)
        elif key is not None:
            self._failures.pop(key, None)
