"""Property tests: whatever arrives, decode returns a notification or raises DecodeError.

Random bytes, random JSON documents and mutations of the real samples; a fixed, database-free,
derandomised profile keeps every run identical.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpsflow.codec import decode, decode_any, decode_live, encode
from mpsflow.errors import DecodeError
from mpsflow.events import LiveStreamNotification, Notification
from tests.plugins.samples import LIVE_SAMPLE_PATHS, SAMPLE_PATHS

_PROFILE = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_SAMPLES = [json.loads(p.read_bytes()) for p in SAMPLE_PATHS]
_LIVE = [json.loads(p.read_bytes()) for p in LIVE_SAMPLE_PATHS]

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    ["EventType", "WorkflowTaskEvent", "Status", "ErrCode", "Type", "TranscodeTask", "Response"]
)


def _check(data: Any, *, live: bool = False) -> None:
    """Decode ``data``: either a notification that encodes and iterates, or a DecodeError."""
    error: DecodeError | None = None
    try:
        result = decode_live(data) if live else decode(data)
    except DecodeError as err:
        error = err
    if error is not None:
        assert isinstance(error, ValueError)
        assert error.path.startswith("$")
        assert "at `$" not in str(error)  # the path is in .path only
        return
    assert isinstance(result, LiveStreamNotification if live else Notification)
    assert isinstance(encode(result), bytes)
    for sub in result.subtasks():
        assert sub.where.startswith("$")


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    doc = json.loads(json.dumps(doc))
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return doc


@_PROFILE
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    _check(data)
    _check(data, live=True)


@_PROFILE
@given(_json)
def test_random_json(doc: Any) -> None:
    _check(json.dumps(doc).encode())
    if isinstance(doc, dict):
        _check(doc)


@_PROFILE
@given(st.dictionaries(_keys, _json, max_size=4))
def test_random_json_with_mps_keys(doc: dict[str, Any]) -> None:
    _check(json.dumps(doc).encode())
    _check(doc)
    with contextlib.suppress(DecodeError):
        assert isinstance(decode_any(doc), (Notification, LiveStreamNotification))


@_PROFILE
@given(st.data())
def test_mutated_samples(data: st.DataObject) -> None:
    live = data.draw(st.booleans())
    doc = data.draw(st.sampled_from(_LIVE if live else _SAMPLES))
    path = data.draw(st.sampled_from(_paths(doc)))
    value = data.draw(_json)
    mutated = _mutate(doc, path, value)
    _check(json.dumps(mutated).encode(), live=live)
    if isinstance(mutated, dict):
        _check(mutated, live=live)


@_PROFILE
@given(st.data())
def test_truncated_and_corrupted_samples(data: st.DataObject) -> None:
    raw = data.draw(st.sampled_from([p.read_bytes() for p in SAMPLE_PATHS]))
    cut = data.draw(st.integers(min_value=0, max_value=len(raw)))
    _check(raw[:cut])
    pos = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    byte = data.draw(st.integers(min_value=0, max_value=255))
    _check(raw[:pos] + bytes([byte]) + raw[pos + 1 :])
