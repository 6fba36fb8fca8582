"""The HTTP source against hostile senders, over loopback (issue 17): slow bodies and slow
headers do not lock out a real sender, the per-peer connection cap, and the memory of a
flood of partial bodies given back.

Other peers are other loopback addresses (127.0.0.2, …): Linux routes all of 127/8 to the
loopback interface. The timeouts are short real ones (the event loop's clock bounds network
reads, not the app's ``Clock``); waits are for events or bounded polls of the source's
counters, and the pacing of a trickle is its only sleep.
"""

from __future__ import annotations

import os
import re
import resource
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiohttp
import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from mpsflow.sources.http import HttpSource
from tests.process_output import mpsflow_process
from tests.sources.http_app import make_app, seed_like, serve
from tests.sources.raw_http import connect, head, response, until, until_closed

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="other loopback addresses and /proc are Linux's"
)

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}
SERVING = re.compile(r"serving MPS callbacks on http://(127\.0\.0\.1):(\d+)(/mps/callback)")


async def post_ok(source: HttpSource, count: int = 3) -> None:
    """A real sender (from 127.0.0.1): ``count`` POSTs, each answered 200."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for n in range(count):
            async with session.post(source.url, data=seed_like(f"real-{n}")) as answer:
                assert answer.status == 200, await answer.text()


# -- slow bodies -------------------------------------------------------------------------------

SLOW = 504
"""More slow senders than ``max_in_flight`` (256): they filled it when they counted (the
issue measured 500)."""


async def test_slow_bodies_hold_no_in_flight_slot_and_a_real_sender_is_served() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * SLOW:  # both ends of every connection live in this process
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4 * SLOW, hard), hard))
    app, _ = make_app()
    # the grace keeps the trickling senders (20 bytes/s) from being cut off by the minimum
    # rate on a slow machine: here they must stay, still reading, while the real sender posts
    async with serve(app, min_rate_grace=60.0) as source, AsyncExitStack() as stack:
        assert source.max_in_flight < SLOW
        slow: list[anyio.abc.SocketStream] = []
        for n in range(SLOW):  # from 8 addresses, under the per-peer cap (63 each)
            stream = await stack.enter_async_context(await connect(source, f"127.0.0.{2 + n % 8}"))
            await stream.send(head(source.path, 1000) + b'{"EventType": "Wor')
            slow.append(stream)
        await until(lambda: source.reading == SLOW)
        assert source.in_flight == 0

        async def trickle() -> None:
            while True:
                for stream in slow:
                    await stream.send(b" ")
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            tg.start_soon(trickle)
            await post_ok(source, 5)
            tg.cancel_scope.cancel()
        assert source.reading == SLOW  # still there, still slow: no slot was needed
        assert source.responses[200] == 5
        assert 503 not in source.responses


async def trickle(stream: anyio.abc.SocketStream, body: bytes, piece: int) -> None:
    """``body`` in pieces of ``piece`` bytes, one every 50 ms, until sent or cut off."""
    for start in range(0, len(body), piece):
        try:
            await stream.send(body[start : start + piece])
        except (anyio.BrokenResourceError, ConnectionResetError):
            return
        await anyio.sleep(0.05)


async def test_a_body_below_the_minimum_rate_gets_408_and_one_above_it_is_served() -> None:
    app, _ = make_app()
    options = {"min_rate": 400.0, "min_rate_grace": 0.2, "read_timeout": 20.0}
    async with serve(app, **options) as source:
        body = seed_like()
        assert len(body) > 200
        answers: dict[str, bytes] = {}

        async def slow() -> None:  # 20 bytes/s
            async with await connect(source) as stream, anyio.create_task_group() as tg:
                await stream.send(head(source.path, len(body)))
                tg.start_soon(trickle, stream, body, 1)
                answers["slow"] = await until_closed(stream)
                tg.cancel_scope.cancel()

        async def steady() -> None:  # 2000 bytes/s
            async with await connect(source) as stream:
                await stream.send(head(source.path, len(body)))
                await trickle(stream, body, 100)
                answers["steady"] = await response(stream)

        with anyio.fail_after(10):  # long before read_timeout: the rate decides
            async with anyio.create_task_group() as tg:
                tg.start_soon(slow)
                tg.start_soon(steady)
        assert answers["slow"].startswith(b"HTTP/1.1 408 "), answers["slow"]
        assert b"slower than 400 bytes/s" in answers["slow"]
        assert answers["steady"].startswith(b"HTTP/1.1 200 "), answers["steady"]
        assert source.reading == 0


# -- slow headers ------------------------------------------------------------------------------


async def test_slow_headers_get_408_and_are_closed_while_a_real_sender_is_served() -> None:
    app, _ = make_app()
    async with serve(app, header_timeout=0.5) as source, AsyncExitStack() as stack:
        slow: list[anyio.abc.SocketStream] = []
        for n in range(60):
            stream = await stack.enter_async_context(await connect(source, f"127.0.0.{2 + n % 3}"))
            await stream.send(b"POST /mps/callback HTTP/1.1\r\nHost: mps\r\nX-Slow: a")
            slow.append(stream)
        silent = await stack.enter_async_context(await connect(source, "127.0.0.5"))
        await post_ok(source)  # served beside them
        with anyio.fail_after(10):
            answers = [await until_closed(stream) for stream in [*slow, silent]]
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:40] for a in answers}
        assert b"Connection: close" in answers[0]
        await until(lambda: source.connections == 0)


async def test_header_timeout_spares_an_idle_kept_alive_connection_and_times_its_next_head() -> (
    None
):
    app, _ = make_app()
    async with serve(app, header_timeout=0.3) as source, await connect(source) as stream:
        body = seed_like()
        await stream.send(head(source.path, len(body)) + body)
        assert (await response(stream)).startswith(b"HTTP/1.1 200 ")
        await anyio.sleep(0.6)  # idle, kept alive: keepalive_timeout's business, not this one
        await stream.send(head(source.path, len(body)) + body)
        assert (await response(stream)).startswith(b"HTTP/1.1 200 ")
        await stream.send(b"POST /mps/callback HTTP/1.1\r\n")  # a next head, never finished
        with anyio.fail_after(5):
            assert (await until_closed(stream)).startswith(b"HTTP/1.1 408 ")


# -- connections per peer ----------------------------------------------------------------------


async def test_connections_over_the_per_peer_cap_are_refused_without_affecting_other_peers() -> (
    None
):
    app, _ = make_app()
    async with serve(app, max_connections_per_peer=8) as source, AsyncExitStack() as stack:
        held = [
            await stack.enter_async_context(await connect(source, "127.0.0.2")) for _ in range(8)
        ]
        await until(lambda: source.connections == 8)
        with anyio.fail_after(5):
            async with await connect(source, "127.0.0.2") as refused:
                answer = await until_closed(refused)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"Retry-After: 1" in answer
        await post_ok(source)  # 127.0.0.1
        async with (
            aiohttp.ClientSession() as session,
            session.get(source.url.removesuffix(source.path) + "/metrics") as metrics,
        ):
            assert "\nmpsflow_http_refused_connections_total 1\n" in await metrics.text()
        async with await connect(source, "127.0.0.3") as other:
            body = seed_like("other")
            await other.send(head(source.path, len(body)) + body)
            assert (await response(other)).startswith(b"HTTP/1.1 200 ")
        await held[0].aclose()  # a slot of 127.0.0.2 is free again
        await until(lambda: source.connections == 7)
        async with await connect(source, "127.0.0.2") as again:
            body = seed_like("again")
            await again.send(head(source.path, len(body)) + body)
            assert (await response(again)).startswith(b"HTTP/1.1 200 ")


# -- memory ------------------------------------------------------------------------------------


async def test_a_connection_answered_before_its_body_is_released_when_its_peer_goes() -> None:
    """aiohttp reads an unanswered body for up to 10 s after an early answer ("lingering"),
    and did not notice the peer leaving: the connection lived on for those 10 s."""
    app, _ = make_app()
    async with serve(app, max_body_size=1000) as source:
        async with await connect(source) as stream:
            await stream.send(head(source.path, 100_000) + b"x" * 5000)
            assert (await response(stream)).startswith(b"HTTP/1.1 413 ")
            assert source.connections == 1  # lingering over the rest of the body
        with anyio.fail_after(3):  # not the 10 s of lingering
            await until(lambda: source.connections == 0)


APP_MODULE = """
from mpsflow import App

app = App(dead_letters="dead.jsonl")


@app.on("WorkflowTask")
async def seen(event, ctx) -> None:
    pass
"""

PEERS = 8
PER_PEER = 32
ROUNDS = 12
PADDING = "".join(f"X-Pad-{n}: {'p' * 8000}\r\n" for n in range(4))
"""32 kB of headers per flood request (aiohttp's default limit is 8190 bytes a field)."""
BOUND = 60 * 1024
"""kB over the baseline the RSS must come back under."""


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


@asynccontextmanager
async def holding(host: str, port: int, path: str, count: int) -> AsyncIterator[None]:
    """``count`` connections with a partial body, open while the block runs."""
    async with AsyncExitStack() as stack:
        for _ in range(count):
            stream = await stack.enter_async_context(await anyio.connect_tcp(host, port))
            await stream.send(head(path, 100_000) + b"{")
        yield


async def flood(host: str, port: int, path: str) -> None:
    """``PEERS`` × ``PER_PEER`` × ``ROUNDS`` connections, ``PER_PEER`` at once per address, that
    send 32 kB of headers and a partial body, wait briefly for an answer, and leave."""
    request = head(path, 100_000, PADDING) + b"{" * 1000

    async def sender(peer: str) -> None:
        for _ in range(ROUNDS):
            try:
                async with await anyio.connect_tcp(host, port, local_host=peer) as stream:
                    await stream.send(request)
                    with anyio.move_on_after(0.3):
                        await stream.receive()  # a 503, where the slots are full
            except (OSError, anyio.BrokenResourceError, anyio.EndOfStream):
                pass

    async with anyio.create_task_group() as tg:
        for p in range(PEERS):
            for _ in range(PER_PEER):
                tg.start_soon(sender, f"127.0.0.{2 + p}")


@pytest.mark.slow
async def test_memory_returns_near_the_baseline_after_a_partial_body_flood(tmp_path: Path) -> None:
    (tmp_path / "floodapp.py").write_text(APP_MODULE)
    args = ("run", "floodapp:app", "--http", "127.0.0.1:0", "--max-in-flight", "4")
    async with mpsflow_process(tmp_path, ENV, *args) as (process, output):
        host, port, path = (await output.wait_for(SERVING)).groups()
        url = f"http://{host}:{port}{path}"
        note = seed_like("after")
        async with aiohttp.ClientSession() as session:
            for n in range(20):  # warm up: every code path of a callback has run once
                async with session.post(url, data=seed_like(f"warm-{n}")) as answer:
                    assert answer.status == 200
        baseline = rss_kb(process.pid)
        async with holding(host, int(port), path, 4):  # the in-flight slots, where they count
            await flood(host, int(port), path)
        rss = rss_kb(process.pid)
        with anyio.move_on_after(20):  # whatever the server still has to let go of
            while rss >= baseline + BOUND:  # another process: no event to wait for
                await anyio.sleep(0.1)
                rss = rss_kb(process.pid)
        assert rss < baseline + BOUND, f"RSS {baseline} kB before the flood, {rss} kB after"
        async with aiohttp.ClientSession() as session, session.post(url, data=note) as answer:
            assert answer.status == 200
    assert "Traceback" not in output.text
