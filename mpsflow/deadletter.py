"""Dead-letter records: everything needed to see why a delivery failed and to re-drive it.

A delivery that was processed as a notification (retries ran out, no handler, a handler's
``Reject``) is recorded with its whole body, so it can be replayed. A *refusal*, a delivery
turned away before that (a bad signature, a body that does not decode, a rejection by delivery
middleware or a source), comes from a sender nobody vouches for: it is recorded with only an
excerpt of its body (with the size and SHA-256 of the whole), and at most so many times a
minute per sender (:class:`DeadLetterLimits`, :class:`RefusalLimiter`), so a flood of forged
requests cannot fill the disk.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import uuid
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from mpsflow._throttle import LogThrottle, held_back, tail_line
from mpsflow.clock import Clock
from mpsflow.delivery import Cause, Delivery, Outcome, Settlement
from mpsflow.errors import DecodeError
from mpsflow.events.envelope import identify

if TYPE_CHECKING:
    from mpsflow.context import AnyNotification
    from mpsflow.observability.metrics import Metrics
    from mpsflow.sinks.channel import SinkChannel

__all__ = [
    "DEFAULT_EXCERPT_BYTES",
    "REPLAYED_RECORD",
    "DeadLetter",
    "DeadLetterKind",
    "DeadLetterLimits",
    "DeadLetterWriter",
    "Failure",
    "RefusalLimiter",
    "body_bytes",
    "dead_letter_kind",
    "event_type_of",
    "make_dead_letter",
    "refusal_peer",
]

_log = logging.getLogger("mpsflow.deadletter")

DEFAULT_EXCERPT_BYTES = 2048
"""How much of a refused body a record keeps by default (2 KiB)."""
_FIELD_LIMIT = 256
"""Characters kept of a record's event type, task id and delivery id (read from the body or a
request header: a forged one may be any length)."""
_TEXT_LIMIT = 1000
"""Characters kept of a refusal's reason and failure messages."""
REPLAYED_RECORD = "replayed_dead_letter"
"""The ``Delivery.meta`` key naming the dead-letter record a delivery replays (``mpsflow
deadletters replay --app``): a dead letter of that delivery is written, and logged, under that
record's id, as its newer version, so the id the log names is one ``deadletters show`` finds."""

DeadLetterKind = Literal["exhausted", "rejected", "poison", "unmatched", "signature"]

_KINDS: dict[Cause, DeadLetterKind] = {
    Cause.MALFORMED: "poison",
    Cause.TOO_LARGE: "poison",
    Cause.UNAUTHENTICATED: "signature",
    Cause.REJECTED: "rejected",
    Cause.UNMATCHED: "unmatched",
}


def dead_letter_kind(cause: Cause) -> DeadLetterKind:
    """The record kind for a delivery dead-lettered because of ``cause``.

    Bodies that are no notification are ``poison``, refusals ``signature`` or ``rejected``,
    and every failure that kept coming back (errors, timeouts, retries) ``exhausted``.
    """
    return _KINDS.get(cause, "exhausted")


class Failure(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Why one handler (or the delivery as a whole) failed."""

    handler: str = ""
    key: str = ""
    kind: str = "error"
    """error, timeout, retry, reject, or the delivery-level kind (poison, signature, …)."""
    error_type: str = ""
    message: str = ""
    traceback: str = ""


class DeadLetter(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One line of the dead-letter file.

    ``body`` is the raw payload exactly as received (UTF-8 text, or base64 when
    ``body_encoding == "base64"``), so ``mpsflow deadletters replay`` re-drives the very
    bytes MPS sent; ``body_size`` and ``body_sha256`` describe those bytes. For a refusal
    (``body_truncated``) ``body`` holds only the first bytes of a longer body (cut back to a
    whole UTF-8 character), while ``body_size`` and ``body_sha256`` still describe the whole
    body as received; such a record cannot be replayed. Records written before these fields
    existed read with ``body_size`` 0 and ``body_sha256`` empty.
    """

    id: str
    time: float
    kind: str
    reason: str
    source: str = ""
    delivery_id: str = ""
    attempt: int = 1
    event_type: str = ""
    task_id: str = ""
    failures: list[Failure] = msgspec.field(default_factory=list)
    body: str = ""
    body_encoding: Literal["utf-8", "base64"] = "utf-8"
    body_size: int = 0
    """Bytes of the whole body as received (also when ``body`` is only an excerpt)."""
    body_sha256: str = ""
    """Hex SHA-256 of the whole body as received."""
    body_truncated: bool = False
    """True when ``body`` is only an excerpt: the record cannot be replayed."""

    def raw_body(self) -> bytes:
        """The payload bytes as they were received (only the first ones when
        ``body_truncated``)."""
        if self.body_encoding == "base64":
            return base64.b64decode(self.body)
        return self.body.encode()


def body_bytes(body: bytes | Mapping[str, Any]) -> bytes:
    """Raw bytes of a delivery body (an SCF event dict is serialised as JSON)."""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    return json.dumps(body, ensure_ascii=False, default=str).encode()


def make_dead_letter(
    *,
    kind: DeadLetterKind,
    reason: str,
    body: bytes | Mapping[str, Any],
    now: float,
    source: str = "",
    delivery_id: str = "",
    attempt: int = 1,
    event_type: str = "",
    task_id: str = "",
    failures: list[Failure] | None = None,
    excerpt: int | None = None,
    record_id: str = "",
) -> DeadLetter:
    """Build a record, keeping the body verbatim (base64 when it is not UTF-8).

    With ``excerpt`` (a refusal), a body longer than that many bytes keeps only its first ones
    (``body_truncated``), and the reason and failure messages are cut short too. The size and
    SHA-256 of the whole body are recorded either way. The record gets a new id unless
    ``record_id`` names the one it is a newer version of (a replayed record).
    """
    raw = body_bytes(body)
    truncated = excerpt is not None and len(raw) > excerpt
    kept = _whole_characters(raw[:excerpt]) if truncated else raw
    try:
        text, encoding = kept.decode(), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(kept).decode(), "base64"
    failures = failures or []
    if excerpt is not None:
        reason = reason[:_TEXT_LIMIT]
        failures = [
            msgspec.structs.replace(
                f, message=f.message[:_TEXT_LIMIT], traceback=f.traceback[:_TEXT_LIMIT]
            )
            for f in failures
        ]
    return DeadLetter(
        id=record_id or uuid.uuid4().hex,
        time=now,
        kind=kind,
        reason=reason,
        source=source,
        delivery_id=delivery_id[:_FIELD_LIMIT],
        attempt=attempt,
        event_type=event_type[:_FIELD_LIMIT],
        task_id=task_id[:_FIELD_LIMIT],
        failures=failures,
        body=text,
        body_encoding=encoding,  # type: ignore[arg-type]
        body_size=len(raw),
        body_sha256=hashlib.sha256(raw).hexdigest(),
        body_truncated=truncated,
    )


def _whole_characters(prefix: bytes) -> bytes:
    """``prefix`` without a UTF-8 character cut in two at its end (as it is when it is not
    UTF-8 anyway: it is then kept in base64)."""
    for cut in range(4):  # a UTF-8 character is at most 4 bytes: drop up to 3 of it
        head = prefix[: len(prefix) - cut]
        try:
            head.decode()
        except UnicodeDecodeError:
            continue
        return head
    return prefix


# -- what refusals may cost ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterLimits:
    """What refused deliveries may cost on disk, and how a dead-letter file given as a path
    rotates (``App(dead_letter_limits=…)``).

    A refusal is a delivery turned away before it was processed as a notification: a bad or
    missing signature (``signature``), a body that does not decode (``poison``), or a
    rejection by delivery middleware or a source (``rejected``). Dead letters of processed
    notifications (``exhausted``, ``unmatched``, a handler's ``Reject``) keep their whole
    body and are never limited.

    * ``excerpt_bytes`` (2048): a refusal keeps this many first bytes of its body, with the
      size and SHA-256 of the whole (``body_truncated`` when there was more). ``None`` keeps
      whole bodies.
    * ``per_peer_per_minute`` (20): refusal records per sender (the HTTP client's address;
      for other sources, the source) per minute: a token bucket on the app's clock holding
      as many, refilled at that rate. A refusal over the limit is answered as any other
      (401, 400, …), counted (the delivery metrics, the signature-rejection metrics) and
      logged at most once per 10 s with how many went unrecorded, but not recorded.
      ``None``: no limit per sender.
    * ``total_per_minute`` (120): the same over all senders together. ``None``: no limit.
    * ``max_peers`` (10 000): senders whose buckets are remembered; the least recently seen
      is forgotten first (``total_per_minute`` still bounds what many senders write).
    * A refusal of a record being replayed (``mpsflow deadletters replay --app``) is never
      limited: it updates that record instead of adding one, so a replay of many poison
      records updates every one.
    * ``rotate_bytes`` (64 MiB) and ``keep_files`` (5): a dead-letter path
      (``App(dead_letters="dead.jsonl")``, the default) becomes a ``JsonlSink`` that moves
      the file to ``dead.jsonl.1`` (…, ``.5``) once it would pass that size, so the files
      take at most about ``rotate_bytes × (keep_files + 1)``. ``rotate_bytes=None`` never
      rotates. Ignored when ``dead_letters`` is a sink of your own.
    """

    excerpt_bytes: int | None = DEFAULT_EXCERPT_BYTES
    per_peer_per_minute: float | None = 20
    total_per_minute: float | None = 120
    max_peers: int = 10_000
    rotate_bytes: int | None = 64 * 1024 * 1024
    keep_files: int = 5

    def __post_init__(self) -> None:
        if self.excerpt_bytes is not None and self.excerpt_bytes < 0:
            raise ValueError("excerpt_bytes must not be negative")
        for name in ("per_peer_per_minute", "total_per_minute"):
            rate = getattr(self, name)
            if rate is not None and not rate > 0:
                raise ValueError(f"{name} must be positive (None: no limit)")
        if self.max_peers < 1:
            raise ValueError("max_peers must be at least 1")
        if self.rotate_bytes is not None and self.rotate_bytes < 1:
            raise ValueError("rotate_bytes must be positive (None: no rotation)")
        if self.keep_files < 0:
            raise ValueError("keep_files must not be negative")


def refusal_peer(delivery: Delivery) -> str:
    """Who sent ``delivery``, as far as refusals are counted: the HTTP client's address
    (``meta["remote"]``), else the source."""
    remote = delivery.meta.get("remote")
    if isinstance(remote, str) and remote:
        return remote
    return f"source {delivery.source}"


class _Bucket:
    """A token bucket: ``capacity`` tokens, refilled at ``rate`` per second."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, capacity: float, now: float) -> None:
        self.capacity = capacity
        self.rate = capacity / 60.0
        self.tokens = capacity
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class RefusalLimiter:
    """Decides which refusals get a dead-letter record, per :class:`DeadLetterLimits`.

    ``admit(delivery, kind)`` is True when the refusal may be recorded; otherwise it is
    counted in ``unrecorded`` (by kind) and logged at WARNING at most once per
    ``log_interval`` seconds, with how many went unrecorded since the last such line. Time is
    the app's clock (``monotonic``), so tests drive the buckets with a ``FakeClock``.
    """

    def __init__(self, limits: DeadLetterLimits, clock: Clock, *, log_interval: float = 10.0):
        self.limits = limits
        self._clock = clock
        self._peers: OrderedDict[str, _Bucket] = OrderedDict()
        self._total: _Bucket | None = None
        self._lines = LogThrottle(
            clock, log_interval, tail=tail_line(_log, "refusal dead letters", "not recorded")
        )
        self.unrecorded: Counter[str] = Counter()
        """Refusals not recorded since the app started, by kind."""

    @property
    def excerpt_bytes(self) -> int | None:
        return self.limits.excerpt_bytes

    def admit(self, delivery: Delivery, kind: str) -> bool:
        """True when this refusal may be recorded (it then uses up its sender's token)."""
        limits = self.limits
        per_peer, total = limits.per_peer_per_minute, limits.total_per_minute
        if per_peer is None and total is None:
            return True
        now = self._clock.monotonic()
        peer = refusal_peer(delivery)
        bucket: _Bucket | None = None
        if per_peer is not None:
            bucket = self._peers.get(peer)
            if bucket is None:
                bucket = self._peers[peer] = _Bucket(per_peer, now)
                if len(self._peers) > limits.max_peers:
                    self._peers.popitem(last=False)
            else:
                self._peers.move_to_end(peer)
            if not bucket.take(now):
                return self._refuse(peer, kind, "from one sender", per_peer)
        if total is not None:
            if self._total is None:
                self._total = _Bucket(total, now)
            if not self._total.take(now):
                if bucket is not None:  # not recorded: the sender keeps its token
                    bucket.tokens = min(bucket.capacity, bucket.tokens + 1.0)
                return self._refuse(peer, kind, "in all", total)
        return True

    def _refuse(self, peer: str, kind: str, scope: str, rate: float) -> bool:
        self.unrecorded[kind] += 1
        held = self._lines.admit(kind)
        if held is not None:
            _log.warning(
                "not recording a %s dead letter from %s: over %g refusal records a minute %s;"
                " counted only%s",
                kind,
                peer,
                rate,
                scope,
                held_back(held, "not recorded"),
                extra={"kind": kind, "peer": peer, "suppressed": held.total()},
            )
        return False


# -- writing them ---------------------------------------------------------------------------------


class DeadLetterWriter:
    """Writes one pipeline's dead-letter records through its dead-letter channel.

    A record's kind follows the delivery's :class:`~mpsflow.delivery.Cause`. Refusals (a bad
    signature, poison, a rejection before any handler ran) keep an excerpt of the body and are
    recorded as ``refusals`` allows. Every record is counted in the metrics and logged at
    WARNING, at most one line per 10 s counting the rest (a bad signature's refusal is logged
    by the signature check instead). A delivery that replays a record (its ``meta`` names it
    under :data:`REPLAYED_RECORD`) is written and logged under that record's id.
    """

    def __init__(
        self,
        channel: SinkChannel,
        *,
        metrics: Metrics,
        clock: Clock,
        limits: DeadLetterLimits | None = None,
    ) -> None:
        self._channel = channel
        self._metrics = metrics
        self._clock = clock
        self.refusals = RefusalLimiter(limits or DeadLetterLimits(), clock)
        """Which refusals get a record (see :class:`RefusalLimiter`)."""
        self._lines = LogThrottle(
            clock, 10.0, tail=tail_line(_log, "dead letters", "dead-lettered")
        )

    async def write(
        self,
        delivery: Delivery,
        *,
        cause: Cause,
        reason: str,
        path: str = "",
        notification: AnyNotification | None = None,
        failures: list[Failure] | None = None,
        handlers_run: int = 0,
        settled: Outcome | None = None,
        refused: bool = False,
    ) -> Outcome:
        """Write a dead-letter record (its kind follows ``cause``); the delivery is then settled.

        Returns ``settled`` (default: DEAD_LETTERED with ``cause``), or RETRY when the record
        could not be written, so nothing is lost. A refusal (``refused``) keeps an excerpt of
        the body, and over its sender's limit is settled the same way without a record.
        """
        dead = Outcome(
            Settlement.DEAD_LETTERED,
            reason=reason,
            cause=cause,
            path=path,
            handlers_run=handlers_run,
        )
        kind = dead_letter_kind(cause)
        replayed = delivery.meta.get(REPLAYED_RECORD, "")
        # A replayed record's refusal updates a record already kept: it costs no new disk.
        if refused and not replayed and not self.refusals.admit(delivery, kind):
            return dead if settled is None else settled
        event_type, task_id = _about(delivery, notification)
        record = make_dead_letter(
            kind=kind,
            reason=dead.describe(),  # the message once, then where: "… at $.X"
            body=delivery.body,
            now=self._clock.time(),
            source=delivery.source,
            delivery_id=delivery.id,
            attempt=delivery.attempt,
            event_type=event_type,
            task_id=task_id,
            failures=failures,
            excerpt=self.refusals.excerpt_bytes if refused else None,
            record_id=replayed,
        )
        if not await self._write(record):
            return Outcome(
                Settlement.RETRY,
                cause=Cause.DEFERRED,
                reason="dead-letter sink unavailable; retry later",
            )
        delivery.dead_lettered = True
        self._metrics.dead_letter(kind)
        if cause is not Cause.UNAUTHENTICATED:  # the signature check logs its own refusals
            self._log(record, replayed=bool(replayed))
        return dead if settled is None else settled

    async def _write(self, record: DeadLetter) -> bool:
        try:
            receipt = await self._channel.submit(record)
            await receipt.wait()
        except Exception:
            _log.exception(
                "could not write dead letter %s; the delivery will be retried", record.id
            )
            return False
        return True

    def _log(self, record: DeadLetter, *, replayed: bool) -> None:
        """One WARNING per dead letter, at most one per 10 s (counting the ones held back).

        It names the record's id; for a replayed record, that it was updated (not added).
        """
        held = self._lines.admit(record.kind)
        if held is None:
            return
        what = " ".join(filter(None, [record.event_type, record.task_id])) or "a notification"
        which = f"replayed record {record.id} updated" if replayed else f"record {record.id}"
        more = held_back(held, "dead-lettered")
        _log.warning(
            "dead-lettered %s from %s (%s): %s; %s%s",
            what,
            record.source or "?",
            record.kind,
            record.reason,
            which,
            more,
            extra={"dead_letter_id": record.id, "kind": record.kind, "replayed": replayed},
        )


def event_type_of(notification: AnyNotification) -> str:
    """A notification's ``EventType`` (a live one's ``NotificationType``), or ``""``."""
    return (
        getattr(notification, "event_type", None)
        or getattr(notification, "notification_type", None)
        or ""
    )


def _about(delivery: Delivery, notification: AnyNotification | None) -> tuple[str, str]:
    """``(event type, task id)`` for a dead-letter record: from the notification, else read
    from the body where it shows them (a bad signature, a malformed subtask), else empty."""
    if notification is not None:
        return event_type_of(notification), notification.task_id or ""
    try:
        identity = identify(delivery.body)
    except DecodeError:
        return "", ""
    return identity.event_type, identity.task_id
