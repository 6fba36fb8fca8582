"""Every sample decodes, and decode -> encode keeps exactly what the official SDK keeps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tencentcloud.mps.v20190612 import models

from mpsflow.codec import decode, decode_any, decode_live, encode
from mpsflow.events import LiveStreamNotification, Notification


def _sdk_roundtrip(doc: dict[str, Any], *, live: bool) -> dict[str, Any]:
    cls = (
        models.ParseLiveStreamProcessNotificationResponse
        if live
        else models.ParseNotificationResponse
    )
    model = cls()
    model._deserialize(doc)
    out: dict[str, Any] = model._serialize()
    return out


def test_sample_roundtrip_matches_sdk(sample_bytes: bytes) -> None:
    notification = decode(sample_bytes)
    assert isinstance(notification, Notification)
    assert notification.event_type is not None
    expected = _sdk_roundtrip(json.loads(sample_bytes), live=False)
    assert json.loads(encode(notification)) == expected


def test_live_sample_roundtrip_matches_sdk(live_sample_bytes: bytes) -> None:
    notification = decode_live(live_sample_bytes)
    assert isinstance(notification, LiveStreamNotification)
    expected = _sdk_roundtrip(json.loads(live_sample_bytes), live=True)
    assert json.loads(encode(notification)) == expected


def test_sdk_keeps_request_id(samples_dir: Path) -> None:
    # The API-doc example carries RequestId; the SDK keeps it, and so does mpsflow.
    raw = (samples_dir / "02_workflow_task_api_doc_example.json").read_bytes()
    assert "RequestId" in _sdk_roundtrip(json.loads(raw), live=False)
    assert decode(raw).request_id == json.loads(raw)["RequestId"]
    assert "RequestId" in json.loads(encode(decode(raw)))


def test_decode_any_picks_task_root(sample_bytes: bytes) -> None:
    assert isinstance(decode_any(sample_bytes), Notification)


def test_decode_any_picks_live_root(live_sample_bytes: bytes) -> None:
    assert isinstance(decode_any(live_sample_bytes), LiveStreamNotification)


def test_encode_leaves_out_nulls_and_keeps_empty_values() -> None:
    payload: dict[str, Any] = {
        "EventType": "WorkflowTask",
        "WorkflowTaskEvent": {
            "TaskId": "t",
            "Message": "",
            "ErrCode": 0,
            "MetaData": None,
            "MediaProcessResultSet": [],
            "InputInfo": {},
        },
        "Sign": None,
    }
    out = json.loads(encode(decode(json.dumps(payload))))
    assert out == {
        "EventType": "WorkflowTask",
        "WorkflowTaskEvent": {
            "TaskId": "t",
            "Message": "",
            "ErrCode": 0,
            "MediaProcessResultSet": [],
            "InputInfo": {},
        },
    }


def test_wire_names_that_are_not_plain_pascal_case() -> None:
    payload = {
        "EventType": "WorkflowTask",
        "WorkflowTaskEvent": {
            "InputInfo": {"Type": "VOD", "VODInputInfo": {"FileId": "f1", "SubAppId": 7}},
            "AiDubbingTaskResult": {"Status": "SUCCESS"},
        },
    }
    n = decode(json.dumps(payload).encode())
    event = n.workflow_task_event
    assert event is not None
    assert event.input_info is not None
    assert event.input_info.vod_input_info is not None
    assert event.input_info.vod_input_info.file_id == "f1"
    assert json.loads(encode(n)) == payload
