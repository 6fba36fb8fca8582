"""The tasks of the local MPS server: what ``DescribeTasks`` lists and the details answer.

A :class:`LocalTask` holds what the MPS API says about one task: its type, status and times,
its result object (``WorkflowTask``, ``EditMediaTask``, …, the same SDK classes as the
notification's ``WorkflowTaskEvent``, ``EditMediaTaskEvent``, …) kept verbatim as JSON, and the
summary ``DescribeTasks`` filters on (``SubTaskTypes``, whether a subtask failed).
:func:`task_from_notification` builds one from a notification, so sample notifications load
as tasks; :class:`TaskStore` keeps them in ``DescribeTasks`` order and pages through them.

Shapes follow the official SDK, ``tencentcloud-sdk-python-mps`` 3.1.194
(``tencentcloud/mps/v20190612/models.py``): ``TaskSimpleInfo``, ``DescribeTaskDetailResponse``,
``DescribeBatchTaskDetailResponse`` and ``ParseNotificationResponse``.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final, Literal

import msgspec

from mpsflow.codec import decode
from mpsflow.errors import DecodeError
from mpsflow.events.envelope import EVENT_FIELDS, document

__all__ = [
    "DETAIL_FIELDS",
    "STATUSES",
    "TASK_TYPES",
    "UNSET_TIME",
    "Cursor",
    "LocalTask",
    "TaskStore",
    "TimeField",
    "TimeLike",
    "build_task",
    "decode_cursor",
    "encode_cursor",
    "format_time",
    "parse_time",
    "subtask_summary",
    "task_from_notification",
    "to_timestamp",
]

UNSET_TIME: Final = "0000-00-00T00:00:00Z"
"""A time that has not happened yet (``TaskSimpleInfo.BeginProcessTime``/``FinishTime`` docs)."""

STATUSES: Final = ("WAITING", "PROCESSING", "FINISH")
"""Task statuses (``DescribeTasksRequest.Status``, ``DescribeTaskDetailResponse.Status``)."""

DETAIL_FIELDS: Final[Mapping[str, str]] = {
    "WorkflowTask": "WorkflowTask",
    "EditMediaTask": "EditMediaTask",
    "ScheduleTask": "ScheduleTask",
    "ExtractBlindWatermark": "ExtractBlindWatermarkTask",
    "LiveStreamProcessTask": "LiveStreamProcessTask",
    "LiveScheduleTask": "LiveScheduleTask",
    "BatchTask": "BatchTaskResult",
}
"""Detail ``TaskType`` -> the response field holding its result (``…Task`` of
``DescribeTaskDetailResponse``; ``BatchTaskResult`` of ``DescribeBatchTaskDetailResponse``)."""

TASK_TYPES: Final = tuple(DETAIL_FIELDS)
"""The task types :meth:`TaskStore.put` accepts."""

_LISTED_TYPES: Final[Mapping[str, str]] = {"LiveStreamProcessTask": "LiveProcessTask"}
"""``TaskSimpleInfo.TaskType`` where it differs from the detail's: its docstring lists
``LiveProcessTask`` where ``DescribeTaskDetailResponse.TaskType`` has
``LiveStreamProcessTask``."""

TimeField = Literal["create", "finish"]
"""Which time ``DescribeTasks``' ``StartTime``/``EndTime`` bound (see :class:`TaskStore`)."""

TimeLike = datetime | str | float | int
"""A time as the Python API takes it: a datetime (naive = UTC), ISO 8601 text, Unix seconds."""

Cursor = tuple[int, int]
"""Where a page starts: ``(create time, sequence number)`` of its first task."""

_CURSOR_PREFIX: Final = "mpsflow1."


def format_time(timestamp: int | None) -> str:
    """``2019-07-23T16:08:35Z`` (the API's ISO 8601 UTC form); :data:`UNSET_TIME` for None."""
    if timestamp is None:
        return UNSET_TIME
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def parse_time(text: str) -> float:
    """Unix seconds of ISO 8601 text (``Z`` or an offset; none means UTC); ValueError if not."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"  # Python 3.10's fromisoformat does not take "Z"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def to_timestamp(value: TimeLike) -> int:
    """Whole Unix seconds of a :data:`TimeLike` (the API shows times to the second)."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        return int(moment.timestamp())
    if isinstance(value, str):
        return int(parse_time(value))
    return int(value)


def encode_cursor(cursor: Cursor) -> str:
    """The opaque ``ScrollToken`` of a page start."""
    text = f"{cursor[0]}.{cursor[1]}".encode()
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(text).decode().rstrip("=")


def decode_cursor(token: str) -> Cursor:
    """The page start a ``ScrollToken`` of :func:`encode_cursor` names; ValueError if none."""
    if not token.startswith(_CURSOR_PREFIX):
        raise ValueError("not a ScrollToken of this server")
    body = token[len(_CURSOR_PREFIX) :]
    try:
        text = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
        created, seq = text.split(".")
        return int(created), int(seq)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a ScrollToken of this server") from None


def subtask_summary(task_type: str, result: Mapping[str, Any]) -> tuple[list[str], bool]:
    """``(SubTaskTypes, whether a subtask failed)`` of a task result, by mpsflow's subtask walk.

    A subtask's type is its media result ``Type`` (``Transcode``, …) or its category
    (``AiContentReview``, ``AiAnalysis``, …), each named once in document order. A non-zero
    ``ErrCode`` of the task itself (a source error, an edit that failed) counts as failed too.
    Real MPS does not document the values of ``SubTaskTypes``: these are our choice.
    """
    failed = result.get("ErrCode") not in (0, None)
    wire = EVENT_FIELDS.get(task_type)
    if wire is None:
        return [], failed
    try:
        notification = decode({"EventType": task_type, wire: result})
    except DecodeError:
        return [], failed
    types: dict[str, None] = {}
    for sub in notification.subtasks():
        types[sub.key if sub.category == "MediaProcess" else sub.category] = None
        failed = failed or sub.failed
    return list(types), failed


@dataclass(slots=True)
class LocalTask:
    """One task as the local MPS server shows it.

    ``task_type`` is the detail's ``TaskType`` (a key of :data:`DETAIL_FIELDS`); ``result``
    the JSON object answered in the matching field, verbatim. Times are Unix seconds, None
    while unset. ``seq`` orders tasks created in the same second (later ones first).
    """

    task_id: str
    task_type: str
    status: str
    result: dict[str, Any]
    create_time: int
    begin_process_time: int | None = None
    finish_time: int | None = None
    sub_task_types: list[str] = field(default_factory=list)
    sub_task_has_failed: bool = False
    notify_config: dict[str, Any] | None = None
    session_id: str = ""
    session_context: str = ""
    ext_info: str = ""
    tasks_priority: int = 0
    seq: int = 0

    @property
    def is_batch(self) -> bool:
        """Whether only ``DescribeBatchTaskDetail`` shows it (a ``BatchTask``)."""
        return self.task_type == "BatchTask"

    @property
    def cursor(self) -> Cursor:
        """Its place in ``DescribeTasks`` order (see :class:`TaskStore`)."""
        return self.create_time, self.seq

    def time_of(self, which: TimeField) -> int | None:
        """Its creation or finish time, the one ``DescribeTasks``' bounds filter on."""
        return self.create_time if which == "create" else self.finish_time

    def simple_info(self) -> dict[str, Any]:
        """Its ``TaskSimpleInfo`` (an item of ``DescribeTasks``' ``TaskSet``)."""
        return {
            "TaskId": self.task_id,
            "TaskType": _LISTED_TYPES.get(self.task_type, self.task_type),
            "CreateTime": format_time(self.create_time),
            "BeginProcessTime": format_time(self.begin_process_time),
            "FinishTime": format_time(self.finish_time),
            "SubTaskTypes": list(self.sub_task_types),
        }

    def detail(self) -> dict[str, Any]:
        """The ``DescribeTaskDetail`` (or, for a batch task, ``DescribeBatchTaskDetail``)
        response fields, every result field present (null but its own), no ``RequestId``."""
        common = {
            "TaskType": self.task_type,
            "Status": self.status,
            "CreateTime": format_time(self.create_time),
            "BeginProcessTime": format_time(self.begin_process_time),
            "FinishTime": format_time(self.finish_time),
        }
        tail = {
            "TaskNotifyConfig": self.notify_config,
            "TasksPriority": self.tasks_priority,
            "SessionId": self.session_id,
            "SessionContext": self.session_context,
            "ExtInfo": self.ext_info,
        }
        if self.is_batch:
            return {**common, "TaskId": self.task_id, "BatchTaskResult": self.result, **tail}
        results = {
            name: self.result if task_type == self.task_type else None
            for task_type, name in DETAIL_FIELDS.items()
            if task_type != "BatchTask"
        }
        return {**common, **results, **tail}


class TaskStore:
    """The server's tasks, in ``DescribeTasks`` order: newest ``CreateTime`` first.

    Real MPS does not document its order; newest first is our choice. A page resumes at a
    :data:`Cursor` (the next task's creation time and sequence number), so tasks added
    between pages shift nothing: a page never repeats or skips a task created before the
    listing began. ``StartTime``/``EndTime`` bound the creation time (``time_field="create"``,
    the default) or the finish time (``"finish"``; unfinished tasks then never match a
    bounded query), ``StartTime`` inclusive and ``EndTime`` exclusive.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, LocalTask] = {}
        self._seq = itertools.count(1)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[LocalTask]:
        return iter(self.ordered())

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    def get(self, task_id: str) -> LocalTask | None:
        """The task ``task_id``, or None."""
        return self._tasks.get(task_id)

    def put(self, task: LocalTask) -> LocalTask:
        """Add ``task``, or replace the one with its id (keeping that one's place)."""
        if task.task_type not in DETAIL_FIELDS:
            raise ValueError(
                f"unknown task type {task.task_type!r}; one of {', '.join(TASK_TYPES)}"
            )
        if task.status not in STATUSES:
            raise ValueError(f"unknown status {task.status!r}; one of {', '.join(STATUSES)}")
        if task.finish_time is not None and task.status != "FINISH":
            raise ValueError(f"task {task.task_id} is {task.status}: it has no finish time yet")
        old = self._tasks.get(task.task_id)
        task.seq = old.seq if old is not None and old.seq else next(self._seq)
        self._tasks[task.task_id] = task
        return task

    def remove(self, task_id: str) -> bool:
        """Forget ``task_id``; whether it was there."""
        return self._tasks.pop(task_id, None) is not None

    def clear(self) -> None:
        """Forget every task."""
        self._tasks.clear()

    def ordered(self) -> list[LocalTask]:
        """Every task, newest first."""
        return sorted(self._tasks.values(), key=lambda t: t.cursor, reverse=True)

    def page(
        self,
        *,
        limit: int,
        start: Cursor | None = None,
        status: str | None = None,
        failed: bool | None = None,
        since: float | None = None,
        until: float | None = None,
        time_field: TimeField = "create",
    ) -> tuple[list[LocalTask], Cursor | None, int]:
        """``(tasks, next page's cursor or None, how many match in all)`` of one listing."""
        matching = [
            task
            for task in self.ordered()
            if (status is None or task.status == status)
            and (failed is None or task.sub_task_has_failed == failed)
            and _within(task.time_of(time_field), since, until)
        ]
        rest = matching if start is None else [t for t in matching if t.cursor <= start]
        page = rest[:limit]
        following = rest[limit].cursor if len(rest) > limit else None
        return page, following, len(matching)


def _within(moment: int | None, since: float | None, until: float | None) -> bool:
    if since is None and until is None:
        return True
    if moment is None:
        return False
    return (since is None or moment >= since) and (until is None or moment < until)


def _json_object(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A JSON-only copy of ``value`` (ValueError for what JSON cannot hold)."""
    try:
        copied = msgspec.json.decode(msgspec.json.encode(value))
    except (TypeError, msgspec.MsgspecError) as exc:
        raise ValueError(f"{what} is not JSON: {exc}") from None
    if not isinstance(copied, dict):
        raise ValueError(f"{what} must be a JSON object")
    return copied


def build_task(
    task_type: str,
    result: Mapping[str, Any],
    *,
    now: float,
    task_id: str | None = None,
    status: str | None = None,
    create_time: TimeLike | None = None,
    begin_process_time: TimeLike | None = None,
    finish_time: TimeLike | None = None,
    sub_task_types: Sequence[str] | None = None,
    sub_task_has_failed: bool | None = None,
    notify_config: Mapping[str, Any] | None = None,
    session_id: str = "",
    session_context: str = "",
    ext_info: str = "",
    tasks_priority: int = 0,
) -> LocalTask:
    """A :class:`LocalTask`, the rest derived from ``result`` and ``now`` (Unix seconds).

    ``task_id`` and ``status`` default to the result's ``TaskId`` and ``Status`` (a batch
    result has neither: a generated id, ``FINISH``). A FINISH task finished ``now`` unless
    told, and was created when it finished; a task began when it was created unless it is
    WAITING. ``SubTaskTypes`` and the failed flag come from :func:`subtask_summary`.
    """
    body = _json_object(result, "the task result")
    task_id = task_id or _text(body.get("TaskId")) or _new_id(task_type)
    status = status or _text(body.get("Status")) or "FINISH"
    finished = to_timestamp(finish_time) if finish_time is not None else None
    if finished is None and status == "FINISH":
        finished = int(now)
    if create_time is not None:
        created = to_timestamp(create_time)
    else:
        created = finished if finished is not None else int(now)
    if begin_process_time is not None:
        began: int | None = to_timestamp(begin_process_time)
    else:
        began = None if status == "WAITING" else created
    types, failed = subtask_summary(task_type, body)
    return LocalTask(
        task_id=task_id,
        task_type=task_type,
        status=status,
        result=body,
        create_time=created,
        begin_process_time=began,
        finish_time=finished,
        sub_task_types=list(types if sub_task_types is None else sub_task_types),
        sub_task_has_failed=failed if sub_task_has_failed is None else sub_task_has_failed,
        notify_config=None if notify_config is None else _json_object(notify_config, "notify"),
        session_id=session_id,
        session_context=session_context,
        ext_info=ext_info,
        tasks_priority=tasks_priority,
    )


def task_from_notification(
    notification: Mapping[str, Any] | bytes | str,
    *,
    now: float,
    task_id: str | None = None,
    create_time: TimeLike | None = None,
    begin_process_time: TimeLike | None = None,
    finish_time: TimeLike | None = None,
    notify_config: Mapping[str, Any] | None = None,
) -> LocalTask:
    """The task a notification reports, as ``DescribeTaskDetail`` would show it.

    ``EventType`` X's event object becomes the detail's result field verbatim
    (``WorkflowTaskEvent`` -> ``WorkflowTask``, ``EditMediaTaskEvent`` -> ``EditMediaTask``,
    ``ScheduleTaskEvent`` -> ``ScheduleTask``, ``ExtractBlindWatermarkTask`` as it is,
    ``BatchTaskEvent`` -> ``BatchTaskResult``: the same SDK classes), with its ``SessionId``
    and ``SessionContext``. A live-stream notification (``NotificationType``) becomes a
    ``LiveStreamProcessTask`` (``TaskId``, ``Status`` FINISH after ``ProcessEof``, else
    PROCESSING, ``ErrCode``/``Message`` of ``ProcessEofInfo``). A ``{"Response": …}``
    wrapper is unwrapped. Raises ValueError (:class:`~mpsflow.errors.DecodeError` for
    non-JSON) when it reports no task.
    """
    raw = notification.encode() if isinstance(notification, str) else notification
    doc = document(raw)
    options: dict[str, Any] = {
        "now": now,
        "task_id": task_id,
        "create_time": create_time,
        "begin_process_time": begin_process_time,
        "finish_time": finish_time,
        "notify_config": notify_config,
        "session_id": _text(doc.get("SessionId")),
        "session_context": _text(doc.get("SessionContext")),
    }
    live = doc.get("NotificationType")
    if live is not None:
        return build_task("LiveStreamProcessTask", _live_result(doc, live), **options)
    event_type = doc.get("EventType")
    wire = EVENT_FIELDS.get(event_type) if isinstance(event_type, str) else None
    if wire is None:
        raise ValueError(f"not a task notification: unknown EventType {event_type!r}")
    event = doc.get(wire)
    if not isinstance(event, Mapping):
        raise ValueError(f"the {event_type} notification has no {wire} object")
    assert isinstance(event_type, str)
    return build_task(event_type, event, **options)


def _live_result(doc: Mapping[str, Any], kind: object) -> dict[str, Any]:
    task_id = _text(doc.get("TaskId"))
    if not task_id:
        raise ValueError("the live-stream notification has no TaskId")
    eof = doc.get("ProcessEofInfo")
    eof = eof if isinstance(eof, Mapping) else {}
    return {
        "TaskId": task_id,
        "Status": "FINISH" if kind == "ProcessEof" else "PROCESSING",
        "ErrCode": eof.get("ErrCode", 0),
        "Message": eof.get("Message", ""),
    }


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _new_id(task_type: str) -> str:
    """A TaskId shaped like MPS's (``<appid>-<type>-<32 hex>t0``; the format is undocumented)."""
    return f"1250000000-{task_type}-{secrets.token_hex(16)}t0"
