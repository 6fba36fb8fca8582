"""The callback lane of the HTTP source (``mpsflow/sources/_http_lane.py``), over loopback.

The lane serves strict ``POST`` callbacks itself and hands everything else to aiohttp. The
differential test holds it to one rule: for any request, a source with the lane answers with
the same status as one without it (``access_log=True`` serves every request with aiohttp).
"""

from __future__ import annotations

import json
import re

import anyio
import anyio.abc
import pytest

from mpsflow import Context
from mpsflow.events import WorkflowTask
from mpsflow.sources.http import HttpSource
from tests.sources.http_app import make_app, seed_like, serve
from tests.sources.raw_http import Responses, connect, head, response, until, until_closed

BODY = seed_like("lane")


def status_of(answer: bytes) -> int:
    """The status code of a raw response (0 when the connection closed without one)."""
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    return int(match.group(1)) if match else 0


def header(answer: bytes, name: str) -> str | None:
    """The value of header ``name`` in a raw response, or None."""
    found = re.search(rb"(?im)^" + name.encode() + rb": *([^\r\n]*)\r\n", answer)
    return found.group(1).decode() if found else None


async def ask(source: HttpSource, request: bytes) -> bytes:
    """The first answer to ``request`` on a new connection, then the connection is closed."""
    async with await connect(source) as stream:
        await stream.send(request)
        with anyio.fail_after(10):
            received = b""
            while b"\r\n\r\n" not in received:
                try:
                    received += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
                    return received
            if received.startswith(b"HTTP/1.1 100 "):  # Expect: 100-continue: the real answer
                return await ask_rest(stream, received.partition(b"\r\n\r\n")[2])
            return received


async def ask_rest(stream: anyio.abc.SocketStream, received: bytes) -> bytes:
    while b"\r\n\r\n" not in received:
        received += await stream.receive()
    return received


def callback(extra: str = "", body: bytes = BODY, target: str = "/mps/callback") -> bytes:
    return head(target, len(body), extra) + body


def chunked(body: bytes) -> bytes:
    """A callback whose body is sent with ``Transfer-Encoding: chunked`` (aiohttp's to read)."""
    return (
        b"POST /mps/callback HTTP/1.1\r\nHost: mps\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n"
    )


REQUESTS: dict[str, bytes] = {
    "plain": callback(),
    "query string": callback(target="/mps/callback?token=abc"),
    "percent-encoded path": callback(target="/mps/%63allback"),
    "request id": callback("X-Request-Id: from-the-caller\r\n"),
    "connection close": callback("Connection: close\r\n"),
    "empty body": callback(body=b""),
    "malformed body": callback(body=b'{"EventType": '),
    "chunked": chunked(BODY),
    "expect 100-continue": callback("Expect: 100-continue\r\n"),
    "http/1.0": callback().replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    "content-length and transfer-encoding": callback("Transfer-Encoding: chunked\r\n"),
    "two content-lengths": callback(f"Content-Length: {len(BODY)}\r\n"),
    "signed content-length": callback().replace(b"Content-Length: ", b"Content-Length: +", 1),
    "space before colon": callback("X-Odd : yes\r\n"),
    "folded header": callback("X-Folded: a\r\n b\r\n"),
    "lowercase method": callback().replace(b"POST", b"post", 1),
    "get on the callback path": b"GET /mps/callback HTTP/1.1\r\nHost: mps\r\n\r\n",
    "other path": callback(target="/other"),
    "over the body limit": head("/mps/callback", 10_000_000) + b"{}",
    "upgrade": callback("Connection: Upgrade\r\nUpgrade: websocket\r\n"),
    "no host": callback().replace(b"Host: mps\r\n", b"", 1),
    "two hosts": callback("Host: other\r\n"),
    "long header": callback(f"X-Long: {'a' * 20_000}\r\n"),
    "healthz": b"GET /healthz HTTP/1.1\r\nHost: mps\r\n\r\n",
}


@pytest.mark.parametrize("name", list(REQUESTS))
async def test_the_lane_answers_every_request_as_aiohttp_does(name: str) -> None:
    request = REQUESTS[name]
    answers: list[bytes] = []
    for access_log in (False, True):  # the lane, then aiohttp alone
        app, _ = make_app()
        async with serve(app, access_log=access_log) as source:
            answers.append(await ask(source, request))
    lane, aiohttp_only = answers
    assert status_of(lane) == status_of(aiohttp_only), (lane[:200], aiohttp_only[:200])
    for name_ in ("X-Request-Id", "Retry-After", "Allow"):
        assert (header(lane, name_) is None) == (header(aiohttp_only, name_) is None), name_
    assert (header(lane, "Connection") or "").lower() == (
        header(aiohttp_only, "Connection") or ""
    ).lower()
    if name == "request id":
        assert header(lane, "X-Request-Id") == "from-the-caller"
    if name == "connection close":
        assert header(lane, "Connection") == "close"


async def test_pipelined_callbacks_are_answered_in_order() -> None:
    app, _ = make_app()
    async with serve(app) as source, await connect(source) as stream:
        await stream.send(
            b"".join(callback(f"X-Request-Id: r{n}\r\n", seed_like(f"p{n}")) for n in range(5))
        )
        answers_in = Responses(stream)
        with anyio.fail_after(10):
            answers = [await answers_in.next() for _ in range(5)]
    assert [header(a, "X-Request-Id") for a in answers] == [f"r{n}" for n in range(5)]
    assert {status_of(a) for a in answers} == {200}


async def test_a_callback_arriving_a_few_bytes_at_a_time_is_served() -> None:
    app, _ = make_app()
    async with serve(app) as source, await connect(source) as stream:
        request = callback("X-Request-Id: pieces\r\n")
        for start in range(0, len(request), 7):
            await stream.send(request[start : start + 7])
        with anyio.fail_after(10):
            answer = await response(stream)
    assert status_of(answer) == 200
    assert header(answer, "X-Request-Id") == "pieces"
    assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {"code": 0}


async def test_a_connection_handed_to_aiohttp_keeps_serving_callbacks() -> None:
    app, _ = make_app()
    async with serve(app) as source, await connect(source) as stream:
        with anyio.fail_after(10):
            await stream.send(callback(body=seed_like("first")))
            assert status_of(await response(stream)) == 200  # the lane
            await stream.send(b"GET /healthz HTTP/1.1\r\nHost: mps\r\n\r\n")
            assert status_of(await response(stream)) == 200  # aiohttp from here on
            await stream.send(callback(body=seed_like("second")))
            assert status_of(await response(stream)) == 200
        assert source.responses[200] == 2
        assert source.connections == 1


async def test_handlers_run_once_per_callback_whichever_protocol_serves_it() -> None:
    runs: list[str | None] = []
    app, _ = make_app()

    @app.on("WorkflowTask")
    async def record(event: WorkflowTask, ctx: Context) -> None:
        runs.append(event.task_id)

    async with serve(app) as source, await connect(source) as stream:
        answers = Responses(stream)
        with anyio.fail_after(10):
            await stream.send(callback(body=seed_like("a")) + callback(body=seed_like("b")))
            await answers.next()
            await answers.next()
            await stream.send(chunked(seed_like("c")))
            await answers.next()
    assert runs == ["a", "b", "c"]


async def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout() -> None:
    app, _ = make_app()
    async with serve(app, keepalive_timeout=0.2) as source, await connect(source) as stream:
        await stream.send(callback())
        assert status_of(await response(stream)) == 200
        with anyio.fail_after(5):
            assert await until_closed(stream) == b""  # closed without a word
        await until(lambda: source.connections == 0)


async def test_a_sender_gone_in_the_middle_of_a_body_frees_its_connection() -> None:
    app, _ = make_app()
    async with serve(app) as source:
        async with await connect(source) as stream:
            await stream.send(head(source.path, 1000) + b'{"EventType"')
            await until(lambda: source.reading == 1)
        await until(lambda: source.connections == 0)
        assert source.reading == 0
        assert source.responses.total() == 0


async def test_stopping_closes_idle_connections_and_answers_the_busy_one() -> None:
    release = anyio.Event()
    started = anyio.Event()
    app, _ = make_app()

    @app.on("WorkflowTask")
    async def slow(event: WorkflowTask, ctx: Context) -> None:
        if event.task_id == "busy":
            started.set()
            await release.wait()

    async with (
        serve(app) as source,
        await connect(source) as idle,
        await connect(source) as busy,
    ):
        await idle.send(callback(body=seed_like("idle")))
        assert status_of(await response(idle)) == 200
        await busy.send(callback(body=seed_like("busy")))
        with anyio.fail_after(10):
            await started.wait()
        app.stop()
        with anyio.fail_after(10):
            assert await until_closed(idle) == b""
        release.set()
        with anyio.fail_after(10):
            answer = await until_closed(busy)
    assert status_of(answer) == 200
    assert header(answer, "Connection") == "close"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_sender_that_waits_for_100_continue_gets_it(framing: str) -> None:
    """Served by the lane (``Content-Length``) or by aiohttp (chunked): both answer the
    expectation before the body is sent, as senders such as curl wait for it."""
    app, _ = make_app()
    request = callback() if framing == "content-length" else chunked(BODY)
    top, _, body = request.partition(b"\r\n\r\n")
    async with serve(app) as source, await connect(source) as stream:
        await stream.send(top + b"\r\nExpect: 100-continue\r\n\r\n")
        with anyio.fail_after(5):
            interim = await stream.receive()
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        await stream.send(body)
        with anyio.fail_after(10):
            assert status_of(await Responses(stream).next()) == 200


ANSWERED_WITH_ITS_ID = {
    "accepted": callback("X-Request-Id: rid\r\n"),
    "malformed": callback("X-Request-Id: rid\r\n", body=b"{"),
    "chunked": chunked(BODY).replace(b"Host: mps\r\n", b"Host: mps\r\nX-Request-Id: rid\r\n"),
    "over the body limit": head("/mps/callback", 10_000_000, "X-Request-Id: rid\r\n") + b"{}",
    "other path": callback("X-Request-Id: rid\r\n", target="/other"),
    "get on the callback path": (
        b"GET /mps/callback HTTP/1.1\r\nHost: mps\r\nX-Request-Id: rid\r\n\r\n"
    ),
}


@pytest.mark.parametrize("name", list(ANSWERED_WITH_ITS_ID))
async def test_every_answer_carries_the_callers_request_id(name: str) -> None:
    app, _ = make_app()
    async with serve(app) as source:
        answer = await ask(source, ANSWERED_WITH_ITS_ID[name])
    assert status_of(answer) != 0
    assert header(answer, "X-Request-Id") == "rid"


async def test_a_body_too_slow_is_answered_408_with_its_request_id() -> None:
    app, _ = make_app()
    async with serve(app, read_timeout=0.3) as source, await connect(source) as stream:
        await stream.send(head(source.path, 1000, "X-Request-Id: slow-one\r\n") + b"{")
        with anyio.fail_after(10):
            answer = await until_closed(stream)
    assert status_of(answer) == 408
    assert header(answer, "X-Request-Id") == "slow-one"


MALFORMED = [
    callback().replace(b"Content-Length: ", b"Content-Length: -", 1),
    callback("X-Bad: a\x01b\r\n"),
    callback().replace(b"Content-Length: ", b"Content-Length: 1000000000000000000000", 1),
]


CLIENT_HELLO = bytes.fromhex("160301010c010001080303") + bytes(32)
"""The start of a TLS ClientHello: an https:// sender at this plain-HTTP port."""


async def test_a_tls_handshake_gets_a_400_at_once_not_at_the_header_timeout() -> None:
    app, _ = make_app()
    async with serve(app, header_timeout=600.0) as source:
        answer = await ask(source, CLIENT_HELLO)  # within ask's 10 s, far below 600
    assert status_of(answer) == 400, answer[:200]


async def test_malformed_requests_get_json_400s_and_one_warning_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, _ = make_app()
    async with serve(app) as source:
        answers = [await ask(source, request) for request in MALFORMED]
        metrics = await ask(source, b"GET /metrics HTTP/1.1\r\nHost: mps\r\n\r\n")
    for answer in answers:
        assert status_of(answer) == 400, answer[:200]
        body = answer.partition(b"\r\n\r\n")[2]
        assert json.loads(body) == {"code": 400, "error": "malformed HTTP request"}
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    warnings = [
        r.getMessage() for r in caplog.records if "malformed HTTP request" in r.getMessage()
    ]
    assert len(warnings) == 1  # the first; the others within 10 s are counted
    assert b"mpsflow_http_malformed_requests_total 3" in metrics
