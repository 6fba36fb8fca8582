"""The typed notification key and payload hash stay the values stores already hold.

``typed_notification_key`` reads the subtask states through ``subtask_states`` (a direct read
of media-only workflows) instead of building every ``Subtask``: these tests hold it to the
walk it replaced, over every sample and generated variants, and pin a few values.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpsflow.codec import decode_any
from mpsflow.context import AnyNotification
from mpsflow.dedup.keys import typed_notification_key, typed_payload_hash
from mpsflow.events import LiveStreamNotification, Notification, collect_subtasks
from mpsflow.events.subtasks import subtask_states
from mpsflow.testing import build_notification, media_result
from tests.plugins.samples import LIVE_SAMPLE_PATHS, SAMPLE_PATHS

_PROFILE = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
_ENCODER = msgspec.json.Encoder()

_MEDIA_TYPES = [
    "Transcode",
    "AnimatedGraphics",
    "SnapshotByTimeOffset",
    "SampleSnapshot",
    "ImageSprites",
    "AdaptiveDynamicStreaming",
    "CoverBySnapshot",
]

PINNED = {
    "01_workflow_task_seed_verbatim": (
        "WorkflowTask:245****654-WorkflowTask-f46dac7fe2436c47******d71946986t0:FINISH:"
        "0ef607746d45c9ae",
        "a29e13e68c6b5d6cfb519b848cd1374f",
    ),
    "03_workflow_task_all_media_process_types": (
        "WorkflowTask:1300123456-WorkflowTask-6b1f0e9c2d3a4b5c8e7f9a0b1c2d3e4ft0:FINISH:"
        "20871f754156ee75",
        "8adbc16f70cb078bfe49ba2beb4b08cf",
    ),
    "04_workflow_task_processing_change_mode": (
        "WorkflowTask:1300123456-WorkflowTask-0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5ft0:PROCESSING:"
        "d3b270d656fb318c",
        "6d9391cc327f5fdc4e18da94ffd280aa",
    ),
}
"""Values the stores hold for these samples (computed before ``subtask_states`` existed)."""


def _walked_states(notification: Notification) -> list[tuple[str, str | None, Any]]:
    """The states as the key used to read them: one ``Subtask`` per result."""
    return [
        (sub.key, sub.status, getattr(sub.result, "progress", None))
        for sub in collect_subtasks(notification)
    ]


def _reference_hash(notification: AnyNotification) -> str:
    bare: AnyNotification
    if isinstance(notification, LiveStreamNotification):
        bare = msgspec.structs.replace(notification, timestamp=None, sign=None, request_id=None)
    else:
        bare = msgspec.structs.replace(
            notification,
            timestamp=None,
            sign=None,
            request_id=None,
            session_id=notification.session_id or None,
            session_context=notification.session_context or None,
        )
    return hashlib.sha256(_ENCODER.encode(bare)).hexdigest()[:32]


def _reference_key(notification: AnyNotification) -> str:
    """``typed_notification_key`` as it was written over ``collect_subtasks``."""
    if isinstance(notification, LiveStreamNotification):
        kind = notification.notification_type or "unknown"
        task = notification.task_id or "-"
        return f"{kind}:{task}:{_reference_hash(notification)}"
    kind = notification.event_type or "unknown"
    event = notification.event
    task_id = notification.task_id
    if event is None or not (task_id or notification.session_id):
        return f"{kind}:payload:{_reference_hash(notification)}"
    identity = task_id or f"sid={notification.session_id}"
    digest = hashlib.sha256(_ENCODER.encode(_walked_states(notification))).hexdigest()[:16]
    return f"{kind}:{identity}:{notification.status or '-'}:{digest}"


def _check(notification: AnyNotification) -> None:
    if isinstance(notification, Notification):
        assert subtask_states(notification) == _walked_states(notification)
    assert typed_notification_key(notification) == _reference_key(notification)
    assert typed_payload_hash(notification) == _reference_hash(notification)


@pytest.mark.parametrize("path", [*SAMPLE_PATHS, *LIVE_SAMPLE_PATHS], ids=lambda p: str(p.stem))
def test_every_sample_keeps_its_key_and_hash(path: Any) -> None:
    _check(decode_any(path.read_bytes()))


@pytest.mark.parametrize("stem", sorted(PINNED))
def test_pinned_sample_values(stem: str) -> None:
    path = next(p for p in SAMPLE_PATHS if p.stem == stem)
    notification = decode_any(path.read_bytes())
    assert (typed_notification_key(notification), typed_payload_hash(notification)) == PINNED[stem]


def _item(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from([*_MEDIA_TYPES, "ImageSprite", "NewKind"]))
    if kind == "NewKind":  # a type mpsflow does not know: an Unknown subtask
        return {"Type": kind, "Progress": draw(st.integers(0, 100))}
    item = media_result(
        "ImageSprites" if kind == "ImageSprite" else kind,
        status=draw(st.sampled_from(["SUCCESS", "FAIL", "PROCESSING", "WAITING"])),
        progress=draw(st.none() | st.integers(0, 100)),
        err_code_ext=draw(st.sampled_from(["", "InternalError"])),
    )
    item["Type"] = kind
    field = next((name for name in item if name != "Type"), None)  # its task, if it has one
    if field is not None:
        shape = draw(st.sampled_from(["task", "null", "absent", "no status"]))
        if shape == "null":
            item[field] = None
        elif shape == "absent":
            del item[field]
        elif shape == "no status":
            del item[field]["Status"]
    return item


@st.composite
def _workflows(draw: st.DrawFn) -> dict[str, Any]:
    items = draw(st.lists(st.composite(_item)(), max_size=6))
    note = build_notification(
        task_id=draw(st.sampled_from(["t-1", "", None])),
        status=draw(st.sampled_from(["FINISH", "PROCESSING"])),
        media_results=items,
        session_id=draw(st.sampled_from(["", "sid-1"])),
    )
    event = note["WorkflowTaskEvent"]
    if not items and draw(st.booleans()):
        event["MediaProcessResultSet"] = None
    extra = draw(
        st.none()  # media results only (half the time), else one other result beside them
        | st.sampled_from(
            [
                ("AiQualityControlTaskResult", {"Status": "SUCCESS", "Progress": 50}),
                ("SmartEraseTaskResult", {"Status": "FAIL"}),
                ("AiDubbingTaskResult", {"Status": "PROCESSING", "Progress": 10}),
                ("AiContentReviewResultSet", []),
                ("AiAnalysisResultSet", [{"Type": "Tag", "TagTask": {"Status": "SUCCESS"}}]),
                ("AiRecognitionResultSet", [{"Type": "FaceRecognition"}]),
                ("SmartSubtitlesTaskResult", [{"Type": "AsrFullTextRecognition"}]),
            ]
        )
    )
    if extra is not None:
        event[extra[0]] = extra[1]
    return note


@_PROFILE
@given(_workflows())
def test_generated_workflows_keep_their_key_and_hash(note: dict[str, Any]) -> None:
    _check(decode_any(json.dumps(note).encode()))


def test_an_unknown_media_type_keeps_its_key() -> None:
    note = build_notification(task_id="t-2", media_results=[media_result("Transcode")])
    note["WorkflowTaskEvent"]["MediaProcessResultSet"].append({"Type": "NewKind", "Progress": 3})
    notification = decode_any(json.dumps(note).encode())
    assert isinstance(notification, Notification)
    assert subtask_states(notification)[-1] == ("Unknown", None, None)
    _check(notification)
