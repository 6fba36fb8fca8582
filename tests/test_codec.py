"""Codec entry points: every carrier of a notification, and DecodeError paths for bad input."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from mpsflow.codec import DEFAULT_MAX_SIZE, decode, decode_any, decode_live, encode
from mpsflow.errors import DecodeError
from mpsflow.events import LiveStreamNotification, Notification


@pytest.fixture(scope="module")
def seed_doc(seed_sample: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(seed_sample)
    return doc


def test_bytes_str_bytearray_memoryview_agree(seed_sample: bytes) -> None:
    expected = decode(seed_sample)
    assert decode(seed_sample.decode()) == expected
    assert decode(bytearray(seed_sample)) == expected
    assert decode(memoryview(seed_sample)) == expected
    assert decode(b"\xef\xbb\xbf \n" + seed_sample) == expected


def test_scf_event_dict(seed_sample: bytes, seed_doc: dict[str, Any]) -> None:
    n = decode(seed_doc)
    assert n == decode(seed_sample)
    assert decode(MappingProxyType(seed_doc)) == n
    assert json.loads(encode(n)) == json.loads(encode(decode(seed_sample)))


def test_response_wrapper(seed_sample: bytes, seed_doc: dict[str, Any]) -> None:
    expected = decode(seed_sample)
    wrapped = {"Response": {**seed_doc, "RequestId": "req-1"}}
    for data in (json.dumps(wrapped), json.dumps(wrapped, indent=2).encode(), wrapped):
        n = decode(data)
        assert n.request_id == "req-1"
        assert n.workflow_task_event == expected.workflow_task_event
    # "Response" need not be the first key
    late = json.dumps({"Meta": 1, "Response": seed_doc}).encode()
    assert decode(late) == expected


def test_live_response_wrapper(samples_dir: Path) -> None:
    raw = (samples_dir / "live" / "04_live_process_eof.json").read_bytes()
    wrapped = b'{"Response": ' + raw + b"}"
    assert decode_live(wrapped) == decode_live(raw)
    assert isinstance(decode_any(wrapped), LiveStreamNotification)


def test_cmq_msg_body(seed_sample: bytes) -> None:
    expected = decode(seed_sample)
    body = seed_sample.decode()
    assert decode(body) == expected  # the msgBody string itself
    message = {"msgBody": body, "msgId": "m-1", "receiptHandle": "r", "dequeueCount": 1}
    assert decode(message) == expected  # a whole CMQ message object
    assert decode(json.dumps(message).encode()) == expected
    assert decode(json.dumps(body).encode()) == expected  # a JSON string holding the JSON


def test_url_encoded_bodies(seed_sample: bytes) -> None:
    expected = decode(seed_sample)
    text = seed_sample.decode()
    compact = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
    bodies = [
        urllib.parse.quote(text),
        urllib.parse.quote_plus(text),
        re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), urllib.parse.quote(compact)),
        urllib.parse.urlencode({"source": "mps", "body": text}),
        urllib.parse.urlencode({"event": compact}),
    ]
    for body in bodies:
        assert decode(body.encode()) == expected, body[:40]
        assert decode(body) == expected


def test_url_encoded_plus_literal_survives() -> None:
    doc = {"EventType": "WorkflowTask", "SessionContext": "a+b c", "WorkflowTaskEvent": {}}
    for body in (urllib.parse.quote(json.dumps(doc)), urllib.parse.quote_plus(json.dumps(doc))):
        assert decode(body).session_context == "a+b c"


def _bad(data: Any, decoder: Callable[..., object] = decode, **kwargs: Any) -> DecodeError:
    """The ``DecodeError`` ``decoder`` raises for ``data`` (checked for what every one has)."""
    with pytest.raises(DecodeError) as info:
        decoder(data, **kwargs)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.path.startswith("$")
    assert "at `$" not in str(err)  # the path is in .path only, never repeated in the message
    return err


def test_decode_any(seed_sample: bytes) -> None:
    assert isinstance(decode_any(seed_sample), Notification)
    live = {"NotificationType": "ProcessEof", "TaskId": "l", "ProcessEofInfo": {"ErrCode": 0}}
    assert isinstance(decode_any(live), LiveStreamNotification)
    assert isinstance(decode_any(json.dumps(live)), LiveStreamNotification)
    assert _bad(b'{"TaskId": "x"}', decode_any).path == "$.EventType"
    assert _bad(b'{"NotificationType": 5}', decode_any).path == "$.NotificationType"


def test_wrong_type_names_the_json_path(seed_doc: dict[str, Any]) -> None:
    doc = json.loads(json.dumps(seed_doc))
    doc["WorkflowTaskEvent"]["MediaProcessResultSet"][0]["TranscodeTask"]["Progress"] = "50"
    path = "$.WorkflowTaskEvent.MediaProcessResultSet[0].TranscodeTask.Progress"
    assert _bad(json.dumps(doc).encode()).path == path
    assert _bad(doc).path == path  # SCF dict: same path, no JSON round trip
    assert _bad(json.dumps({"Response": doc})).path == "$.Response." + path[2:]


# What mpsflow itself says about a bad payload, by kind. A wrong-typed value is reported with
# msgspec's own wording (not asserted here: it changes between releases); what mpsflow
# guarantees for it is the JSON path and that it is not mistaken for a syntax error.
_NOT_JSON = "not valid JSON: "
_NOT_OBJECT = "not valid JSON: payload is not a JSON object"
_OWN_PREFIXES = (_NOT_JSON, "missing ", "payload is nested too deeply")


@pytest.mark.parametrize(
    ("data", "path", "kind"),
    [
        (b"not json at all", "$", "object"),
        (b"", "$", "object"),
        (b"[1, 2]", "$", "object"),
        (b"null", "$", "object"),
        (b'{"EventType": "WorkflowTask",', "$", "syntax"),
        (b'{"WorkflowTaskEvent": {"TaskId": "t"}}', "$.EventType", "missing"),
        (b'{"EventType": null}', "$.EventType", "missing"),
        (b'{"EventType": 5}', "$.EventType", "type"),
        (b'{"EventType": "WorkflowTask", "Timestamp": "17"}', "$.Timestamp", "type"),
        (
            b'{"EventType": "WorkflowTask", "WorkflowTaskEvent": {"MediaProcessResultSet": {}}}',
            "$.WorkflowTaskEvent.MediaProcessResultSet",
            "type",
        ),
        (
            b'{"EventType": "WorkflowTask", "WorkflowTaskEvent": "oops"}',
            "$.WorkflowTaskEvent",
            "type",
        ),
        (b"%7B%22EventType%22%3A", "$", "syntax"),
        (b"a=1&b=2", "$", "object"),
        (b'{"EventType": "Workflow\x80Task"}', "$", "syntax"),
        (b'"just a string"', "$", "object"),
        (b"[" * 100_000 + b"]" * 100_000, "$", "object"),
        (b'{"EventType":"WorkflowTask","X":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "$", "deep"),
    ],
)
def test_bad_input(data: bytes, path: str, kind: str) -> None:
    err = _bad(data)
    assert type(err) is DecodeError  # not PayloadTooLarge: these are all within the limit
    assert err.path == path
    message = str(err)
    if kind == "object":
        assert message == _NOT_OBJECT
    elif kind == "syntax":
        assert message.startswith(_NOT_JSON)
        assert "$" not in message
        assert message != _NOT_OBJECT
    elif kind == "missing":
        assert message == "missing EventType"
    elif kind == "deep":
        assert message == "payload is nested too deeply"
    else:
        assert kind == "type"
        assert not message.startswith(_OWN_PREFIXES)


def test_bad_python_types() -> None:
    assert _bad(12345).path == "$"
    assert _bad({"EventType": "WorkflowTask", 5: "x"}).path == "$"
    assert _bad({"EventType": "WorkflowTask", "Sign": object()}).path == "$.Sign"


def test_size_limit(seed_sample: bytes, seed_doc: dict[str, Any]) -> None:
    assert DEFAULT_MAX_SIZE == 16 * 1024 * 1024
    err = _bad(seed_sample, max_size=100)
    assert "over the size limit" in str(err)
    assert err.path == "$"
    assert decode(seed_sample, max_size=len(seed_sample)) == decode(seed_sample)
    assert "size limit" in str(_bad(seed_sample.decode(), max_size=100))
    with pytest.raises(DecodeError, match="size limit"):
        decode_live(b"{" + b" " * 200 + b"}", max_size=100)


def test_live_errors() -> None:
    assert _bad(b'{"TaskId": "l"}', decode_live).path == "$.NotificationType"
    bad_code = b'{"NotificationType": "ProcessEof", "ProcessEofInfo": {"ErrCode": "0"}}'
    assert _bad(bad_code, decode_live).path == "$.ProcessEofInfo.ErrCode"


def test_error_messages_never_carry_values() -> None:
    secret = "very-secret-key-value"
    doc = {
        "EventType": "WorkflowTask",
        "WorkflowTaskEvent": {"InputInfo": {"S3InputInfo": {"S3SecretKey": [secret]}}},
    }
    err = _bad(json.dumps(doc).encode())
    assert err.path == "$.WorkflowTaskEvent.InputInfo.S3InputInfo.S3SecretKey"
    assert secret not in str(err)
    assert secret not in repr(err)
