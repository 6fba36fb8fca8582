"""Every subtask result of a notification, with its routing key, in document order.

This is the routing contract the engine builds on: ``collect_subtasks`` (and the live
``iter_live_subtasks``) walk the typed Structs in place, no intermediate lists, and hand out
one small ``Subtask`` per result under the keys ``mpsflow.events.keys`` registers. A
``Subtask``'s ``identity`` names its result stably across a task's notifications.

The key registries (``keys``) and the unknown-part checks (``unknown``) are importable from
here too, as they were when this module held them.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Sequence
from typing import Any, cast

import msgspec

from ._base import HasOutcome, OutcomeMixin, RawPayload, TaskResult
from ._generated import (
    ActivityResult,
    LiveStreamNotification,
    MediaProcessTaskResult,
    Notification,
    WorkflowTask,
)
from ._tables import ACTIVITY_TASKS, CATEGORY_TYPES, KNOWN_ACTIVITY_TYPES, LIVE_TYPES, MEDIA_TYPES
from .keys import CONTAINER_KEYS, EVENT_KEYS, LIVE_KEYS, SUBTASK_KEYS, UNKNOWN
from .unknown import find_unknown_parts, has_unknown_parts

__all__ = [
    "CONTAINER_KEYS",
    "EVENT_KEYS",
    "LIVE_KEYS",
    "MEDIA_RESULT_SET_PATH",
    "SUBTASK_KEYS",
    "UNKNOWN",
    "MediaRoute",
    "Subtask",
    "collect_subtasks",
    "find_unknown_parts",
    "has_unknown_parts",
    "iter_live_subtasks",
    "iter_subtasks",
    "media_routes",
    "media_subtask",
    "subtask_states",
]


class Subtask:
    """One subtask result: routing ``key``, ``category``, typed ``result`` and JSON ``where``.

    ``status``/``ok``/``failed``/``error`` come from the result itself, or for a category item
    (an ``AiAnalysisResult``...) from the task inside it. ``raw`` is the untyped JSON of an
    ``Unknown`` part.
    """

    __slots__ = ("_default_ok", "_place", "_task", "_where", "category", "key", "result")

    def __init__(
        self,
        key: str,
        category: str,
        result: Any,
        where: str | tuple[str, int, str],
        task: Any = None,
        *,
        default_ok: bool = False,
        place: str | tuple[str, Sequence[Any], int] | None = None,
    ) -> None:
        self.key = key
        self.category = category
        self.result = result
        self._where = where
        self._task = task
        self._default_ok = default_ok
        self._place = place

    @property
    def where(self) -> str:
        """JSON path of the result, e.g. ``$.WorkflowTaskEvent.MediaProcessResultSet[0]``."""
        where = self._where
        if isinstance(where, tuple):  # built on first use: routing never needs it
            base, index, field = where
            where = f"{base}[{index}].{field}" if field else f"{base}[{index}]"
            self._where = where
        return where

    @property
    def identity(self) -> str:
        """Where this result sits in its task, stable across the task's notifications.

        Change mode sends the same result again in later PROCESSING and FINISH notifications,
        possibly at another position, so a result in a list is named by its container, its
        ``Type`` (``ActivityType`` in a schedule), its template ``Definition`` (``-`` when it has
        none) and its ordinal among the earlier items of that same type and definition:
        ``$.WorkflowTaskEvent.MediaProcessResultSet/Transcode/100040/0``. A result that stands
        alone (``AiQualityControlTaskResult``...) is named by its JSON path.
        """
        place = self._place
        if isinstance(place, tuple):
            container, siblings, index = place
            place = self._place = _item_identity(container, siblings, index)
        elif place is None:
            place = self._place = self.where
        return place

    @property
    def task(self) -> Any:
        """The task object whose ``Status``/``Progress``/``Output`` this result reports."""
        return self._task

    @property
    def status(self) -> str | None:
        """The task's ``Status`` (``SUCCESS``, ``FAIL``, ``PROCESSING``...), if it has one."""
        task = self._task
        return task.status if isinstance(task, TaskResult) else None

    @property
    def ok(self) -> bool:
        """True when the task succeeded (see ``TaskResult.ok``)."""
        task = self._task
        if isinstance(task, OutcomeMixin):
            return cast(HasOutcome, task).ok
        return self._default_ok

    @property
    def failed(self) -> bool:
        """True when the task failed (see ``TaskResult.failed``)."""
        task = self._task
        return cast(HasOutcome, task).failed if isinstance(task, OutcomeMixin) else False

    @property
    def error(self) -> str:
        """The task's error code (``ErrCodeExt`` or legacy ``ErrCode``); ``""`` when none."""
        task = self._task
        return cast(HasOutcome, task).error if isinstance(task, OutcomeMixin) else ""

    @property
    def raw(self) -> Any:
        """The untyped JSON of an ``Unknown`` part; None for known types."""
        result = self.result
        return result.raw if isinstance(result, RawPayload) else None

    def __repr__(self) -> str:
        return f"Subtask(key={self.key!r}, status={self.status!r}, where={self.where!r})"


# --- identity -------------------------------------------------------------------------------


def _inner_task(value: Any, depth: int = 2) -> Any:
    """The first task object (a Struct with an ``Input``) inside ``value``, or None."""
    for name in getattr(value, "__struct_fields__", ()):
        child = getattr(value, name)
        if isinstance(child, msgspec.Struct):
            if hasattr(child, "input"):
                return child
            if depth > 1:
                found = _inner_task(child, depth - 1)
                if found is not None:
                    return found
    return None


def _item_signature(item: Any) -> tuple[str, str]:
    """``(Type, Definition)`` of a listed result: what tells it from its siblings.

    The type is the item's ``Type`` (``ActivityType`` for a schedule activity); the
    definition is the template ``Definition`` of the task inside it, ``-`` when it has none.
    """
    kind = getattr(item, "type", None) or getattr(item, "activity_type", None)
    task = item if hasattr(item, "input") else _inner_task(item)
    definition = getattr(getattr(task, "input", None), "definition", None)
    return (str(kind) if kind else "-", "-" if definition is None else str(definition))


def _item_kind(item: Any) -> str:
    """The first half of :func:`_item_signature` (the type), without looking for the task."""
    kind = getattr(item, "type", None) or getattr(item, "activity_type", None)
    return str(kind) if kind else "-"


def _item_identity(container: str, items: Sequence[Any], index: int) -> str:
    """``container/Type/Definition/ordinal`` of ``items[index]`` (see ``Subtask.identity``).

    The ordinal counts the earlier items of the same signature; an earlier item of another
    type cannot have it, so only those of the same type have their task's definition read.
    """
    signature = _item_signature(items[index])
    kind, definition = signature
    ordinal = 0
    for i in range(index):
        earlier = items[i]
        if _item_kind(earlier) == kind and _item_signature(earlier) == signature:
            ordinal += 1
    return f"{container}/{kind}/{definition}/{ordinal}"


# --- iteration ------------------------------------------------------------------------------

_ACTIVITIES_PATH = "$.ScheduleTaskEvent.ActivityResultSet"
# The category of a result that stands alone (no AI category around it).
_MEDIA_CATEGORY = "MediaProcess"
_KEY_CATEGORY = {
    "AiQualityControl": "AiQualityControl",
    "ExecRule": "ExecRule",
    "SmartErase": "SmartErase",
    "AiDubbing": "AiDubbing",
}


# The walkers append to one list instead of yielding through nested generators: routing
# walks every delivery, and a yield that crosses three generator frames costs more than the
# rest of the walk.


def _categorised(
    category: str,
    items: list[Any] | None,
    where: str,
    out: list[Subtask],
    keys: Container[str] | None,
    *,
    container: str | None = None,
) -> None:
    if not items:
        return
    table = CATEGORY_TYPES[category]
    container = where if container is None else container
    for i, item in enumerate(items):
        place = (container, items, i)
        entry = table.get(item.type)
        if entry is None:
            if keys is None or UNKNOWN in keys:
                out.append(Subtask(UNKNOWN, UNKNOWN, item, (where, i, ""), place=place))
            continue
        attr, wire = entry
        task = getattr(item, attr)
        if keys is None or category in keys:
            out.append(Subtask(category, category, item, (where, i, ""), task, place=place))
        if task is not None:
            key = f"{category}.{item.type}"
            if keys is None or key in keys:
                out.append(Subtask(key, category, task, (where, i, wire), task, place=place))


MediaRoute = tuple[str, str | None, str]
"""How a ``MediaProcessResultSet`` item of one ``Type`` routes: (key, attribute, wire name);
no attribute means the item itself is the result."""

MEDIA_RESULT_SET_PATH = "$.WorkflowTaskEvent.MediaProcessResultSet"


def media_routes(keys: Container[str] | None = None) -> dict[str, MediaRoute]:
    """``MediaProcessResultSet`` item ``Type`` -> its route, for the types routed to ``keys``."""
    return {t: route for t, route in MEDIA_TYPES.items() if keys is None or route[0] in keys}


def media_subtask(
    route: MediaRoute,
    item: MediaProcessTaskResult,
    where: str,
    index: int,
    items: Sequence[MediaProcessTaskResult],
) -> Subtask | None:
    """The subtask of ``items[index]`` (None when the item carries no task of its type)."""
    key, attr, wire = route
    place = (where, items, index)
    if attr is None:
        return Subtask(key, _MEDIA_CATEGORY, item, (where, index, ""), default_ok=True, place=place)
    task = getattr(item, attr)
    if task is None:
        return None
    return Subtask(key, _MEDIA_CATEGORY, task, (where, index, wire), task, place=place)


def _media(
    items: list[MediaProcessTaskResult],
    where: str,
    out: list[Subtask],
    keys: Container[str] | None,
) -> None:
    for i, item in enumerate(items):
        route = MEDIA_TYPES.get(item.type)  # type: ignore[arg-type]
        if route is None:
            if keys is None or UNKNOWN in keys:
                out.append(Subtask(UNKNOWN, UNKNOWN, item, (where, i, ""), place=(where, items, i)))
            continue
        if keys is not None and route[0] not in keys:
            continue
        sub = media_subtask(route, item, where, i, items)
        if sub is not None:
            out.append(sub)


def _single(
    key: str, result: Any, where: str, out: list[Subtask], keys: Container[str] | None
) -> None:
    if result is not None and (keys is None or key in keys):
        out.append(Subtask(key, _KEY_CATEGORY[key], result, where, result))


def _workflow(e: WorkflowTask, where: str, out: list[Subtask], keys: Container[str] | None) -> None:
    # Each set is checked before its path string is made: most notifications carry one or
    # two of the eight.
    if e.media_process_result_set:
        _media(e.media_process_result_set, f"{where}.MediaProcessResultSet", out, keys)
    if e.ai_content_review_result_set:
        _categorised(
            "AiContentReview",
            e.ai_content_review_result_set,
            f"{where}.AiContentReviewResultSet",
            out,
            keys,
        )
    if e.ai_analysis_result_set:
        _categorised(
            "AiAnalysis", e.ai_analysis_result_set, f"{where}.AiAnalysisResultSet", out, keys
        )
    if e.ai_recognition_result_set:
        _categorised(
            "AiRecognition",
            e.ai_recognition_result_set,
            f"{where}.AiRecognitionResultSet",
            out,
            keys,
        )
    if e.ai_quality_control_task_result is not None:
        _single(
            "AiQualityControl",
            e.ai_quality_control_task_result,
            f"{where}.AiQualityControlTaskResult",
            out,
            keys,
        )
    if e.smart_subtitles_task_result:
        _categorised(
            "SmartSubtitles",
            e.smart_subtitles_task_result,
            f"{where}.SmartSubtitlesTaskResult",
            out,
            keys,
        )
    if e.smart_erase_task_result is not None:
        _single("SmartErase", e.smart_erase_task_result, f"{where}.SmartEraseTaskResult", out, keys)
    if e.ai_dubbing_task_result is not None:
        _single("AiDubbing", e.ai_dubbing_task_result, f"{where}.AiDubbingTaskResult", out, keys)


def _activity(
    activities: list[ActivityResult],
    index: int,
    out: list[Subtask],
    keys: Container[str] | None,
) -> None:
    activity = activities[index]
    here = f"{_ACTIVITIES_PATH}[{index}]"
    identity = _item_identity(_ACTIVITIES_PATH, activities, index)
    item = activity.activity_res_item
    found = False
    if item is not None:
        item_where = f"{here}.ActivityResItem"
        for attr, wire, key, items_category in ACTIVITY_TASKS:
            task = getattr(item, attr)
            if task is None:
                continue
            found = True
            task_where = f"{item_where}.{wire}"
            place = f"{identity}/{wire}"
            if items_category is None:
                if keys is None or key in keys:
                    category = _KEY_CATEGORY.get(key, _MEDIA_CATEGORY)
                    out.append(Subtask(key, category, task, task_where, task, place=place))
            else:
                if keys is None or key in keys:
                    out.append(Subtask(key, items_category, task, task_where, task, place=place))
                _categorised(
                    items_category,
                    task.output,
                    f"{task_where}.Output",
                    out,
                    keys,
                    container=f"{place}/Output",
                )
    unknown = not found and activity.activity_type not in KNOWN_ACTIVITY_TYPES
    if unknown and (keys is None or UNKNOWN in keys):
        out.append(Subtask(UNKNOWN, UNKNOWN, activity, here, place=identity))


def collect_subtasks(
    notification: Notification, keys: Container[str] | None = None
) -> list[Subtask]:
    """Every subtask result of ``notification`` with its routing key, in document order.

    With ``keys``, only subtasks under those keys are built (routing asks only for the keys
    some handler listens to). An unknown ``EventType`` has none (route it on the event key).
    """
    n = notification
    out: list[Subtask] = []
    if n.workflow_task_event is not None:
        _workflow(n.workflow_task_event, "$.WorkflowTaskEvent", out, keys)
    if n.schedule_task_event is not None:
        activities = n.schedule_task_event.activity_result_set or []
        for i in range(len(activities)):
            _activity(activities, i, out, keys)
    batch = n.batch_task_event
    if batch is not None and batch.smart_subtitles_task_result is not None:
        key = "BatchSmartSubtitles"
        if keys is None or key in keys:
            result = batch.smart_subtitles_task_result
            where = "$.BatchTaskEvent.SmartSubtitlesTaskResult"
            out.append(Subtask(key, "SmartSubtitles", result, where, result))
    return out


_State = tuple[str, str | None, Any]
"""``(key, status, progress)`` of one subtask result (see :func:`subtask_states`)."""


def subtask_states(notification: Notification) -> list[_State]:
    """``(key, status, progress)`` of every subtask result, in document order.

    The triples ``(sub.key, sub.status, getattr(sub.result, "progress", None))`` over
    :func:`collect_subtasks` (the default notification key digests them, once per delivery).
    The common shape, a workflow whose only results are ``MediaProcessResultSet`` items, is
    read straight off the items without building a ``Subtask`` each; any other walks
    ``collect_subtasks``.
    """
    w = notification.workflow_task_event
    if (
        w is None
        or notification.schedule_task_event is not None
        or notification.batch_task_event is not None
        or w.ai_content_review_result_set
        or w.ai_analysis_result_set
        or w.ai_recognition_result_set
        or w.ai_quality_control_task_result is not None
        or w.smart_subtitles_task_result
        or w.smart_erase_task_result is not None
        or w.ai_dubbing_task_result is not None
    ):
        return [
            (sub.key, sub.status, getattr(sub.result, "progress", None))
            for sub in collect_subtasks(notification)
        ]
    out: list[_State] = []
    for item in w.media_process_result_set or ():
        route = MEDIA_TYPES.get(item.type)  # type: ignore[arg-type]
        if route is None:  # as _media: an Unknown subtask whose result is the item
            out.append((UNKNOWN, None, getattr(item, "progress", None)))
            continue
        key, attr, _wire = route
        if attr is None:  # as media_subtask: the item is the result, with no task
            out.append((key, None, getattr(item, "progress", None)))
            continue
        task = getattr(item, attr)
        if task is not None:
            status = task.status if isinstance(task, TaskResult) else None
            out.append((key, status, getattr(task, "progress", None)))
    return out


def iter_subtasks(notification: Notification) -> Iterator[Subtask]:
    """Iterate :func:`collect_subtasks` (kept for symmetry with ``iter_live_subtasks``)."""
    return iter(collect_subtasks(notification))


def iter_live_subtasks(notification: LiveStreamNotification) -> Iterator[Subtask]:
    """Yield the one result of a live notification under its ``NotificationType`` key.

    Live results without a status count as ``ok``; ``ProcessEof`` uses its ``ErrCode``.
    An unknown ``NotificationType`` yields ``Unknown`` with the notification as result.
    """
    kind = notification.notification_type
    entry = LIVE_TYPES.get(kind)  # type: ignore[arg-type]
    if entry is None:
        yield Subtask(UNKNOWN, UNKNOWN, notification, "$")
        return
    attr, wire = entry
    info = getattr(notification, attr)
    if info is not None:
        yield Subtask(kind, "Live", info, f"$.{wire}", info, default_ok=True)  # type: ignore[arg-type]
