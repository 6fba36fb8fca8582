"""One delivery of one notification, and what became of it."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Delivery", "Outcome", "Settlement"]


@dataclass(slots=True)
class Delivery:
    """A notification as a source received it, before anything is decoded.

    ``body`` is the raw payload: bytes for HTTP, CMQ and files, or the already-parsed
    ``dict`` an SCF trigger hands over (decoded without a JSON round trip).
    ``attempt`` is 1 for the first delivery; queues report it from their own counter
    (CMQ ``dequeueCount``) so it survives process restarts.
    """

    body: bytes | Mapping[str, Any]
    source: str = "memory"
    attempt: int = 1
    id: str = ""
    meta: Mapping[str, str] = field(default_factory=dict)
    deadline: float | None = None
    """Monotonic time by which processing must finish (HTTP timeout, SCF time limit)."""
    state: dict[str, Any] = field(default_factory=dict)
    """Scratch space for middleware to share per-delivery values (e.g. a dedup key)."""


class Settlement(enum.Enum):
    """How a source must settle a delivery (see the delivery contract in the README)."""

    ACK = "ack"
    """Every handler succeeded (or had already succeeded): delete / 200 / return."""
    RETRY = "retry"
    """Retryable failure: leave it for redelivery / 5xx / raise."""
    DEAD_LETTERED = "dead_lettered"
    """Written to the dead-letter sink; the source now acks it."""
    REJECTED = "rejected"
    """Refused (bad signature, expired): never retried; recorded as a dead letter too."""

    # Members are singletons: identity hashing is correct, and a C slot is several times
    # faster than Enum's Python ``__hash__`` (settlements key counters on the hot path).
    __hash__ = object.__hash__


@dataclass(slots=True)
class Outcome:
    """The pipeline's verdict on one delivery."""

    settlement: Settlement
    retry_after: float = 0.0
    """Suggested delay before redelivery, for sources that can choose it."""
    reason: str = ""
    """Short, log-safe explanation (never contains secrets or payload data)."""
    status: int = 200
    """HTTP status that expresses this outcome (200, 401, 4xx, 5xx)."""
    handlers_run: int = 0
    duplicates_skipped: int = 0

    @property
    def settled(self) -> bool:
        """True when the source should delete / ack the delivery."""
        return self.settlement is not Settlement.RETRY
