"""CmqSink against the local server: encoding, chunking and error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest

from mpsflow.clock import FakeClock
from mpsflow.devservers.cmq import CmqServer
from mpsflow.errors import SinkError
from mpsflow.retry import RetryPolicy
from mpsflow.sinks.base import Sink
from mpsflow.sinks.cmq import CmqSink
from mpsflow.tencentcloud.cmq import CmqClient, Credential
from tests.plugins.cmq_server import CmqServerFactory
from tests.sinks.peers import CountingCmqClient


class _Task(msgspec.Struct):
    task_id: str
    status: str


@pytest.fixture
async def client(
    cmq_server: CmqServer, cmq_credential: Credential
) -> AsyncIterator[CountingCmqClient]:
    async with CountingCmqClient(cmq_server.url, cmq_credential) as counting:
        yield counting


async def _drain(client: CmqClient, queue: str) -> list[str]:
    bodies: list[str] = []
    while batch := await client.batch_receive(queue, 16, 0):
        bodies += [m.msg_body for m in batch]
        assert await client.batch_delete(queue, [m.receipt_handle for m in batch]) == []
    return bodies


async def test_records_become_json_message_bodies(client: CountingCmqClient) -> None:
    sink = CmqSink(client, "out")
    assert isinstance(sink, Sink)
    await sink.start()
    await sink.send([b'{"raw":true}', {"a": 1}, _Task("t-1", "FINISH"), ["x", "视频"]])
    await sink.close()
    assert await _drain(client, "out") == [
        '{"raw":true}',
        '{"a":1}',
        '{"task_id":"t-1","status":"FINISH"}',
        '["x","视频"]',
    ]
    assert client.batches == [4]


async def test_batches_are_cut_at_16_messages_and_64_kb(client: CountingCmqClient) -> None:
    sink = CmqSink(client, "chunks")
    await sink.send([{"n": i} for i in range(40)])
    assert client.batches == [16, 16, 8]
    assert await _drain(client, "chunks") == [f'{{"n":{i}}}' for i in range(40)]
    client.batches.clear()
    await sink.send([bytes([65 + i]) * 20000 for i in range(5)])
    assert client.batches == [3, 2]
    assert [len(b) for b in await _drain(client, "chunks")] == [20000] * 5


async def test_custom_encoder(client: CountingCmqClient) -> None:
    sink = CmqSink(client, "custom", encoder=lambda record: f"<{record}>".encode())
    await sink.send(["a", 1])
    assert await _drain(client, "custom") == ["<a>", "<1>"]


@pytest.mark.parametrize(
    "bad",
    [b"x" * 65537, b"\xff\xfe", b"", object()],
    ids=["too-large", "not-utf8", "empty", "not-encodable"],
)
async def test_a_record_that_can_never_be_sent_fails_permanently_before_sending(
    client: CountingCmqClient, cmq_server: CmqServer, bad: object
) -> None:
    sink = CmqSink(client, "perm")
    with pytest.raises(SinkError) as caught:
        await sink.send([{"ok": 1}, bad])
    assert caught.value.transient is False
    assert client.batches == []
    assert "perm" not in cmq_server.queue_names


async def test_server_refusals_are_permanent(
    cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    server = await cmq_server_factory(auto_create=False, max_msg_size=1024, queues=["small"])
    async with CmqClient(server.url, cmq_credential) as client:
        with pytest.raises(SinkError) as missing:
            await CmqSink(client, "absent").send([{"a": 1}])
        assert missing.value.transient is False
        assert "4440" in str(missing.value)
        with pytest.raises(SinkError) as too_big:
            await CmqSink(client, "small").send([b"x" * 2000])
        assert too_big.value.transient is False
        assert "4400" in str(too_big.value)


async def test_throttling_and_network_failures_are_transient(
    cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    server = await cmq_server_factory()
    retry = RetryPolicy(max_attempts=2, base_delay=0.1, jitter=0.0)
    async with CmqClient(server.url, cmq_credential, clock=FakeClock(), retry=retry) as client:
        sink = CmqSink(client, "busy")
        server.throttle(2)
        with pytest.raises(SinkError) as throttled:
            await sink.send([{"a": 1}])
        assert throttled.value.transient is True
        await sink.send([{"a": 2}])
        await server.stop()
        with pytest.raises(SinkError) as down:
            await sink.send([{"a": 3}])
        assert down.value.transient is True
    assert len(server.queue("busy")) == 1


async def test_a_full_queue_is_transient(
    cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    """It drains as consumers delete: the sink's retries may get through later."""
    server = await cmq_server_factory()
    server.create_queue("full", max_msg_heap_num=1)
    async with CmqClient(server.url, cmq_credential) as client:
        sink = CmqSink(client, "full")
        await sink.send([{"a": 1}])
        with pytest.raises(SinkError) as full:
            await sink.send([{"a": 2}])
        assert full.value.transient is True
        [message] = await client.batch_receive("full", 1, 0)
        await client.delete("full", message.receipt_handle)
        await sink.send([{"a": 2}])
    assert len(server.queue("full")) == 1


async def test_close_closes_the_client_only_when_told_to(
    cmq_server: CmqServer, cmq_credential: Credential
) -> None:
    client = CountingCmqClient(cmq_server.url, cmq_credential)
    shared = CmqSink(client, "q")
    await shared.send([{"a": 1}])
    await shared.close()
    assert client.closes == 0
    await client.send("q", "still usable")
    owning = CmqSink(client, "q", close_client=True)
    await owning.close()
    assert client.closes == 1
    assert repr(owning) == f"CmqSink({client!r}, 'q')"
    assert len(cmq_server.queue("q")) == 2
