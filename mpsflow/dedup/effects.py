"""What runs once: the identity of one handler's effect.

A handler runs once per distinct thing it is given:

* an **event handler** (``WorkflowTask``, ``EditMediaTask``..., and live-stream keys) once per
  notification: its scope is the notification key (see
  :func:`mpsflow.dedup.idempotency.typed_notification_key`);
* a **subtask handler** (``Transcode``, ``AiContentReview.Porn``, ``Schedule.AiAnalysis``...)
  once per subtask result: its scope is the task (``EventType:TaskId``), the subtask's
  identity inside the task (:attr:`mpsflow.events.Subtask.identity`: container, type,
  template ``Definition``, ordinal) and the subtask's state (status, progress, error code,
  whether it has output).

So two renditions in one notification are two runs, and the same rendition seen again (in a
later Change-mode notification, in FINISH, or in a redelivery, re-signed or not) is a
duplicate, while a rendition that moved on (PROCESSING 37% -> SUCCESS) is a new effect.

The record key of an effect is ``scope + ":" + handler name``, and :func:`effect_key` turns it
into the stable key a handler passes downstream (``ctx.effect_key``).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from mpsflow.context import AnyNotification
    from mpsflow.events import Notification, Subtask

__all__ = [
    "default_scope",
    "effect_key",
    "record_key",
    "subtask_keys",
    "subtask_payload_hash",
    "subtask_scope",
    "subtask_state",
    "task_scope",
]

_ENCODER = msgspec.json.Encoder()
_encode = _ENCODER.encode
_sha256 = hashlib.sha256
_EMPTY: tuple[list[Any], dict[str, Any]] = ([], {})


def task_scope(notification: Notification) -> str | None:
    """``EventType:TaskId`` (``EventType:sid=SessionId`` without a TaskId); None without both.

    Unlike the notification key, it is the same for every notification of one task.
    """
    kind = notification.event_type or "unknown"
    task_id = notification.task_id  # a property reading the event: once
    if task_id:
        return f"{kind}:{task_id}"
    if notification.session_id:
        return f"{kind}:sid={notification.session_id}"
    return None


def subtask_state(subtask: Subtask) -> str:
    """The part of a subtask result that makes it a new effect when it changes.

    ``Status``, ``Progress``, the error code and whether it has ``Output``: a PROCESSING
    rendition that reaches SUCCESS, or one whose output appears, is handled again.
    """
    task = subtask.task
    return _state(subtask, task, getattr(task, "output", None)).decode()


def _state(subtask: Subtask, task: Any, output: Any) -> bytes:
    """:func:`subtask_state` as bytes, ``output`` being ``task``'s (read once by the caller)."""
    has_output = output is not None and output not in _EMPTY
    return _encode(
        [subtask.status or "", getattr(task, "progress", None), subtask.error, has_output]
    )


def subtask_scope(notification: Notification, subtask: Subtask) -> str:
    """The dedup scope of one subtask result: ``<task scope>:sub:<digest>``.

    The digest covers the subtask's identity and state (both readable from ``subtask``).
    A notification without a TaskId or SessionId uses its notification key as the task part.
    """
    task = subtask.task
    return _scope(notification, subtask, _state(subtask, task, getattr(task, "output", None)))


def _scope(notification: Notification, subtask: Subtask, state: bytes) -> str:
    task = task_scope(notification)
    if task is None:
        from mpsflow.dedup.idempotency import typed_notification_key

        task = typed_notification_key(notification)
    # The digest of "<identity>\n<state>" in UTF-8 (the state's JSON is ASCII-safe UTF-8).
    material = subtask.identity.encode() + b"\n" + state
    return f"{task}:sub:{_sha256(material).hexdigest()[:32]}"


def subtask_payload_hash(subtask: Subtask) -> str:
    """128-bit digest of the subtask's ``Output`` (the conflict check of a subtask effect);
    ``""`` (no check) when it has none.

    The rest of the notification changes from one Change-mode notification to the next, and
    so may a result's ``Message`` or usage figures: only a different output for the same
    subtask in the same state is a conflict worth a warning.
    """
    task = subtask.task if subtask.task is not None else subtask.result
    output = getattr(task, "output", None)
    if output is None:
        return ""
    return _sha256(_encode(output)).hexdigest()[:32]


def subtask_keys(notification: Notification, subtask: Subtask) -> tuple[str, str]:
    """``(subtask_scope(...), subtask_payload_hash(subtask))``, reading the subtask once.

    What the dedup middleware needs for every subtask handler run; the same strings as the
    two functions give (they are persisted by the SQLite and Redis stores).
    """
    task = subtask.task
    output = getattr(task, "output", None)
    scope = _scope(notification, subtask, _state(subtask, task, output))
    if task is None:
        output = getattr(subtask.result, "output", None)
    if output is None:
        return scope, ""
    return scope, _sha256(_encode(output)).hexdigest()[:32]


def record_key(scope: str, handler: str) -> str:
    """The store key of one handler's effect within ``scope``."""
    return f"{scope}:{handler}"


def effect_key(record: str) -> str:
    """The stable key of an effect, for downstream APIs: 32 hex digits of the record key.

    The same effect always gets the same key (across redeliveries, re-signing, Change-mode
    notifications, processes and restarts); two effects never share one.
    """
    return hashlib.sha256(record.encode()).hexdigest()[:32]


def default_scope(notification: AnyNotification, subtask: Subtask | None) -> str:
    """The default dedup scope: the subtask's when there is one, else the notification's."""
    from mpsflow.dedup.idempotency import typed_notification_key
    from mpsflow.events import Notification

    if subtask is not None and isinstance(notification, Notification):
        return subtask_scope(notification, subtask)
    return typed_notification_key(notification)
