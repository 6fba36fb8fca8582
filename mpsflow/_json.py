"""Records as JSON: one encoder for every sink, and a cheap peek at a notification's identity.

Sinks take "records": raw notification bytes, parsed ``dict`` events, msgspec Structs (the
typed notification model), dataclasses or plain JSON-able values. ``dumps`` turns any of them
into JSON bytes (raw bytes are kept as they are), ``dumps_line`` into one compact line (for
JSON lines and size-capped payloads), and ``identify`` reads ``EventType``, ``TaskId`` and
``Status`` without decoding the whole document.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Mapping
from typing import Any

import msgspec

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


class _PeekTask(msgspec.Struct):
    TaskId: str | None = None
    Status: str | None = None


class _Peek(msgspec.Struct):
    """The few envelope fields ``identify`` needs; msgspec skips everything else unparsed."""

    EventType: str | None = None
    NotificationType: str | None = None
    TaskId: str | None = None
    WorkflowTaskEvent: _PeekTask | None = None
    EditMediaTaskEvent: _PeekTask | None = None
    ScheduleTaskEvent: _PeekTask | None = None
    ExtractBlindWatermarkTask: _PeekTask | None = None


_peek_decoder = msgspec.json.Decoder(_Peek)

_EVENT_KEYS = (
    "WorkflowTaskEvent",
    "EditMediaTaskEvent",
    "ScheduleTaskEvent",
    "ExtractBlindWatermarkTask",
)


def _text(value: object) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    return str(value) if isinstance(value, str) and value else UNKNOWN


def _identify_bytes(raw: bytes) -> RecordIdentity:
    try:
        peek = _peek_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return RecordIdentity()
    if peek.NotificationType is not None:  # live-stream notification: no EventType, no Status
        return RecordIdentity(_text(peek.NotificationType), _text(peek.TaskId), UNKNOWN)
    event_type = _text(peek.EventType)
    task: _PeekTask | None = getattr(peek, f"{event_type}Event", None)
    if task is None:
        task = next((t for key in _EVENT_KEYS if (t := getattr(peek, key)) is not None), None)
    if task is None:
        return RecordIdentity(event_type)
    return RecordIdentity(event_type, _text(task.TaskId), _text(task.Status))


def _identify_mapping(doc: Mapping[str, Any]) -> RecordIdentity:
    notification_type = doc.get("NotificationType")
    if notification_type is not None:
        return RecordIdentity(_text(notification_type), _text(doc.get("TaskId")), UNKNOWN)
    event_type = _text(doc.get("EventType"))
    task = doc.get(f"{event_type}Event")
    if not isinstance(task, Mapping):
        task = next((t for key in _EVENT_KEYS if isinstance(t := doc.get(key), Mapping)), None)
    if task is None:
        return RecordIdentity(event_type)
    return RecordIdentity(event_type, _text(task.get("TaskId")), _text(task.get("Status")))


def identify(record: object) -> RecordIdentity:
    """Read event type, task id and status from a record, ``"unknown"`` where absent.

    Works on raw JSON bytes (peeked, not fully decoded), on ``dict`` events, and on typed
    notifications exposing ``event_type`` (or ``notification_type``) / ``task_id`` /
    ``status`` attributes. Live-stream notifications have no status. Never raises.
    """
    if isinstance(record, bytes | bytearray | memoryview | msgspec.Raw):
        return _identify_bytes(bytes(record))
    if isinstance(record, Mapping):
        return _identify_mapping(record)
    kind = getattr(record, "event_type", None) or getattr(record, "notification_type", None)
    return RecordIdentity(
        _text(kind),
        _text(getattr(record, "task_id", None)),
        _text(getattr(record, "status", None)),
    )
