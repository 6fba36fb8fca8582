"""Task details decode into the notification's own types, build that notification, and never
hold the notification key or the AWS secret key."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest

import mpsflow.events as ev
from mpsflow import codec
from mpsflow.events import Notification
from mpsflow.tencentcloud.mps import MpsApiClient, TaskDetail, parse_time
from mpsflow.tencentcloud.mps.models import (
    UNSET_TIME,
    BatchTaskDetail,
    DescribeTasksPage,
    decode_response,
    format_time,
)
from tests.tencentcloud.mps.fake_mps import FakeMps

# Notification wire key -> (detail wire key, TaskType); the SDK's ParseNotificationResponse and
# DescribeTaskDetailResponse hold the same task classes under these names.
_DETAIL_KEYS = {
    "WorkflowTaskEvent": ("WorkflowTask", "WorkflowTask"),
    "EditMediaTaskEvent": ("EditMediaTask", "EditMediaTask"),
    "ScheduleTaskEvent": ("ScheduleTask", "ScheduleTask"),
    "ExtractBlindWatermarkTask": ("ExtractBlindWatermarkTask", "ExtractBlindWatermark"),
}
_NOTIFICATION_KEYS = {
    "WorkflowTask": "WorkflowTaskEvent",
    "EditMediaTask": "EditMediaTaskEvent",
    "ScheduleTask": "ScheduleTaskEvent",
    "ExtractBlindWatermark": "ExtractBlindWatermarkTask",
}
"""Notification EventType -> the wire key of its event object."""
_NOTIFY_KEY = "notify-key-MUST-NOT-LEAK"
_S3_SECRET_KEY = "s3-secret-key-MUST-NOT-LEAK"
_S3_SECRET_ID = "AKIDs3secretIdHidden"


def _as_detail(sample: dict[str, Any]) -> dict[str, Any]:
    """The DescribeTaskDetail ``Response`` fields of the task a sample notification is about."""
    wire = _NOTIFICATION_KEYS[sample["EventType"]]
    detail_key, task_type = _DETAIL_KEYS[wire]
    detail: dict[str, Any] = {
        "TaskType": task_type,
        "Status": sample[wire].get("Status", "FINISH"),
        "CreateTime": "2024-05-01T00:00:00Z",
        "BeginProcessTime": "2024-05-01T00:00:01Z",
        "FinishTime": UNSET_TIME,
        detail_key: sample[wire],
        "TaskNotifyConfig": {"NotifyType": "URL", "NotifyUrl": "https://example.com/mps"},
    }
    for key in ("SessionId", "SessionContext"):
        if sample.get(key) is not None:
            detail[key] = sample[key]
    return detail


def _unsigned(notification: Notification) -> Notification:
    return msgspec.structs.replace(notification, timestamp=None, sign=None, request_id=None)


async def test_a_detail_is_the_notification_of_its_task(
    sample_path: Path, fake_mps: FakeMps, client: MpsApiClient
) -> None:
    body = sample_path.read_bytes()
    notification = codec.decode(body)
    assert notification.task_id is not None
    fake_mps.details[notification.task_id] = _as_detail(json.loads(body))

    detail = await client.describe_task_detail(notification.task_id)

    assert detail.task_id == notification.task_id
    assert detail.event_type == notification.event_type
    assert detail.finish_time is None
    event = notification.event
    typed = {
        "WorkflowTask": detail.workflow_task,
        "EditMediaTask": detail.edit_media_task,
        "ScheduleTask": detail.schedule_task,
        "ExtractBlindWatermark": detail.extract_blind_watermark_task,
    }[str(notification.event_type)]
    assert type(typed) is type(event)  # the very Struct types of mpsflow.events
    assert typed == event
    assert detail.to_notification() == _unsigned(notification)
    json_notification = detail.notification_json()
    assert json_notification is not None
    assert codec.decode(json_notification) == _unsigned(notification)


def _struct_type(struct: type[msgspec.Struct], name: str) -> type[msgspec.Struct]:
    """The Struct type of the optional field ``name`` of ``struct``."""
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    (field,) = [f for f in info.fields if f.name == name]
    assert isinstance(field.type, msgspec.inspect.UnionType)
    (member,) = [t for t in field.type.types if isinstance(t, msgspec.inspect.StructType)]
    return member.cls


@pytest.mark.parametrize(
    ("detail_type", "detail_field", "notification_field"),
    [
        (TaskDetail, "workflow_task", "workflow_task_event"),
        (TaskDetail, "edit_media_task", "edit_media_task_event"),
        (TaskDetail, "schedule_task", "schedule_task_event"),
        (TaskDetail, "extract_blind_watermark_task", "extract_blind_watermark_task"),
        (BatchTaskDetail, "batch_task_result", "batch_task_event"),
    ],
)
def test_detail_fields_have_the_notification_types(
    detail_type: type[msgspec.Struct], detail_field: str, notification_field: str
) -> None:
    expected = _struct_type(Notification, notification_field)
    assert _struct_type(detail_type, detail_field) is expected
    assert expected.__module__ == "mpsflow.events._generated"


def test_unknown_fields_and_subtask_types_survive_in_the_notification_json() -> None:
    future_item = {"Type": "FutureTask", "FutureTask": {"Status": "SUCCESS", "Answer": 42}}
    body = json.dumps(
        {
            "Response": {
                "TaskType": "WorkflowTask",
                "Status": "FINISH",
                "WorkflowTask": {
                    "TaskId": "t-future",
                    "Status": "FINISH",
                    "FutureField": {"x": [1, 2]},
                    "MediaProcessResultSet": [future_item],
                },
                "SessionContext": "ctx",
                "RequestId": "r",
            }
        }
    ).encode()
    detail = decode_response(body, TaskDetail)
    raw = detail.notification_json()
    assert raw is not None
    document = json.loads(raw)
    assert document["WorkflowTaskEvent"]["FutureField"] == {"x": [1, 2]}
    assert document["SessionContext"] == "ctx"
    notification = codec.decode(raw)
    (subtask,) = notification.subtasks()
    assert subtask.raw == future_item
    typed = detail.to_notification()  # typed: the unknown part has no raw JSON
    assert typed is not None
    assert typed.task_id == "t-future"


def test_a_detail_built_in_code_encodes_its_notification() -> None:
    detail = TaskDetail(
        task_type="EditMediaTask",
        edit_media_task=ev.EditMediaTask(task_id="e-1", status="FINISH"),
        session_id="s-1",
    )
    raw = detail.notification_json()
    assert raw is not None
    assert json.loads(raw) == {
        "EventType": "EditMediaTask",
        "EditMediaTaskEvent": {"TaskId": "e-1", "Status": "FINISH"},
        "SessionId": "s-1",
    }


async def test_batch_task_detail_is_a_batch_notification(
    fake_mps: FakeMps, client: MpsApiClient
) -> None:
    result = {"InputInfos": [{"Type": "URL", "UrlInputInfo": {"Url": "https://e.com/a.mp4"}}]}
    fake_mps.batch_details["b-1"] = {
        "TaskType": "BatchTask",
        "Status": "FINISH",
        "TaskId": "b-1",
        "FinishTime": "2024-05-01T08:00:00+08:00",
        "BatchTaskResult": result,
    }
    detail = await client.describe_batch_task_detail("b-1")
    assert isinstance(detail, BatchTaskDetail)
    assert isinstance(detail.batch_task_result, ev.BatchSubTaskResult)
    assert detail.finished_at == datetime(2024, 5, 1, tzinfo=timezone.utc)
    notification = detail.to_notification()
    assert notification is not None
    assert notification.event_type == "BatchTask"
    assert notification.batch_task_event == detail.batch_task_result
    raw = detail.notification_json()
    assert raw is not None
    assert json.loads(raw) == {"EventType": "BatchTask", "BatchTaskEvent": result}


async def test_live_tasks_send_no_task_notification(
    fake_mps: FakeMps, client: MpsApiClient
) -> None:
    fake_mps.details["live-1"] = {
        "TaskType": "LiveStreamProcessTask",
        "Status": "PROCESSING",
        "LiveStreamProcessTask": {"TaskId": "live-1", "Status": "PROCESSING", "Url": "rtmp://x"},
    }
    detail = await client.describe_task_detail("live-1")
    assert detail.task_id == "live-1"
    assert detail.event_type is None
    assert detail.to_notification() is None
    assert detail.notification_json() is None


async def test_notify_key_and_s3_secret_key_are_never_held(
    fake_mps: FakeMps, client: MpsApiClient
) -> None:
    fake_mps.details["t-1"] = {
        "TaskType": "WorkflowTask",
        "WorkflowTask": {"TaskId": "t-1", "Status": "FINISH"},
        "TaskNotifyConfig": {
            "NotifyType": "AWS-SQS",
            "NotifyMode": "Finish",
            "NotifyKey": _NOTIFY_KEY,
            "AwsSQS": {
                "SQSRegion": "us-east-1",
                "SQSQueueName": "mps",
                "S3SecretId": _S3_SECRET_ID,
                "S3SecretKey": _S3_SECRET_KEY,
            },
        },
    }
    detail = await client.describe_task_detail("t-1")
    config = detail.task_notify_config
    assert config is not None
    assert config.notify_type == "AWS-SQS"
    assert config.aws_sqs is not None
    assert config.aws_sqs.sqs_queue_name == "mps"
    assert config.aws_sqs.s3_secret_id == _S3_SECRET_ID
    assert not hasattr(config, "notify_key")
    assert not hasattr(config.aws_sqs, "s3_secret_key")
    shown = " ".join(
        (
            repr(detail),
            str(msgspec.json.encode(detail)),
            str(msgspec.to_builtins(detail)),
            str(detail.notification_json()),
        )
    )
    assert _NOTIFY_KEY not in shown
    assert _S3_SECRET_KEY not in shown
    assert _S3_SECRET_ID not in repr(detail)


def test_the_error_shape_decodes_into_every_response() -> None:
    body = b'{"Response":{"Error":{"Code":"X.Y","Message":"m"},"RequestId":"r"}}'
    for response_type in (DescribeTasksPage, TaskDetail, BatchTaskDetail):
        response = decode_response(body, response_type)
        assert response.error is not None
        assert (response.error.code, response.error.message) == ("X.Y", "m")
        assert response.request_id == "r"


def test_times() -> None:
    assert parse_time(UNSET_TIME) is None
    assert parse_time(None) is None
    assert parse_time("2024-05-01T00:00:00Z") == datetime(2024, 5, 1, tzinfo=timezone.utc)
    assert parse_time("2024-05-01T08:00:00+08:00") == datetime(2024, 5, 1, tzinfo=timezone.utc)
    cst = timezone(timedelta(hours=8))
    assert format_time(datetime(2024, 5, 1, 8, 0, 1, 500_000, tzinfo=cst)) == "2024-05-01T00:00:01Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(datetime(2024, 5, 1))
    with pytest.raises(ValueError):  # noqa: PT011 - datetime's own message
        parse_time("yesterday")
