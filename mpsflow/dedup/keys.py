"""Notification keys and payload hashes: which notifications are the same one.

Default notification key (:func:`default_notification_key`):

* task events: ``EventType:TaskId:Status:<digest>``, the digest covering every sub-task's
  position, type, ``Status`` and ``Progress``. Change mode sends several PROCESSING
  notifications for one task; each differs in some sub-task, while a redelivery of the same
  notification is identical, so only true duplicates share a key.
* ``SessionId`` is *not* part of it: it is MPS's dedup id for the request that created the
  task, so it names the task (as ``TaskId`` already does), not one notification of it, and a
  SessionId reused after MPS's 3-7 day window starts a new task that must not be skipped. It
  stands in for ``TaskId`` only where an event has none (``BatchTask``).
* live-stream events: ``NotificationType:TaskId:<payload hash>`` (a live task streams many
  results of one type).
* anything else (unknown event type, unexpected shape): ``EventType:payload:<payload hash>``,
  so at least exact redeliveries are recognised.

:func:`payload_hash` is a digest of the payload in canonical form (sorted keys, compact),
without the transport fields ``Timestamp``, ``Sign`` and ``RequestId`` (a redelivery may be
signed afresh) and without the ParseNotification API's wrapper: bytes and the equivalent dict
give the same hash. The raw reads are :mod:`mpsflow.events.envelope`'s; the typed variants
(:func:`typed_notification_key`, :func:`typed_payload_hash`) work on a decoded notification.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from mpsflow.errors import DecodeError
from mpsflow.events import LiveStreamNotification, Notification
from mpsflow.events.envelope import EventView, Peek, document, kind_of, peek
from mpsflow.events.subtasks import subtask_states

__all__ = [
    "default_notification_key",
    "payload_hash",
    "typed_notification_key",
    "typed_payload_hash",
]

_TRANSPORT_FIELDS = frozenset({"Timestamp", "Sign", "RequestId"})
_CANONICAL_ENCODER = msgspec.json.Encoder(order="sorted")
_TYPED_ENCODER = msgspec.json.Encoder()
_encode_typed = _TYPED_ENCODER.encode
_sha256 = hashlib.sha256
_replace = msgspec.structs.replace


class _Sub(msgspec.Struct, rename="pascal"):
    """A sub-task result, reduced to what changes between Change-mode notifications."""

    status: str | None = None
    progress: float | None = None


# One entry of a result set: its Type and numbers, and one non-null ``…Task`` object.
_Item = dict[str, _Sub | list[Any] | str | float | bool | None]


class _Activity(msgspec.Struct, rename="pascal"):
    activity_type: str | None = None
    activity_res_item: _Item | None = None


class _BatchSubtitles(msgspec.Struct, rename="pascal"):
    outputs: list[_Sub] | None = None


class _Task(EventView, rename="pascal"):
    """An event object's identity (from :class:`EventView`) and sub-task containers."""

    media_process_result_set: list[_Item] | None = None
    ai_content_review_result_set: list[_Item] | None = None
    ai_analysis_result_set: list[_Item] | None = None
    ai_recognition_result_set: list[_Item] | None = None
    smart_subtitles_task_result: list[_Item] | _BatchSubtitles | None = None
    ai_quality_control_task_result: _Sub | None = None
    smart_erase_task_result: _Sub | None = None
    ai_dubbing_task_result: _Sub | None = None
    activity_result_set: list[_Activity] | None = None


def default_notification_key(raw: bytes | Mapping[str, Any]) -> str:
    """The default dedup key of a notification (see the module docstring for its layout).

    Bytes are decoded into small structs holding only the identity and sub-task statuses;
    msgspec skips the rest. Raises :class:`~mpsflow.errors.DecodeError` when ``raw`` is not a
    JSON object.
    """
    try:
        fields: Peek[_Task] = peek(raw, _Task)
    except DecodeError:  # not JSON (raised again below), or an unexpected shape
        return _payload_key(raw, kind_of(document(raw)) or "unknown")
    if fields.live:
        return f"{fields.NotificationType}:{fields.TaskId or '-'}:{payload_hash(raw)}"
    kind = fields.EventType or "unknown"
    task = fields.event()
    if task is None:
        return _payload_key(raw, kind)
    if task.TaskId:
        identity = task.TaskId
    elif fields.SessionId:
        identity = f"sid={fields.SessionId}"
    else:
        return _payload_key(raw, kind)
    return f"{kind}:{identity}:{task.Status or '-'}:{_subtask_digest(task)}"


def typed_notification_key(notification: Notification | LiveStreamNotification) -> str:
    """The default key of a decoded notification: same layout as ``default_notification_key``.

    ``EventType:TaskId:Status:<digest of every subtask's key, status and progress>``; live
    notifications and events without a TaskId fall back to a payload-hash key.
    """
    if isinstance(notification, LiveStreamNotification):
        kind = notification.notification_type or "unknown"
        task = notification.task_id or "-"
        return f"{kind}:{task}:{typed_payload_hash(notification)}"
    kind = notification.event_type or "unknown"
    event = notification.event  # read once: ``task_id`` and ``status`` are read off it
    task_id = getattr(event, "task_id", None)
    if event is None or not (task_id or notification.session_id):
        return f"{kind}:payload:{typed_payload_hash(notification)}"
    identity = task_id or f"sid={notification.session_id}"
    digest = _sha256(_encode_typed(subtask_states(notification))).hexdigest()[:16]
    return f"{kind}:{identity}:{getattr(event, 'status', None) or '-'}:{digest}"


def typed_payload_hash(notification: Notification | LiveStreamNotification) -> str:
    """128-bit digest of a decoded notification without its transport fields.

    ``Timestamp``, ``Sign`` and ``RequestId`` are left out, so a re-signed resend of the same
    notification hashes the same; an empty ``SessionId``/``SessionContext`` hashes as an
    absent one (MPS sends either, and a notification rebuilt from the API has them or not).
    """
    bare: Notification | LiveStreamNotification
    if isinstance(notification, LiveStreamNotification):
        bare = _replace(notification, timestamp=None, sign=None, request_id=None)
    else:
        bare = _replace(
            notification,
            timestamp=None,
            sign=None,
            request_id=None,
            session_id=notification.session_id or None,
            session_context=notification.session_context or None,
        )
    return _sha256(_encode_typed(bare)).hexdigest()[:32]


def payload_hash(raw: bytes | Mapping[str, Any]) -> str:
    """A 128-bit hex digest of the payload's canonical JSON, transport fields left out.

    Raises :class:`~mpsflow.errors.DecodeError` when ``raw`` is not a JSON object.
    """
    body = {k: v for k, v in document(raw).items() if k not in _TRANSPORT_FIELDS}
    try:
        canonical = _CANONICAL_ENCODER.encode(body)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"notification cannot be hashed: {exc}") from None
    return hashlib.sha256(canonical).hexdigest()[:32]


def _subtask_digest(task: _Task) -> str:
    states: list[tuple[str, int, str, str | None, float | None]] = []
    item_sets = (
        ("MediaProcessResultSet", task.media_process_result_set),
        ("AiContentReviewResultSet", task.ai_content_review_result_set),
        ("AiAnalysisResultSet", task.ai_analysis_result_set),
        ("AiRecognitionResultSet", task.ai_recognition_result_set),
    )
    for name, items in item_sets:
        _add_items(states, name, items or ())
    subtitles = task.smart_subtitles_task_result
    if isinstance(subtitles, _BatchSubtitles):
        for index, output in enumerate(subtitles.outputs or ()):
            states.append(("SmartSubtitlesTaskResult", index, "", output.status, output.progress))
    elif subtitles is not None:
        _add_items(states, "SmartSubtitlesTaskResult", subtitles)
    singles = (
        ("AiQualityControlTaskResult", task.ai_quality_control_task_result),
        ("SmartEraseTaskResult", task.smart_erase_task_result),
        ("AiDubbingTaskResult", task.ai_dubbing_task_result),
    )
    for name, sub in singles:
        if sub is not None:
            states.append((name, 0, "", sub.status, sub.progress))
    for index, activity in enumerate(task.activity_result_set or ()):
        for field, value in (activity.activity_res_item or {}).items():
            if isinstance(value, _Sub):
                states.append(("ActivityResultSet", index, field, value.status, value.progress))
    return hashlib.sha256(msgspec.json.encode(states)).hexdigest()[:16]


def _add_items(
    states: list[tuple[str, int, str, str | None, float | None]],
    name: str,
    items: Sequence[_Item],
) -> None:
    for index, item in enumerate(items):
        for field, value in item.items():
            if isinstance(value, _Sub):
                states.append((name, index, field, value.status, value.progress))


def _payload_key(raw: bytes | Mapping[str, Any], kind: str) -> str:
    return f"{kind}:payload:{payload_hash(raw)}"
