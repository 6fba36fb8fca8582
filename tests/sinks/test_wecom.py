"""wecom_markdown on awkward notifications, and WeComRobotSink against a loopback robot."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from mpsflow.clock import FakeClock
from mpsflow.codec import decode, decode_live
from mpsflow.errors import SinkError
from mpsflow.sinks.wecom import WECOM_MARKDOWN_LIMIT, WeComRobotSink, wecom_markdown
from tests.sinks.peers import RobotPeer, send_once

ROBOT_KEY = "693axxx6-7aoc-4bc4-97a0-0ec2sifa5aaa"

COS_OUT = {"Type": "COS", "CosOutputStorage": {"Bucket": "out-1250000000", "Region": "ap-shanghai"}}

WORKFLOW: dict[str, Any] = {
    "EventType": "WorkflowTask",
    "WorkflowTaskEvent": {
        "TaskId": "1250000000-WorkflowTask-aaaat0",
        "Status": "FINISH",
        "ErrCode": 0,
        "Message": "",
        "InputInfo": {
            "Type": "COS",
            "CosInputInfo": {
                "Bucket": "in-1250000000",
                "Region": "ap-shanghai",
                "Object": "/a.mp4",
            },
        },
        "MediaProcessResultSet": [
            {
                "Type": "Transcode",
                "TranscodeTask": {
                    "Status": "FAIL",
                    "ErrCodeExt": "InternalError.Transcode",
                    "ErrCode": 30010,
                    "Message": "transcode `engine` crashed",
                    "Input": {"Definition": 100030},
                    "Output": None,
                },
            },
            {
                "Type": "SnapshotByTimeOffset",
                "SnapshotByTimeOffsetTask": {
                    "Status": "SUCCESS",
                    "ErrCodeExt": "",
                    "Message": "SUCCESS",
                    "Input": {"Definition": 10},
                    "Output": {
                        "Storage": COS_OUT,
                        "Definition": 10,
                        "PicInfoSet": [{"TimeOffset": 0.0, "Path": "/out/snap_0.jpg"}],
                    },
                },
            },
        ],
    },
    "SessionContext": "order-981",
}

EDIT_FAILED: dict[str, Any] = {
    "EventType": "EditMediaTask",
    "EditMediaTaskEvent": {
        "TaskId": "1250000000-EditMediaTask-bbbbt0",
        "Status": "FINISH",
        "ErrCode": 30009,
        "Message": "SourceFileError.DownloadNotAccessible",
        "Input": {
            "FileInfoSet": [
                {
                    "InputInfo": {
                        "Type": "URL",
                        "UrlInputInfo": {"Url": "https://cdn.example.com/c.mp4?sign=s3cr3t&t=1"},
                    }
                }
            ]
        },
        "Output": None,
    },
}


def _content(record: object) -> str:
    message = wecom_markdown(record)
    assert message["msgtype"] == "markdown"
    content: str = message["markdown"]["content"]
    assert len(content.encode()) <= WECOM_MARKDOWN_LIMIT
    return content


def test_failed_workflow_lists_failures_outputs_and_session() -> None:
    content = _content(decode(msgspec.json.encode(WORKFLOW)))
    lines = content.splitlines()
    assert lines[0] == '### MPS WorkflowTask <font color="warning">failed</font>'
    expected = [
        "> Task: `1250000000-WorkflowTask-aaaat0`",
        "> Input: COS `/a.mp4` (in-1250000000 · ap-shanghai)",
        "> Session: `order-981`",
        "**Failed subtasks (1)**",
        "- Transcode `InternalError.Transcode` transcode 'engine' crashed",
        "- SnapshotByTimeOffset: `/out/snap_0.jpg` (out-1250000000 · ap-shanghai)",
    ]
    assert [text for text in expected if text not in lines] == []


def test_raw_bytes_dicts_and_typed_notifications_read_the_same() -> None:
    raw = msgspec.json.encode(WORKFLOW)
    assert _content(raw) == _content(WORKFLOW) == _content(decode(raw))


def test_failed_edit_with_null_output_and_a_signed_url() -> None:
    content = _content(EDIT_FAILED)
    assert content.startswith('### MPS EditMediaTask <font color="warning">failed</font>')
    assert "> Error: `30009` SourceFileError.DownloadNotAccessible" in content
    assert "s3cr3t" not in content
    assert "https://cdn.example.com/c.mp4?sign=***&t=***" in content
    assert "Outputs" not in content


def test_successful_and_processing_tasks() -> None:
    ok = dict(WORKFLOW, WorkflowTaskEvent=dict(WORKFLOW["WorkflowTaskEvent"]))
    ok["WorkflowTaskEvent"]["MediaProcessResultSet"] = WORKFLOW["WorkflowTaskEvent"][
        "MediaProcessResultSet"
    ][1:]
    assert '<font color="info">succeeded</font>' in _content(ok)
    assert "> Subtasks: 1 reported, none failed" in _content(ok)
    ok["WorkflowTaskEvent"]["Status"] = "PROCESSING"
    assert '<font color="comment">processing</font>' in _content(ok)


def test_live_end_of_stream_with_an_error() -> None:
    eof = {
        "NotificationType": "ProcessEof",
        "TaskId": "1250000000-LiveProcessTask-cccc",
        "ProcessEofInfo": {"ErrCode": 70000, "Message": "stream interrupted"},
        "SessionContext": "room-7",
    }
    content = _content(decode_live(msgspec.json.encode(eof)))
    assert content.startswith('### MPS live ProcessEof <font color="warning">failed</font>')
    assert "- ProcessEof `70000` stream interrupted" in content
    assert "> Session: `room-7`" in content


def test_unreadable_records_still_produce_a_message() -> None:
    content = _content(b'{"EventType": 5')
    assert content.startswith("### MPS unknown (not a readable notification)")
    assert "> Task: `unknown`" in _content({"no": "event"})


def test_content_is_capped_at_the_robot_limit_on_a_character_boundary() -> None:
    failing = {
        "Type": "Transcode",
        "TranscodeTask": {"Status": "FAIL", "ErrCodeExt": "E", "Message": "视频处理失败" * 40},
    }
    big = dict(WORKFLOW, WorkflowTaskEvent=dict(WORKFLOW["WorkflowTaskEvent"]))
    big["WorkflowTaskEvent"]["MediaProcessResultSet"] = [failing] * 300
    content = _content(big)
    assert content.endswith("\n…(truncated)")
    assert content.startswith("### MPS WorkflowTask")
    assert "**Failed subtasks (300)**" in content
    huge_session = dict(WORKFLOW, SessionContext="x" * 10_000)
    assert len(_content(huge_session).encode()) < 2_000  # long fields are shortened


@pytest.fixture
async def robot() -> AsyncIterator[RobotPeer]:
    async with RobotPeer(ROBOT_KEY).running() as state:
        yield state


async def test_robot_sink_posts_one_markdown_message_per_record(robot: RobotPeer) -> None:
    await send_once(WeComRobotSink(robot.url), [WORKFLOW, EDIT_FAILED])
    assert [m["msgtype"] for m in robot.messages] == ["markdown", "markdown"]
    assert robot.messages[0] == wecom_markdown(WORKFLOW)
    assert "EditMediaTask" in robot.messages[1]["markdown"]["content"]


@pytest.mark.parametrize(("errcode", "transient"), [(45009, True), (-1, True), (93000, False)])
async def test_robot_errcodes_map_to_sink_errors(
    robot: RobotPeer, errcode: int, transient: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    robot.errcodes = [errcode]
    sink = WeComRobotSink(robot.url)
    with pytest.raises(SinkError, match=f"refused the message: {errcode}") as caught:
        await send_once(sink, [WORKFLOW])
    assert caught.value.transient is transient
    for text in (str(caught.value), caplog.text, repr(sink)):
        assert ROBOT_KEY not in text


async def test_robot_sink_keeps_to_twenty_messages_a_minute(robot: RobotPeer) -> None:
    clock = FakeClock()
    await send_once(WeComRobotSink(robot.url, clock=clock), [WORKFLOW] * 21)
    assert len(robot.messages) == 21
    assert clock.sleeps == [60.0]


async def test_robot_gets_no_idempotency_header_but_repeats_are_skipped(robot: RobotPeer) -> None:
    """Robots ignore headers and cannot dedup: the sink skips keys it already delivered."""
    key = "0123456789abcdef0123456789abcdef-0"
    sink = WeComRobotSink(robot.url, clock=FakeClock())
    await sink.start()
    try:
        await sink.send_keyed([WORKFLOW], [key])
        await sink.send_keyed([WORKFLOW, EDIT_FAILED], [key, None])  # a retried batch
    finally:
        await sink.close()
    assert len(robot.messages) == 2
    assert "EditMediaTask" in robot.messages[1]["markdown"]["content"]
    assert all("Idempotency-Key" not in headers for headers in robot.headers)
