"""Redis stops for 5 s in the middle of a load over HTTP; senders resend until answered 200.

The server is paused (SIGSTOP), not restarted: its data stays, connections hang, and the
commands that reached it while it was stopped run when it resumes, so claims are written
whose answers the app never got, and completions fail after handlers succeeded. Afterwards:

* no effect ran twice (a completion the store did not take is kept in the process and
  written later; a resend meanwhile is a duplicate);
* no notification stays answered 503 once Redis is back: a claim whose answer was lost is
  released on the next resend instead of blocking it for the claim's whole lease (65 s here),
  which the senders' budget (20 s after the store is back) would not survive.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import aiohttp
import anyio
import pytest

from mpsflow.dedup.stores import RedisStore
from mpsflow.sources.http import HttpSource
from tests.guarantee.conftest import report
from tests.guarantee.model import Ledger, Verdicts, assert_exactly_once, build_app, expected
from tests.guarantee.traffic import Send, generate, traffic
from tests.guarantee.transports import recording, running
from tests.plugins.redis_server import RedisServer

pytestmark = pytest.mark.slow

OUTAGE = 5.0
AFTER_RESUME = 20.0
PAUSE_BETWEEN_SENDS = 0.05


async def test_redis_stopped_for_5s_under_load(redis_spawn: Callable[[], RedisServer]) -> None:
    server = redis_spawn()
    rng = random.Random(5)
    sends = traffic(rng, generate(rng, 10), concurrent=0.3)
    ledger, verdicts = Ledger(), Verdicts()
    app = build_app(RedisStore(server.url), ledger)
    notices = {s.body: s.notice for s in sends}
    source = HttpSource(host="127.0.0.1", port=0, handler_budget=60.0)
    resumed = anyio.Event()
    give_up_at = float("inf")
    stuck: list[str] = []
    statuses: dict[int, int] = {}

    async def post(session: aiohttp.ClientSession, url: str, send: Send) -> None:
        while True:
            async with session.post(url, data=send.body) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
                if response.status == 200:
                    return
            if resumed.is_set() and anyio.current_time() > give_up_at:
                stuck.append(send.notice.task_id)
                return
            await anyio.sleep(PAUSE_BETWEEN_SENDS)

    async def outage() -> None:
        nonlocal give_up_at
        await anyio.sleep(0.3)  # mid-load
        server.pause()
        await anyio.sleep(OUTAGE)
        server.resume()
        give_up_at = anyio.current_time() + AFTER_RESUME
        resumed.set()

    with anyio.fail_after(OUTAGE + AFTER_RESUME + 30):  # a hang fails here, not at CI's limit
        async with (
            running(app, source, recording(app, notices, ledger, verdicts)),
            anyio.create_task_group() as tg,
        ):
            await source.wait_serving()
            url = source.url
            tg.start_soon(outage)
            limiter = anyio.CapacityLimiter(8)
            async with aiohttp.ClientSession() as session, anyio.create_task_group() as senders:

                async def one(send: Send) -> None:
                    async with limiter:
                        await post(session, url, send)

                for send in sends:
                    senders.start_soon(one, send)
                    await anyio.sleep(0.02)  # a steady load across the outage
            await resumed.wait()
    assert not stuck, f"still not 200 {AFTER_RESUME}s after Redis was back: {stuck[:5]}"
    assert statuses.get(503), "the outage never showed: the load ended before it"
    counts = assert_exactly_once(ledger, expected(s.notice for s in sends), verdicts)
    counts.update({f"http_{k}": v for k, v in sorted(statuses.items())})
    report("http/redis/paused-5s", counts)
