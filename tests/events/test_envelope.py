"""mpsflow.events.envelope: the one reader of raw notifications short of the full decode."""

from __future__ import annotations

import contextlib
import json
import urllib.parse
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpsflow.errors import DecodeError
from mpsflow.events import envelope
from mpsflow.events.envelope import (
    Carried,
    EventView,
    Identity,
    as_decode_error,
    carried,
    carried_text,
    document,
    extract_timestamp_sign,
    identify,
    kind_of,
    load,
    notification_of,
    peek,
    wrapped_json,
)
from tests.plugins.samples import LIVE_SAMPLE_PATHS, SAMPLE_PATHS

TASK = {
    "EventType": "WorkflowTask",
    "WorkflowTaskEvent": {"TaskId": "t-1", "Status": "FINISH"},
    "SessionId": "s-1",
    "Timestamp": 1735787400,
    "Sign": "ab",
}
LIVE = {"NotificationType": "ProcessEof", "TaskId": "live-1", "ProcessEofInfo": {"ErrCode": 0}}


def _json(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def test_module_surface() -> None:
    assert envelope.__doc__
    assert all(not name.startswith("_") for name in envelope.__all__)
    assert all(hasattr(envelope, name) for name in envelope.__all__)


# --- the wrapper rule ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "wrapped"),
    [
        ({"Response": TASK}, True),
        ({"Response": TASK, "RequestId": "r"}, True),
        ({"EventType": None, "Response": TASK}, True),  # a null discriminator is none
        ({"Response": TASK, "EventType": "EditMediaTask"}, False),  # its own notification
        ({"Response": LIVE, "NotificationType": "ProcessEof"}, False),
        ({"Response": "not an object"}, False),
        ({"Response": None}, False),
        (TASK, False),
    ],
)
def test_one_wrapper_rule_for_every_reader(doc: dict[str, Any], wrapped: bool) -> None:
    inner = doc["Response"] if wrapped else doc
    assert notification_of(doc) is inner
    assert notification_of(MappingProxyType(doc)) == inner
    assert document(_json(doc)) == inner
    assert document(doc) is inner
    found = carried(doc)
    assert (found == Carried(inner, "$.Response")) if wrapped else found is None
    bytes_wrapped = wrapped_json(_json(doc))
    if wrapped and next(iter(doc)) == "Response":
        assert bytes_wrapped is not None
        assert isinstance(bytes_wrapped.value, bytes)
        assert json.loads(bytes_wrapped.value) == inner
        assert bytes_wrapped.at == "$.Response"
    else:
        assert bytes_wrapped is None
    expected_pair = (inner.get("Timestamp"), inner.get("Sign"))
    assert extract_timestamp_sign(_json(doc)) == expected_pair
    assert extract_timestamp_sign(doc) == expected_pair


def test_the_signature_is_the_notifications_own() -> None:
    # A pair outside the wrapped notification is not its signature, and vice versa.
    outer_signed = {"Timestamp": 1, "Sign": "outer", "Response": TASK}
    assert extract_timestamp_sign(_json(outer_signed)) == (1735787400, "ab")
    not_wrapped = {"EventType": "WorkflowTask", "Response": {"Timestamp": 2, "Sign": "in"}}
    assert extract_timestamp_sign(_json(not_wrapped)) == (None, None)
    assert extract_timestamp_sign(not_wrapped) == (None, None)


def test_cmq_message_body_is_carried() -> None:
    message = {"msgId": "m", "msgBody": json.dumps(TASK)}
    assert carried(message) == Carried(message["msgBody"], "$")
    assert carried({"msgBody": 5}) is None
    assert carried({**TASK, "msgBody": "{}"}) is None  # a notification carries nothing
    assert carried("text") is None
    assert carried([TASK]) is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (json.dumps(json.dumps(TASK)).encode(), json.dumps(TASK)),
        (urllib.parse.quote(json.dumps(TASK)).encode(), json.dumps(TASK).encode()),
        (
            urllib.parse.quote_plus(json.dumps({"a": "b c"})).encode(),
            json.dumps({"a": "b c"}).encode(),
        ),
        (b"x=1&payload=" + urllib.parse.quote(json.dumps(TASK)).encode(), json.dumps(TASK)),
        (b'"a string"', "a string"),  # the decoder then finds no object in it
        (b'"[1]"', "[1]"),
        (b"[1, 2]", None),
        (b"a=1&b=2", None),
        (b"   ", None),
    ],
)
def test_carried_text(body: bytes, expected: bytes | str | None) -> None:
    assert carried_text(body) == expected


def test_carried_text_bounds_its_failures() -> None:
    with pytest.raises(DecodeError, match="not valid JSON") as caught:
        carried_text(b'"unterminated')
    assert caught.value.path == "$"
    with pytest.raises(DecodeError):
        carried_text(b"a=\xff{&b")


# --- identity ------------------------------------------------------------------------------


def test_identify_task_live_wrapped_and_mapping() -> None:
    task = Identity("WorkflowTask", "t-1", "s-1", "FINISH")
    assert identify(_json(TASK)) == task
    assert identify(TASK) == task
    assert identify(_json({"Response": TASK})) == task
    assert identify(MappingProxyType({"Response": TASK})) == task
    live = Identity("ProcessEof", "live-1", live=True)
    assert identify(_json(LIVE)) == live
    assert identify({"Response": LIVE}) == live
    # An unknown event type: the first event object present.
    future = {"EventType": "Future", "ExtractBlindWatermarkTask": {"TaskId": "x", "Status": "F"}}
    assert identify(future) == Identity("Future", "x", status="F")
    # A known type names its own object, not another one.
    named = {
        "EventType": "EditMediaTask",
        "WorkflowTaskEvent": {"TaskId": "w"},
        "EditMediaTaskEvent": {"TaskId": "e", "Status": "FINISH"},
    }
    assert identify(named) == Identity("EditMediaTask", "e", status="FINISH")
    assert identify(b"{}") == Identity()


@pytest.mark.parametrize("path", SAMPLE_PATHS + LIVE_SAMPLE_PATHS, ids=lambda p: p.stem)
def test_identify_agrees_on_bytes_mapping_and_wrapper(path: Any) -> None:
    raw = path.read_bytes()
    doc = json.loads(raw)
    found = identify(raw)
    assert found.event_type
    assert found == identify(doc) == identify(_json({"Response": doc}))
    assert found.live == ("NotificationType" in doc)


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b'{"EventType": 5}', "$.EventType"),
        (b'{"WorkflowTaskEvent": {"TaskId": 42}}', "$.WorkflowTaskEvent.TaskId"),
        (b'{"Response": {"SessionId": []}}', "$.Response.SessionId"),
    ],
)
def test_identify_reports_wrong_types_with_their_path(raw: bytes, path: str) -> None:
    for data in (raw, json.loads(raw)):
        with pytest.raises(DecodeError) as caught:
            identify(data)
        assert caught.value.path == path
        assert "$" not in str(caught.value)


class _WithResults(EventView):
    MediaProcessResultSet: list[Any] | None = None


def test_peek_reads_a_wider_event_view_in_the_same_pass() -> None:
    doc = {"Response": {**TASK, "WorkflowTaskEvent": {"TaskId": "t", "MediaProcessResultSet": []}}}
    for data in (_json(doc), doc):
        fields = peek(data, _WithResults)
        event = fields.event()
        assert isinstance(event, _WithResults)
        assert (event.TaskId, event.MediaProcessResultSet) == ("t", [])
        assert not fields.live


def test_kind_of() -> None:
    assert kind_of(TASK) == "WorkflowTask"
    assert kind_of(LIVE) == "ProcessEof"
    assert kind_of({"EventType": 5}) == ""
    assert kind_of({}) == ""


# --- failures are DecodeErrors, with the path kept out of the message ----------------------


class _Inner(msgspec.Struct):
    b: int


class _Outer(msgspec.Struct):
    a: _Inner


def test_as_decode_error_moves_the_path_out_of_the_message() -> None:
    try:
        msgspec.json.decode(b'{"a": {"b": "x"}}', type=_Outer)
    except msgspec.ValidationError as exc:
        error = as_decode_error(exc)
        nested = as_decode_error(exc, "$.Response")
    assert (str(error), error.path) == ("Expected `int`, got `str`", "$.a.b")
    assert (str(nested), nested.path) == ("Expected `int`, got `str`", "$.Response.a.b")
    key = as_decode_error(msgspec.ValidationError("Expected `str` - at `key` in `$.x`"))
    assert (str(key), key.path) == ("Expected `str` for an object key", "$.x")
    assert as_decode_error(RecursionError()).args == ("payload is nested too deeply",)
    assert as_decode_error(msgspec.DecodeError("truncated"), "$.Response").path == "$.Response"
    assert str(as_decode_error(TypeError("x"))) == "payload could not be decoded (TypeError)"
    own = DecodeError("missing EventType", "$.EventType")
    assert as_decode_error(own) is own
    assert as_decode_error(own, "$.Response").path == "$.Response.EventType"


_DEEP = b"[" * 100_000 + b"]" * 100_000
_READERS: list[Callable[[bytes], object]] = [
    extract_timestamp_sign,
    identify,
    document,
    load,
    wrapped_json,
    carried_text,
    lambda raw: peek(raw, EventView),
]


@pytest.mark.parametrize("reader", _READERS)
@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"",
        b"[1, 2]",
        b'"text"',
        b"\xff\xfe",
        _DEEP,
        b'{"Timestamp":' + _DEEP + b"}",
        b'{"Response":' + _DEEP + b"}",
        b'{"Response": {"Timestamp": ' + _DEEP + b"}}",
    ],
)
def test_every_reader_fails_only_with_decode_error(
    reader: Callable[[bytes], object], raw: bytes
) -> None:
    error: DecodeError | None = None
    try:
        reader(raw)
    except DecodeError as exc:
        error = exc
    if error is not None:
        assert error.path.startswith("$")
        assert "at `$" not in str(error)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    st.binary(max_size=120)
    | st.builds(
        _json,
        st.dictionaries(
            st.sampled_from(
                ["EventType", "NotificationType", "Response", "Timestamp", "Sign", "TaskId"]
            ),
            st.none()
            | st.integers()
            | st.text(max_size=5)
            | st.dictionaries(st.text(max_size=4), st.integers()),
            max_size=4,
        ),
    )
)
def test_readers_never_raise_anything_else(raw: bytes) -> None:
    for reader in _READERS:
        with contextlib.suppress(DecodeError):
            reader(raw)
