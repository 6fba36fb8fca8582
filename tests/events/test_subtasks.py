"""Subtask iteration: routing keys per sample, JSON paths, registries and unknown types."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from mpsflow.codec import decode, decode_live
from mpsflow.events import (
    CONTAINER_KEYS,
    EVENT_KEYS,
    LIVE_KEYS,
    SUBTASK_KEYS,
    UNKNOWN,
    ActivityResult,
    AiAnalysisResult,
    LiveStreamNotification,
    MediaProcessTaskResult,
    Notification,
    iter_live_subtasks,
    iter_subtasks,
)

_REVIEW = ["Porn", "Terrorism", "Political", "Porn.Asr", "Porn.Ocr", "Political.Asr"]
_REVIEW += ["Political.Ocr", "Terrorism.Ocr", "Prohibited.Asr", "Prohibited.Ocr"]
_ANALYSIS = ["Classification", "Cover", "Tag", "FrameTag", "Highlight", "Description"]
_RECOGNITION = ["FaceRecognition", "AsrWordsRecognition", "AsrFullTextRecognition"]
_RECOGNITION += ["OcrWordsRecognition", "OcrFullTextRecognition", "TransTextRecognition"]
_RECOGNITION += ["ObjectRecognition"]


def _pairs(category: str, types: list[str]) -> list[str]:
    return [k for t in types for k in (category, f"{category}.{t}")]


EXPECTED_KEYS: dict[str, list[str]] = {
    "01_workflow_task_seed_verbatim": [
        "Transcode",
        "AnimatedGraphics",
        "SnapshotByTimeOffset",
        "ImageSprites",
    ],
    "02_workflow_task_api_doc_example": ["Transcode"],
    "03_workflow_task_all_media_process_types": [
        "Transcode",
        "AnimatedGraphics",
        "SnapshotByTimeOffset",
        "SampleSnapshot",
        "ImageSprites",
        "AdaptiveDynamicStreaming",
        "CoverBySnapshot",
    ],
    "04_workflow_task_processing_change_mode": [
        "Transcode",
        "Transcode",
        "SnapshotByTimeOffset",
        "AdaptiveDynamicStreaming",
    ],
    "05_workflow_task_ai_review_analysis_recognition": [
        *_pairs("AiContentReview", _REVIEW),
        *_pairs("AiAnalysis", _ANALYSIS),
        *_pairs("AiRecognition", _RECOGNITION),
    ],
    "06_edit_media_task_success": [],
    "07_edit_media_task_failure": [],
    "08_schedule_task_multi_activity": [
        "Transcode",
        "SampleSnapshot",
        "AiQualityControl",
        "Schedule.AiContentReview",
        "AiContentReview",
        "AiContentReview.Porn",
        "AiContentReview",
        "AiContentReview.Political",
        "Schedule.AiRecognition",
        "AiRecognition",
        "AiRecognition.AsrFullTextRecognition",
        "Schedule.AiAnalysis",
        "AiAnalysis",
        "AiAnalysis.Classification",
        "AiAnalysis",
        "AiAnalysis.Tag",
        "AdaptiveDynamicStreaming",
    ],
    "09_workflow_task_source_error_url_input": ["Transcode"],
    "12_extract_blind_watermark_task": [],
}

EXPECTED_LIVE_KEYS = {
    "01_live_ai_review_result": ["AiReviewResult"],
    "02_live_ai_recognition_result": ["AiRecognitionResult"],
    "03_live_record_result": ["LiveRecordResult"],
    "04_live_process_eof": ["ProcessEof"],
}


def test_every_sample_has_expected_keys(sample_path: Path) -> None:
    n = decode(sample_path.read_bytes())
    assert [s.key for s in n.subtasks()] == EXPECTED_KEYS[sample_path.stem]
    assert [s.key for s in iter_subtasks(n)] == EXPECTED_KEYS[sample_path.stem]


def test_every_live_sample_has_expected_keys(live_sample_path: Path) -> None:
    n = decode_live(live_sample_path.read_bytes())
    assert [s.key for s in n.subtasks()] == EXPECTED_LIVE_KEYS[live_sample_path.stem]
    assert [s.key for s in iter_live_subtasks(n)] == EXPECTED_LIVE_KEYS[live_sample_path.stem]
    (sub,) = n.subtasks()
    assert sub.ok
    assert isinstance(sub.result, LIVE_KEYS[sub.key])


def test_result_types_match_the_registry(sample_path: Path) -> None:
    for sub in decode(sample_path.read_bytes()).subtasks():
        assert isinstance(sub.result, SUBTASK_KEYS[sub.key]), sub.where


def _resolve(doc: Any, where: str) -> Any:
    """Follow a ``$.A.B[2].C`` path through plain JSON."""
    for part in where[2:].replace("]", "").replace("[", ".").split("."):
        doc = doc[int(part)] if part.isdigit() else doc[part]
    return doc


def test_where_points_at_the_result(sample_path: Path) -> None:
    raw = sample_path.read_bytes()
    doc = json.loads(raw)
    for sub in decode(raw).subtasks():
        located = _resolve(doc, sub.where)
        assert isinstance(located, dict)
        if sub.key not in CONTAINER_KEYS:
            status = getattr(sub.result, "status", None)
            assert located.get("Status") == status
            assert sub.status == status


def test_schedule_statuses_and_errors(samples_dir: Path) -> None:
    n = decode((samples_dir / "08_schedule_task_multi_activity.json").read_bytes())
    subs = list(n.subtasks())
    assert subs[0].where == "$.ScheduleTaskEvent.ActivityResultSet[0].ActivityResItem.TranscodeTask"
    assert subs[4].where == (
        "$.ScheduleTaskEvent.ActivityResultSet[3].ActivityResItem.ReviewTask.Output[0]"
    )
    assert subs[5].where.endswith("ReviewTask.Output[0].PornTask")
    last = subs[-1]
    assert last.key == "AdaptiveDynamicStreaming"
    assert last.category == "MediaProcess"
    assert (last.status, last.ok, last.failed, last.error) == (
        "FAIL",
        False,
        True,
        "InvalidInput.DefinitionNotExist",
    )
    assert all(s.ok for s in subs[:-1])


def test_ai_category_item_reports_inner_task_outcome(samples_dir: Path) -> None:
    n = decode((samples_dir / "05_workflow_task_ai_review_analysis_recognition.json").read_bytes())
    failed = [s for s in n.subtasks() if s.failed]
    assert failed
    # a failed inner task fails both the category item and the per-type item
    for item, inner in zip(failed[::2], failed[1::2], strict=True):
        assert inner.key.startswith(item.key + ".")
        assert item.error == inner.error != ""


def test_registries() -> None:
    assert set(EVENT_KEYS) == {
        "WorkflowTask",
        "EditMediaTask",
        "ScheduleTask",
        "BatchTask",
        "ExtractBlindWatermark",
    }
    assert set(LIVE_KEYS) == {
        "AiReviewResult",
        "AiRecognitionResult",
        "LiveRecordResult",
        "AiQualityControlResult",
        "AiAnalysisResult",
        "AiSmartSubtitleResult",
        "ProcessEof",
    }
    for key in ("HeadTailRecognition", "SegmentRecognition", "HorizontalToVertical", "Generic"):
        assert f"AiAnalysis.{key}" in SUBTASK_KEYS
    for key in ("VideoRemake", "VideoComprehension", "Cutout", "Reel", "Dubbing", "DeLogo"):
        assert f"AiAnalysis.{key}" in SUBTASK_KEYS
    for key in _REVIEW:
        assert f"AiContentReview.{key}" in SUBTASK_KEYS
    for key in ("AsrFullTextRecognition", "TransTextRecognition", "PureSubtitleTrans"):
        assert f"SmartSubtitles.{key}" in SUBTASK_KEYS
    for key in ("ExecRule", "SmartErase", "AiDubbing", "BatchSmartSubtitles", "AiQualityControl"):
        assert key in SUBTASK_KEYS
    assert SUBTASK_KEYS["CoverBySnapshot"] is MediaProcessTaskResult
    assert set(SUBTASK_KEYS) >= CONTAINER_KEYS
    with pytest.raises(TypeError):
        SUBTASK_KEYS["New"] = int  # type: ignore[index]


def _workflow_with(extra: dict[str, Any]) -> dict[str, Any]:
    return {"EventType": "WorkflowTask", "WorkflowTaskEvent": {"TaskId": "t", **extra}}


def test_unknown_media_type_keeps_raw_payload(seed_sample: bytes) -> None:
    doc = json.loads(seed_sample)
    future = {"Type": "SuperResolution", "SuperResolutionTask": {"Status": "SUCCESS", "X": [1]}}
    doc["WorkflowTaskEvent"]["MediaProcessResultSet"].insert(1, future)
    n = decode(json.dumps(doc).encode())
    subs = list(n.subtasks())
    assert [s.key for s in subs] == [
        "Transcode",
        UNKNOWN,
        "AnimatedGraphics",
        "SnapshotByTimeOffset",
        "ImageSprites",
    ]
    unknown = subs[1]
    assert isinstance(unknown.result, MediaProcessTaskResult)
    assert unknown.where == "$.WorkflowTaskEvent.MediaProcessResultSet[1]"
    assert unknown.raw == future
    assert unknown.result.raw == future
    assert (unknown.ok, unknown.failed, unknown.status) == (False, False, None)
    assert subs[0].raw is None
    assert n.raw is not None
    # the same from an SCF dict
    assert next(s for s in decode(doc).subtasks() if s.key == UNKNOWN).raw == future


def test_known_notification_keeps_no_raw(seed_sample: bytes) -> None:
    n = decode(seed_sample)
    assert n.raw is None
    results = n.workflow_task_event.media_process_result_set if n.workflow_task_event else None
    assert results is not None
    assert all(r.raw is None for r in results)


def test_unknown_ai_type_in_schedule_wrapper(samples_dir: Path) -> None:
    doc = json.loads((samples_dir / "08_schedule_task_multi_activity.json").read_bytes())
    analysis = doc["ScheduleTaskEvent"]["ActivityResultSet"][5]["ActivityResItem"]["AnalysisTask"]
    future = {"Type": "Storyboard", "StoryboardTask": {"Status": "SUCCESS"}}
    analysis["Output"].append(future)
    n = decode(json.dumps(doc))
    unknown = [s for s in n.subtasks() if s.key == UNKNOWN]
    assert len(unknown) == 1
    assert isinstance(unknown[0].result, AiAnalysisResult)
    assert unknown[0].raw == future
    assert unknown[0].where.endswith("AnalysisTask.Output[2]")


def test_unknown_activity_type_keeps_raw(samples_dir: Path) -> None:
    doc = json.loads((samples_dir / "08_schedule_task_multi_activity.json").read_bytes())
    future = {"ActivityType": "AiTranslate", "ActivityResItem": {"TranslateTask": {"Status": "OK"}}}
    doc["ScheduleTaskEvent"]["ActivityResultSet"].append(future)
    n = decode(json.dumps(doc).encode())
    last = list(n.subtasks())[-1]
    assert last.key == UNKNOWN
    assert isinstance(last.result, ActivityResult)
    assert last.raw == future


def test_exec_rule_without_activity_type_is_routed() -> None:
    doc = {
        "EventType": "ScheduleTask",
        "ScheduleTaskEvent": {
            "TaskId": "s",
            "ActivityResultSet": [
                {"ActivityResItem": {"ExecRuleTask": {"Status": "SUCCESS", "ErrCodeExt": ""}}}
            ],
        },
    }
    (sub,) = decode(json.dumps(doc).encode()).subtasks()
    assert (sub.key, sub.category, sub.ok) == ("ExecRule", "ExecRule", True)


def test_unknown_event_type_keeps_raw() -> None:
    doc = {"EventType": "FutureTask", "FutureTaskEvent": {"TaskId": "f-1", "Status": "FINISH"}}
    n = decode(json.dumps(doc).encode())
    assert n.event_type == "FutureTask"
    assert n.event is None
    assert n.task_id is None
    assert list(n.subtasks()) == []
    assert n.raw == doc


def test_unknown_live_type_keeps_raw() -> None:
    doc = {"NotificationType": "AiDanmakuResult", "TaskId": "l-1", "AiDanmakuResultInfo": {}}
    n = decode_live(json.dumps(doc).encode())
    (sub,) = n.subtasks()
    assert sub.key == UNKNOWN
    assert isinstance(sub.result, LiveStreamNotification)
    assert sub.raw == doc
    assert n.info is None


def test_workflow_extras_and_batch() -> None:
    extra = {
        "AiQualityControlTaskResult": {"Status": "SUCCESS", "Progress": 100},
        "SmartSubtitlesTaskResult": [
            {"Type": "TransTextRecognition", "TransTextTask": {"Status": "FAIL", "ErrCode": 7}}
        ],
        "SmartEraseTaskResult": {"Status": "PROCESSING"},
        "AiDubbingTaskResult": {"Status": "SUCCESS"},
    }
    n = decode(json.dumps(_workflow_with(extra)).encode())
    assert [(s.key, s.category, s.status) for s in n.subtasks()] == [
        ("AiQualityControl", "AiQualityControl", "SUCCESS"),
        ("SmartSubtitles", "SmartSubtitles", "FAIL"),
        ("SmartSubtitles.TransTextRecognition", "SmartSubtitles", "FAIL"),
        ("SmartErase", "SmartErase", "PROCESSING"),
        ("AiDubbing", "AiDubbing", "SUCCESS"),
    ]
    batch = {
        "EventType": "BatchTask",
        "BatchTaskEvent": {
            "SmartSubtitlesTaskResult": {"Outputs": [{"Status": "SUCCESS", "Progress": 100}]}
        },
    }
    b = decode(json.dumps(batch).encode())
    (sub,) = b.subtasks()
    assert (sub.key, sub.ok, sub.status) == ("BatchSmartSubtitles", True, None)
    assert b.task_id is None


def test_iteration_does_not_copy(seed_sample: bytes) -> None:
    n: Notification = decode(seed_sample)
    event = n.workflow_task_event
    assert event is not None
    assert event.media_process_result_set is not None
    first = next(n.subtasks())
    assert first.result is event.media_process_result_set[0].transcode_task
    assert "Transcode" in repr(first)
    assert copy.copy(n) == n
