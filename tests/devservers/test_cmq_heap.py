"""The local CMQ server bounds its queues like CMQ's ``maxMsgHeapNum``: 4410 when full."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import pytest

from mpsflow.clock import FakeClock
from mpsflow.devservers.cmq import DEFAULT_MAX_MSG_HEAP_NUM, CmqServer, build_parser, main
from mpsflow.tencentcloud.cmq import CmqClient, Credential
from mpsflow.tencentcloud.cmq.errors import CmqQueueFullError
from mpsflow.tencentcloud.cmq.signing import DEFAULT_PATH, sign, string_to_sign
from tests.plugins.cmq_server import (
    CMQ_SECRET_ID,
    CMQ_SECRET_KEY,
    CmqServerFactory,
    CmqServerProcessFactory,
)


def test_the_default_is_cmqs_documented_default() -> None:
    assert DEFAULT_MAX_MSG_HEAP_NUM == 10_000_000
    assert build_parser().parse_args([]).max_messages == DEFAULT_MAX_MSG_HEAP_NUM


async def test_a_full_queue_refuses_sends_until_a_message_is_deleted(
    cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    server = await cmq_server_factory(clock=FakeClock(), queues=["small"], max_msg_heap_num=3)
    queue = server.queue("small")
    assert queue.max_msg_heap_num == 3
    async with CmqClient(server.url, cmq_credential) as client:
        await client.send("small", "visible")
        await client.send("small", "delayed", delay_seconds=60)
        await client.send("small", "in flight")
        taken = await client.receive("small", 0)
        assert taken is not None
        # One visible, one in flight, one delayed: all three count.
        assert (queue.visible_count(), queue.inflight_count(), queue.delayed_count()) == (1, 1, 1)
        assert queue.room() == 0
        with pytest.raises(CmqQueueFullError) as caught:
            await client.send("small", "one too many")
        assert caught.value.code == 4410
        assert caught.value.action == "SendMessage"
        with pytest.raises(CmqQueueFullError) as caught:
            await client.batch_send("small", ["a"])
        assert caught.value.action == "BatchSendMessage"
        assert len(queue) == 3

        await client.delete("small", taken.receipt_handle)
        assert queue.room() == 1
        await client.send("small", "fits again")
        assert len(queue) == 3
        with pytest.raises(CmqQueueFullError):
            await client.send("small", "full again")


async def test_a_batch_that_does_not_fit_is_refused_whole(
    cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    server = await cmq_server_factory(max_msg_heap_num=5)
    async with CmqClient(server.url, cmq_credential) as client:
        await client.batch_send("batch", ["1", "2", "3"])
        with pytest.raises(CmqQueueFullError) as caught:
            await client.batch_send("batch", ["4", "5", "6"])  # room for 2: none is sent
        assert caught.value.code == 4410
        assert len(server.queue("batch")) == 3
        assert len(await client.batch_send("batch", ["4", "5"])) == 2  # exactly fills it
        assert len(server.queue("batch")) == 5
        bodies = [m.msg_body for m in await client.batch_receive("batch", 16, 0)]
    assert bodies == ["1", "2", "3", "4", "5"]


async def test_queues_have_their_own_bound(
    cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    server = await cmq_server_factory(max_msg_heap_num=1)
    server.create_queue("roomy", max_msg_heap_num=2)
    async with CmqClient(server.url, cmq_credential) as client:
        await client.batch_send("roomy", ["a", "b"])
        await client.send("auto", "a")  # created on first use, with the server's bound
        with pytest.raises(CmqQueueFullError):
            await client.send("auto", "b")
    assert server.queue("auto").max_msg_heap_num == 1
    assert server.queue("roomy").max_msg_heap_num == 2


def test_the_bound_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="maxMsgHeapNum"):
        CmqServer({CMQ_SECRET_ID: CMQ_SECRET_KEY}, max_msg_heap_num=0)
    server = CmqServer({CMQ_SECRET_ID: CMQ_SECRET_KEY})
    with pytest.raises(ValueError, match="maxMsgHeapNum"):
        server.create_queue("q", max_msg_heap_num=0)
    assert server.queue_names == []
    assert server.create_queue("one", max_msg_heap_num=1).room() == 1


async def test_the_refusal_is_a_cmq_shaped_answer(cmq_server_factory: CmqServerFactory) -> None:
    server = await cmq_server_factory(queues=["tiny"], max_msg_heap_num=1)
    host = urlsplit(server.url).netloc
    async with aiohttp.ClientSession() as http:
        replies = []
        for body in ("first", "second"):
            form = {
                "Action": "SendMessage",
                "SecretId": CMQ_SECRET_ID,
                "Nonce": "7",
                "Timestamp": str(int(time.time())),
                "queueName": "tiny",
                "msgBody": body,
            }
            form["Signature"] = sign(
                CMQ_SECRET_KEY, string_to_sign("POST", host, DEFAULT_PATH, form)
            )
            url = f"{server.url}{DEFAULT_PATH}"
            async with http.post(url, data=urlencode(form).encode()) as reply:
                assert reply.status == 200
                replies.append(json.loads(await reply.read()))
    assert replies[0]["code"] == 0
    assert set(replies[1]) == {"code", "message", "requestId"}
    assert replies[1]["code"] == 4410
    assert "maxMsgHeapNum 1" in replies[1]["message"]
    assert replies[1]["requestId"]


async def test_the_bound_survives_a_restart_with_a_data_file(
    tmp_path: Path, cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    data = tmp_path / "cmq.json"
    first = await cmq_server_factory(data_path=data)
    first.create_queue("bounded", max_msg_heap_num=2)
    async with CmqClient(first.url, cmq_credential) as client:
        await client.send("bounded", "kept")
    await first.stop()
    [saved] = json.loads(data.read_bytes())["queues"]
    assert saved["maxMsgHeapNum"] == 2

    # The saved bound wins over the server's default for new queues.
    second = await cmq_server_factory(data_path=data, max_msg_heap_num=100)
    assert second.queue("bounded").max_msg_heap_num == 2
    async with CmqClient(second.url, cmq_credential) as client:
        await client.send("bounded", "second")
        with pytest.raises(CmqQueueFullError):
            await client.send("bounded", "third")


@pytest.mark.parametrize(("server_default", "expected"), [(None, 10_000_000), (2, 2)])
async def test_a_data_file_from_before_the_bound_loads_with_the_default(
    tmp_path: Path,
    cmq_server_factory: CmqServerFactory,
    cmq_credential: Credential,
    server_default: int | None,
    expected: int,
) -> None:
    data = tmp_path / "old.json"
    message = {
        "msgId": "0123456789abcdef0123456789abcdef",
        "msgBody": "from an older file",
        "enqueueTime": 1.0,
        "visibleAt": 1.0,
    }
    old_queue = {
        "name": "old",
        "visibilityTimeout": 30,
        "maxMsgSize": 65536,
        "pollingWaitSeconds": 0,
        "messages": [message],
    }
    data.write_text(json.dumps({"version": 1, "queues": [old_queue]}))
    options: dict[str, Any] = {} if server_default is None else {"max_msg_heap_num": server_default}
    server = await cmq_server_factory(data_path=data, **options)
    queue = server.queue("old")
    assert queue.max_msg_heap_num == expected
    assert len(queue) == 1
    async with CmqClient(server.url, cmq_credential) as client:
        received = await client.receive("old", 0)
    assert received is not None
    assert received.msg_body == "from an older file"
    await server.save()
    assert json.loads(data.read_bytes())["queues"][0]["maxMsgHeapNum"] == expected


@pytest.mark.parametrize("value", ["0", "-1", "many", "1.5"])
def test_cli_rejects_a_bound_below_one(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--secret-id", "id", "--secret-key", "key", "--max-messages", value])
    assert caught.value.code == 2
    assert "--max-messages" in capsys.readouterr().err


def test_cli_help_shows_the_option_and_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--max-messages N" in out
    assert "maxMsgHeapNum" in out
    assert "(10000000)" in out
    assert build_parser().parse_args(["--max-messages", "3"]).max_messages == 3


async def test_cli_process_bounds_its_queues(
    cmq_server_process: CmqServerProcessFactory, cmq_credential: Credential
) -> None:
    server = cmq_server_process("--queue", "mps-notify", "--max-messages", "2")
    async with CmqClient(server.url, cmq_credential) as client:
        await client.batch_send("mps-notify", ["one", "two"])
        with pytest.raises(CmqQueueFullError):
            await client.send("mps-notify", "three")
        message = await client.receive("mps-notify", 0)
        assert message is not None
        await client.delete("mps-notify", message.receipt_handle)
        await client.send("mps-notify", "three")
    assert server.stop() == 0
