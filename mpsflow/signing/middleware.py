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
"""

from __future__ import annotations

from mpsflow.codec import DEFAULT_MAX_SIZE, decode_any
from mpsflow.delivery import Cause, Outcome, Settlement
from mpsflow.errors import DecodeError
from mpsflow.middleware.base import Call, CallNext
from mpsflow.observability.metrics import Metrics
from mpsflow.signing.verifier import (
    SignatureVerifier,
    VerifyResult,
    extract_timestamp_sign,
    scan_timestamp_sign,
)

__all__ = ["SignatureMiddleware"]


class SignatureMiddleware:
    """Rejects missing, malformed, wrong or expired signatures, counting each reason."""

    def __init__(
        self,
        verifier: SignatureVerifier,
        *,
        metrics: Metrics | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        self.verifier = verifier
        self._metrics = metrics
        self._max_size = max_size

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
        call.notification = None
        reason = result.reason.value
        if self._metrics is not None:
            self._metrics.signature_rejected(reason)
        return Outcome(
            Settlement.REJECTED, reason=f"signature {reason}", cause=Cause.UNAUTHENTICATED
        )

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
