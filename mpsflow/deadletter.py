"""Dead-letter records: everything needed to see why a delivery failed and to re-drive it."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from mpsflow.delivery import Cause

__all__ = [
    "DeadLetter",
    "DeadLetterKind",
    "Failure",
    "body_bytes",
    "dead_letter_kind",
    "make_dead_letter",
]

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
    bytes MPS sent.
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

    def raw_body(self) -> bytes:
        """The payload bytes as they were received."""
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
) -> DeadLetter:
    """Build a record, keeping the body verbatim (base64 when it is not UTF-8)."""
    raw = body_bytes(body)
    try:
        text, encoding = raw.decode(), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode(), "base64"
    return DeadLetter(
        id=uuid.uuid4().hex,
        time=now,
        kind=kind,
        reason=reason,
        source=source,
        delivery_id=delivery_id,
        attempt=attempt,
        event_type=event_type,
        task_id=task_id,
        failures=failures or [],
        body=text,
        body_encoding=encoding,  # type: ignore[arg-type]
    )
