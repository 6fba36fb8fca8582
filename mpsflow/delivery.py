"""One delivery of one notification, and what became of it, in domain words.

``Settlement`` says what the source must do (ack, leave for redelivery, …); ``Cause`` says
why, for one handler run or for the whole delivery. Neither speaks any transport's language:
each source maps them to its own (the HTTP source to status codes, SCF to a summary, CMQ to a
delete or none).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mpsflow.context import AnyNotification

__all__ = ["Cause", "Delivery", "Outcome", "Settlement"]


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
    """Scratch space for your middleware to share per-delivery values."""
    dead_lettered: bool = False
    """A dead-letter record of this delivery was written (the pipeline never writes two)."""
    dedup_keys: tuple[str, str] | None = None
    """``(notification key, payload hash)``, computed once per delivery by the dedup middleware."""
    admitted: bool = False
    """The body passed the admission checks (``Pipeline.admit``: the signature, the decode)
    when a source queued it in an inbox: delivery middleware marked ``at_admission`` (the
    signature check) does not run again, since a signature may expire while it waits."""
    notification: AnyNotification | None = None
    """The body, already decoded: set by ``Pipeline.admit``, so a delivery an inbox hands over
    in memory to a consumer of the same process is not decoded twice."""

    def redelivery(self) -> Delivery:
        """The next attempt of this delivery: same body and identity, fresh per-delivery state."""
        return replace(
            self, attempt=self.attempt + 1, state={}, dead_lettered=False, dedup_keys=None
        )


class Settlement(enum.Enum):
    """How a source must settle a delivery (see the delivery contract in the README)."""

    ACK = "ack"
    """Every handler succeeded (or had already succeeded): delete it / answer ok / return."""
    RETRY = "retry"
    """Retryable failure: leave it for redelivery / answer "try again" / raise."""
    DEAD_LETTERED = "dead_lettered"
    """Written to the dead-letter sink; the source now acks it."""
    REJECTED = "rejected"
    """Refused (bad signature, expired): never retried; recorded as a dead letter too."""

    # Members are singletons: identity hashing is correct, and a C slot is several times
    # faster than Enum's Python ``__hash__`` (settlements key counters on the hot path).
    __hash__ = object.__hash__


class Cause(enum.Enum):
    """What happened: to one handler run, or (the deciding one) to a whole delivery.

    The first seven are what a handler run can end in; their values are the ``outcome`` label
    of the handler-run metrics. The rest only happen to whole deliveries.
    """

    OK = "ok"
    """The handler ran and succeeded (for a delivery: every handler it reached did)."""
    ALREADY_DONE = "skipped"
    """Dedup found the effect completed earlier: the handler did not run again."""
    DEFERRED = "defer"
    """Put off without running (a duplicate in progress, here or elsewhere, a store or the
    dead-letter sink unavailable): retried later, and it never uses up attempts."""
    RETRY = "retry"
    """The handler asked to be retried later (``Retry``)."""
    REJECTED = "reject"
    """Refused for good (``Reject``, or middleware): dead-lettered, never retried."""
    ERROR = "error"
    """The handler (or the pipeline around it) raised."""
    TIMEOUT = "timeout"
    """The handler ran out of its ``timeout``."""
    UNMATCHED = "unmatched"
    """No handler matched the notification."""
    MALFORMED = "malformed"
    """The body is not a valid notification (``Outcome.path`` says where)."""
    TOO_LARGE = "too_large"
    """The body is over the size limit."""
    UNAUTHENTICATED = "unauthenticated"
    """The signature is missing, wrong or expired."""

    __hash__ = object.__hash__  # as for Settlement: identity hashing, in C


@dataclass(slots=True)
class Outcome:
    """The pipeline's verdict on one delivery (or, from handler-scope middleware, on one run)."""

    settlement: Settlement
    retry_after: float = 0.0
    """Suggested delay before redelivery, for sources that can choose it."""
    reason: str = ""
    """Short, log-safe explanation (never contains secrets or payload data)."""
    cause: Cause = Cause.OK
    """What happened, in domain words (each source maps it to its transport's answer)."""
    handlers_run: int = 0
    duplicates_skipped: int = 0
    path: str = ""
    """JSON path of the offending value of a malformed body (``$`` for the document itself),
    kept apart from ``reason`` so a source can report it as data."""

    @property
    def settled(self) -> bool:
        """True when the source should delete / ack the delivery."""
        return self.settlement is not Settlement.RETRY

    def describe(self) -> str:
        """``reason``, followed by `` at <path>`` when it names a value inside the document."""
        path = self.path
        if path and path != "$":
            return f"{self.reason} at {path}"
        return self.reason
