"""The status vocabulary of each routing key agrees with the SDK docs, the Structs and samples."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from tencentcloud.mps.v20190612 import models as sdk_models

from mpsflow.codec import decode_any
from mpsflow.events import (
    EVENT_KEYS,
    LIVE_KEYS,
    SUBTASK_KEYS,
    LiveStreamNotification,
    TaskResult,
)
from mpsflow.events._tables import CATEGORY_TYPES
from mpsflow.events.statuses import STATUS_TYPES, STATUSES, TaskStatus
from tests.plugins.samples import LIVE_SAMPLE_PATHS, SAMPLE_PATHS

ALL_KEYS = sorted({*EVENT_KEYS, *SUBTASK_KEYS, *LIVE_KEYS})


def status_sources(key: str) -> list[type]:
    """The Structs whose ``Status`` routing reads for ``key`` (a category key: its tasks')."""
    if key in EVENT_KEYS:
        return [EVENT_KEYS[key]]
    if key in LIVE_KEYS:
        return [LIVE_KEYS[key]]
    if key in CATEGORY_TYPES:
        container = SUBTASK_KEYS[key]
        hints = typing.get_type_hints(container)
        return [
            next(a for a in typing.get_args(hints[attr]) if a is not type(None))
            for attr, _wire in CATEGORY_TYPES[key].values()
        ]
    return [SUBTASK_KEYS[key]]


def has_status(cls: type, key: str) -> bool:
    """Whether routing reads a ``Status`` from ``cls`` (``Subtask.status`` / the event's)."""
    if key in EVENT_KEYS:
        return "status" in getattr(cls, "__struct_fields__", ())
    return issubclass(cls, TaskResult)


def sdk_statuses(cls: type) -> set[str]:
    """The values the SDK's doc of ``cls``'s ``Status`` field names."""
    match = re.search(r"SDK ``(\w+)``", cls.__doc__ or "")
    assert match, cls
    doc = getattr(sdk_models, match.group(1)).__init__.__doc__ or ""
    field = re.search(r":param _Status:(.*?):type Status:", doc, re.S)
    assert field, match.group(1)
    return set(re.findall(r"\b[A-Z]{4,}\b", field.group(1)))


def test_every_key_has_a_vocabulary() -> None:
    assert sorted(STATUS_TYPES) == ALL_KEYS
    assert STATUSES["Transcode"] == typing.get_args(TaskStatus) == ("SUCCESS", "FAIL", "PROCESSING")


@pytest.mark.parametrize("key", ALL_KEYS)
def test_vocabulary_is_the_sdks(key: str) -> None:
    """Each key's statuses are what the SDK documents for the Status routing reads."""
    sources = status_sources(key)
    if not STATUSES[key]:
        assert not any(has_status(cls, key) for cls in sources), f"{key} has a Status"
        return
    for cls in sources:
        assert has_status(cls, key), f"{key}: {cls.__name__} has no Status"
        assert sdk_statuses(cls) == set(STATUSES[key]), f"{key}: {cls.__name__}"


@pytest.mark.parametrize("path", [*SAMPLE_PATHS, *LIVE_SAMPLE_PATHS], ids=lambda p: p.name)
def test_samples_use_only_known_statuses(path: Path) -> None:
    notification = decode_any(path.read_bytes())
    seen: list[tuple[str, str | None]] = []
    if not isinstance(notification, LiveStreamNotification):
        seen.append((notification.event_type or "", notification.status))
    seen.extend((sub.key, sub.status) for sub in notification.subtasks())
    for key, status in seen:
        if key in STATUSES and status is not None:
            assert status in STATUSES[key], (key, status)
