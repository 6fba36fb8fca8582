"""ScfInvokeSink against a loopback endpoint that checks TC3 signatures and Invoke params."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from mpsflow.clock import FakeClock
from mpsflow.errors import ConfigurationError, SinkError
from mpsflow.sinks.channel import SinkChannel
from mpsflow.sinks.cos import S3Sink
from mpsflow.sinks.scf import MAX_ASYNC_CLIENT_CONTEXT, ScfInvokeSink, scf_host
from mpsflow.tencentcloud.cmq.credentials import Credential
from tests.plugins.moto_server import S3Bucket
from tests.sinks.peers import ScfApi, send_once

SECRET_ID = "AKIDscfSinkTest0001"
SECRET_KEY = "scf-sink-secret-key-value"
TOKEN = "scf-session-token-value"
NOW = 1_700_000_000.0

EVENT: dict[str, Any] = {
    "EventType": "WorkflowTask",
    "WorkflowTaskEvent": {"TaskId": "1250000000-WorkflowTask-f00dt0", "Status": "FINISH"},
    "SessionContext": "order-17",
}


@pytest.fixture
async def scf_api() -> AsyncIterator[ScfApi]:
    async with ScfApi(SECRET_ID, SECRET_KEY).running() as api:
        yield api


def _sink(api: ScfApi, **options: Any) -> ScfInvokeSink:
    options.setdefault("credentials", Credential(SECRET_ID, SECRET_KEY, TOKEN))
    return ScfInvokeSink(
        "mps-fanout",
        region="ap-guangzhou",
        endpoint=api.url,
        clock=FakeClock(start=NOW),
        **options,
    )


def _big_event() -> bytes:
    event = dict(EVENT, SessionContext="x" * (MAX_ASYNC_CLIENT_CONTEXT + 1))
    return msgspec.json.encode(event)


async def test_each_record_is_one_signed_async_invoke(scf_api: ScfApi) -> None:
    pretty = b'{\n  "EventType": "EditMediaTask",\n  "Note": "\xe8\xa7\x86\xe9\xa2\x91"\n}'
    await send_once(_sink(scf_api, namespace="media", qualifier="2"), [EVENT, pretty])
    assert [call["FunctionName"] for call in scf_api.invocations] == ["mps-fanout"] * 2
    first, second = scf_api.invocations
    assert first["InvocationType"] == "Event"
    assert first["Namespace"] == "media"
    assert first["Qualifier"] == "2"
    assert msgspec.json.decode(first["ClientContext"]) == EVENT
    assert msgspec.json.decode(second["ClientContext"]) == {
        "EventType": "EditMediaTask",
        "Note": "视频",
    }
    headers = scf_api.headers[0]
    assert headers["X-TC-Action"] == "Invoke"
    assert headers["X-TC-Version"] == "2018-04-16"
    assert headers["X-TC-Region"] == "ap-guangzhou"
    assert headers["X-TC-Token"] == TOKEN
    assert headers["X-TC-Timestamp"] == str(int(NOW))


async def test_a_wrong_key_is_refused_permanently(scf_api: ScfApi) -> None:
    sink = _sink(scf_api, credentials=Credential(SECRET_ID, "not-the-key"))
    with pytest.raises(SinkError, match=r"AuthFailure\.SignatureFailure") as caught:
        await send_once(sink, [EVENT])
    assert not caught.value.transient


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        ("RequestLimitExceeded", True),
        ("RequestLimitExceeded.UinLimitExceeded", True),
        ("InternalError", True),
        ("InternalError.System", True),
        ("AuthFailure.SecretIdNotFound", False),
        ("InvalidParameterValue.ClientContext", False),
        ("ResourceNotFound.Function", False),
    ],
)
async def test_api_error_codes_map_to_transient_or_permanent(
    scf_api: ScfApi, code: str, transient: bool
) -> None:
    scf_api.replies = [(200, {"Response": {"Error": {"Code": code}, "RequestId": "r-1"}})]
    with pytest.raises(SinkError, match=re.escape(code)) as caught:
        await send_once(_sink(scf_api), [EVENT])
    assert caught.value.transient is transient


@pytest.mark.parametrize(("status", "transient"), [(502, True), (429, True), (403, False)])
async def test_http_errors_map_to_transient_or_permanent(
    scf_api: ScfApi, status: int, transient: bool
) -> None:
    scf_api.replies = [(status, {})]
    with pytest.raises(SinkError, match=f"HTTP {status}") as caught:
        await send_once(_sink(scf_api), [EVENT])
    assert caught.value.transient is transient


async def test_throttling_is_retried_by_the_channel(scf_api: ScfApi) -> None:
    limited = {"Response": {"Error": {"Code": "RequestLimitExceeded"}, "RequestId": "r"}}
    scf_api.replies = [(200, limited)]
    clock = FakeClock()
    async with SinkChannel(_sink(scf_api), max_delay=0, clock=clock) as channel:
        await (await channel.submit(EVENT)).wait()
    assert len(scf_api.invocations) == 2
    assert len(clock.sleeps) == 1


async def test_oversized_record_is_rejected_by_default(scf_api: ScfApi) -> None:
    with pytest.raises(SinkError, match="over the 131072-byte limit") as caught:
        await send_once(_sink(scf_api), [EVENT, _big_event()])
    assert not caught.value.transient
    assert scf_api.invocations == []  # nothing of the batch was invoked


def _offloader(s3_bucket: S3Bucket) -> S3Sink:
    """An S3 sink on the moto server, as the SCF sink's overflow store."""
    server = s3_bucket.server
    return S3Sink(
        s3_bucket.name,
        prefix="overflow",
        endpoint_url=server.endpoint_url,
        region=server.region,
        credentials=Credential(server.access_key, server.secret_key),
        addressing_style="path",
        clock=FakeClock(start=NOW),
    )


async def test_oversized_record_is_offloaded_to_cos(scf_api: ScfApi, s3_bucket: S3Bucket) -> None:
    offloader = _offloader(s3_bucket)
    big = _big_event()
    await send_once(_sink(scf_api, overflow=offloader), [big, EVENT])
    key = "overflow/2023-11-14/1250000000-WorkflowTask-f00dt0-FINISH.json"
    assert s3_bucket.object_keys() == [key]
    assert s3_bucket.read(key) == big
    reference, small = (msgspec.json.decode(c["ClientContext"]) for c in scf_api.invocations)
    assert reference == {
        "mpsflowRef": {"bucket": s3_bucket.name, "key": key, "region": s3_bucket.server.region},
        "EventType": "WorkflowTask",
        "TaskId": "1250000000-WorkflowTask-f00dt0",
        "Status": "FINISH",
    }
    assert small == EVENT


def test_overflow_must_be_reject_or_an_offloader() -> None:
    with pytest.raises(ValueError, match="overflow"):
        ScfInvokeSink("f", region="ap-guangzhou", overflow="drop")  # type: ignore[arg-type]


def test_api_host_follows_the_runtime() -> None:
    assert scf_host({}) == "scf.tencentcloudapi.com"
    assert scf_host({"TENCENTCLOUD_RUNENV": "SCF"}) == "scf.internal.tencentcloudapi.com"


async def test_credentials_come_from_the_environment_by_default(
    scf_api: ScfApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENCENTCLOUD_SECRETID", SECRET_ID)
    monkeypatch.setenv("TENCENTCLOUD_SECRETKEY", SECRET_KEY)
    monkeypatch.delenv("TENCENTCLOUD_SESSIONTOKEN", raising=False)
    await send_once(_sink(scf_api, credentials=None), [EVENT])
    assert len(scf_api.invocations) == 1
    assert "X-TC-Token" not in scf_api.headers[0]


async def test_start_fails_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TENCENTCLOUD_SECRETID", raising=False)
    monkeypatch.delenv("TENCENTCLOUD_SECRETKEY", raising=False)
    with pytest.raises(ConfigurationError, match="TENCENTCLOUD_SECRETID"):
        await ScfInvokeSink("f", region="ap-guangzhou").start()


async def test_unreachable_api_is_transient() -> None:
    sink = ScfInvokeSink(
        "f",
        region="ap-guangzhou",
        endpoint="http://127.0.0.1:1/",
        credentials=Credential(SECRET_ID, SECRET_KEY),
    )
    with pytest.raises(SinkError) as caught:
        await send_once(sink, [EVENT])
    assert caught.value.transient


async def test_keys_stay_out_of_reprs_errors_and_logs(
    scf_api: ScfApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sink = _sink(scf_api)
    await send_once(sink, [EVENT])
    scf_api.replies = [(200, {"Response": {"Error": {"Code": "InternalError"}, "RequestId": "r"}})]
    with pytest.raises(SinkError) as caught:
        await send_once(sink, [EVENT])
    for text in (repr(sink), str(caught.value), caplog.text):
        assert SECRET_KEY not in text
        assert TOKEN not in text
    assert "ScfInvokeSink('mps-fanout', region='ap-guangzhou'" in repr(sink)


# -- idempotency keys ------------------------------------------------------------------------

EFFECT = "0123456789abcdef0123456789abcdef"


async def test_keys_are_not_added_to_the_event_by_default(scf_api: ScfApi) -> None:
    sink = _sink(scf_api)
    await send_once(sink, [EVENT], [f"{EFFECT}-0"])
    assert [msgspec.json.decode(c["ClientContext"]) for c in scf_api.invocations] == [EVENT]


async def test_key_field_hands_the_key_to_the_callee(scf_api: ScfApi) -> None:
    sink = _sink(scf_api, key_field="mpsflowKey")
    await sink.start()
    try:
        await sink.send_keyed([EVENT, EVENT, [1, 2]], [f"{EFFECT}-0", None, f"{EFFECT}-1"])
        await sink.send_keyed([EVENT], [f"{EFFECT}-0"])  # a re-run: invoked again, same key
    finally:
        await sink.close()
    events = [msgspec.json.decode(c["ClientContext"]) for c in scf_api.invocations]
    assert events == [
        {**EVENT, "mpsflowKey": f"{EFFECT}-0"},
        EVENT,  # no key: unchanged
        [1, 2],  # not an object: unchanged
        {**EVENT, "mpsflowKey": f"{EFFECT}-0"},
    ]


async def test_an_offloaded_keyed_record_is_stored_once_and_referenced_with_its_key(
    scf_api: ScfApi, s3_bucket: S3Bucket
) -> None:
    offloader = _offloader(s3_bucket)
    sink = _sink(scf_api, overflow=offloader)
    big = _big_event()
    await sink.start()
    try:
        for _ in range(2):  # the first run and its re-run after a crash
            await sink.send_keyed([big], [f"{EFFECT}-0"])
    finally:
        await sink.close()
    key = f"overflow/1250000000-WorkflowTask-f00dt0/{EFFECT}-0.json"
    assert s3_bucket.object_keys() == [key]
    first, second = (msgspec.json.decode(c["ClientContext"]) for c in scf_api.invocations)
    assert first == second
    assert first["mpsflowRef"]["key"] == key
    assert first["mpsflowKey"] == f"{EFFECT}-0"
