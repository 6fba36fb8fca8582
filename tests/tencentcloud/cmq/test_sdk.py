"""Compatibility with the official SDK (``qcloud-cmq-sdk-py3``, module ``cmq``), both ways.

The SDK works against the local server, messages cross between the SDK and this client, and
this client's signatures equal ``cmq.sign.Sign.make`` for the parameters it actually sent. The
SDK is synchronous (``http.client``), so it runs in a worker thread while the server runs on
the test's event loop.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import anyio
import pytest
from aiohttp import web
from cmq.cmq_client import CMQClient
from cmq.cmq_exception import CMQServerException
from cmq.cmq_http import RequestInternal
from cmq.queue import Message as SdkMessage
from cmq.sign import Sign

from mpsflow.devservers.cmq import CmqServer
from mpsflow.tencentcloud.cmq import CmqClient, Credential
from mpsflow.tencentcloud.cmq.signing import DEFAULT_PATH
from tests.plugins.cmq_server import CMQ_SECRET_ID, CMQ_SECRET_KEY
from tests.sinks.peers import serve

with warnings.catch_warnings():
    # cmq.account imports cmq.subscription, which imports the deprecated stdlib mailcap.
    warnings.simplefilter("ignore", DeprecationWarning)
    from cmq.account import Account

_T = TypeVar("_T")


@pytest.fixture(autouse=True)
def _sdk_logs_nowhere() -> Iterator[None]:
    """The SDK adds a file handler (CMQ_python_sdk.log in the cwd) unless one exists."""
    logger = logging.getLogger("CMQ_python_sdk")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)


def _with_sdk_queue(
    server: CmqServer, name: str, work: Callable[[Any], _T], *, sign_method: str = "sha1"
) -> Callable[[], _T]:
    def run() -> _T:
        account = Account(server.url, CMQ_SECRET_ID, CMQ_SECRET_KEY)
        account.set_sign(sign_method)
        try:
            return work(account.get_queue(name))
        finally:
            account.cmq_client.close_connection()

    return run


@pytest.mark.parametrize("sign_method", ["sha1", "sha256"])
async def test_sdk_send_receive_delete_against_the_local_server(
    cmq_server: CmqServer, sign_method: str
) -> None:
    def work(queue: Any) -> tuple[str, str, int, str]:
        sent = queue.send_message(SdkMessage('{"EventType":"WorkflowTask","Note":"a b&c=d"}'))
        got = queue.receive_message(1)
        queue.delete_message(got.receiptHandle)
        return sent.msgId, got.msgBody, got.dequeueCount, got.msgId

    sent_id, body, dequeue_count, got_id = await anyio.to_thread.run_sync(
        _with_sdk_queue(cmq_server, "sdk", work, sign_method=sign_method)
    )
    assert body == '{"EventType":"WorkflowTask","Note":"a b&c=d"}'
    assert (got_id, dequeue_count) == (sent_id, 1)
    assert len(cmq_server.queue("sdk")) == 0


async def test_sdk_batches_get_and_empty_queue(cmq_server: CmqServer) -> None:
    def work(queue: Any) -> tuple[list[str], int]:
        queue.cmq_client.set_method("GET")
        queue.batch_send_message([SdkMessage("one"), SdkMessage("@two"), SdkMessage("视频")])
        got = queue.batch_receive_message(16, 0)
        queue.batch_delete_message([m.receiptHandle for m in got])
        try:
            queue.receive_message(0)
        except CMQServerException as exc:
            return [m.msgBody for m in got], exc.code
        raise AssertionError("an empty queue must answer 7000")

    bodies, empty_code = await anyio.to_thread.run_sync(_with_sdk_queue(cmq_server, "sdkb", work))
    assert bodies == ["one", "@two", "视频"]
    assert empty_code == 7000
    assert len(cmq_server.queue("sdkb")) == 0


async def test_sdk_with_a_wrong_key_gets_4100(cmq_server: CmqServer) -> None:
    def run() -> int:
        account = Account(cmq_server.url, CMQ_SECRET_ID, "wrong-key")
        try:
            account.get_queue("q").send_message(SdkMessage("x"))
        except CMQServerException as exc:
            return int(exc.code)
        finally:
            account.cmq_client.close_connection()
        raise AssertionError("a wrong key must be rejected")

    assert await anyio.to_thread.run_sync(run) == 4100


async def test_messages_cross_between_the_sdk_and_this_client(
    cmq_server: CmqServer, cmq_client: CmqClient
) -> None:
    def sdk_sends(queue: Any) -> str:
        return str(queue.send_message(SdkMessage('{"from":"sdk"}')).msgId)

    sdk_id = await anyio.to_thread.run_sync(_with_sdk_queue(cmq_server, "cross", sdk_sends))
    received = await cmq_client.receive("cross", 0)
    assert received is not None
    assert (received.msg_id, received.msg_body) == (sdk_id, '{"from":"sdk"}')
    await cmq_client.delete("cross", received.receipt_handle)

    client_id = await cmq_client.send("cross", '{"from":"mpsflow"}')

    def sdk_receives(queue: Any) -> tuple[str, str]:
        message = queue.receive_message(0)
        queue.delete_message(message.receiptHandle)
        return message.msgId, message.msgBody

    got = await anyio.to_thread.run_sync(_with_sdk_queue(cmq_server, "cross", sdk_receives))
    assert got == (client_id, '{"from":"mpsflow"}')


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """An HTTP endpoint that records each request's method and form and answers success."""
    seen: list[tuple[str, dict[str, str]]] = []

    async def record(request: web.Request) -> web.Response:
        raw = await request.text() if request.method == "POST" else request.query_string
        seen.append((request.method, dict(parse_qsl(raw, keep_blank_values=True))))
        return web.json_response({"code": 0, "message": "", "requestId": "r", "msgId": "m"})

    app = web.Application()
    app.router.add_route("*", DEFAULT_PATH, record)
    async with serve(app) as base:
        yield base, seen


@pytest.mark.parametrize("http_method", ["POST", "GET"])
@pytest.mark.parametrize(
    ("signature_method", "sdk_method"), [("HmacSHA1", "sha1"), ("HmacSHA256", "sha256")]
)
@pytest.mark.parametrize("token", [None, "temporary-session-token"])
async def test_client_signatures_equal_the_sdk_signatures(
    recorder: tuple[str, list[tuple[str, dict[str, str]]]],
    http_method: str,
    signature_method: str,
    sdk_method: str,
    token: str | None,
) -> None:
    url, seen = recorder
    credential = Credential(CMQ_SECRET_ID, CMQ_SECRET_KEY, token=token)
    async with CmqClient(
        url,
        credential,
        http_method=http_method,
        signature_method=signature_method,  # type: ignore[arg-type]
    ) as client:
        await client.send("mps-notify", '{"EventType":"WorkflowTask","Note":"a b&c=d 视频"}')
        await client.batch_delete("mps-notify", [f"handle-{i}" for i in range(12)])
    host = urlsplit(url).netloc
    assert len(seen) == 2
    for method, form in seen:
        assert method == http_method
        assert form.get("Token") == token
        assert form["SignatureMethod"] == signature_method
        params = {k: v for k, v in form.items() if k != "Signature"}
        expected = Sign(CMQ_SECRET_ID, CMQ_SECRET_KEY).make(
            host, DEFAULT_PATH, params, http_method, sdk_method
        )
        assert form["Signature"] == expected.decode()


def test_sdk_request_building_reproduces_worked_example_1() -> None:
    client = CMQClient(
        "https://cmq-queue-gz.api.qcloud.com",
        "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
        "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
    )
    request = RequestInternal("POST", DEFAULT_PATH)
    params = {
        "queueName": "mps-notify",
        "pollingWaitSeconds": 10,
        "Nonce": 11886,
        "Timestamp": 1465185768,
    }
    client.build_req_inter("ReceiveMessage", params, request)
    client.close_connection()
    assert dict(parse_qsl(request.data))["Signature"] == "VG2/Phd19sykgayCWZifQzS+rJA="
