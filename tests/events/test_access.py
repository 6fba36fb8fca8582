"""Typed access to decoded notifications: fields, outcomes, locations and secret redaction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mpsflow.codec import decode, decode_live, encode
from mpsflow.events import (
    BatchSmartSubtitlesResult,
    EditMediaTask,
    ExtractBlindWatermarkTask,
    InputLocation,
    LiveStreamProcessErrorInfo,
    MediaProcessTaskAnimatedGraphicResult,
    MediaProcessTaskTranscodeResult,
    OutputPath,
    S3InputInfo,
    ScheduleTask,
    SmartSubtitleTaskBatchOutput,
    WorkflowTask,
    _generated,
)
from mpsflow.events._base import ErrCodeResult, OutcomeMixin, TaskResult, error_text


def _load(samples_dir: Path, name: str) -> bytes:
    return (samples_dir / name).read_bytes()


def test_seed_sample_typed_access(seed_sample: bytes) -> None:
    n = decode(seed_sample)
    assert isinstance(n.event, WorkflowTask)
    assert n.task_id == "245****654-WorkflowTask-f46dac7fe2436c47******d71946986t0"
    assert n.status == "FINISH"
    results = n.event.media_process_result_set
    assert results is not None
    transcode = results[0].transcode_task
    assert isinstance(transcode, MediaProcessTaskTranscodeResult)
    assert transcode.output is not None
    assert transcode.output.path == "/dasda/dianping2_transcode_10.mp4"
    assert transcode.output.md5 == "31dcf904c03d0cd78346a12c25c0acc9"
    assert transcode.ok
    assert not transcode.failed
    assert transcode.error == ""
    animated = results[1].animated_graphic_task
    assert isinstance(animated, MediaProcessTaskAnimatedGraphicResult)
    assert animated.output is None
    assert not animated.ok
    assert animated.failed
    assert animated.error == "30010"


def test_seed_sample_locations(seed_sample: bytes) -> None:
    n = decode(seed_sample)
    assert n.input == InputLocation(
        kind="COS", bucket="macgzptest-125****654", region="ap-guangzhou", object="/dianping2.mp4"
    )
    paths = n.output_paths()
    assert paths[0] == OutputPath(
        path="/dasda/dianping2_transcode_10.mp4",
        key="Transcode",
        kind="COS",
        bucket="gztest-125****654",
        region="ap-guangzhou",
    )
    assert {p.key for p in paths} == {"Transcode", "SnapshotByTimeOffset", "ImageSprites"}
    assert all(p.kind == "COS" and p.bucket == "gztest-125****654" for p in paths)


def test_url_input_and_source_error(samples_dir: Path) -> None:
    n = decode(_load(samples_dir, "09_workflow_task_source_error_url_input.json"))
    assert n.input == InputLocation(kind="URL", url="https://media.example.com/uploads/broken.mp4")
    event = n.event
    assert isinstance(event, WorkflowTask)
    assert event.err_code == 30009
    assert event.meta_data is None
    (sub,) = n.subtasks()
    assert sub.failed
    assert sub.error == "SourceFileError.NoVideoMedia"  # ErrCodeExt wins over ErrCode


def test_edit_media_inputs_and_output(samples_dir: Path) -> None:
    n = decode(_load(samples_dir, "06_edit_media_task_success.json"))
    assert isinstance(n.event, EditMediaTask)
    assert [i.object for i in n.inputs()] == ["/input/clips/a.mp4", "/input/clips/b.mp4"]
    assert n.input is not None
    assert n.input.object == "/input/clips/a.mp4"
    assert [(p.path, p.key, p.bucket) for p in n.output_paths()] == [
        ("/output/edit/a_b_clip.mp4", "EditMediaTask", "mps-output-1300123456")
    ]


def test_edit_media_failure(samples_dir: Path) -> None:
    n = decode(_load(samples_dir, "07_edit_media_task_failure.json"))
    event = n.event
    assert isinstance(event, EditMediaTask)
    assert event.err_code == 30009
    assert event.output is None
    assert n.output_paths() == []
    assert n.input == InputLocation(kind="URL", url="https://example.com/missing/c.mp4")


def test_extract_blind_watermark(samples_dir: Path) -> None:
    n = decode(_load(samples_dir, "12_extract_blind_watermark_task.json"))
    event = n.event
    assert isinstance(event, ExtractBlindWatermarkTask)
    assert event.is_detected is True
    assert event.result == "user-1001"
    assert n.event_type == "ExtractBlindWatermark"
    assert n.input is not None
    assert n.input.object == "/input/leak/suspect.mp4"


def test_schedule_outputs_use_the_nearest_storage(samples_dir: Path) -> None:
    n = decode(_load(samples_dir, "08_schedule_task_multi_activity.json"))
    assert isinstance(n.event, ScheduleTask)
    paths = n.output_paths()
    assert paths[0].path == "/output/schedule/2025/talk_transcode_100030.mp4"
    assert [p.key for p in paths].count("SampleSnapshot") == 10
    assert paths[-1].key == "AiRecognition.AsrFullTextRecognition"


def test_live_process_eof_outcome(samples_dir: Path) -> None:
    n = decode_live((samples_dir / "live" / "04_live_process_eof.json").read_bytes())
    assert isinstance(n.info, LiveStreamProcessErrorInfo)
    assert n.info.ok
    assert not n.info.failed
    bad = LiveStreamProcessErrorInfo(err_code=10, message="stream broken")
    assert bad.failed
    assert bad.error == "10"


@pytest.mark.parametrize(
    ("ext", "code", "expected"),
    [("", 0, ""), (None, None, ""), ("", 30010, "30010"), ("InternalError", 0, "InternalError")],
)
def test_error_text_rule(ext: str | None, code: int | None, expected: str) -> None:
    assert error_text(ext, code) == expected


def test_status_without_status_field_is_failed_only_on_error() -> None:
    assert MediaProcessTaskTranscodeResult(err_code=30010).failed
    assert not MediaProcessTaskTranscodeResult(err_code=0).failed
    assert not MediaProcessTaskTranscodeResult(status="PROCESSING", err_code=30010).failed


def test_batch_outcome_sums_outputs() -> None:
    ok = SmartSubtitleTaskBatchOutput(status="SUCCESS", err_code_ext="")
    bad = SmartSubtitleTaskBatchOutput(status="FAIL", err_code_ext="InternalError")
    assert BatchSmartSubtitlesResult(outputs=[ok, ok]).ok
    mixed = BatchSmartSubtitlesResult(outputs=[ok, bad])
    assert not mixed.ok
    assert mixed.failed
    assert mixed.error == "InternalError"
    assert not BatchSmartSubtitlesResult(outputs=[]).ok


def test_every_status_result_has_an_outcome() -> None:
    events = {WorkflowTask, ScheduleTask, EditMediaTask, ExtractBlindWatermarkTask}
    for name in _generated.__all__:
        cls = getattr(_generated, name)
        fields = cls.__struct_fields__
        if cls in events:
            assert not issubclass(cls, OutcomeMixin), name  # event Status is PROCESSING/FINISH
        elif "status" in fields:
            assert issubclass(cls, TaskResult), name
        elif "err_code" in fields:
            assert issubclass(cls, ErrCodeResult), name


def test_s3_secrets_never_in_repr_or_input_location() -> None:
    payload = {
        "EventType": "WorkflowTask",
        "WorkflowTaskEvent": {
            "TaskId": "t-1",
            "InputInfo": {
                "Type": "AWS-S3",
                "S3InputInfo": {
                    "S3Bucket": "b",
                    "S3Region": "us-east-1",
                    "S3Object": "/in.mp4",
                    "S3SecretId": "AKIA-very-secret-id",
                    "S3SecretKey": "very-secret-key-value",
                },
            },
        },
    }
    n = decode(json.dumps(payload).encode())
    text = repr(n) + str(n.input) + repr(n.inputs())
    assert "very-secret" not in text
    assert "***" in repr(n)
    assert n.input == InputLocation(kind="AWS-S3", bucket="b", region="us-east-1", object="/in.mp4")
    info = S3InputInfo(s3_bucket="b", s3_secret_key="very-secret-key-value")
    assert "very-secret" not in repr(info)
    assert "very-secret" not in str(info.__rich_repr__())
    # The wire encoding still round-trips the secret: encode is not a log.
    assert b"very-secret-key-value" in encode(n)
