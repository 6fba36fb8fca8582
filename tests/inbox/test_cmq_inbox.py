"""A CMQ queue as the inbox (``CmqInbox``), on the local CMQ server: receivers answer 200 once
the queue accepted a notification, workers process it once, and every way the queue can
refuse (full, too large, unreachable, closed) is a 503 that keeps the notification with the
sender."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from functools import partial

import anyio
import pytest

from mpsflow import Context, RetryPolicy
from mpsflow.clock import FakeClock
from mpsflow.dedup.stores.memory import MemoryStore
from mpsflow.devservers.cmq import CmqServer
from mpsflow.errors import InboxUnavailable, StartupError
from mpsflow.events import WorkflowTask
from mpsflow.inbox import CmqInbox, Inbox
from mpsflow.observability.metrics import InMemoryMetrics
from mpsflow.sources.cmq import CmqSource
from mpsflow.sources.http import HttpSource
from mpsflow.tencentcloud.cmq.client import CmqClient
from mpsflow.tencentcloud.cmq.credentials import Credential
from tests.inbox.door import KEY, post, probe, signed
from tests.plugins.cmq_server import CmqServerFactory, SilentEndpoint
from tests.sources.http_app import make_app, records, serve

QUEUE = "inbox"
CAUGHT_UP = re.compile(r"^mpsflow_inbox_last_caught_up_timestamp_seconds (\S+)$", re.MULTILINE)


def caught_up(metrics: str) -> float:
    """The time ``/metrics`` says this process last took everything waiting in its queue."""
    match = CAUGHT_UP.search(metrics)
    assert match is not None, metrics
    return float(match.group(1))


@pytest.fixture
async def server(cmq_server_factory: CmqServerFactory) -> CmqServer:
    server = await cmq_server_factory()
    server.create_queue(QUEUE)
    return server


@pytest.fixture
async def inbox(server: CmqServer, cmq_credential: Credential) -> AsyncIterator[CmqInbox]:
    box = CmqInbox(CmqClient(server.url, cmq_credential), QUEUE, wait_seconds=1)
    yield box
    await box.close()


async def test_a_receiver_appends_and_a_worker_handles_each_notification_once(
    server: CmqServer, inbox: CmqInbox
) -> None:
    """The receiver only appends; the worker is the inbox's consumer. A notification posted
    twice is two messages, handled once."""
    app, dead = make_app(notify_keys=[KEY], idempotency=MemoryStore())
    handled: list[str] = []

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        handled.append(ctx.task_id)

    receiver = HttpSource(port=0, inbox=inbox, consume_inbox=False)
    worker = inbox.consumer(name="cmq-inbox", max_in_flight=8, lease_seconds=30)
    assert isinstance(worker, CmqSource)
    bodies = [signed(f"t-{n}") for n in range(12)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(app.run, receiver, worker, handle_signals=False))
        await receiver.wait_serving()
        for body in [*bodies, bodies[0], bodies[5]]:
            assert (await post(receiver.url, body))[:2] == (200, {"code": 0})
        with anyio.fail_after(20):
            await worker.wait_deleted(len(bodies) + 2)
        app.stop()
    assert sorted(handled) == sorted(f"t-{n}" for n in range(12))
    assert len(server.queue(QUEUE)) == 0
    assert dead.records == []


async def test_a_receiver_serves_only_once_it_consumes_its_queue(
    inbox: CmqInbox, caplog: pytest.LogCaptureFixture
) -> None:
    """Its consumer's first receive comes before the server: "serving" is said only once the
    queue is known to exist and to take the keys."""
    caplog.set_level(logging.INFO, logger="mpsflow")
    app, _ = make_app()
    async with serve(app, inbox=inbox):
        pass
    lines = [record.getMessage() for record in caplog.records]
    consuming = [n for n, line in enumerate(lines) if line.startswith("consuming CMQ queue")]
    serving = [n for n, line in enumerate(lines) if line.startswith("serving MPS callbacks")]
    assert len(consuming) == len(serving) == 1, lines
    assert consuming < serving, lines


async def test_a_receiver_of_a_queue_that_does_not_exist_ends_before_it_serves(
    cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    server = await cmq_server_factory(auto_create=False)
    server.create_queue(QUEUE)
    inbox = CmqInbox(CmqClient(server.url, cmq_credential), "inbx", wait_seconds=1)
    app, _ = make_app()
    source = HttpSource(port=0, inbox=inbox)
    try:
        with anyio.fail_after(20), pytest.raises(StartupError, match="CMQ queue inbx at "):
            await app.run(source, handle_signals=False)
    finally:
        await inbox.close()
    assert source.address is None  # it never listened, so nothing said "serving"


async def test_the_receiver_consumes_its_inbox_by_default(inbox: CmqInbox) -> None:
    app, _ = make_app(notify_keys=[KEY])
    done = anyio.Event()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        done.set()

    async with serve(app, inbox=inbox) as source:
        assert (await post(source.url, signed("t-1")))[0] == 200
        with anyio.fail_after(20):
            await done.wait()


@pytest.mark.parametrize("admitted", [True, False])
async def test_a_signature_that_expires_in_the_queue_is_not_checked_again(
    server: CmqServer, inbox: CmqInbox, admitted: bool
) -> None:
    """The inbox's consumer takes the door's word; a plain CMQ source checks again."""
    expired = signed("t-1", expires_in=-60)  # it waited in the queue past its Timestamp
    await inbox.client.send(QUEUE, expired)
    app, dead = make_app(notify_keys=[KEY])
    handled: list[str] = []

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        handled.append(ctx.task_id)

    source = CmqSource(inbox.client, QUEUE, wait_seconds=1, admitted=admitted)
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(app.run, source, handle_signals=False))
        with anyio.fail_after(20):
            await source.wait_deleted(1)
        app.stop()
    if admitted:
        assert (handled, records(dead)) == (["t-1"], [])
    else:
        assert handled == []
        assert [record.kind for record in records(dead)] == ["signature"]


async def test_refusals_at_the_door_are_answered_and_not_queued(
    server: CmqServer, inbox: CmqInbox
) -> None:
    app, dead = make_app(notify_keys=[KEY])
    async with serve(app, inbox=inbox, consume_inbox=False) as source:
        status, _, _ = await post(source.url, signed("t-1").replace(b"Sign", b"Sig_"))
        assert status == 401
    assert len(server.queue(QUEUE)) == 0
    assert [record.kind for record in records(dead)] == ["signature"]


async def test_a_full_queue_answers_503_with_retry_after(
    cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    server = await cmq_server_factory()
    server.create_queue(QUEUE, max_msg_heap_num=2)
    inbox = CmqInbox(CmqClient(server.url, cmq_credential), QUEUE)
    app, _ = make_app(notify_keys=[KEY])
    async with serve(app, inbox=inbox, consume_inbox=False, inbox_retry_after=7) as source:
        for task in ("t-1", "t-2"):
            assert (await post(source.url, signed(task)))[0] == 200
        status, body, retry_after = await post(source.url, signed("t-3"))
        assert (status, body["error"], retry_after) == (503, "inbox full", "7")
    await inbox.close()
    assert len(server.queue(QUEUE)) == 2


async def test_a_body_larger_than_the_queue_allows_is_kept_as_a_dead_letter_and_answered_413(
    cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    """Sending it again could never help: it is recorded whole (it passed the door's checks,
    so it can be replayed once the queue takes larger messages) and the sender told so."""
    server = await cmq_server_factory()
    server.create_queue(QUEUE, max_msg_size=100)  # the body is about 400 bytes
    inbox = CmqInbox(CmqClient(server.url, cmq_credential), QUEUE)
    app, dead = make_app(notify_keys=[KEY])
    body = signed("t-1")
    async with serve(app, inbox=inbox, consume_inbox=False) as source:
        status, answer, _ = await post(source.url, body)
    await inbox.close()
    assert status == 413
    assert "raise it" in answer["error"]
    [record] = records(dead)
    assert (record.kind, record.task_id, record.body_truncated) == ("poison", "t-1", False)
    assert record.raw_body() == body


async def test_an_unreachable_queue_answers_503(cmq_credential: Credential) -> None:
    client = CmqClient(
        "http://127.0.0.1:9", cmq_credential, retry=RetryPolicy(max_attempts=1, base_delay=0)
    )
    inbox = CmqInbox(client, QUEUE)
    app, _ = make_app(notify_keys=[KEY])
    async with serve(app, inbox=inbox, consume_inbox=False) as source:
        status, body, retry_after = await post(source.url, signed("t-1"))
    await inbox.close()
    assert (status, body["error"], retry_after) == (503, "inbox unavailable", "5")


async def test_the_cmq_inbox_is_an_inbox_and_a_closed_one_is_unavailable(
    inbox: CmqInbox,
) -> None:
    assert isinstance(inbox, Inbox)
    assert inbox.describe() == f"cmq:{QUEUE} at {inbox.client.url}"
    assert await inbox.size() is None
    assert await inbox.append(b"{}")
    await inbox.close()
    with pytest.raises(InboxUnavailable, match="closed"):
        await inbox.append(b"{}")


async def test_a_receiver_whose_appends_fail_is_not_ready_until_one_works(
    cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    """CMQ has no count to check: a failed append makes ``/readyz`` answer 503 (a load balancer
    stops sending callbacks it would refuse), until an append works or ``unavailable_for``
    passes (one that no traffic reaches any more tries again)."""
    server = await cmq_server_factory(auto_create=False)
    clock = FakeClock()
    client = CmqClient(server.url, cmq_credential, retry=RetryPolicy(max_attempts=1))
    inbox = CmqInbox(client, QUEUE, unavailable_for=10.0, clock=clock)  # no such queue yet
    app, _ = make_app(notify_keys=[KEY])
    async with serve(app, inbox=inbox, consume_inbox=False) as source:
        assert (await probe(source))[0][0] == 200
        status, answer, _ = await post(source.url, signed("t-1"))
        assert (status, answer["error"]) == (503, "inbox unavailable")
        assert (await probe(source))[0] == (503, {"ready": False, "reason": "inbox unavailable"})
        clock.advance(10.0)
        assert (await probe(source))[0][0] == 200  # tries again
        assert (await post(source.url, signed("t-2")))[0] == 503
        assert (await probe(source))[0][0] == 503
        server.create_queue(QUEUE)
        assert (await post(source.url, signed("t-3")))[0] == 200
        assert (await probe(source))[0][0] == 200
    await inbox.close()
    assert len(server.queue(QUEUE)) == 1


async def test_metrics_show_when_the_receiver_last_caught_up_with_its_queue(
    inbox: CmqInbox,
) -> None:
    """CMQ tells no count, so ``/metrics`` shows when this process last took everything waiting
    (it stays put while the process is behind), not ``mpsflow_inbox_items``. Deliveries count
    under the receiver's name, as with a SQLite inbox: they came in through it."""
    app, _ = make_app(notify_keys=[KEY])
    started = anyio.Event()
    release = anyio.Event()
    done = anyio.Event()
    handled: list[str] = []

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        started.set()
        await release.wait()
        handled.append(ctx.task_id)
        if len(handled) == 2:
            done.set()

    async with serve(app, inbox=inbox, max_in_flight=1) as source:
        _, metrics = await probe(source)
        assert 0 < caught_up(metrics) <= time.time()  # its first receive found the queue empty
        assert "mpsflow_inbox_items" not in metrics
        assert (await post(source.url, signed("t-1")))[0] == 200
        with anyio.fail_after(20):
            await started.wait()  # its one slot is taken: it receives no more for now
        behind = caught_up((await probe(source))[1])
        before_second = time.time()
        assert (await post(source.url, signed("t-2")))[0] == 200  # waits in the queue
        assert caught_up((await probe(source))[1]) == behind < before_second
        release.set()
        with anyio.fail_after(20):
            await done.wait()
    assert isinstance(app.metrics, InMemoryMetrics)
    assert app.metrics.deliveries == {("http", "ack"): 2}


async def test_a_scrape_never_waits_for_the_queue(
    silent_cmq: SilentEndpoint, cmq_credential: Credential
) -> None:
    """``/metrics`` and ``/readyz`` read nothing from CMQ: they answer at once while the queue
    answers nothing. A receiver that only appends has no consumer to say when it caught up."""
    inbox = CmqInbox(CmqClient(silent_cmq.url, cmq_credential), QUEUE)
    app, _ = make_app(notify_keys=[KEY])
    async with serve(app, inbox=inbox, consume_inbox=False) as source:
        with anyio.fail_after(5):
            ready, metrics = await probe(source)
    await inbox.close()
    assert ready == (200, {"ready": True})
    assert "mpsflow_inbox_last_caught_up_timestamp_seconds" not in metrics
    assert "mpsflow_http_callback_responses" in metrics
