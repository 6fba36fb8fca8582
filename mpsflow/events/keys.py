"""The routing keys: every key a handler can listen to, and the Struct it receives.

* ``EVENT_KEYS``: ``EventType`` value -> event Struct (``WorkflowTask`` -> ``WorkflowTask``...).
* ``SUBTASK_KEYS``: subtask key -> result Struct. A key matches wherever that result sits (a
  workflow's result sets or a schedule's activities): ``Transcode``, ``AiAnalysis`` (each
  ``AiAnalysisResult``), ``AiAnalysis.Cover`` (the inner ``CoverTask``), ``Schedule.AiAnalysis``
  (the schedule's wrapper), ... and ``Unknown`` for a part whose type mpsflow does not know.
* ``LIVE_KEYS``: live ``NotificationType`` -> the matching ``...ResultInfo`` Struct.
* ``CONTAINER_KEYS``: keys whose result holds other subtasks.

The registries are built from the discriminator tables (``_tables``) and the generated Structs'
field types, so a key and its Struct cannot disagree.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from types import MappingProxyType

from ._base import MpsStruct
from ._generated import (
    ActivityResItem,
    AiAnalysisResult,
    AiContentReviewResult,
    AiRecognitionResult,
    BatchSubTaskResult,
    LiveStreamNotification,
    MediaProcessTaskResult,
    Notification,
    SmartSubtitlesResult,
)
from ._tables import ACTIVITY_TASKS, CATEGORY_TYPES, EVENT_TYPES, LIVE_TYPES, MEDIA_TYPES

__all__ = ["CONTAINER_KEYS", "EVENT_KEYS", "LIVE_KEYS", "SUBTASK_KEYS", "UNKNOWN"]

UNKNOWN = "Unknown"
"""Routing key of a subtask whose type mpsflow does not know (its raw JSON is kept)."""

CONTAINER_KEYS = frozenset(
    {
        UNKNOWN,
        "CoverBySnapshot",
        "AiContentReview",
        "AiAnalysis",
        "AiRecognition",
        "SmartSubtitles",
        "Schedule.AiContentReview",
        "Schedule.AiAnalysis",
        "Schedule.AiRecognition",
        "Schedule.SmartSubtitles",
    }
)
"""Keys whose result is a container: the tasks inside it are yielded under their own keys."""

# AI category key -> the container Struct of its items.
_CATEGORY_RESULTS: dict[str, type[MpsStruct]] = {
    "AiContentReview": AiContentReviewResult,
    "AiAnalysis": AiAnalysisResult,
    "AiRecognition": AiRecognitionResult,
    "SmartSubtitles": SmartSubtitlesResult,
}


def _field_type(cls: type, attr: str) -> type:
    hint = typing.get_type_hints(cls)[attr]
    (inner,) = (a for a in typing.get_args(hint) if a is not type(None))
    return inner  # type: ignore[no-any-return]


def _build_subtask_keys() -> dict[str, type]:
    keys: dict[str, type] = {}
    for _type, (key, attr, _wire) in MEDIA_TYPES.items():
        keys[key] = _field_type(MediaProcessTaskResult, attr) if attr else MediaProcessTaskResult
    for category, table in CATEGORY_TYPES.items():
        container = _CATEGORY_RESULTS[category]
        keys[category] = container
        for type_name, (attr, _wire) in table.items():
            keys[f"{category}.{type_name}"] = _field_type(container, attr)
    for attr, _wire, key, _items in ACTIVITY_TASKS:
        keys.setdefault(key, _field_type(ActivityResItem, attr))
    keys["BatchSmartSubtitles"] = _field_type(BatchSubTaskResult, "smart_subtitles_task_result")
    keys[UNKNOWN] = MpsStruct
    return dict(sorted(keys.items()))


EVENT_KEYS: Mapping[str, type] = MappingProxyType(
    {name: _field_type(Notification, attr) for name, (attr, _wire) in EVENT_TYPES.items()}
)
"""``EventType`` value -> the event Struct it carries."""

SUBTASK_KEYS: Mapping[str, type] = MappingProxyType(_build_subtask_keys())
"""Subtask routing key -> the result Struct handed to its handlers."""

LIVE_KEYS: Mapping[str, type] = MappingProxyType(
    {name: _field_type(LiveStreamNotification, attr) for name, (attr, _wire) in LIVE_TYPES.items()}
)
"""Live ``NotificationType`` value -> the info Struct handed to its handlers."""
