"""MPS notification signatures: ``Sign = MD5(str(Timestamp) + NotifyKey)``.

``Timestamp`` is the signature's *expiry* (send time + 10 minutes by default), not the send
time, so a notification is rejected once ``now > Timestamp + skew``. Both fields sit at the top
level of the notification; :mod:`mpsflow.events.envelope` reads them from the raw payload
(carrier unwrapped) without decoding the rest. The signature covers neither the body nor the
task, so it authenticates the sender and limits replay; deduplication still runs beside it.

Keys are secrets: they never appear in reprs, logs or exception messages.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard, TypeVar, overload

import msgspec

from mpsflow.clock import Clock, SystemClock
from mpsflow.errors import ConfigurationError, DecodeError
from mpsflow.events.envelope import (
    extract_timestamp_sign,
    identify,
    load,
    notification_of,
    scan_timestamp_sign,
)

__all__ = [
    "DEFAULT_MAX_LIFETIME",
    "DEFAULT_SKEW",
    "NotificationRef",
    "SignatureVerifier",
    "UnsignedPolicy",
    "VerifyReason",
    "VerifyResult",
    "extract_timestamp_sign",
    "notification_ref",
    "scan_timestamp_sign",
    "sign",
    "sign_notification",
]

DEFAULT_MAX_LIFETIME = 3600.0
"""Seconds a signature's expiry may lie ahead: MPS signs for 10 minutes; an hour leaves room
for senders configured longer, and bounds how long a captured signature can be replayed."""
DEFAULT_SKEW = 30.0
"""Seconds past its expiry a signature is still accepted by default (``skew_seconds``, an
app's ``signature_skew``): room for a clock a little off from MPS's."""

_SIGN_LENGTH = 32
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_MAX_TIMESTAMP_DIGITS = 15
_MATCHED_CAPACITY = 4096


class VerifyReason(enum.Enum):
    """Why a notification passed or failed verification (log- and metric-safe)."""

    OK = "ok"
    MISSING = "missing"
    """No ``Sign`` (an unsigned notification), or a ``Sign`` without a ``Timestamp``."""
    MALFORMED = "malformed"
    """``Sign`` is not 32 hex digits, or ``Timestamp`` is not a non-negative integer."""
    EXPIRED = "expired"
    """Correctly signed, but ``now > Timestamp + skew``: too old, possibly a replay."""
    TOO_FAR_AHEAD = "too_far_ahead"
    """Correctly signed, but the ``Timestamp`` (the expiry) is further ahead than the longest
    lifetime allowed: such a pair could be replayed on any body for that long."""
    MISMATCH = "mismatch"
    """``Sign`` matches none of the configured keys."""
    UNSIGNED_ALLOWED = "unsigned_allowed"
    """Unsigned, and the unsigned policy accepted it."""


_PASSING = (VerifyReason.OK, VerifyReason.UNSIGNED_ALLOWED)
"""The reasons a notification is processed for (read on every delivery: a constant)."""


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The verdict: ``ok`` tells whether to process, ``reason`` tells why."""

    reason: VerifyReason
    key_index: int = -1
    """Position of the matching key in the verifier's key list (rotation tracking), else -1."""

    @property
    def ok(self) -> bool:
        """True when the notification may be processed."""
        return self.reason in _PASSING


@dataclass(frozen=True, slots=True)
class NotificationRef:
    """The few fields an unsigned-notification policy decides on.

    ``event_type`` is ``EventType`` for task events and ``NotificationType`` for live-stream
    events (then ``live`` is true); missing values are empty strings.
    """

    event_type: str = ""
    task_id: str = ""
    session_id: str = ""
    live: bool = False


UnsignedPolicy = Callable[[NotificationRef], bool]
"""Decides whether an unsigned notification (task started without a NotifyKey) is accepted."""


class SignatureVerifier:
    """Checks ``Timestamp``/``Sign`` against one or more NotifyKeys.

    Several keys support rotation: a notification signed with any of them passes.
    ``skew_seconds`` tolerates clock skew past the expiry. ``max_lifetime_seconds`` bounds how
    far ahead the expiry may be (MPS signs for 10 minutes; ``None``: no bound): the signature
    does not cover the body, so a captured ``(Timestamp, Sign)`` pair with an expiry years
    ahead would pass on any body until then. ``allow_unsigned`` is the policy for
    notifications without a ``Sign``: ``False`` (reject, the default), ``True`` (accept all), or
    a callable receiving a :class:`NotificationRef` (e.g. accept only some event types).
    """

    __slots__ = (
        "_allow_unsigned",
        "_clock",
        "_keys",
        "_lifetime",
        "_matched",
        "_ok",
        "_skew",
        "_time",
    )

    def __init__(
        self,
        keys: Sequence[str],
        *,
        skew_seconds: float = DEFAULT_SKEW,
        clock: Clock | None = None,
        allow_unsigned: UnsignedPolicy | bool = False,
        max_lifetime_seconds: float | None = DEFAULT_MAX_LIFETIME,
    ) -> None:
        if isinstance(keys, str):
            raise ConfigurationError("keys must be a sequence of NotifyKeys, not one string")
        if not keys:
            raise ConfigurationError("SignatureVerifier needs at least one NotifyKey")
        if not all(isinstance(key, str) and key for key in keys):
            raise ConfigurationError("every NotifyKey must be a non-empty string")
        if skew_seconds < 0:
            raise ConfigurationError("skew_seconds must not be negative")
        if max_lifetime_seconds is not None and not max_lifetime_seconds > 0:
            raise ConfigurationError("max_lifetime_seconds must be positive (or None: no bound)")
        self._lifetime = math.inf if max_lifetime_seconds is None else max_lifetime_seconds
        self._keys = tuple(keys)
        self._skew = skew_seconds
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._time: Callable[[], float] = (
            time.time if type(self._clock) is SystemClock else self._clock.time
        )
        """The clock's wall time (``time.time`` itself for the system clock: no extra frame)."""
        self._allow_unsigned = allow_unsigned
        self._ok = tuple(VerifyResult(VerifyReason.OK, i) for i in range(len(self._keys)))
        self._matched: dict[tuple[int, str], int] = {}
        """(Timestamp, Sign) pairs that matched a key, and which one. MPS signs every
        notification of one second alike, so a busy stream checks each pair once; expiry is
        still checked on every call. Bounded by ``_MATCHED_CAPACITY``."""

    def __repr__(self) -> str:
        return f"SignatureVerifier(keys=<{len(self._keys)} keys>, skew_seconds={self._skew})"

    @property
    def clock(self) -> Clock:
        """The clock expiry is checked against."""
        return self._clock

    def verify(
        self,
        timestamp: object,
        sign: object,
        *,
        payload: bytes | Mapping[str, Any] | None = None,
    ) -> VerifyResult:
        """Verify one notification's ``Timestamp`` and ``Sign`` as read from its payload.

        ``payload`` is only looked at for an unsigned notification when ``allow_unsigned`` is a
        callable (to build the :class:`NotificationRef` it decides on).
        """
        if type(timestamp) is int and type(sign) is str:
            matched = self._matched.get((timestamp, sign))
            if matched is not None:
                return self._in_time(timestamp, matched)
        if _absent(sign):
            return self._unsigned(payload)
        if _absent(timestamp):
            return VerifyResult(VerifyReason.MISSING)
        stamp = _timestamp_text(timestamp)
        if stamp is None or not _is_sign(sign):
            return VerifyResult(VerifyReason.MALFORMED)
        given = sign.lower().encode("ascii")
        matched = -1
        for index, key in enumerate(self._keys):
            expected = _sign(stamp, key).encode("ascii")
            if hmac.compare_digest(expected, given) and matched < 0:
                matched = index
        if matched < 0:
            return VerifyResult(VerifyReason.MISMATCH)
        if type(timestamp) is int:
            if len(self._matched) >= _MATCHED_CAPACITY:
                self._matched.clear()
            self._matched[timestamp, sign] = matched
        return self._in_time(int(stamp), matched)

    def _in_time(self, expiry: int, matched: int) -> VerifyResult:
        """OK for a pair that matched key ``matched`` unless its expiry is out of bounds."""
        now = self._time()
        if now > expiry + self._skew:
            return VerifyResult(VerifyReason.EXPIRED, matched)
        if expiry > now + self._lifetime + self._skew:
            return VerifyResult(VerifyReason.TOO_FAR_AHEAD, matched)
        return self._ok[matched]

    def verify_payload(self, payload: bytes | Mapping[str, Any]) -> VerifyResult:
        """Read ``Timestamp``/``Sign`` from ``payload`` and :meth:`verify` them."""
        timestamp, signature = extract_timestamp_sign(payload)
        return self.verify(timestamp, signature, payload=payload)

    def _unsigned(self, payload: bytes | Mapping[str, Any] | None) -> VerifyResult:
        policy = self._allow_unsigned
        if isinstance(policy, bool):
            allowed = policy
        else:
            ref = notification_ref(payload) if payload is not None else NotificationRef()
            allowed = bool(policy(ref))
        return VerifyResult(VerifyReason.UNSIGNED_ALLOWED if allowed else VerifyReason.MISSING)


def sign(timestamp: int | str, key: str) -> str:
    """The ``Sign`` MPS sends for ``timestamp`` and NotifyKey ``key`` (lower-case hex).

    The one place the MPS signature is computed: verifying and signing both call it.
    """
    return hashlib.md5(f"{timestamp}{key}".encode()).hexdigest()


_sign = sign  # for SignatureVerifier.verify, whose ``sign`` parameter hides the function


_Doc = TypeVar("_Doc", bound=MutableMapping[str, Any])


@overload
def sign_notification(payload: bytes, key: str, *, expires_at: int) -> bytes: ...
@overload
def sign_notification(payload: _Doc, key: str, *, expires_at: int) -> _Doc: ...
def sign_notification(payload: bytes | _Doc, key: str, *, expires_at: int) -> bytes | _Doc:
    """Sign a notification the way MPS does: ``Timestamp`` (the expiry) and its ``Sign``.

    The fields go into the notification itself, inside a wrapper when the payload is
    wrapped, exactly where verification reads them. A mapping is signed in place and
    returned; bytes come back as compact JSON. Raises :class:`DecodeError` when bytes are
    not a JSON object, ``TypeError`` when the notification cannot be written to.
    """
    if isinstance(payload, bytes):
        document = dict(load(payload))
        sign_notification(document, key, expires_at=expires_at)
        return msgspec.json.encode(document)
    target = notification_of(payload)
    if not isinstance(target, MutableMapping):
        raise TypeError("the notification to sign is not a mutable mapping")
    stamp = int(expires_at)
    target["Timestamp"] = stamp
    target["Sign"] = sign(stamp, key)
    return payload


def notification_ref(raw: bytes | Mapping[str, Any]) -> NotificationRef:
    """The :class:`NotificationRef` of a payload, decoding only the fields it needs.

    Never raises: a payload it cannot read gives an empty reference (which a policy should
    refuse).
    """
    try:
        found = identify(raw)
    except DecodeError:
        return NotificationRef()
    return NotificationRef(found.event_type, found.task_id, found.session_id, live=found.live)


def _absent(value: object) -> bool:
    return value is None or value == ""


def _timestamp_text(value: object) -> str | None:
    """The decimal text of a valid Timestamp, else None.

    Only a JSON integer is one, as the notification's type says: a digit string would pass
    here and then fail decoding, so it is refused here already.
    """
    if type(value) is not int or value < 0:
        return None
    text = str(value)
    return text if len(text) <= _MAX_TIMESTAMP_DIGITS else None


def _is_sign(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) == _SIGN_LENGTH and _HEX_DIGITS.issuperset(value)
