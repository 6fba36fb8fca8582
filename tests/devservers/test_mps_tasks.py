"""The tasks of the local MPS server: building them from notifications, times, order, paging."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mpsflow.clock import FakeClock
from mpsflow.devservers.mps import UNSET_TIME, MpsServer, TaskStore
from mpsflow.devservers.mps.tasks import (
    build_task,
    decode_cursor,
    encode_cursor,
    format_time,
    parse_time,
    subtask_summary,
    task_from_notification,
    to_timestamp,
)
from mpsflow.errors import DecodeError
from tests.plugins.samples import LIVE_SAMPLE_PATHS

NOW = 1_767_225_600.5  # 2026-01-01T00:00:00.5Z


def test_times_are_iso_8601_utc_to_the_second_and_unset_is_all_zeros() -> None:
    assert format_time(1_767_225_600) == "2026-01-01T00:00:00Z"
    assert format_time(None) == UNSET_TIME == "0000-00-00T00:00:00Z"
    assert parse_time("2026-01-01T00:00:00Z") == 1_767_225_600
    assert parse_time("2026-01-01T08:00:00+08:00") == 1_767_225_600
    assert parse_time("2026-01-01T00:00:00") == 1_767_225_600  # no offset: UTC
    with pytest.raises(ValueError, match="Invalid isoformat"):
        parse_time("2026-01-01 at noon")
    eight = timezone(timedelta(hours=8))
    assert to_timestamp(datetime(2026, 1, 1, 8, tzinfo=eight)) == 1_767_225_600
    assert to_timestamp(datetime(2026, 1, 1)) == 1_767_225_600
    assert to_timestamp("2026-01-01T00:00:00Z") == to_timestamp(1_767_225_600.9) == 1_767_225_600


def test_scroll_tokens_are_opaque_and_checked() -> None:
    token = encode_cursor((1_767_225_600, 42))
    assert "1767225600" not in token
    assert decode_cursor(token) == (1_767_225_600, 42)
    for bad in ("", "42", "mpsflow1.", "mpsflow1.!!!", encode_cursor((1, 2)) + "x" * 3):
        with pytest.raises(ValueError, match="not a ScrollToken"):
            decode_cursor(bad)


def test_a_finished_tasks_times_default_to_now_and_an_unfinished_one_has_none() -> None:
    done = build_task("WorkflowTask", {"TaskId": "a", "Status": "FINISH"}, now=NOW)
    assert (done.create_time, done.begin_process_time, done.finish_time) == (NOW // 1,) * 3
    busy = build_task("WorkflowTask", {"TaskId": "b", "Status": "PROCESSING"}, now=NOW)
    assert (busy.begin_process_time, busy.finish_time) == (busy.create_time, None)
    waiting = build_task("ExtractBlindWatermark", {"TaskId": "c", "Status": "WAITING"}, now=NOW)
    assert waiting.simple_info()["BeginProcessTime"] == UNSET_TIME
    told = build_task(
        "EditMediaTask",
        {"TaskId": "d"},
        now=NOW,
        create_time="2025-12-31T23:00:00Z",
        finish_time=datetime(2026, 1, 1, tzinfo=timezone.utc),
    )
    assert told.status == "FINISH"  # a result without a Status
    assert told.detail()["CreateTime"] == "2025-12-31T23:00:00Z"
    assert told.detail()["FinishTime"] == "2026-01-01T00:00:00Z"


def test_the_store_refuses_what_mps_cannot_show() -> None:
    store = TaskStore()
    with pytest.raises(ValueError, match="unknown task type 'Workflow'"):
        store.put(build_task("Workflow", {"TaskId": "x"}, now=NOW))
    with pytest.raises(ValueError, match="unknown status 'DONE'"):
        store.put(build_task("WorkflowTask", {"TaskId": "x", "Status": "DONE"}, now=NOW))
    with pytest.raises(ValueError, match="PROCESSING: it has no finish time yet"):
        store.put(
            build_task(
                "WorkflowTask", {"TaskId": "x", "Status": "PROCESSING"}, now=NOW, finish_time=NOW
            )
        )
    with pytest.raises(ValueError, match="not JSON"):
        build_task("WorkflowTask", {"TaskId": "x", "When": datetime.now}, now=NOW)
    assert len(store) == 0


def test_tasks_of_one_second_list_latest_added_first_and_a_replacement_keeps_its_place() -> None:
    store = TaskStore()
    for name in ("a", "b", "c"):
        store.put(build_task("WorkflowTask", {"TaskId": name}, now=NOW))
    assert [t.task_id for t in store] == ["c", "b", "a"]
    store.put(build_task("WorkflowTask", {"TaskId": "a", "ErrCode": 1}, now=NOW))
    assert [t.task_id for t in store] == ["c", "b", "a"]
    page, following, total = store.page(limit=2, failed=True)
    assert ([t.task_id for t in page], following, total) == (["a"], None, 1)


def test_subtask_types_and_failures_come_from_the_result() -> None:
    result = {
        "TaskId": "t",
        "Status": "FINISH",
        "MediaProcessResultSet": [
            {"Type": "Transcode", "TranscodeTask": {"Status": "SUCCESS", "ErrCode": 0}},
            {"Type": "Transcode", "TranscodeTask": {"Status": "FAIL", "ErrCode": 30010}},
            {"Type": "ImageSprites", "ImageSpriteTask": {"Status": "SUCCESS", "ErrCode": 0}},
        ],
    }
    assert subtask_summary("WorkflowTask", result) == (["Transcode", "ImageSprites"], True)
    assert subtask_summary("EditMediaTask", {"ErrCode": 0}) == ([], False)
    assert subtask_summary("EditMediaTask", {"ErrCode": 70000}) == ([], True)
    assert subtask_summary("LiveStreamProcessTask", {"ErrCode": 0}) == ([], False)
    assert subtask_summary("WorkflowTask", {"MediaProcessResultSet": "nonsense"}) == ([], False)
    given = build_task(
        "WorkflowTask", result, now=NOW, sub_task_types=["X"], sub_task_has_failed=False
    )
    assert (given.sub_task_types, given.sub_task_has_failed) == (["X"], False)


def test_a_wrapped_notification_is_unwrapped() -> None:
    event = {"TaskId": "w", "Status": "FINISH", "ErrCode": 0}
    wrapped = {"Response": {"EventType": "WorkflowTask", "WorkflowTaskEvent": event}}
    task = task_from_notification(json.dumps(wrapped), now=NOW)
    assert (task.task_id, task.task_type, task.result) == ("w", "WorkflowTask", event)


@pytest.mark.parametrize(
    ("notification", "message"),
    [
        ({"EventType": "Nonsense"}, "unknown EventType 'Nonsense'"),
        ({"EventType": "WorkflowTask", "WorkflowTaskEvent": None}, "has no WorkflowTaskEvent"),
        ({"NotificationType": "ProcessEof"}, "live-stream notification has no TaskId"),
        ({}, "unknown EventType None"),
    ],
)
def test_what_reports_no_task_is_a_value_error(
    notification: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        task_from_notification(notification, now=NOW)


def test_non_json_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        task_from_notification(b"{nope", now=NOW)


def test_live_notifications_make_a_live_stream_process_task_finished_by_process_eof() -> None:
    assert LIVE_SAMPLE_PATHS, "the shared live samples are missing"
    server = MpsServer({}, clock=FakeClock(NOW))
    for path in LIVE_SAMPLE_PATHS:
        server.add_from_notification(path.read_bytes())
    [task] = list(server.tasks)  # every live sample is about one task
    assert (task.task_type, task.status) == ("LiveStreamProcessTask", "FINISH")
    assert task.result == {"TaskId": task.task_id, "Status": "FINISH", "ErrCode": 0, "Message": ""}
    assert task.simple_info()["TaskType"] == "LiveProcessTask"  # as TaskSimpleInfo names it
    assert task.detail()["LiveStreamProcessTask"] == task.result


def test_a_batch_notification_without_a_task_id_gets_one() -> None:
    server = MpsServer({}, clock=FakeClock(NOW))
    task = server.add_from_notification({"EventType": "BatchTask", "BatchTaskEvent": {}})
    assert task.task_id.startswith("1250000000-BatchTask-")
    assert server.task(task.task_id) is task
    with pytest.raises(KeyError):
        server.task("other")


def test_load_reads_folders_and_jsonl_and_names_the_line_that_reports_no_task(
    tmp_path: Path,
) -> None:
    server = MpsServer({}, clock=FakeClock(NOW))
    lines = [
        json.dumps({"EventType": "EditMediaTask", "EditMediaTaskEvent": {"TaskId": f"e{n}"}})
        for n in range(3)
    ]
    (tmp_path / "more.jsonl").write_text("\n".join(lines[:2]) + "\n\n")
    (tmp_path / "one.json").write_text(lines[2])
    (tmp_path / "notes.txt").write_text("not a notification")
    added = server.load(tmp_path)
    assert [t.task_id for t in added] == ["e0", "e1", "e2"]
    (tmp_path / "bad.jsonl").write_text(lines[0] + '\n{"EventType": "Other"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not a task notification"):
        server.load(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError):
        server.load(tmp_path / "missing")
