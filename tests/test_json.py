"""mpsflow._json: the record encoder every sink shares, and the cheap identity peek."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any

import msgspec
import pytest

from mpsflow._json import UNKNOWN, RecordIdentity, dumps, dumps_line, identify
from mpsflow.codec import decode, decode_live

WORKFLOW = (
    b'{\n  "EventType": "WorkflowTask",\n  "WorkflowTaskEvent": {"TaskId": "w-1", '
    b'"Status": "FINISH", "MediaProcessResultSet": [{"Type": "Transcode"}]},\n'
    b'  "EditMediaTaskEvent": null, "SessionContext": "s"\n}\n'
)
LIVE = b'{"NotificationType": "ProcessEof", "TaskId": "live-1", "ProcessEofInfo": {"ErrCode": 0}}'


class _Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class _Row:
    name: str
    blob: bytes


def test_dumps_keeps_raw_bytes_and_encodes_everything_else() -> None:
    assert dumps(WORKFLOW) is WORKFLOW
    assert dumps(bytearray(b"[1]")) == b"[1]"
    assert dumps(msgspec.Raw(b'{"a":1}')) == b'{"a":1}'
    assert dumps(_Row("r", b"\x00\x01")) == b'{"name":"r","blob":"AAE="}'
    assert dumps(MappingProxyType({"k": _Color.RED})) == b'{"k":"red"}'
    assert dumps({"p": PurePosixPath("/tmp/x"), "e": ValueError("bad")}) == (
        b'{"p":"/tmp/x","e":"ValueError: bad"}'
    )
    with pytest.raises(TypeError, match="object"):
        dumps(object())


def test_dumps_line_puts_any_record_on_one_line() -> None:
    line = dumps_line(WORKFLOW)
    assert b"\n" not in line
    assert msgspec.json.decode(line) == msgspec.json.decode(WORKFLOW)
    assert dumps_line({"a": "x\ny"}) == b'{"a":"x\\ny"}'
    with pytest.raises(msgspec.DecodeError):
        dumps_line(b'{"cut": ')


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (WORKFLOW, RecordIdentity("WorkflowTask", "w-1", "FINISH")),
        (msgspec.json.decode(WORKFLOW), RecordIdentity("WorkflowTask", "w-1", "FINISH")),
        (decode(WORKFLOW), RecordIdentity("WorkflowTask", "w-1", "FINISH")),
        (LIVE, RecordIdentity("ProcessEof", "live-1", UNKNOWN)),
        (decode_live(LIVE), RecordIdentity("ProcessEof", "live-1", UNKNOWN)),
        (
            {"EventType": "Future", "ExtractBlindWatermarkTask": {"TaskId": "x", "Status": "F"}},
            RecordIdentity("Future", "x", "F"),
        ),
        (b'{"EventType": "BatchTask", "BatchTaskEvent": {}}', RecordIdentity("BatchTask")),
        (b"not json at all", RecordIdentity()),
        (b'{"EventType": 7}', RecordIdentity()),
        ({"EventType": "", "WorkflowTaskEvent": None}, RecordIdentity()),
        ("a plain string", RecordIdentity()),
    ],
)
def test_identify(record: Any, expected: RecordIdentity) -> None:
    assert identify(record) == expected


def test_identify_looks_inside_the_parse_notification_wrapper() -> None:
    document = msgspec.json.decode(WORKFLOW)
    wrapped = {"Response": document}
    expected = RecordIdentity("WorkflowTask", "w-1", "FINISH")
    assert identify(msgspec.json.encode(wrapped)) == expected
    assert identify(wrapped) == expected
    assert identify(MappingProxyType(wrapped)) == expected
    live = {"Response": msgspec.json.decode(LIVE)}
    assert identify(msgspec.json.encode(live)) == RecordIdentity("ProcessEof", "live-1", UNKNOWN)
    # Not a wrapper: a top level with its own EventType is the notification itself.
    assert identify({"EventType": "EditMediaTask", "Response": document}) == RecordIdentity(
        "EditMediaTask"
    )
