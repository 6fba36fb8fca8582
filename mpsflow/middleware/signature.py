"""Signature middleware: only notifications signed with a configured NotifyKey get through.

MPS signs with ``Sign = MD5(str(Timestamp) + NotifyKey)`` where ``Timestamp`` is the expiry
(see ``mpsflow.signature``). The check runs at delivery scope, before any handler. The body is
decoded here, once: a typed notification carries its ``Timestamp`` and ``Sign``, and is handed
on in ``call.notification`` so the pipeline does not decode it again. A body that does not
decode (malformed, or a shape the model rejects) is checked from the two fields read straight
out of the raw payload instead, so a bad signature is still a 401 and never a dead-lettered
"poison" record an unauthenticated sender could fill the dead-letter sink with. A rejection is
REJECTED with HTTP status 401: the source records a dead letter and never retries it.
"""

from __future__ import annotations

from mpsflow.codec import DEFAULT_MAX_SIZE, decode_any
from mpsflow.delivery import Outcome, Settlement
from mpsflow.errors import DecodeError
from mpsflow.metrics import Metrics
from mpsflow.middleware.base import Call, CallNext
from mpsflow.signature import SignatureVerifier, VerifyResult, extract_timestamp_sign

__all__ = ["SignatureMiddleware"]


class SignatureMiddleware:
    """Rejects missing, malformed, wrong or expired signatures (401), counting each reason."""

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
        notification = call.notification
        if notification is None:
            try:
                notification = decode_any(body, max_size=self._max_size)
            except DecodeError:
                notification = None
        if notification is not None:
            timestamp: object = notification.timestamp
            sign: object = notification.sign
        else:
            try:
                timestamp, sign = extract_timestamp_sign(body)
            except DecodeError:
                return await call_next(call)  # malformed: the decoder reports it (400)
        result: VerifyResult = self.verifier.verify(timestamp, sign, payload=body)
        if result.ok:
            call.notification = notification
            return await call_next(call)
        reason = result.reason.value
        if self._metrics is not None:
            self._metrics.signature_rejected(reason)
        return Outcome(Settlement.REJECTED, status=401, reason=f"signature {reason}")
