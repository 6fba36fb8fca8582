"""The parts of a notification whose type mpsflow does not know (the codec's slow path).

A part is unknown when the discriminator tables (``_tables``) do not name its type, or it has
none. The codec asks ``has_unknown_parts`` after every decode (so it is plain loops, no
allocation) and, only when it says yes, ``find_unknown_parts`` for where to keep the raw JSON.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ._base import RawPayload
from ._generated import LiveStreamNotification, Notification, ScheduleTask, WorkflowTask
from ._tables import (
    ACTIVITY_TASKS,
    ANALYSIS_TYPES,
    CATEGORY_TYPES,
    EVENT_TYPES,
    KNOWN_ACTIVITY_TYPES,
    LIVE_TYPES,
    MEDIA_TYPES,
    RECOGNITION_TYPES,
    REVIEW_TYPES,
    SUBTITLE_TYPES,
)

__all__ = ["find_unknown_parts", "has_unknown_parts"]

_Path = tuple[str | int, ...]


def _unknown_items(
    items: list[Any] | None, table: Mapping[str, object], path: _Path
) -> Iterator[tuple[RawPayload, _Path]]:
    for i, item in enumerate(items or ()):
        if item.type not in table:
            yield item, (*path, i)


def _unknown_categorised(
    category: str, items: list[Any] | None, path: _Path
) -> Iterator[tuple[RawPayload, _Path]]:
    return _unknown_items(items, CATEGORY_TYPES[category], path)


def _unknown_workflow(e: WorkflowTask) -> Iterator[tuple[RawPayload, _Path]]:
    root: _Path = ("WorkflowTaskEvent",)
    yield from _unknown_items(
        e.media_process_result_set, MEDIA_TYPES, (*root, "MediaProcessResultSet")
    )
    yield from _unknown_categorised(
        "AiContentReview", e.ai_content_review_result_set, (*root, "AiContentReviewResultSet")
    )
    yield from _unknown_categorised(
        "AiAnalysis", e.ai_analysis_result_set, (*root, "AiAnalysisResultSet")
    )
    yield from _unknown_categorised(
        "AiRecognition", e.ai_recognition_result_set, (*root, "AiRecognitionResultSet")
    )
    yield from _unknown_categorised(
        "SmartSubtitles", e.smart_subtitles_task_result, (*root, "SmartSubtitlesTaskResult")
    )


def _unknown_schedule(e: ScheduleTask) -> Iterator[tuple[RawPayload, _Path]]:
    for i, activity in enumerate(e.activity_result_set or ()):
        path: _Path = ("ScheduleTaskEvent", "ActivityResultSet", i)
        item = activity.activity_res_item
        if item is None or not any(getattr(item, a[0]) is not None for a in ACTIVITY_TASKS):
            if activity.activity_type not in KNOWN_ACTIVITY_TYPES:
                yield activity, path
            continue
        item_path: _Path = (*path, "ActivityResItem")
        for attr, wire, _key, items_category in ACTIVITY_TASKS:
            task = getattr(item, attr)
            if task is not None and items_category is not None:
                yield from _unknown_categorised(
                    items_category, task.output, (*item_path, wire, "Output")
                )


def has_unknown_parts(notification: Notification | LiveStreamNotification) -> bool:
    """True when some part's type is unknown (or the discriminator is missing).

    This runs after every decode, so it is plain loops over the typed Structs, no allocation.
    """
    n = notification
    if type(n) is LiveStreamNotification:
        return n.notification_type not in LIVE_TYPES
    if type(n) is not Notification or n.event_type not in EVENT_TYPES:
        return True
    w = n.workflow_task_event
    if w is not None:  # unrolled on purpose: this is the hot path
        items: list[Any] | None = w.media_process_result_set
        if items:
            for item in items:
                if item.type not in MEDIA_TYPES:
                    return True
        items = w.ai_content_review_result_set
        if items:
            for item in items:
                if item.type not in REVIEW_TYPES:
                    return True
        items = w.ai_analysis_result_set
        if items:
            for item in items:
                if item.type not in ANALYSIS_TYPES:
                    return True
        items = w.ai_recognition_result_set
        if items:
            for item in items:
                if item.type not in RECOGNITION_TYPES:
                    return True
        items = w.smart_subtitles_task_result
        if items:
            for item in items:
                if item.type not in SUBTITLE_TYPES:
                    return True
    s = n.schedule_task_event
    return s is not None and next(_unknown_schedule(s), None) is not None


def find_unknown_parts(
    notification: Notification | LiveStreamNotification,
) -> list[tuple[RawPayload, _Path]]:
    """Parts whose type is unknown, with their JSON path as keys (the root when the
    ``EventType``/``NotificationType`` itself is unknown). Empty for a fully known notification.
    """
    n = notification
    if isinstance(n, LiveStreamNotification):
        return [] if n.notification_type in LIVE_TYPES else [(n, ())]
    out: list[tuple[RawPayload, _Path]] = []
    if n.event_type not in EVENT_TYPES:
        out.append((n, ()))
    if n.workflow_task_event is not None:
        out.extend(_unknown_workflow(n.workflow_task_event))
    if n.schedule_task_event is not None:
        out.extend(_unknown_schedule(n.schedule_task_event))
    return out
