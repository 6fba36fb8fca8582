"""CmqClient against the local server over real loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aiohttp
import anyio
import pytest

from mpsflow.clock import FakeClock
from mpsflow.devservers.cmq import CmqServer
from mpsflow.retry import RetryPolicy
from mpsflow.tencentcloud.cmq import (
    CmqAuthError,
    CmqClient,
    CmqNetworkError,
    CmqQueueNotFoundError,
    CmqReceiptHandleError,
    CmqServerError,
    CmqThrottledError,
    Credential,
    errors,
    legacy_endpoint,
    tdmq_endpoint,
)
from mpsflow.tencentcloud.cmq.errors import CmqQueueFullError, server_error
from tests.plugins.cmq_server import CmqServerFactory, SilentEndpoint

_NO_JITTER = RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=10.0, jitter=0.0)

OnFakeClock = Callable[..., AbstractAsyncContextManager[tuple[FakeClock, CmqServer, CmqClient]]]


@pytest.fixture
def on_fake_clock(cmq_server_factory: CmqServerFactory, cmq_credential: Credential) -> OnFakeClock:
    """``async with on_fake_clock(**options) as (clock, server, client)``: a server on a
    ``FakeClock`` (with any ``CmqServer`` options) and a client of it."""

    @asynccontextmanager
    async def start(**options: Any) -> AsyncIterator[tuple[FakeClock, CmqServer, CmqClient]]:
        clock = FakeClock()
        server = await cmq_server_factory(clock=clock, **options)
        async with CmqClient(server.url, cmq_credential) as client:
            yield clock, server, client

    return start


async def test_send_receive_delete_round_trip(cmq_client: CmqClient, cmq_server: CmqServer) -> None:
    body = '{"EventType":"WorkflowTask","Note":"a b&c=d 视频 +%"}'
    msg_id = await cmq_client.send("mps-notify", body)
    message = await cmq_client.receive("mps-notify", wait=0)
    assert message is not None
    assert message.msg_id == msg_id
    assert message.msg_body == body
    assert message.dequeue_count == 1
    assert message.enqueue_time <= message.first_dequeue_time < message.next_visible_time
    assert cmq_server.queue("mps-notify").inflight_count() == 1
    await cmq_client.delete("mps-notify", message.receipt_handle)
    assert len(cmq_server.queue("mps-notify")) == 0


async def test_bytes_bodies_are_sent_as_text(cmq_client: CmqClient) -> None:
    await cmq_client.send("q", '{"k": "é"}'.encode())
    message = await cmq_client.receive("q", 0)
    assert message is not None
    assert message.msg_body == '{"k": "é"}'
    with pytest.raises(ValueError, match=r"^a CMQ message body must be UTF-8 text$"):
        await cmq_client.send("q", b"\xff\xfe")


async def test_empty_queue_gives_none_and_empty_list(cmq_client: CmqClient) -> None:
    assert await cmq_client.receive("empty", wait=0) is None
    assert await cmq_client.batch_receive("empty", 16, wait=0) == []


async def test_batch_send_receive_delete(cmq_client: CmqClient, cmq_server: CmqServer) -> None:
    bodies = [f'{{"n":{i}}}' for i in range(16)]
    ids = await cmq_client.batch_send("batch", bodies)
    assert len(set(ids)) == 16
    received = await cmq_client.batch_receive("batch", 10, 0)
    assert [m.msg_body for m in received] == bodies[:10]
    assert [m.msg_id for m in received] == ids[:10]
    rest = await cmq_client.batch_receive("batch", 16, 0)
    assert len(rest) == 6
    failures = await cmq_client.batch_delete("batch", [m.receipt_handle for m in received + rest])
    assert failures == []
    assert len(cmq_server.queue("batch")) == 0
    assert await cmq_client.batch_delete("batch", []) == []


async def test_batch_delete_reports_each_failed_handle(cmq_client: CmqClient) -> None:
    await cmq_client.batch_send("bd", ["a", "b"])
    first, second = await cmq_client.batch_receive("bd", 2, 0)
    await cmq_client.delete("bd", first.receipt_handle)
    failures = await cmq_client.batch_delete("bd", [first.receipt_handle, second.receipt_handle])
    assert [(f.code, f.receipt_handle) for f in failures] == [(4430, first.receipt_handle)]
    failures = await cmq_client.batch_delete("bd", ["nope-1", "nope-2"])
    assert [f.receipt_handle for f in failures] == ["nope-1", "nope-2"]
    assert {f.code for f in failures} == {4430}


async def test_long_poll_is_woken_by_a_send(cmq_client: CmqClient, cmq_server: CmqServer) -> None:
    queue = cmq_server.create_queue("wake")
    received: list[str] = []

    async def consume() -> None:
        message = await cmq_client.receive("wake", wait=30)
        assert message is not None
        received.append(message.msg_body)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            while queue.waiting_count() == 0:
                await anyio.lowlevel.checkpoint()
            await cmq_client.send("wake", "hello")
    assert received == ["hello"]
    assert queue.waiting_count() == 0


async def test_batch_long_poll_is_woken_by_a_send(
    cmq_client: CmqClient, cmq_server: CmqServer
) -> None:
    queue = cmq_server.create_queue("wake-batch")
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            results: list[int] = []

            async def consume() -> None:
                results.append(len(await cmq_client.batch_receive("wake-batch", 16, 30)))

            group.start_soon(consume)
            while queue.waiting_count() == 0:
                await anyio.lowlevel.checkpoint()
            await cmq_client.batch_send("wake-batch", ["a", "b", "c"])
    assert results == [3]


async def test_empty_long_poll_ends_after_the_wait_on_the_server_clock(
    on_fake_clock: OnFakeClock,
) -> None:
    async with on_fake_clock() as (clock, _, client):
        assert await client.receive("idle", wait=7) is None
        assert clock.sleeps == [7]
        assert await client.batch_receive("idle", 4, wait=3) == []
        assert clock.sleeps == [7, 3]


async def test_long_poll_returns_a_delayed_message_when_it_becomes_visible(
    on_fake_clock: OnFakeClock,
) -> None:
    async with on_fake_clock() as (clock, server, client):
        await client.send("later", "soon", delay_seconds=12)
        assert server.queue("later").delayed_count() == 1
        assert await client.receive("later", wait=0) is None
        message = await client.receive("later", wait=30)
        assert message is not None
        assert message.msg_body == "soon"
        assert clock.sleeps == [12]


async def test_visibility_timeout_redelivers_with_a_new_handle(on_fake_clock: OnFakeClock) -> None:
    async with on_fake_clock(visibility_timeout=30) as (clock, server, client):
        await client.send("vt", "payload")
        first = await client.receive("vt", 0)
        assert first is not None
        assert first.next_visible_time == int(clock.time()) + 30
        assert await client.receive("vt", 0) is None
        clock.advance(31)
        second = await client.receive("vt", 0)
        assert second is not None
        assert second.msg_id == first.msg_id
        assert second.dequeue_count == 2
        assert second.first_dequeue_time == first.first_dequeue_time
        assert second.receipt_handle != first.receipt_handle
        with pytest.raises(CmqReceiptHandleError) as caught:
            await client.delete("vt", first.receipt_handle)
        assert caught.value.code == 4430
        assert caught.value.request_id
        assert caught.value.request_id in str(caught.value)
        await client.delete("vt", second.receipt_handle)
        assert len(server.queue("vt")) == 0


async def test_handle_expires_at_next_visible_time(on_fake_clock: OnFakeClock) -> None:
    async with on_fake_clock() as (clock, server, client):
        server.create_queue("short", visibility_timeout=5)
        await client.send("short", "x")
        message = await client.receive("short", 0)
        assert message is not None
        clock.advance(5)
        with pytest.raises(CmqReceiptHandleError):
            await client.delete("short", message.receipt_handle)
        assert server.queue("short").visible_count() == 1


async def test_retries_throttling_with_backoff_on_the_clock(
    cmq_server: CmqServer, cmq_credential: Credential
) -> None:
    clock = FakeClock()
    async with CmqClient(cmq_server.url, cmq_credential, clock=clock, retry=_NO_JITTER) as client:
        cmq_server.throttle(2)
        await client.send("throttled", "x")
        assert clock.sleeps == [0.5, 1.0]
        cmq_server.throttle(10)
        with pytest.raises(CmqThrottledError) as caught:
            await client.receive("throttled", 0)
        assert caught.value.code == 4420
        assert clock.sleeps == [0.5, 1.0, 0.5, 1.0, 2.0]
    assert len(cmq_server.queue("throttled")) == 1


async def test_never_retries_an_authentication_failure(cmq_server: CmqServer) -> None:
    clock = FakeClock()
    wrong = Credential("AKIDmpsflowTESTKEY0000000000000001", "not-the-key")
    async with CmqClient(cmq_server.url, wrong, clock=clock, retry=_NO_JITTER) as client:
        with pytest.raises(CmqAuthError) as caught:
            await client.send("q", "x")
    assert caught.value.code == 4100
    assert caught.value.retryable is False
    assert clock.sleeps == []
    assert "not-the-key" not in str(caught.value)


async def test_a_full_queue_raises_queue_full_at_once_without_retrying(
    cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    server = await cmq_server_factory(queues=["full"], max_msg_heap_num=2)
    clock = FakeClock()
    async with CmqClient(server.url, cmq_credential, clock=clock, retry=_NO_JITTER) as client:
        await client.batch_send("full", ["a", "b"])
        with pytest.raises(CmqQueueFullError) as single:
            await client.send("full", "c")
        with pytest.raises(CmqQueueFullError) as batch:
            await client.batch_send("full", ["c"])
    for caught in (single.value, batch.value):
        assert isinstance(caught, CmqServerError)
        assert caught.code == 4410
        assert caught.retryable is False
        assert caught.request_id
    assert clock.sleeps == []  # no backoff: the queue stays full until someone deletes
    assert len(server.queue("full")) == 2


def test_code_4410_is_the_queue_full_error() -> None:
    error = server_error("SendMessage", 4410, "queue full", "req-1")
    assert type(error) is CmqQueueFullError
    assert error.retryable is False
    assert errors.CODE_QUEUE_FULL == 4410
    assert {"CODE_QUEUE_FULL", "CmqQueueFullError"} <= set(errors.__all__)


async def test_retries_connection_refused_until_the_server_is_back(
    cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    server = await cmq_server_factory()
    port = server.port
    url = server.url
    await server.stop()

    class RestartingClock(FakeClock):
        async def sleep(self, seconds: float) -> None:
            await super().sleep(seconds)
            if len(self.sleeps) == 2:
                await server.start("127.0.0.1", port)

    clock = RestartingClock()
    async with CmqClient(url, cmq_credential, clock=clock, retry=_NO_JITTER) as client:
        msg_id = await client.send("back", "x")
    assert clock.sleeps == [0.5, 1.0]
    assert msg_id
    assert len(server.queue("back")) == 1


async def test_gives_up_on_network_errors_after_the_last_attempt(
    cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    server = await cmq_server_factory()
    url = server.url
    await server.stop()
    clock = FakeClock()
    retry = RetryPolicy(max_attempts=3, base_delay=0.1, jitter=0.0)
    async with CmqClient(url, cmq_credential, clock=clock, retry=retry) as client:
        with pytest.raises(CmqNetworkError) as caught:
            await client.send("q", "x")
    assert caught.value.retryable
    assert caught.value.status is None
    assert caught.value.unreachable == "connection refused"
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    # Host and port in our words, not aiohttp's connection key ("ssl:default").
    assert str(caught.value) == f"SendMessage: cannot connect to {host}:{port} (connection refused)"
    assert clock.sleeps == [0.1, 0.2]


async def test_without_retry_timeouts_a_silent_endpoint_is_asked_once_and_answers_are_retried(
    silent_cmq: SilentEndpoint, cmq_server: CmqServer, cmq_credential: Credential
) -> None:
    clock = FakeClock()
    options: dict[str, Any] = {"clock": clock, "retry": _NO_JITTER, "retry_timeouts": False}
    async with CmqClient(silent_cmq.url, cmq_credential, request_timeout=0.2, **options) as client:
        with pytest.raises(CmqNetworkError) as caught:
            await client.send("q", "x")
    assert caught.value.timed_out
    assert silent_cmq.connections() == 1
    assert clock.sleeps == []
    async with CmqClient(cmq_server.url, cmq_credential, **options) as client:
        cmq_server.throttle(2)  # an answer that says "later" is still tried again
        await client.send("throttled", "x")
    assert clock.sleeps == [0.5, 1.0]


@pytest.mark.parametrize("batch", [False, True])
async def test_a_receive_may_give_up_after_one_timeout_while_the_client_retries_others(
    silent_cmq: SilentEndpoint, cmq_credential: Credential, batch: bool
) -> None:
    """The switch is per call: the client shared by a consumer's first receive (asked once)
    and its later long polls (retried) keeps its own setting."""
    clock = FakeClock()
    options: dict[str, Any] = {"clock": clock, "retry": _NO_JITTER, "poll_timeout_margin": 0.2}
    async with CmqClient(silent_cmq.url, cmq_credential, **options) as client:
        once = (
            client.batch_receive("q", 16, 0, retry_timeouts=False)
            if batch
            else client.receive("q", 0, retry_timeouts=False)
        )
        with pytest.raises(CmqNetworkError) as caught:
            await once
        assert caught.value.timed_out
        assert silent_cmq.connections() == 1
        assert clock.sleeps == []
        with pytest.raises(CmqNetworkError):
            await client.batch_receive("q", 16, 0)  # the client's own setting: retried
    assert silent_cmq.connections() == 4
    assert clock.sleeps == [0.5, 1.0, 2.0]


async def test_a_silent_endpoint_is_retried_by_default(
    silent_cmq: SilentEndpoint, cmq_credential: Credential
) -> None:
    clock = FakeClock()
    retry = RetryPolicy(max_attempts=2, base_delay=0.1, jitter=0.0)
    async with CmqClient(
        silent_cmq.url, cmq_credential, request_timeout=0.2, clock=clock, retry=retry
    ) as client:
        with pytest.raises(CmqNetworkError) as caught:
            await client.send("q", "x")
    assert caught.value.timed_out
    assert silent_cmq.connections() == 2
    assert clock.sleeps == [0.1]


async def test_an_https_address_of_a_plain_http_server_says_so(
    cmq_server: CmqServer, cmq_credential: Credential
) -> None:
    retry = RetryPolicy(max_attempts=1)
    url = cmq_server.url.replace("http://", "https://")
    async with CmqClient(url, cmq_credential, retry=retry) as client:
        with pytest.raises(CmqNetworkError) as caught:
            await client.send("q", "x")
    assert caught.value.unreachable == "it answers plain HTTP, not TLS: use an http:// address"


@pytest.mark.parametrize("http_method", ["GET", "POST"])
@pytest.mark.parametrize("signature_method", ["HmacSHA1", "HmacSHA256"])
async def test_both_http_and_signature_methods_are_accepted(
    cmq_server: CmqServer, cmq_credential: Credential, http_method: str, signature_method: str
) -> None:
    async with CmqClient(
        cmq_server.url,
        cmq_credential,
        http_method=http_method,
        signature_method=signature_method,  # type: ignore[arg-type]
    ) as client:
        await client.batch_send("methods", ["a b", "c&d=e", "@f", "视频"])
        received = await client.batch_receive("methods", 16, 0)
        assert sorted(m.msg_body for m in received) == sorted(["a b", "c&d=e", "@f", "视频"])
        assert await client.batch_delete("methods", [m.receipt_handle for m in received]) == []


async def test_unknown_queue_raises_when_the_server_does_not_create_it(
    cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    server = await cmq_server_factory(auto_create=False, queues=["known"])
    async with CmqClient(server.url, cmq_credential) as client:
        await client.send("known", "x")
        with pytest.raises(CmqQueueNotFoundError) as caught:
            await client.send("unknown", "x")
    assert caught.value.code == 4440
    assert caught.value.action == "SendMessage"


async def test_a_non_cmq_answer_is_a_network_error(cmq_server: CmqServer) -> None:
    client = CmqClient(cmq_server.url, Credential("a", "b"), path="/elsewhere")
    async with client:
        with pytest.raises(CmqNetworkError) as caught:
            await client.send("q", "x")
    assert caught.value.status == 404
    assert caught.value.retryable is False


async def test_uses_a_shared_session_without_closing_it(
    cmq_server: CmqServer, cmq_credential: Credential
) -> None:
    async with aiohttp.ClientSession() as session:
        async with CmqClient(cmq_server.url, cmq_credential, session=session) as client:
            await client.send("shared", "x")
        assert not session.closed
        second = CmqClient(cmq_server.url, cmq_credential, session=session)
        assert await second.receive("shared", 0) is not None
        await second.aclose()
        assert not session.closed


async def test_rejects_bad_arguments_before_sending(cmq_client: CmqClient) -> None:
    with pytest.raises(ValueError, match="1 to 16"):
        await cmq_client.batch_send("q", ["x"] * 17)
    with pytest.raises(ValueError, match="1 to 16"):
        await cmq_client.batch_receive("q", 0)
    with pytest.raises(ValueError, match="between 0 and 30"):
        await cmq_client.receive("q", wait=31)
    with pytest.raises(ValueError, match="1 to 16"):
        await cmq_client.batch_delete("q", ["h"] * 17)


def test_endpoints_and_urls() -> None:
    assert tdmq_endpoint("gz") == "https://cmq-gz.public.tencenttdmq.com"
    assert tdmq_endpoint("sh", private=True) == "http://sh.mqadapter.cmq.tencentyun.com"
    assert legacy_endpoint("bj") == "https://cmq-queue-bj.api.qcloud.com"
    assert legacy_endpoint("bj", private=True) == "http://cmq-queue-bj.api.tencentyun.com"
    credential = Credential("id", "very-secret")
    client = CmqClient("https://cmq-gz.public.tencenttdmq.com:9443/", credential)
    assert client.url == "https://cmq-gz.public.tencenttdmq.com:9443/v2/index.php"
    assert "very-secret" not in repr(client)
    assert CmqClient("http://h/custom", credential).url == "http://h/custom"
    with pytest.raises(ValueError, match="endpoint"):
        CmqClient("cmq-gz.public.tencenttdmq.com", credential)
    with pytest.raises(ValueError, match="GET or POST"):
        CmqClient("http://h", credential, http_method="PUT")
