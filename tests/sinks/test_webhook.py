"""WebhookSink against a real aiohttp server on loopback: bodies, signatures, error mapping."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
import anyio
import pytest

from mpsflow.clock import FakeClock
from mpsflow.errors import SinkError
from mpsflow.sinks.channel import SinkChannel
from mpsflow.sinks.webhook import (
    WebhookSink,
    batch_idempotency_key,
    redact_url,
    sign_body,
    verify_signature,
)
from tests.sinks.peers import WebhookPeer, send_once

SECRET = "webhook-shared-secret-42"
ROBOT_KEY = "robot-key-3f1c9a77"


@pytest.fixture
async def peer() -> AsyncIterator[WebhookPeer]:
    async with WebhookPeer().running() as state:
        yield state


async def test_one_signed_post_per_record(peer: WebhookPeer) -> None:
    clock = FakeClock(start=1_700_000_123.0)
    sink = WebhookSink(f"{peer.url}/hook", secret=SECRET, clock=clock)
    await send_once(sink, [{"TaskId": "t1"}, b'{"TaskId": "t2"}'])
    assert [seen.body for seen in peer.requests] == [b'{"TaskId":"t1"}', b'{"TaskId": "t2"}']
    for seen in peer.requests:
        assert seen.path == "/hook"
        assert seen.headers["Content-Type"] == "application/json"
        assert seen.headers["X-Mpsflow-Timestamp"] == "1700000123"
        assert seen.headers["X-Mpsflow-Signature"] == sign_body(SECRET, 1_700_000_123, seen.body)
        assert verify_signature(
            SECRET,
            seen.body,
            signature=seen.headers["X-Mpsflow-Signature"],
            timestamp=seen.headers["X-Mpsflow-Timestamp"],
            now=1_700_000_200.0,
        )


def test_verify_signature_refuses_tampering_replays_and_junk() -> None:
    body = b'{"a":1}'
    good = sign_body(SECRET, 1000, body)
    assert good.startswith("sha256=")
    assert len(good) == len("sha256=") + 64
    assert verify_signature(SECRET, body, signature=good, timestamp="1000", now=1100)
    assert not verify_signature(SECRET, b'{"a":2}', signature=good, timestamp="1000", now=1100)
    assert not verify_signature("other", body, signature=good, timestamp="1000", now=1100)
    assert not verify_signature(SECRET, body, signature=good, timestamp="1001", now=1100)
    assert not verify_signature(SECRET, body, signature=good, timestamp="1000", now=2000)
    assert not verify_signature(SECRET, body, signature=good, timestamp="soon", now=1100)


async def test_template_custom_headers_and_batch_body(peer: WebhookPeer) -> None:
    sink = WebhookSink(
        peer.url,
        template=lambda record: {"wrapped": record},
        headers={"X-Env": "test"},
        batch_body=True,
    )
    await send_once(sink, [{"n": 1}, {"n": 2}])
    assert len(peer.requests) == 1
    assert peer.requests[0].body == b'[{"wrapped":{"n":1}},{"wrapped":{"n":2}}]'
    assert peer.requests[0].headers["X-Env"] == "test"
    assert "X-Mpsflow-Signature" not in peer.requests[0].headers


@pytest.mark.parametrize(
    ("status", "transient"), [(500, True), (503, True), (429, True), (408, True), (404, False)]
)
async def test_status_codes_map_to_transient_or_permanent(
    peer: WebhookPeer, status: int, transient: bool
) -> None:
    peer.replies = [(status, b"{}")]
    with pytest.raises(SinkError, match=f"answered {status}") as caught:
        await send_once(WebhookSink(peer.url), [{"n": 1}])
    assert caught.value.transient is transient


async def test_redirects_are_not_followed(peer: WebhookPeer) -> None:
    peer.replies = [(302, b"")]
    with pytest.raises(SinkError, match="answered 302") as caught:
        await send_once(WebhookSink(peer.url), [{"n": 1}])
    assert not caught.value.transient
    assert len(peer.requests) == 1


async def test_connection_refused_is_transient(peer: WebhookPeer) -> None:
    dead = WebhookSink("http://127.0.0.1:1/hook")
    with pytest.raises(SinkError, match="cannot connect") as caught:
        await send_once(dead, [{"n": 1}])
    assert caught.value.transient


async def test_timeout_is_transient(peer: WebhookPeer) -> None:
    peer.hold = anyio.Event()
    with pytest.raises(SinkError, match="timed out") as caught:
        await send_once(WebhookSink(peer.url, timeout=0.2), [{"n": 1}])
    assert caught.value.transient


async def test_a_template_error_is_permanent(peer: WebhookPeer) -> None:
    def broken(record: object) -> object:
        raise KeyError("TaskId")

    with pytest.raises(SinkError, match="record 0") as caught:
        await send_once(WebhookSink(peer.url, template=broken), [{}])
    assert not caught.value.transient
    assert peer.requests == []


async def test_shared_session_is_left_open(peer: WebhookPeer) -> None:
    async with aiohttp.ClientSession() as session:
        await send_once(WebhookSink(peer.url, session=session), [{"n": 1}])
        assert not session.closed
    assert len(peer.requests) == 1


async def test_rate_limit_spaces_requests_on_the_clock(peer: WebhookPeer) -> None:
    clock = FakeClock()
    await send_once(WebhookSink(peer.url, rate_limit=(2, 60.0), clock=clock), [1, 2, 3, 4, 5])
    assert len(peer.requests) == 5
    assert clock.sleeps == [60.0, 60.0]


async def test_secrets_stay_out_of_logs_errors_and_reprs(
    peer: WebhookPeer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"{peer.url}/cgi-bin/webhook/send?key={ROBOT_KEY}"
    sink = WebhookSink(url, secret=SECRET, headers={"Authorization": "Bearer " + SECRET})
    peer.replies = [(500, b"{}"), (400, b"{}")]
    errors: list[str] = []
    for _ in range(2):
        with pytest.raises(SinkError) as caught:
            await send_once(sink, [{"n": 1}])
        errors.append(str(caught.value))
    dead = WebhookSink(f"http://127.0.0.1:1/send?key={ROBOT_KEY}", secret=SECRET)
    with pytest.raises(SinkError) as refused:
        await send_once(dead, [{"n": 1}])
    errors.append(str(refused.value))
    assert peer.requests[0].query == {"key": ROBOT_KEY}  # the real key was used on the wire
    shown = [caplog.text, repr(sink), repr(dead), *errors]
    for text in shown:
        assert ROBOT_KEY not in text
        assert SECRET not in text
    assert "key=***" in repr(sink)
    assert "secret=<hidden>" in repr(sink)
    assert refused.value.__cause__ is None
    assert refused.value.__suppress_context__


def test_redact_url_masks_query_values_and_user_info() -> None:
    assert (
        redact_url("https://user:pw@qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc&debug=1")
        == "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=***&debug=***"
    )
    assert redact_url("http://127.0.0.1:8080/hook") == "http://127.0.0.1:8080/hook"


async def test_through_a_channel_a_5xx_is_retried_until_accepted(peer: WebhookPeer) -> None:
    peer.replies = [(502, b"{}"), (503, b"{}")]
    clock = FakeClock()
    channel = SinkChannel(WebhookSink(peer.url, clock=clock), max_delay=0, clock=clock)
    async with channel:
        await (await channel.submit({"TaskId": "t9"})).wait()
    assert [seen.body for seen in peer.requests] == [b'{"TaskId":"t9"}'] * 3
    assert len(clock.sleeps) == 2


# -- idempotency keys ------------------------------------------------------------------------

KEY = "0123456789abcdef0123456789abcdef"


async def test_each_request_carries_its_records_idempotency_key(peer: WebhookPeer) -> None:
    sink = WebhookSink(f"{peer.url}/hook", secret=SECRET)
    await send_once(sink, [{"n": 0}, {"n": 1}, {"n": 2}], [f"{KEY}-0", f"{KEY}-1", None])
    assert [seen.headers.get("Idempotency-Key") for seen in peer.requests] == [
        f"{KEY}-0",
        f"{KEY}-1",
        None,  # a record submitted without a key gets no header
    ]
    # The signature still covers exactly the body.
    for seen in peer.requests:
        stamp = int(seen.headers["X-Mpsflow-Timestamp"])
        assert seen.headers["X-Mpsflow-Signature"] == sign_body(SECRET, stamp, seen.body)


async def test_a_crash_rerun_sends_the_same_idempotency_key(peer: WebhookPeer) -> None:
    # Two sink instances = two processes: the first run, and the re-run after a crash.
    for _ in range(2):
        await send_once(WebhookSink(f"{peer.url}/hook"), [{"TaskId": "t1"}], [f"{KEY}-0"])
    first, second = peer.requests
    assert first.body == second.body
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == f"{KEY}-0"


async def test_a_key_already_delivered_is_not_posted_again(peer: WebhookPeer) -> None:
    sink = WebhookSink(f"{peer.url}/hook")
    await sink.start()
    try:
        await sink.send_keyed([{"n": 0}, {"n": 0}], [f"{KEY}-0", f"{KEY}-0"])
        await sink.send_keyed([{"n": 0}, {"n": 1}], [f"{KEY}-0", f"{KEY}-1"])
        await sink.send([{"n": 9}, {"n": 9}])  # unkeyed records are always sent
    finally:
        await sink.close()
    assert [seen.body for seen in peer.requests] == [b'{"n":0}', b'{"n":1}', b'{"n":9}', b'{"n":9}']


async def test_a_half_sent_batch_retried_by_the_channel_repeats_nothing(peer: WebhookPeer) -> None:
    peer.replies = [(200, b"{}"), (503, b"busy")]  # the second record fails once
    sink = WebhookSink(f"{peer.url}/hook")
    channel = SinkChannel(sink, batch_size=2, max_delay=3600.0, backoff=(0.01, 0.01))
    async with channel:
        receipts = [await channel.submit({"n": n}, idempotency_key=f"{KEY}-{n}") for n in range(2)]
        for receipt in receipts:
            await receipt.wait()
    assert [seen.body for seen in peer.requests] == [b'{"n":0}', b'{"n":1}', b'{"n":1}']
    assert [seen.headers["Idempotency-Key"] for seen in peer.requests] == [
        f"{KEY}-0",
        f"{KEY}-1",
        f"{KEY}-1",
    ]


async def test_a_batch_body_carries_one_key_derived_from_its_records(peer: WebhookPeer) -> None:
    keys: list[str | None] = [f"{KEY}-0", None, f"{KEY}-1"]
    for _ in range(2):  # the same batch again (another process): the same key
        await send_once(WebhookSink(peer.url, batch_body=True), [1, 2, 3], keys)
    first, second = peer.requests
    assert first.body == b"[1,2,3]"
    expected = batch_idempotency_key(keys)
    assert expected is not None
    assert len(expected) == 32
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == expected
    assert batch_idempotency_key([f"{KEY}-1", None, f"{KEY}-0"]) != expected  # order matters
    assert batch_idempotency_key([None, None]) is None
    await send_once(WebhookSink(peer.url, batch_body=True), [4], [None])
    assert "Idempotency-Key" not in peer.requests[-1].headers


async def test_the_idempotency_header_can_be_renamed_or_turned_off(peer: WebhookPeer) -> None:
    await send_once(WebhookSink(peer.url, idempotency_header="X-Dedup-Key"), [1], [KEY])
    await send_once(WebhookSink(peer.url, idempotency_header=None), [2], [KEY])
    assert peer.requests[0].headers["X-Dedup-Key"] == KEY
    assert "Idempotency-Key" not in peer.requests[0].headers
    assert "Idempotency-Key" not in peer.requests[1].headers
    assert "X-Dedup-Key" not in peer.requests[1].headers


async def test_keys_unfit_for_a_header_are_sent_as_their_digest(peer: WebhookPeer) -> None:
    await send_once(WebhookSink(peer.url), [1], ["line\nbreak 视频"])
    value = peer.requests[0].headers["Idempotency-Key"]
    assert len(value) == 32
    assert all(c in "0123456789abcdef" for c in value)
