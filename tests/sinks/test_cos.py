"""S3Sink against a real moto S3 server on loopback: keys, bytes, credentials, error mapping."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator

import msgspec
import pytest
from aiohttp import web

from mpsflow.clock import FakeClock
from mpsflow.errors import ConfigurationError, SinkError
from mpsflow.sinks.channel import SinkChannel
from mpsflow.sinks.cos import S3Sink, cos_endpoint
from mpsflow.tencentcloud.cmq.credentials import Credential
from tests.plugins.moto_server import MotoServer, S3Bucket
from tests.sinks.peers import send_once, serve

# 2023-11-14T22:13:20Z
CLOCK_START = 1_700_000_000.0

RAW = (
    b'{\n  "EventType": "WorkflowTask",\n  "WorkflowTaskEvent": {\n'
    b'    "TaskId": "1250000000-WorkflowTask-abc123t0",\n    "Status": "FINISH",\n'
    b'    "MediaProcessResultSet": []\n  },\n  "SessionContext": "\xe8\xa7\x86\xe9\xa2\x91"\n}\n'
)


class _Edit(msgspec.Struct):
    """Stands in for a typed notification: exposes the identity attributes."""

    event_type: str
    task_id: str
    status: str


def _sink(bucket: S3Bucket, **options: object) -> S3Sink:
    server = bucket.server
    options.setdefault(
        "credentials", Credential(server.access_key, server.secret_key, "session-token-1")
    )
    options.setdefault("clock", FakeClock(start=CLOCK_START))
    return S3Sink(
        bucket.name,
        endpoint_url=server.endpoint_url,
        region=server.region,
        addressing_style="path",
        **options,  # type: ignore[arg-type]
    )


async def test_raw_notification_bytes_are_stored_as_is(s3_bucket: S3Bucket) -> None:
    await send_once(_sink(s3_bucket), [RAW])
    key = "mps/2023-11-14/1250000000-WorkflowTask-abc123t0-FINISH.json"
    assert s3_bucket.object_keys() == [key]
    assert s3_bucket.read(key) == RAW
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=key)
    assert head["ContentType"] == "application/json"


async def test_objects_are_encoded_and_named_from_their_fields(s3_bucket: S3Bucket) -> None:
    records: list[object] = [
        {"EventType": "EditMediaTask", "EditMediaTaskEvent": {"TaskId": "e/1", "Status": "FINISH"}},
        _Edit("ScheduleTask", "s-1", "PROCESSING"),
        {"NotificationType": "ProcessEof", "TaskId": "live-1"},
        {"something": "else"},
    ]
    await send_once(_sink(s3_bucket, prefix="/archive/"), records)
    assert s3_bucket.object_keys() == [
        "archive/2023-11-14/e_1-FINISH.json",
        "archive/2023-11-14/live-1-unknown.json",
        "archive/2023-11-14/s-1-PROCESSING.json",
        "archive/2023-11-14/unknown-unknown.json",
    ]
    stored = msgspec.json.decode(s3_bucket.read("archive/2023-11-14/s-1-PROCESSING.json"))
    assert stored == {"event_type": "ScheduleTask", "task_id": "s-1", "status": "PROCESSING"}


async def test_custom_key_template(s3_bucket: S3Bucket) -> None:
    sink = _sink(s3_bucket, key_template="{event_type}/{date}/{time}-{digest}.json", prefix="")
    await send_once(sink, [RAW])
    (key,) = s3_bucket.object_keys()
    assert key.startswith("WorkflowTask/2023-11-14/221320-")
    assert len(key.rsplit("-", 1)[1]) == len("0123456789abcdef.json")


def test_key_template_fields_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="key_template"):
        S3Sink("b", key_template="{prefix}/{bucket}.json")
    with pytest.raises(ConfigurationError, match="key_template"):
        S3Sink("b", key_template="constant.json")


async def test_a_redelivery_overwrites_the_same_object(s3_bucket: S3Bucket) -> None:
    sink = _sink(s3_bucket)
    await send_once(sink, [RAW, RAW])
    await send_once(sink, [RAW])
    assert len(s3_bucket.object_keys()) == 1


async def test_credentials_from_the_scf_environment(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENCENTCLOUD_SECRETID", "AKIDfromEnvironment")
    monkeypatch.setenv("TENCENTCLOUD_SECRETKEY", "secret-from-environment")
    monkeypatch.setenv("TENCENTCLOUD_SESSIONTOKEN", "token-from-environment")
    await send_once(_sink(s3_bucket, credentials=None), [RAW])
    assert len(s3_bucket.object_keys()) == 1


async def test_missing_bucket_is_permanent(moto_server: MotoServer) -> None:
    sink = S3Sink(
        "no-such-bucket",
        endpoint_url=moto_server.endpoint_url,
        region=moto_server.region,
        credentials=Credential(moto_server.access_key, moto_server.secret_key),
        addressing_style="path",
    )
    with pytest.raises(SinkError, match="NoSuchBucket") as caught:
        await send_once(sink, [RAW])
    assert not caught.value.transient


async def test_unreachable_endpoint_is_transient() -> None:
    sink = S3Sink(
        "bucket",
        endpoint_url="http://127.0.0.1:1",
        region="us-east-1",
        credentials=Credential("id", "key"),
        timeout=2.0,
    )
    with pytest.raises(SinkError) as caught:
        await send_once(sink, [RAW])
    assert caught.value.transient


@pytest.fixture
async def throttling_s3() -> AsyncIterator[str]:
    """An S3-compatible endpoint that answers every request with 503 SlowDown."""

    async def slow_down(request: web.Request) -> web.Response:
        await request.read()
        body = b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"
        return web.Response(status=503, body=body, content_type="application/xml")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", slow_down)
    async with serve(app) as url:
        yield url


async def test_throttling_is_transient_and_retried_by_the_channel(throttling_s3: str) -> None:
    clock = FakeClock()
    sink = S3Sink(
        "bucket",
        endpoint_url=throttling_s3,
        region="us-east-1",
        credentials=Credential("id", "key"),
        addressing_style="path",
    )
    async with SinkChannel(sink, max_delay=0, max_attempts=3, clock=clock) as channel:
        receipt = await channel.submit(RAW)
        with pytest.raises(SinkError, match="SlowDown") as caught:
            await receipt.wait()
    assert caught.value.transient
    assert len(clock.sleeps) == 2


async def test_keys_stay_out_of_reprs_errors_and_logs(
    s3_bucket: S3Bucket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mpsflow")
    secret = "very-secret-s3-key"
    sink = _sink(s3_bucket, credentials=Credential("AKIDvisible", secret, "tok-secret"))
    await send_once(sink, [RAW])
    missing = S3Sink(
        "no-such-bucket",
        endpoint_url=s3_bucket.server.endpoint_url,
        credentials=Credential("AKIDvisible", secret),
        region="us-east-1",
        addressing_style="path",
    )
    with pytest.raises(SinkError) as caught:
        await send_once(missing, [RAW])
    for text in (repr(sink), repr(missing), str(caught.value), caplog.text):
        assert secret not in text
        assert "tok-secret" not in text


def test_cos_endpoint_and_for_cos() -> None:
    assert cos_endpoint("ap-guangzhou") == "https://cos.ap-guangzhou.myqcloud.com"
    sink = S3Sink.for_cos("media-1250000000", region="ap-shanghai", prefix="notes")
    assert sink.endpoint_url == "https://cos.ap-shanghai.myqcloud.com"
    assert sink.addressing_style == "virtual"
    assert sink.region == "ap-shanghai"
    assert repr(sink) == (
        "S3Sink('media-1250000000', prefix='notes', "
        "endpoint_url='https://cos.ap-shanghai.myqcloud.com')"
    )


async def test_without_aiobotocore_start_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("aiobotocore", "aiobotocore.session"):
        monkeypatch.setitem(sys.modules, name, None)  # as if the cos extra were not installed
    sink = S3Sink("bucket")  # building the app works; starting it says what is missing
    with pytest.raises(ConfigurationError) as caught:
        await sink.start()
    assert str(caught.value) == (
        "S3Sink needs the cos extra (aiobotocore): pip install 'mpsflow[cos]'"
    )


async def test_send_before_start_is_transient() -> None:
    with pytest.raises(SinkError, match="not started") as caught:
        await S3Sink("bucket").send([RAW])
    assert caught.value.transient


# -- idempotency keys ------------------------------------------------------------------------

EFFECT = "0123456789abcdef0123456789abcdef"


async def test_keyed_records_get_deterministic_object_keys(s3_bucket: S3Bucket) -> None:
    await send_once(
        _sink(s3_bucket),
        [RAW, RAW, {"something": "else"}],
        [f"{EFFECT}-0", f"{EFFECT}-1", f"{EFFECT}-2"],
    )
    task = "1250000000-WorkflowTask-abc123t0"
    assert s3_bucket.object_keys() == [
        f"mps/{task}/{EFFECT}-0.json",
        f"mps/{task}/{EFFECT}-1.json",
        f"mps/unknown/{EFFECT}-2.json",
    ]
    assert s3_bucket.read(f"mps/{task}/{EFFECT}-0.json") == RAW


async def test_a_crash_rerun_overwrites_its_object_instead_of_adding_one(
    s3_bucket: S3Bucket,
) -> None:
    first = _sink(s3_bucket)
    await send_once(first, [RAW], [f"{EFFECT}-0"])
    # The re-run: another process, a day later (the date no longer names the object).
    rerun = _sink(s3_bucket, clock=FakeClock(start=CLOCK_START + 86_400))
    await send_once(rerun, [RAW], [f"{EFFECT}-0"])
    assert s3_bucket.object_keys() == [f"mps/1250000000-WorkflowTask-abc123t0/{EFFECT}-0.json"]
    # Unkeyed records keep the dated naming.
    await send_once(rerun, [RAW])
    assert "mps/2023-11-15/1250000000-WorkflowTask-abc123t0-FINISH.json" in s3_bucket.object_keys()


async def test_put_with_a_key_and_a_custom_keyed_template(s3_bucket: S3Bucket) -> None:
    sink = _sink(s3_bucket, keyed_template="{prefix}/{event_type}/{key}", prefix="out")
    await sink.start()
    try:
        ref = await sink.put(RAW, idempotency_key=f"{EFFECT}/../x")
        again = await sink.put(RAW, idempotency_key=f"{EFFECT}/../x")
    finally:
        await sink.close()
    assert ref == again
    assert ref.key == f"out/WorkflowTask/{EFFECT}_.._x"  # unsafe characters are replaced
    assert s3_bucket.object_keys() == [ref.key]


def test_keyed_template_must_use_the_key_and_no_moving_fields() -> None:
    for template in ("{prefix}/{task_id}.json", "{prefix}/{date}/{key}.json", "{key}-{digest}"):
        with pytest.raises(ConfigurationError, match="keyed_template"):
            S3Sink("b", keyed_template=template)


async def test_keyed_records_through_the_channel(s3_bucket: S3Bucket) -> None:
    sink = _sink(s3_bucket)
    async with SinkChannel(sink, max_delay=0, clock=FakeClock()) as channel:
        for _ in range(2):  # the same effect emitted twice: one object
            await (await channel.submit(RAW, idempotency_key=f"{EFFECT}-0")).wait()
        await (await channel.submit(RAW)).wait()
    assert s3_bucket.object_keys() == [
        f"mps/1250000000-WorkflowTask-abc123t0/{EFFECT}-0.json",
        "mps/2023-11-14/1250000000-WorkflowTask-abc123t0-FINISH.json",
    ]
