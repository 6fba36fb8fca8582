"""The guarantee over real transports: the HTTP source on loopback, the CMQ source against the
project's CMQ-compatible server, with every store, handler failures and store faults.

The consumer each source gets is the app's pipeline wrapped to note every outcome, so the
checks see how each delivery ended (the HTTP answer alone does not tell an ack from a dead
letter). HTTP senders resend whatever was not answered 200, as MPS would; CMQ redelivers what
was not deleted after the visibility timeout (1 s here).
"""

from __future__ import annotations

import random
from pathlib import Path

import aiohttp
import anyio
import pytest

from mpsflow import App
from mpsflow.clock import SystemClock
from mpsflow.inbox import CmqInbox, SQLiteInbox
from mpsflow.sources.cmq import CmqSource
from mpsflow.sources.http import HttpSource
from mpsflow.tencentcloud.cmq.client import CmqClient
from mpsflow.tencentcloud.cmq.credentials import Credential
from tests.guarantee.conftest import STORES, StoreFactory, report
from tests.guarantee.faults import FaultyStore
from tests.guarantee.model import Ledger, Verdicts, assert_exactly_once, build_app, expected
from tests.guarantee.traffic import Send, generate, traffic
from tests.guarantee.transports import recording, running
from tests.plugins.cmq_server import CmqServerFactory

pytestmark = pytest.mark.slow

TASKS = 8
QUEUE = "guarantee"
RESEND_LIMIT = 400
RESEND_PAUSE = 0.01
DEADLINE = 60.0


async def send_http(url: str, sends: list[Send]) -> list[str]:
    """POST every send (each batch at once, 8 in flight), resending until answered 200."""
    problems: list[str] = []
    limiter = anyio.CapacityLimiter(8)
    batches: dict[int, list[Send]] = {}
    for send in sends:
        batches.setdefault(send.batch, []).append(send)

    async def post(session: aiohttp.ClientSession, send: Send) -> None:
        for _ in range(RESEND_LIMIT):
            async with session.post(url, data=send.body) as response:
                await response.read()
                if response.status == 200:
                    return
                if response.status < 500:
                    problems.append(f"{send.notice.task_id}: HTTP {response.status}")
                    return
            await anyio.sleep(RESEND_PAUSE)
        problems.append(f"{send.notice.task_id}: still not 200 after {RESEND_LIMIT} sends")

    async def batch(session: aiohttp.ClientSession, group: list[Send]) -> None:
        async with limiter, anyio.create_task_group() as tg:
            for send in group:
                tg.start_soon(post, session, send)

    async with aiohttp.ClientSession() as session, anyio.create_task_group() as tg:
        for number in sorted(batches):
            tg.start_soon(batch, session, batches[number])
    return problems


def scenario(
    kind: str, mode: str, make_store: StoreFactory, seed: int
) -> tuple[list[Send], Ledger, App, FaultyStore | None]:
    rng = random.Random(seed)
    sends = traffic(rng, generate(rng, TASKS))
    store = make_store(kind, SystemClock())
    faulty = None
    if mode == "store-faults":
        store = faulty = FaultyStore(store, windows=[(30, 70), (200, 240)], seed=seed)
    ledger = Ledger()
    return sends, ledger, build_app(store, ledger, flaky=mode == "flaky"), faulty


MODES = ["plain", "flaky", "store-faults"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", STORES)
async def test_http_source(kind: str, mode: str, make_store: StoreFactory) -> None:
    sends, ledger, app, faulty = scenario(kind, mode, make_store, 7 + MODES.index(mode))
    verdicts = Verdicts()
    notices = {send.body: send.notice for send in sends}
    source = HttpSource(host="127.0.0.1", port=0)
    with anyio.fail_after(DEADLINE):
        async with running(app, source, recording(app, notices, ledger, verdicts)):
            await source.wait_serving()
            problems = await send_http(source.url, sends)
    assert not problems, problems[:5]
    counts = assert_exactly_once(ledger, expected(s.notice for s in sends), verdicts)
    if faulty is not None:
        counts.update({f"faults_{k.replace(':', '_')}": v for k, v in faulty.failures.items()})
    report(f"http/{kind}/{mode}", counts)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", STORES)
async def test_cmq_source(
    kind: str,
    mode: str,
    make_store: StoreFactory,
    cmq_server_factory: CmqServerFactory,
    cmq_credential: Credential,
) -> None:
    sends, ledger, app, faulty = scenario(kind, mode, make_store, 17 + MODES.index(mode))
    verdicts = Verdicts()
    notices = {send.body: send.notice for send in sends}
    settled: set[str] = set()
    server = await cmq_server_factory(visibility_timeout=1)
    server.create_queue(QUEUE)
    async with CmqClient(server.url, cmq_credential) as client:
        for start in range(0, len(sends), 16):
            await client.batch_send(QUEUE, [s.body.decode() for s in sends[start : start + 16]])
        source = CmqSource(
            client, QUEUE, wait_seconds=1, pollers=2, max_in_flight=8, delete_delay=0.01
        )
        with anyio.fail_after(DEADLINE):
            async with running(app, source, recording(app, notices, ledger, verdicts, settled)):
                await source.wait_deleted(len(sends))
    assert len(server.queue(QUEUE)) == 0
    # A message whose processing outlived its visibility timeout is handed out again and
    # settled twice (the second time as a duplicate): every message at least once.
    assert len(settled) == len(sends)
    counts = assert_exactly_once(ledger, expected(s.notice for s in sends), verdicts)
    if faulty is not None:
        counts.update({f"faults_{k.replace(':', '_')}": v for k, v in faulty.failures.items()})
    report(f"cmq/{kind}/{mode}", counts)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", STORES)
async def test_http_source_with_an_inbox(
    kind: str, mode: str, make_store: StoreFactory, tmp_path: Path
) -> None:
    """The same traffic answered from a durable inbox: a 200 means queued, so the check waits
    until the inbox is empty, every notification settled from it."""
    sends, ledger, app, faulty = scenario(kind, mode, make_store, 27 + MODES.index(mode))
    verdicts = Verdicts()
    notices = {send.body: send.notice for send in sends}
    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3")
    source = HttpSource(host="127.0.0.1", port=0, inbox=inbox)
    with anyio.fail_after(DEADLINE):
        async with running(app, source, recording(app, notices, ledger, verdicts)):
            await source.wait_serving()
            problems = await send_http(source.url, sends)
            while await inbox.size():
                await inbox.wait_for_items(0.05)
    assert not problems, problems[:5]
    counts = assert_exactly_once(ledger, expected(s.notice for s in sends), verdicts)
    if faulty is not None:
        counts.update({f"faults_{k.replace(':', '_')}": v for k, v in faulty.failures.items()})
    report(f"http-inbox/{kind}/{mode}", counts)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", STORES)
async def test_http_source_with_a_cmq_inbox(
    kind: str,
    mode: str,
    make_store: StoreFactory,
    cmq_server_factory: CmqServerFactory,
    cmq_credential: Credential,
) -> None:
    """Receivers append to a CMQ queue, a worker processes it: the check waits until every
    message the door accepted was deleted, settled from the queue."""
    sends, ledger, app, faulty = scenario(kind, mode, make_store, 37 + MODES.index(mode))
    verdicts = Verdicts()
    notices = {send.body: send.notice for send in sends}
    server = await cmq_server_factory(visibility_timeout=1)
    server.create_queue(QUEUE)
    inbox = CmqInbox(CmqClient(server.url, cmq_credential), QUEUE, wait_seconds=1)
    receiver = HttpSource(host="127.0.0.1", port=0, inbox=inbox, consume_inbox=False)
    worker = CmqSource(
        inbox.client, QUEUE, wait_seconds=1, max_in_flight=8, delete_delay=0.01, admitted=True
    )
    consume = recording(app, notices, ledger, verdicts)
    try:
        with anyio.fail_after(DEADLINE):
            async with running(app, receiver, consume, worker):
                await receiver.wait_serving()
                problems = await send_http(receiver.url, sends)
                await worker.wait_deleted(len(sends))
    finally:
        await inbox.close()
    assert not problems, problems[:5]
    assert len(server.queue(QUEUE)) == 0
    counts = assert_exactly_once(ledger, expected(s.notice for s in sends), verdicts)
    if faulty is not None:
        counts.update({f"faults_{k.replace(':', '_')}": v for k, v in faulty.failures.items()})
    report(f"http-cmq-inbox/{kind}/{mode}", counts)
