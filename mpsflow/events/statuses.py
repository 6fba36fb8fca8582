"""The ``Status`` values each routing key's results can have: what ``status=`` may name.

``@app.on(key, status=...)`` matches the ``Status`` that routing reads for the key: an event
key's task ``Status`` (``Notification.status``), a subtask key's task ``Status``
(``Subtask.status``; a category key such as ``AiAnalysis`` reads the task inside each item).
The values are the SDK's (``tencentcloud-sdk-python-mps`` ``models.py``, each ``Status``
field's doc); ``tests/events/test_statuses.py`` holds this table to those docs and to the
Structs.

* ``TaskStatus``: every subtask result ("任务状态，有 PROCESSING，SUCCESS 和 FAIL 三种").
* ``TaskFlowStatus``: the ``WorkflowTask``, ``EditMediaTask`` and ``ScheduleTask`` events.
  ``FINISH`` is not success: filter with ``ok=``/``failed=`` for that.
* ``BlindWatermarkStatus``: the ``ExtractBlindWatermark`` event.
* ``NoStatus``: keys whose results have no ``Status`` (``BatchTask``, ``BatchSmartSubtitles``,
  ``CoverBySnapshot``, ``Unknown`` and every live-stream key), so no ``status=`` can match
  them; ``ok=``, ``failed=`` and ``when=`` still can.

The ``Literal`` types are the vocabulary: ``STATUSES`` (the registration check) is read from
them, and ``scripts/gen_typed_on.py`` writes them into the typed ``on`` overloads, so mypy and
the runtime agree. A key this table does not list accepts any status.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, NoReturn

from .keys import LIVE_KEYS, SUBTASK_KEYS, UNKNOWN

__all__ = [
    "STATUSES",
    "STATUS_TYPES",
    "BlindWatermarkStatus",
    "NoStatus",
    "TaskFlowStatus",
    "TaskStatus",
]

TaskStatus = Literal["SUCCESS", "FAIL", "PROCESSING"]
"""A subtask result's ``Status``."""

TaskFlowStatus = Literal["PROCESSING", "FINISH"]
"""A ``WorkflowTask``, ``EditMediaTask`` or ``ScheduleTask`` event's ``Status``."""

BlindWatermarkStatus = Literal["WAITING", "PROCESSING", "FINISH"]
"""An ``ExtractBlindWatermark`` event's ``Status``."""

NoStatus = NoReturn
"""The ``Status`` of a result that has none: no value fits."""

_TYPES: dict[str, object] = {
    "TaskStatus": TaskStatus,
    "TaskFlowStatus": TaskFlowStatus,
    "BlindWatermarkStatus": BlindWatermarkStatus,
    "NoStatus": NoStatus,
}

_NO_STATUS = (
    "BatchTask",  # BatchSubTaskResult: its outputs have statuses, the event has none
    "BatchSmartSubtitles",  # BatchSmartSubtitlesResult: the same
    "CoverBySnapshot",  # the result set item itself, which has no task
    UNKNOWN,
    *LIVE_KEYS,  # live results report ErrCode (ProcessEof) or nothing
)

STATUS_TYPES: Mapping[str, str] = MappingProxyType(
    {
        **dict.fromkeys(SUBTASK_KEYS, "TaskStatus"),
        "WorkflowTask": "TaskFlowStatus",
        "EditMediaTask": "TaskFlowStatus",
        "ScheduleTask": "TaskFlowStatus",
        "ExtractBlindWatermark": "BlindWatermarkStatus",
        **dict.fromkeys(_NO_STATUS, "NoStatus"),
    }
)
"""Routing key -> the name of its status ``Literal`` in this module."""

STATUSES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {key: typing.get_args(_TYPES[name]) for key, name in STATUS_TYPES.items()}
)
"""Routing key -> the statuses its results can have (``()``: they have no ``Status``)."""
