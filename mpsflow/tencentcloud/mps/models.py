"""Typed MPS API requests and responses (``DescribeTasks``, ``DescribeTaskDetail``,
``DescribeBatchTaskDetail``) as msgspec Structs.

Shapes follow the official SDK (``tencentcloud-sdk-python-mps``,
``tencentcloud/mps/v20190612/models.py``): each Struct names the SDK class it mirrors, and
each field its wire key (``msgspec.field(name=...)``), as :mod:`mpsflow.events` does. The task
objects of a detail (``WorkflowTask``, ``EditMediaTask``, ``ScheduleTask``,
``ExtractBlindWatermarkTask``, ``BatchSubTaskResult``) are the very SDK classes a notification
carries (``ParseNotificationResponse``), so they decode into the notification's own types from
:mod:`mpsflow.events`, and :meth:`TaskDetail.to_notification` builds the notification MPS would
have sent.

Times are the API's ISO 8601 strings; ``0000-00-00T00:00:00Z`` (the SDK's ``TaskSimpleInfo``:
"not started / not finished yet") becomes ``None``. :func:`parse_time` turns one into a
``datetime``.

Secrets: ``TaskNotifyConfig`` echoes the task's ``NotifyKey`` and ``AwsSQS.S3SecretKey``. The
models here do not declare those two fields, so they are skipped while decoding and never held,
logged, encoded or shown (``AwsSQS.S3SecretId`` is kept but hidden from ``repr``).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Final, Generic, Literal, TypeVar

import msgspec

from mpsflow.events import (
    BatchSubTaskResult,
    EditMediaTask,
    ExtractBlindWatermarkTask,
    Notification,
    RedactedSecrets,
    ScheduleTask,
    WorkflowTask,
)

__all__ = [
    "TASK_STATUSES",
    "UNSET_TIME",
    "ApiEnvelope",
    "ApiError",
    "ApiResponse",
    "AwsSQS",
    "BatchTaskDetail",
    "DescribeBatchTaskDetailRequest",
    "DescribeTaskDetailRequest",
    "DescribeTasksPage",
    "DescribeTasksRequest",
    "LiveScheduleTask",
    "LiveStreamProcessTask",
    "MpsApiStruct",
    "TaskDetail",
    "TaskNotifyConfig",
    "TaskSimpleInfo",
    "TaskStatus",
    "decode_response",
    "format_time",
    "parse_time",
    "request_params",
]

UNSET_TIME: Final = "0000-00-00T00:00:00Z"
"""What the API answers for a time that has not happened yet (read as ``None``)."""

TaskStatus = Literal["WAITING", "PROCESSING", "FINISH"]
"""A task's ``Status`` (the SDK's ``DescribeTasksRequest.Status`` values)."""

TASK_STATUSES: Final[frozenset[str]] = frozenset({"WAITING", "PROCESSING", "FINISH"})

_R = TypeVar("_R", bound="ApiResponse")
_T = TypeVar("_T")


def parse_time(value: str | None) -> datetime | None:
    """An API time (``2019-12-12T12:00:00Z``) as an aware ``datetime``; ``None`` when unset.

    Raises ``ValueError`` for text that is not an ISO 8601 time.
    """
    if value is None or value in (UNSET_TIME, ""):
        return None
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def format_time(value: datetime) -> str:
    """``value`` as the API's ISO 8601 UTC text, to the second (``2019-12-12T12:00:00Z``).

    A naive ``datetime`` is refused: the API's times are UTC, and guessing would shift a
    reconcile window by the local offset.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("times sent to the MPS API must be timezone-aware")
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _unset(value: str | None) -> str | None:
    return None if value == UNSET_TIME else value


class MpsApiStruct(msgspec.Struct, kw_only=True, gc=False, repr_omit_defaults=True):
    """Base of every MPS API model here (unknown fields are ignored when decoding)."""


# --- requests ------------------------------------------------------------------------------------


class _Request(MpsApiStruct, omit_defaults=True):
    """A request's parameters; ``None`` ones are left out, as the SDK's ``_serialize`` does."""


class DescribeTasksRequest(_Request):
    """SDK ``DescribeTasksRequest``: list tasks by status, newest first, a page at a time.

    ``Limit`` is 10 when left out and at most 100; ``StartTime``/``EndTime`` are ISO 8601 UTC.
    Field order is the SDK's, so the JSON body is byte-equal to the official client's.
    """

    status: str | None = msgspec.field(default=None, name="Status")
    sub_task_has_failed: bool | None = msgspec.field(default=None, name="SubTaskHasFailed")
    limit: int | None = msgspec.field(default=None, name="Limit")
    scroll_token: str | None = msgspec.field(default=None, name="ScrollToken")
    start_time: str | None = msgspec.field(default=None, name="StartTime")
    end_time: str | None = msgspec.field(default=None, name="EndTime")


class DescribeTaskDetailRequest(_Request):
    """SDK ``DescribeTaskDetailRequest``: one task by ``TaskId``."""

    task_id: str = msgspec.field(name="TaskId")


class DescribeBatchTaskDetailRequest(_Request):
    """SDK ``DescribeBatchTaskDetailRequest``: one batch task by ``TaskId``."""

    task_id: str = msgspec.field(name="TaskId")


def request_params(request: MpsApiStruct) -> dict[str, Any]:
    """The parameters of ``request`` in wire names and field order, ``None`` ones left out."""
    params: dict[str, Any] = msgspec.to_builtins(request)
    return params


# --- the response envelope -----------------------------------------------------------------------


class ApiError(MpsApiStruct):
    """``Response.Error`` of a failed call (``AbstractClient._check_error`` reads the same)."""

    code: str = msgspec.field(default="", name="Code")
    message: str = msgspec.field(default="", name="Message")


class ApiResponse(MpsApiStruct):
    """What every ``Response`` object carries: its ``RequestId``, and ``Error`` on failure.

    A response the client returns never has an ``error``: the client raises it instead.
    """

    request_id: str = msgspec.field(default="", name="RequestId")
    error: ApiError | None = msgspec.field(default=None, name="Error")


class ApiEnvelope(msgspec.Struct, Generic[_T], gc=False):
    """The ``{"Response": {...}}`` wrapper of every API 3.0 answer."""

    response: _T = msgspec.field(name="Response")


# --- DescribeTasks -------------------------------------------------------------------------------


class TaskSimpleInfo(MpsApiStruct):
    """SDK ``TaskSimpleInfo``: one task of a ``DescribeTasks`` page.

    ``begin_process_time`` and ``finish_time`` are ``None`` while the task has not started or
    finished (the API's ``0000-00-00T00:00:00Z``).
    """

    task_id: str = msgspec.field(name="TaskId")
    task_type: str = msgspec.field(default="", name="TaskType")
    create_time: str | None = msgspec.field(default=None, name="CreateTime")
    begin_process_time: str | None = msgspec.field(default=None, name="BeginProcessTime")
    finish_time: str | None = msgspec.field(default=None, name="FinishTime")
    sub_task_types: list[str] | None = msgspec.field(default=None, name="SubTaskTypes")

    def __post_init__(self) -> None:
        self.create_time = _unset(self.create_time)
        self.begin_process_time = _unset(self.begin_process_time)
        self.finish_time = _unset(self.finish_time)

    @property
    def created_at(self) -> datetime | None:
        """``CreateTime`` as a ``datetime``."""
        return parse_time(self.create_time)

    @property
    def finished_at(self) -> datetime | None:
        """``FinishTime`` as a ``datetime``; ``None`` while the task runs."""
        return parse_time(self.finish_time)


class DescribeTasksPage(ApiResponse):
    """SDK ``DescribeTasksResponse``: one page of tasks and the token of the next one.

    ``scroll_token`` is ``""`` on the last page; ``total_count`` counts every task matching the
    filters, across pages.
    """

    task_set: list[TaskSimpleInfo] = msgspec.field(default_factory=list, name="TaskSet")
    scroll_token: str = msgspec.field(default="", name="ScrollToken")
    total_count: int = msgspec.field(default=0, name="TotalCount")

    @property
    def has_more(self) -> bool:
        """True when another page follows (``ScrollToken`` is not empty)."""
        return self.scroll_token != ""


# --- DescribeTaskDetail / DescribeBatchTaskDetail ------------------------------------------------


class AwsSQS(RedactedSecrets, MpsApiStruct):
    """SDK ``AwsSQS``, without ``S3SecretKey`` (never decoded); ``repr`` hides ``S3SecretId``."""

    sqs_region: str | None = msgspec.field(default=None, name="SQSRegion")
    sqs_queue_name: str | None = msgspec.field(default=None, name="SQSQueueName")
    s3_secret_id: str | None = msgspec.field(default=None, name="S3SecretId")


class TaskNotifyConfig(MpsApiStruct):
    """SDK ``TaskNotifyConfig``: where MPS sends the task's notifications.

    ``NotifyKey`` (the notification signing key) is deliberately not a field: it is skipped
    while decoding, so no log, exception or encoding of this model can reveal it.
    """

    notify_type: str | None = msgspec.field(default=None, name="NotifyType")
    notify_mode: str | None = msgspec.field(default=None, name="NotifyMode")
    notify_url: str | None = msgspec.field(default=None, name="NotifyUrl")
    cmq_model: str | None = msgspec.field(default=None, name="CmqModel")
    cmq_region: str | None = msgspec.field(default=None, name="CmqRegion")
    topic_name: str | None = msgspec.field(default=None, name="TopicName")
    queue_name: str | None = msgspec.field(default=None, name="QueueName")
    aws_sqs: AwsSQS | None = msgspec.field(default=None, name="AwsSQS")


class LiveStreamProcessTask(MpsApiStruct):
    """SDK ``LiveStreamProcessTask``: a live-stream task (whose results are live notifications)."""

    task_id: str | None = msgspec.field(default=None, name="TaskId")
    status: str | None = msgspec.field(default=None, name="Status")
    err_code: int | None = msgspec.field(default=None, name="ErrCode")
    message: str | None = msgspec.field(default=None, name="Message")
    url: str | None = msgspec.field(default=None, name="Url")


class LiveScheduleTask(LiveStreamProcessTask):
    """SDK ``LiveScheduleTask``; its ``LiveActivityResultSet`` is kept untyped."""

    live_activity_result_set: list[Any] | None = msgspec.field(
        default=None, name="LiveActivityResultSet"
    )


# Detail attribute -> (notification EventType, Notification attribute); the SDK's
# ParseNotificationResponse and DescribeTaskDetailResponse share these task classes.
_DETAIL_EVENTS: Final = {
    "workflow_task": ("WorkflowTask", "workflow_task_event"),
    "edit_media_task": ("EditMediaTask", "edit_media_task_event"),
    "schedule_task": ("ScheduleTask", "schedule_task_event"),
    "extract_blind_watermark_task": ("ExtractBlindWatermark", "extract_blind_watermark_task"),
}
# Notification EventType -> (its wire key in a notification, the detail's attribute).
_EVENT_WIRE: Final = {
    "WorkflowTask": ("WorkflowTaskEvent", "workflow_task"),
    "EditMediaTask": ("EditMediaTaskEvent", "edit_media_task"),
    "ScheduleTask": ("ScheduleTaskEvent", "schedule_task"),
    "ExtractBlindWatermark": ("ExtractBlindWatermarkTask", "extract_blind_watermark_task"),
    "BatchTask": ("BatchTaskEvent", "batch_task_result"),
}
_NOTIFICATION_ENCODER = msgspec.json.Encoder()
_NULL: Final = b"null"


class _DetailBase(ApiResponse, dict=True, gc=True):
    """The fields both details share (``dict=True``: the decoder keeps the event's raw JSON)."""

    task_type: str | None = msgspec.field(default=None, name="TaskType")
    status: str | None = msgspec.field(default=None, name="Status")
    create_time: str | None = msgspec.field(default=None, name="CreateTime")
    begin_process_time: str | None = msgspec.field(default=None, name="BeginProcessTime")
    finish_time: str | None = msgspec.field(default=None, name="FinishTime")
    task_notify_config: TaskNotifyConfig | None = msgspec.field(
        default=None, name="TaskNotifyConfig"
    )
    tasks_priority: int | None = msgspec.field(default=None, name="TasksPriority")
    session_id: str | None = msgspec.field(default=None, name="SessionId")
    session_context: str | None = msgspec.field(default=None, name="SessionContext")
    ext_info: str | None = msgspec.field(default=None, name="ExtInfo")

    def __post_init__(self) -> None:
        self.create_time = _unset(self.create_time)
        self.begin_process_time = _unset(self.begin_process_time)
        self.finish_time = _unset(self.finish_time)

    @property
    def finished_at(self) -> datetime | None:
        """``FinishTime`` as a ``datetime``; ``None`` while the task runs."""
        return parse_time(self.finish_time)

    @property
    def event_type(self) -> str | None:
        """The ``EventType`` of the notification this task sends; ``None`` if it sends none."""
        found = self._typed_event()
        return None if found is None else found[0]

    def _typed_event(self) -> tuple[str, str, Any] | None:
        """(EventType, Notification attribute, the task object), or None: each kind of detail
        says which of its fields is the task."""
        return None

    def to_notification(self) -> Notification | None:
        """The notification MPS sends for this task's current state, built from the typed
        task object (no JSON round trip); ``None`` for a task that sends none (live ones).

        It carries no ``Timestamp``/``Sign`` (it was read through the authenticated API, not
        pushed). Fields mpsflow's models do not know are not in it; see
        :meth:`notification_json` for the verbatim event.
        """
        found = self._typed_event()
        if found is None:
            return None
        event_type, attr, event = found
        return Notification(
            event_type=event_type,
            session_id=self.session_id,
            session_context=self.session_context,
            **{attr: event},
        )

    def notification_json(self) -> bytes | None:
        """The JSON notification MPS sends for this task (``EventType``, the event object,
        ``SessionId``, ``SessionContext``); ``None`` for a task that sends none.

        When the detail came from :class:`~mpsflow.tencentcloud.mps.MpsApiClient` (or
        :func:`decode_response`), the event object is the API's JSON verbatim, so fields and
        subtask types mpsflow does not model reach the decoder as they would in a pushed
        notification; otherwise it is encoded from the typed object.
        """
        event_type = self.event_type
        if event_type is None:
            return None
        wire, _attr = _EVENT_WIRE[event_type]
        raw: msgspec.Raw | None = self.__dict__.get("_event_json")
        if raw is None:
            notification = self.to_notification()
            assert notification is not None  # the same event type was found
            return _NOTIFICATION_ENCODER.encode(notification)
        document: dict[str, Any] = {"EventType": event_type, wire: raw}
        if self.session_id is not None:
            document["SessionId"] = self.session_id
        if self.session_context is not None:
            document["SessionContext"] = self.session_context
        return _NOTIFICATION_ENCODER.encode(document)


class TaskDetail(_DetailBase):
    """SDK ``DescribeTaskDetailResponse``: a task's state and results.

    ``workflow_task``, ``edit_media_task``, ``schedule_task`` and
    ``extract_blind_watermark_task`` are the notification's types (``WorkflowTask`` is what a
    notification's ``WorkflowTaskEvent`` holds, and so on); the one ``task_type`` names is set.
    """

    edit_media_task: EditMediaTask | None = msgspec.field(default=None, name="EditMediaTask")
    workflow_task: WorkflowTask | None = msgspec.field(default=None, name="WorkflowTask")
    live_stream_process_task: LiveStreamProcessTask | None = msgspec.field(
        default=None, name="LiveStreamProcessTask"
    )
    extract_blind_watermark_task: ExtractBlindWatermarkTask | None = msgspec.field(
        default=None, name="ExtractBlindWatermarkTask"
    )
    schedule_task: ScheduleTask | None = msgspec.field(default=None, name="ScheduleTask")
    live_schedule_task: LiveScheduleTask | None = msgspec.field(
        default=None, name="LiveScheduleTask"
    )

    def _typed_event(self) -> tuple[str, str, Any] | None:
        present = [(name, getattr(self, name)) for name in _DETAIL_EVENTS]
        present = [(name, event) for name, event in present if event is not None]
        # The object TaskType names, else the first one present.
        for name, event in present:
            if _DETAIL_EVENTS[name][0] == self.task_type:
                return (*_DETAIL_EVENTS[name], event)
        if present:
            name, event = present[0]
            return (*_DETAIL_EVENTS[name], event)
        return None

    @property
    def task_id(self) -> str | None:
        """The ``TaskId`` of the task object (the response itself has none)."""
        found = self._typed_event()
        if found is not None:
            return getattr(found[2], "task_id", None)
        live = self.live_stream_process_task or self.live_schedule_task
        return None if live is None else live.task_id


class BatchTaskDetail(_DetailBase):
    """SDK ``DescribeBatchTaskDetailResponse``: a batch task's state and results.

    ``batch_task_result`` is the notification's ``BatchTaskEvent`` type (``BatchSubTaskResult``).
    """

    task_id: str | None = msgspec.field(default=None, name="TaskId")
    batch_task_result: BatchSubTaskResult | None = msgspec.field(
        default=None, name="BatchTaskResult"
    )

    def _typed_event(self) -> tuple[str, str, Any] | None:
        if self.batch_task_result is None:
            return None
        return ("BatchTask", "batch_task_event", self.batch_task_result)


# --- decoding ------------------------------------------------------------------------------------


class _RawEvents(msgspec.Struct, gc=False):
    """The task objects of a detail, undecoded (a second, cheap pass over the same bytes)."""

    workflow_task: msgspec.Raw = msgspec.field(default=msgspec.Raw(), name="WorkflowTask")
    edit_media_task: msgspec.Raw = msgspec.field(default=msgspec.Raw(), name="EditMediaTask")
    schedule_task: msgspec.Raw = msgspec.field(default=msgspec.Raw(), name="ScheduleTask")
    extract_blind_watermark_task: msgspec.Raw = msgspec.field(
        default=msgspec.Raw(), name="ExtractBlindWatermarkTask"
    )
    batch_task_result: msgspec.Raw = msgspec.field(default=msgspec.Raw(), name="BatchTaskResult")


_RAW_DECODER = msgspec.json.Decoder(ApiEnvelope[_RawEvents])
_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def decode_response(body: bytes, response_type: type[_R]) -> _R:
    """The typed ``Response`` object of an API answer (the error shape included).

    For a detail, the event object's raw JSON is kept for :meth:`TaskDetail.notification_json`.
    Raises ``msgspec.DecodeError`` (or its ``ValidationError``) when ``body`` is not such an
    answer.
    """
    decoder = _DECODERS.get(response_type)
    if decoder is None:
        decoder = _DECODERS[response_type] = msgspec.json.Decoder(ApiEnvelope[response_type])  # type: ignore[valid-type]
    response: _R = decoder.decode(body).response
    if isinstance(response, _DetailBase) and response.error is None:
        event_type = response.event_type
        if event_type is not None:
            raw = getattr(_RAW_DECODER.decode(body).response, _EVENT_WIRE[event_type][1])
            if bytes(raw) not in (b"", _NULL):
                response.__dict__["_event_json"] = msgspec.Raw(bytes(raw))
    return response
