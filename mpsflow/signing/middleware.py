"""Signature middleware: only notifications signed with a configured NotifyKey get through.

MPS signs with ``Sign = MD5(str(Timestamp) + NotifyKey)`` where ``Timestamp`` is the expiry
(see ``mpsflow.signing.verifier``). The check runs at delivery scope, before the full decode, from
the two fields read straight out of the raw payload, so an unauthenticated sender never gets
a full decode:

* the fast path scans the bytes for the last ``Timestamp``/``Sign`` (``scan_timestamp_sign``);
  when that pair verifies, the body is decoded and the pair confirmed against the decoded
  top level (a pair found in a nested object is not the signature; the top-level one is then
  checked instead);
* otherwise the exact read (``extract_timestamp_sign``, a two-field decode that skips the
  rest) decides, and it alone produces rejections.

Bodies that are not plain JSON (a URL-encoded callback) are decoded first and checked from
the decoded notification; no encoding can slip past the check. A decoded notification is
handed on in ``call.notification`` so the pipeline does not decode it again. A rejection is
REJECTED because ``Cause.UNAUTHENTICATED``: the pipeline records a ``signature`` dead letter,
nothing retries it, and each source answers the way its delivery contract says.

Every rejection is counted (``signature_rejections`` by reason) and logged at WARNING on
``mpsflow.signing``: the first at once, then at most one line per ``log_interval`` seconds on
the app's clock, saying how many were held back. A line names the reason, the TaskId when the
body shows one, and the peer (the HTTP client's address, else the source's name), and what to
check; never a key, the ``Sign`` or the body.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any, ClassVar

from mpsflow._throttle import LogThrottle, held_back, tail_line
from mpsflow.clock import Clock
from mpsflow.codec import DEFAULT_MAX_SIZE, decode_any
from mpsflow.deadletter import REPLAYED_RECORD
from mpsflow.delivery import Cause, Outcome, Settlement
from mpsflow.errors import DecodeError
from mpsflow.events.envelope import extract_timestamp_sign, scan_timestamp_sign
from mpsflow.middleware.base import Call, CallNext
from mpsflow.observability.metrics import Metrics
from mpsflow.signing.verifier import SignatureVerifier, VerifyReason, VerifyResult, notification_ref

__all__ = ["SignatureMiddleware"]

_log = logging.getLogger("mpsflow.signing")

_HINTS = {
    VerifyReason.MISSING: (
        "it carries no Sign (or no Timestamp): start the MPS task with a NotifyKey, or accept "
        "unsigned notifications with allow_unsigned"
    ),
    VerifyReason.MALFORMED: "its Timestamp or Sign is not in MPS's format",
    VerifyReason.EXPIRED: (
        "it is signed with a known key but its Timestamp (the expiry) has passed: a replay, a "
        "late redelivery, or a clock that is off (see signature_skew)"
    ),
    VerifyReason.TOO_FAR_AHEAD: (
        "it is signed with a known key but its Timestamp (the expiry) is further ahead than "
        "max_signature_lifetime allows: a forged or long-lived signature (MPS signs for 10 "
        "minutes), or a clock that is off"
    ),
    VerifyReason.MISMATCH: (
        "its Sign matches none of notify_keys: check the NotifyKey the MPS task was started "
        "with against notify_keys"
    ),
}
_PLAIN = re.compile(r"[A-Za-z0-9._:/@\[\]-]{1,128}")
"""A TaskId or peer address logged as it is; anything else is quoted (it is unauthenticated
input, so it must not forge log lines)."""


class SignatureMiddleware:
    """Rejects missing, malformed, wrong or expired signatures, counting each reason.

    It runs at admission (``at_admission``): a body an inbox holds was checked when it came in,
    and is not checked again when it is processed, perhaps after its signature expired.
    """

    at_admission: ClassVar[bool] = True

    def __init__(
        self,
        verifier: SignatureVerifier,
        *,
        metrics: Metrics | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
        clock: Clock | None = None,
        log_interval: float = 10.0,
    ) -> None:
        self.verifier = verifier
        self._metrics = metrics
        self._max_size = max_size
        self._throttle = LogThrottle(
            clock or verifier.clock,
            log_interval,
            tail=tail_line(_log, "signature checks", "rejected"),
        )
        """Rejection log lines: the first, then one per ``log_interval`` (the verifier's clock,
        the app's, unless ``clock`` is given)."""

    def __repr__(self) -> str:
        return f"SignatureMiddleware({self.verifier!r})"

    async def __call__(self, call: Call, call_next: CallNext) -> Outcome:
        if call.scope != "delivery":
            return await call_next(call)
        body = call.delivery.body
        if type(body) is bytes and self._passes_fast(call, body):
            return await call_next(call)
        try:
            timestamp, sign = extract_timestamp_sign(body)
        except DecodeError:
            notification = call.notification
            if notification is None:
                try:
                    notification = decode_any(body, max_size=self._max_size)
                except DecodeError:
                    return await call_next(call)  # malformed: the decoder reports it
                call.notification = notification
            timestamp, sign = notification.timestamp, notification.sign
        result: VerifyResult = self.verifier.verify(timestamp, sign, payload=body)
        if result.ok:
            return await call_next(call)
        notification, call.notification = call.notification, None
        reason = result.reason.value
        if self._metrics is not None:
            self._metrics.signature_rejected(reason)
        held = self._throttle.admit(reason)
        if held is not None:
            task_id = getattr(notification, "task_id", None)
            self._log_rejection(call, result.reason, task_id, held)
        return Outcome(
            Settlement.REJECTED, reason=f"signature {reason}", cause=Cause.UNAUTHENTICATED
        )

    def _log_rejection(
        self, call: Call, reason: VerifyReason, task_id: object, held: Counter[str]
    ) -> None:
        """One WARNING line about this rejection and the ones held back before it."""
        delivery = call.delivery
        if not (isinstance(task_id, str) and task_id):
            task_id = self._task_id(delivery.body)
        what = f"TaskId {_safe(task_id)}" if task_id else "a notification (no readable TaskId)"
        remote = delivery.meta.get("remote", "")
        where = (
            f"from {_safe(remote)} via {_safe(delivery.source)}"
            if remote
            else f"from source {_safe(delivery.source)}"
        )
        more = held_back(held, "rejected")
        replayed = delivery.meta.get(REPLAYED_RECORD, "")
        hint = (  # the replay's own line says what to do about its record
            f"a replay of dead-letter record {_safe(replayed)}: the replay says what to do"
            if replayed
            else _HINTS.get(reason, "it does not verify")
        )
        _log.warning(
            "signature %s: rejected %s %s; %s%s",
            reason.value,
            what,
            where,
            hint,
            more,
            extra={
                "reason": reason.value,
                "task_id": task_id[:128],
                "remote": remote,
                "source": delivery.source,
                "suppressed": held.total(),
            },
        )

    def _task_id(self, body: bytes | Mapping[str, Any]) -> str:
        """The TaskId the raw body shows, or ``""`` (never raises, never reads a huge body)."""
        if isinstance(body, bytes) and len(body) > self._max_size:
            return ""
        return notification_ref(body).task_id

    def _passes_fast(self, call: Call, body: bytes) -> bool:
        """True when the scanned pair verifies and is the decoded notification's own.

        The decoded notification is then in ``call.notification``. False leaves the verdict
        to the exact read (whatever was decoded stays in ``call.notification`` for reuse).
        """
        scanned = scan_timestamp_sign(body)
        if scanned is None or not self.verifier.verify(*scanned, payload=body).ok:
            return False
        try:
            notification = decode_any(body, max_size=self._max_size)
        except DecodeError:
            return False
        call.notification = notification
        return notification.timestamp == scanned[0] and notification.sign == scanned[1]


def _safe(text: str) -> str:
    """``text`` as it is when plain (addresses, ids), else quoted and cut short."""
    if _PLAIN.fullmatch(text):
        return text
    return ascii(text[:64])
