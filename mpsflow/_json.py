"""Records as JSON: one encoder for every sink, and a cheap peek at a notification's identity.

Sinks take "records": raw notification bytes, parsed ``dict`` events, msgspec Structs (the
typed notification model), dataclasses or plain JSON-able values. ``dumps`` turns any of them
into JSON bytes (raw bytes are kept as they are), ``dumps_line`` into one compact line (for
JSON lines and size-capped payloads), and ``identify`` reads ``EventType``, ``TaskId`` and
``Status`` without decoding the whole document (the peek is :mod:`mpsflow.events.envelope`'s).
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Mapping
from typing import Any

import msgspec

from mpsflow.errors import DecodeError
from mpsflow.events import envelope

__all__ = ["UNKNOWN", "RecordIdentity", "dumps", "dumps_line", "identify"]

UNKNOWN = "unknown"
"""What ``identify`` reports for a field it cannot find."""


def _enc_hook(obj: Any) -> Any:
    """Encode what msgspec does not know natively: other mappings, paths, exceptions."""
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    raise TypeError(f"cannot encode a {type(obj).__name__} as JSON")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)


def dumps(record: object) -> bytes:
    """Return ``record`` as JSON bytes; bytes-like records are taken as JSON already and kept.

    Raises ``TypeError`` or ``msgspec.EncodeError`` for a record that has no JSON form.
    """
    if isinstance(record, bytes):
        return record
    if isinstance(record, bytearray | memoryview):
        return bytes(record)
    if isinstance(record, msgspec.Raw):
        return bytes(record)
    return _encoder.encode(record)


def dumps_line(record: object) -> bytes:
    """Return ``record`` as one line of compact JSON (no newline), validating raw bytes.

    Raw JSON bytes (often pretty-printed by MPS samples and tools) are re-formatted without a
    full decode, so the result never spans lines. Raises ``msgspec.DecodeError`` when raw
    bytes are not one JSON document.
    """
    if isinstance(record, bytes | bytearray | memoryview | msgspec.Raw):
        return msgspec.json.format(bytes(record), indent=0)
    return _encoder.encode(record)


@dataclasses.dataclass(frozen=True, slots=True)
class RecordIdentity:
    """Which task a record is about: used to name objects and describe references."""

    event_type: str = UNKNOWN
    task_id: str = UNKNOWN
    status: str = UNKNOWN


def _text(value: object) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    return str(value) if isinstance(value, str) and value else UNKNOWN


def _peeked(raw: bytes | Mapping[str, Any]) -> RecordIdentity:
    try:
        found = envelope.identify(raw)
    except DecodeError:
        return RecordIdentity()
    status = UNKNOWN if found.live else _text(found.status)
    return RecordIdentity(_text(found.event_type), _text(found.task_id), status)


def identify(record: object) -> RecordIdentity:
    """Read event type, task id and status from a record, ``"unknown"`` where absent.

    Works on raw JSON bytes (peeked, not fully decoded), on ``dict`` events (both possibly
    in the ParseNotification API's wrapper), and on typed notifications exposing
    ``event_type`` (or ``notification_type``) / ``task_id`` / ``status`` attributes.
    Live-stream notifications have no status. Never raises.
    """
    if isinstance(record, bytes | bytearray | memoryview | msgspec.Raw):
        return _peeked(bytes(record))
    if isinstance(record, Mapping):
        return _peeked(record)
    kind = getattr(record, "event_type", None) or getattr(record, "notification_type", None)
    return RecordIdentity(
        _text(kind),
        _text(getattr(record, "task_id", None)),
        _text(getattr(record, "status", None)),
    )
