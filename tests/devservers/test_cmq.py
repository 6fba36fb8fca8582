"""The local CMQ server at the HTTP level: signatures, CMQ-shaped errors, limits, persistence."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import anyio
import anyio.abc
import pytest

from mpsflow.clock import FakeClock
from mpsflow.devservers.cmq import CmqServer, build_parser, main
from mpsflow.errors import ConfigurationError
from mpsflow.tencentcloud.cmq import (
    CmqClient,
    CmqMessageTooLargeError,
    CmqReceiptHandleError,
    Credential,
)
from mpsflow.tencentcloud.cmq.signing import DEFAULT_PATH, sign, string_to_sign
from tests.plugins.cmq_server import (
    CMQ_SECRET_ID,
    CMQ_SECRET_KEY,
    CmqServerFactory,
    CmqServerProcessFactory,
)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _signed(
    action: str,
    params: Mapping[str, str],
    *,
    host: str,
    http_method: str = "POST",
    key: str = CMQ_SECRET_KEY,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    form = {
        "Action": action,
        "SecretId": CMQ_SECRET_ID,
        "Nonce": "12345",
        "Timestamp": str(int(time.time())),
        "SignatureMethod": "HmacSHA256",
        **params,
        **(extra or {}),
    }
    text = string_to_sign(http_method, host, DEFAULT_PATH, form)
    form["Signature"] = sign(key, text, "HmacSHA256")
    return form


async def _post(
    http: aiohttp.ClientSession, server: CmqServer, form: Mapping[str, str]
) -> dict[str, Any]:
    async with http.post(f"{server.url}{DEFAULT_PATH}", data=urlencode(form).encode()) as reply:
        assert reply.status == 200
        assert reply.content_type == "application/json"
        payload: dict[str, Any] = json.loads(await reply.read())
        return payload


def _host(server: CmqServer) -> str:
    return urlsplit(server.url).netloc


async def test_a_good_signature_is_accepted(
    http: aiohttp.ClientSession, cmq_server: CmqServer
) -> None:
    form = _signed("SendMessage", {"queueName": "q", "msgBody": "x"}, host=_host(cmq_server))
    reply = await _post(http, cmq_server, form)
    assert reply["code"] == 0
    assert reply["message"] == ""
    assert reply["requestId"]
    assert reply["msgId"]


@pytest.mark.parametrize(
    "tamper",
    [
        "wrong key",
        "signed as GET",
        "other host",
        "tampered parameter",
        "no signature",
        "unknown id",
    ],
)
async def test_bad_signatures_are_rejected_with_4100(
    http: aiohttp.ClientSession, cmq_server: CmqServer, tamper: str
) -> None:
    host = _host(cmq_server)
    params = {"queueName": "q", "msgBody": "x"}
    if tamper == "wrong key":
        form = _signed("SendMessage", params, host=host, key="wrong")
    elif tamper == "signed as GET":
        form = _signed("SendMessage", params, host=host, http_method="GET")
    elif tamper == "other host":
        form = _signed("SendMessage", params, host="cmq-gz.public.tencenttdmq.com")
    elif tamper == "tampered parameter":
        form = _signed("SendMessage", params, host=host)
        form["msgBody"] = "y"
    elif tamper == "no signature":
        form = _signed("SendMessage", params, host=host)
        del form["Signature"]
    else:
        form = _signed("SendMessage", params, host=host)
        form["SecretId"] = "AKIDunknown"
    reply = await _post(http, cmq_server, form)
    assert reply["code"] == 4100
    assert set(reply) == {"code", "message", "requestId"}
    assert CMQ_SECRET_KEY not in reply["message"]
    assert len(cmq_server.queue_names) == 0


async def test_unknown_action_and_bad_parameters_are_4000_with_a_module_code(
    http: aiohttp.ClientSession, cmq_server: CmqServer
) -> None:
    host = _host(cmq_server)
    cases = [
        ("ListQueue", {"queueName": "q"}, "(10000)"),
        ("SendMessage", {"queueName": "9bad name"}, "(10020)"),
        ("SendMessage", {"queueName": "q", "msgBody": ""}, "(10000)"),
        ("SendMessage", {"queueName": "q", "msgBody": "x", "delaySeconds": "soon"}, "(10000)"),
        ("ReceiveMessage", {"queueName": "q", "pollingWaitSeconds": "31"}, "(10000)"),
        ("BatchReceiveMessage", {"queueName": "q"}, "(10000)"),
        ("BatchReceiveMessage", {"queueName": "q", "numOfMsg": "0"}, "(10000)"),
        ("BatchReceiveMessage", {"queueName": "q", "numOfMsg": "17"}, "(10000)"),
        ("DeleteMessage", {"queueName": "q"}, "(10000)"),
        ("BatchDeleteMessage", {"queueName": "q"}, "(10000)"),
        ("BatchSendMessage", {"queueName": "q", "msgBody.x": "a"}, "(10000)"),
        ("BatchSendMessage", {"queueName": "q", "msgBody.1": "a", "msgBody.3": "b"}, "(10380)"),
        ("BatchSendMessage", {"queueName": "q", "msgBody.2": "a", "msgBody.3": "b"}, "(10380)"),
        (
            "BatchSendMessage",
            {"queueName": "q", **{f"msgBody.{i}": "a" for i in range(17)}},
            "(10370)",
        ),
    ]
    for action, params, module in cases:
        reply = await _post(http, cmq_server, _signed(action, params, host=host))
        assert (action, reply["code"]) == (action, 4000)
        assert reply["message"].startswith(module), (action, params, reply)


async def test_batch_indices_may_start_at_zero(
    http: aiohttp.ClientSession, cmq_server: CmqServer
) -> None:
    params = {"queueName": "zero", **{f"msgBody.{i}": f"m{i}" for i in range(16)}}
    reply = await _post(
        http, cmq_server, _signed("BatchSendMessage", params, host=_host(cmq_server))
    )
    assert reply["code"] == 0
    assert len(reply["msgList"]) == 16
    assert cmq_server.queue("zero").visible_count() == 16


async def test_size_limits_answer_4400(
    cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    server = await cmq_server_factory(max_msg_size=2048)
    server.create_queue("big", max_msg_size=65536)
    async with CmqClient(server.url, cmq_credential) as client:
        await client.send("q", "x" * 2048)
        with pytest.raises(CmqMessageTooLargeError) as caught:
            await client.send("q", "x" * 2049)
        assert caught.value.code == 4400
        with pytest.raises(CmqMessageTooLargeError):
            await client.send("q", "é" * 1025)
        with pytest.raises(CmqMessageTooLargeError):
            await client.batch_send("q", ["x" * 100, "x" * 2049])
        await client.batch_send("big", ["x" * 32768, "y" * 32768])
        with pytest.raises(CmqMessageTooLargeError, match="batch"):
            await client.batch_send("big", ["x" * 32768, "y" * 32768, "z"])
        assert len(server.queue("q")) == 1
        assert len(server.queue("big")) == 2


async def test_token_is_required_for_temporary_keys_and_refused_for_permanent_ones(
    http: aiohttp.ClientSession, cmq_server_factory: CmqServerFactory
) -> None:
    server = await cmq_server_factory(
        credentials=[Credential(CMQ_SECRET_ID, CMQ_SECRET_KEY, token="session-token")]
    )
    host = _host(server)
    params = {"queueName": "q", "msgBody": "x"}
    ok = _signed("SendMessage", params, host=host, extra={"Token": "session-token"})
    assert (await _post(http, server, ok))["code"] == 0
    missing = _signed("SendMessage", params, host=host)
    assert (await _post(http, server, missing))["code"] == 4100
    wrong = _signed("SendMessage", params, host=host, extra={"Token": "other-token"})
    reply = await _post(http, server, wrong)
    assert reply["code"] == 4100
    assert "session-token" not in reply["message"]
    server.set_credential(Credential(CMQ_SECRET_ID, CMQ_SECRET_KEY))
    assert (await _post(http, server, ok))["code"] == 4100
    server.remove_credential(CMQ_SECRET_ID)
    assert (await _post(http, server, missing))["code"] == 4100


async def test_timestamp_skew_is_checked_when_configured(
    http: aiohttp.ClientSession, cmq_server_factory: CmqServerFactory
) -> None:
    clock = FakeClock(start=time.time())
    server = await cmq_server_factory(clock=clock, max_clock_skew=300)
    host = _host(server)
    params = {"queueName": "q", "msgBody": "x"}
    assert (await _post(http, server, _signed("SendMessage", params, host=host)))["code"] == 0
    clock.advance(301)
    reply = await _post(http, server, _signed("SendMessage", params, host=host))
    assert reply["code"] == 4100
    assert "Timestamp" in reply["message"]


async def test_python_sdk_at_values_are_accepted_either_way(
    http: aiohttp.ClientSession, cmq_server: CmqServer
) -> None:
    host = _host(cmq_server)
    form = {
        "Action": "SendMessage",
        "SecretId": CMQ_SECRET_ID,
        "Nonce": "1",
        "Timestamp": "1",
        "queueName": "at",
        "msgBody": "@not-a-file",
    }
    legacy = string_to_sign("POST", host, DEFAULT_PATH, form, skip_at_values=True)
    assert (await _post(http, cmq_server, {**form, "Signature": sign(CMQ_SECRET_KEY, legacy)}))[
        "code"
    ] == 0
    full = string_to_sign("POST", host, DEFAULT_PATH, form)
    reply = await _post(http, cmq_server, {**form, "Signature": sign(CMQ_SECRET_KEY, full)})
    assert reply["code"] == 0
    assert len(cmq_server.queue("at")) == 2


async def test_only_the_api_path_and_methods_are_served(
    http: aiohttp.ClientSession, cmq_server: CmqServer
) -> None:
    async with http.post(f"{cmq_server.url}/other") as reply:
        assert reply.status == 404
    async with http.put(f"{cmq_server.url}{DEFAULT_PATH}") as reply:
        assert reply.status == 405


async def test_non_utf8_forms_are_rejected(
    http: aiohttp.ClientSession, cmq_server: CmqServer
) -> None:
    async with http.post(f"{cmq_server.url}{DEFAULT_PATH}", data=b"Action=%FF") as reply:
        payload = json.loads(await reply.read())
    assert payload["code"] == 4000


async def test_queue_counts_follow_the_message_lifecycle(
    cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    clock = FakeClock()
    server = await cmq_server_factory(clock=clock, queues=["counts"], visibility_timeout=10)
    queue = server.queue("counts")
    async with CmqClient(server.url, cmq_credential) as client:
        await client.batch_send("counts", ["a", "b", "c"])
        await client.send("counts", "d", delay_seconds=60)
        assert (queue.visible_count(), queue.inflight_count(), queue.delayed_count()) == (3, 0, 1)
        taken = await client.batch_receive("counts", 2, 0)
        assert (queue.visible_count(), queue.inflight_count(), queue.delayed_count()) == (1, 2, 1)
        await client.delete("counts", taken[0].receipt_handle)
        clock.advance(10)
        assert (queue.visible_count(), queue.inflight_count(), queue.delayed_count()) == (2, 0, 1)
        clock.advance(50)
        assert (queue.visible_count(), queue.inflight_count(), queue.delayed_count()) == (3, 0, 0)
    assert len(queue) == 3
    assert server.queue_names == ["counts"]
    with pytest.raises(KeyError):
        server.queue("missing")
    with pytest.raises(ValueError, match="queue name"):
        server.create_queue("no spaces")


async def _park_raw_long_poll(server: CmqServer, queue: str) -> anyio.abc.SocketStream:
    """A BatchReceiveMessage long poll (30 s) sent over a bare TCP connection, once parked."""
    form = _signed(
        "BatchReceiveMessage",
        {"queueName": queue, "numOfMsg": "16", "pollingWaitSeconds": "30"},
        host=_host(server),
    )
    body = urlencode(form).encode()
    head = (
        f"POST {DEFAULT_PATH} HTTP/1.1\r\nHost: {_host(server)}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    stream = await anyio.connect_tcp("127.0.0.1", server.port)
    await stream.send(head + body)
    await server.queue(queue).wait_for_waiting(1)
    return stream


async def _park_client_long_poll(
    server: CmqServer, queue: str, credential: Credential, tg: anyio.abc.TaskGroup
) -> CmqClient:
    """The same long poll from a ``CmqClient`` in a task of ``tg``, once parked."""
    client = CmqClient(server.url, credential)

    async def poll() -> None:
        await client.batch_receive(queue, 16, 30)
        raise AssertionError("the poll was not meant to end")

    tg.start_soon(poll)
    await server.queue(queue).wait_for_waiting(1)
    return client


@pytest.mark.parametrize("how", ["socket closed", "consumer stopped"])
async def test_a_long_poll_ends_on_the_server_when_its_client_goes_away(
    cmq_server_factory: CmqServerFactory,
    cmq_credential: Credential,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    # A consumer killed or restarted mid-poll must not leave its long polls parked: they
    # would take the next messages and hide them for a visibility timeout from the consumer
    # that replaces it.
    caplog.set_level(logging.INFO, "mpsflow.devservers.cmq")
    server = await cmq_server_factory(queues=["gone"], visibility_timeout=30)
    queue = server.queue("gone")
    if how == "socket closed":
        stream = await _park_raw_long_poll(server, "gone")
        await stream.aclose()
    else:
        async with anyio.create_task_group() as tg:
            client = await _park_client_long_poll(server, "gone", cmq_credential, tg)
            tg.cancel_scope.cancel()
        await client.aclose()
    with anyio.fail_after(10):  # far less than the 30 s the poll would have waited
        await queue.wait_for_waiting(0)
    async with CmqClient(server.url, cmq_credential) as client:
        await client.send("gone", "after the consumer left")
        [message] = await client.batch_receive("gone", 16, 0)
    assert message.msg_body == "after the consumer left"
    assert message.dequeue_count == 1  # the gone poll took nothing
    assert "the client went away" in caplog.text


async def test_a_long_poll_of_a_live_client_still_gets_what_arrives(
    cmq_server: CmqServer, cmq_credential: Credential
) -> None:
    cmq_server.create_queue("live")
    got: list[str] = []
    async with (
        CmqClient(cmq_server.url, cmq_credential) as polling,
        anyio.create_task_group() as tg,
    ):

        async def poll() -> None:
            got.extend(m.msg_body for m in await polling.batch_receive("live", 16, 30))

        tg.start_soon(poll)
        await cmq_server.queue("live").wait_for_waiting(1)
        async with CmqClient(cmq_server.url, cmq_credential) as sender:
            await sender.send("live", "woken")
    assert got == ["woken"]
    assert cmq_server.queue("live").waiting_count() == 0


async def test_state_survives_a_restart_with_a_data_file(
    tmp_path: Path, cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    clock = FakeClock()
    data = tmp_path / "cmq.json"
    first = await cmq_server_factory(clock=clock, data_path=data)
    first.create_queue("slow", visibility_timeout=120)
    async with CmqClient(first.url, cmq_credential) as client:
        await client.batch_send("slow", ["one", "two", "three"])
        held = await client.receive("slow", 0)
        assert held is not None
    await first.stop()
    assert data.exists()

    second = await cmq_server_factory(clock=clock, data_path=data)
    queue = second.queue("slow")
    assert queue.visibility_timeout == 120
    assert (queue.visible_count(), queue.inflight_count()) == (2, 1)
    async with CmqClient(second.url, cmq_credential) as client:
        with pytest.raises(CmqReceiptHandleError):
            await client.delete("slow", held.receipt_handle)
        bodies = [m.msg_body for m in await client.batch_receive("slow", 16, 0)]
        assert bodies == ["two", "three"]
        clock.advance(120)
        again = await client.receive("slow", 0)
        assert again is not None
        assert (again.msg_id, again.msg_body, again.dequeue_count) == (held.msg_id, "one", 2)
    await second.save()
    saved = json.loads(data.read_bytes())
    assert [q["name"] for q in saved["queues"]] == ["slow"]


@pytest.mark.parametrize("given", ["queues/", ".", "notes.txt/cmq.json"])
def test_a_data_path_that_cannot_be_saved_to_fails_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    """Not at the first save, in the background or at stop: a folder (``queues/`` written as
    one, missing or not) or a path under a file is refused where the server is made."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("a file where the folder would be")
    with pytest.raises(ConfigurationError) as caught:
        CmqServer({"id": "key"}, data_path=given)
    assert str(caught.value).startswith(f"data_path {given}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing made


def test_a_data_path_in_a_missing_folder_gets_its_folder(tmp_path: Path) -> None:
    data = tmp_path / "new" / "deeper" / "cmq.json"
    CmqServer({"id": "key"}, data_path=data)
    assert data.parent.is_dir()
    assert not data.exists()  # written at the first save


async def test_changes_are_saved_periodically_while_running(
    tmp_path: Path, cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    data = tmp_path / "cmq.json"
    server = await cmq_server_factory(data_path=data, save_interval=0.01)
    saved_event = server.next_save()
    async with CmqClient(server.url, cmq_credential) as client:
        await client.send("periodic", "kept")
    with anyio.fail_after(5):
        await saved_event.wait()
    saved = json.loads(data.read_bytes())
    assert saved["queues"][0]["messages"][0]["msgBody"] == "kept"


def test_help_says_it_is_a_development_tool(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    assert "development and tests" in capsys.readouterr().out
    options = build_parser().parse_args(["--queue", "a", "--queue", "b", "--port", "0"])
    assert options.queue == ["a", "b"]
    assert options.port == 0


def test_cli_requires_a_key_pair(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in (
        "MPSFLOW_CMQ_SECRET_ID",
        "MPSFLOW_CMQ_SECRET_KEY",
        "TENCENTCLOUD_SECRETID",
        "TENCENTCLOUD_SECRETKEY",
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as caught:
        main(["--port", "0"])
    assert caught.value.code == 2
    assert "SecretKey" in capsys.readouterr().err


async def test_cli_process_persists_queues_across_restarts(
    tmp_path: Path, cmq_server_process: CmqServerProcessFactory, cmq_credential: Credential
) -> None:
    data = tmp_path / "queues.json"
    first = cmq_server_process("--data", str(data), "--queue", "mps-notify")
    async with CmqClient(first.url, cmq_credential) as client:
        await client.send("mps-notify", '{"EventType":"WorkflowTask"}')
    assert first.stop() == 0
    saved = json.loads(data.read_bytes())
    assert saved["queues"][0]["messages"][0]["msgBody"] == '{"EventType":"WorkflowTask"}'

    second = cmq_server_process("--data", str(data), "--no-auto-create")
    async with CmqClient(second.url, cmq_credential) as client:
        message = await client.receive("mps-notify", 0)
        assert message is not None
        assert message.msg_body == '{"EventType":"WorkflowTask"}'
        await client.delete("mps-notify", message.receipt_handle)
    assert second.stop() == 0
    assert json.loads(data.read_bytes())["queues"][0]["messages"] == []
