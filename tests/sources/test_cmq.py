"""The CMQ source against the local CMQ-compatible server over real loopback HTTP."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from mpsflow import App, Call, CallNext, Cause, Context, Outcome, RetryPolicy, Settlement
from mpsflow.clock import FakeClock
from mpsflow.deadletter import DeadLetter
from mpsflow.dedup.stores.memory import MemoryStore
from mpsflow.delivery import Delivery
from mpsflow.devservers.cmq import CmqServer
from mpsflow.errors import StartupError
from mpsflow.events import WorkflowTask
from mpsflow.sinks.memory import MemorySink
from mpsflow.sources.cmq import CmqSource
from mpsflow.tencentcloud.cmq.client import CmqClient
from mpsflow.tencentcloud.cmq.credentials import Credential
from mpsflow.tencentcloud.cmq.errors import CmqAuthError, CmqNetworkError
from mpsflow.tencentcloud.cmq.models import Message
from tests.plugins.cmq_server import CmqServerFactory, SilentEndpoint

QUEUE = "mps-notify"


def body(n: int) -> str:
    return json.dumps(
        {
            "EventType": "WorkflowTask",
            "WorkflowTaskEvent": {"TaskId": f"task-{n}", "Status": "FINISH", "ErrCode": 0},
        }
    )


def make_app(**kwargs: Any) -> tuple[App, MemorySink]:
    dead = MemorySink()
    return App(dead_letters=dead, **kwargs), dead


async def run_until(app: App, source: CmqSource, done: anyio.Event) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: app.run(source, handle_signals=False))
        with anyio.fail_after(20):
            await done.wait()
        app.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


QueueServer = Callable[..., Awaitable[CmqServer]]


@pytest.fixture
def queue_server(cmq_server_factory: CmqServerFactory) -> QueueServer:
    """Start a CMQ server (with any ``CmqServer`` options) that has the queue ``QUEUE``."""

    async def start(**options: Any) -> CmqServer:
        server = await cmq_server_factory(**options)
        server.create_queue(QUEUE)
        return server

    return start


async def test_messages_are_processed_then_deleted_in_batches(
    queue_server: QueueServer, cmq_credential: Credential
) -> None:
    server = await queue_server()
    app, _ = make_app()
    seen: list[str] = []
    done = anyio.Event()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        seen.append(ctx.task_id)
        if len(seen) == 40:
            done.set()

    async with CmqClient(server.url, cmq_credential) as client:
        for start in range(0, 40, 16):
            await client.batch_send(QUEUE, [body(n) for n in range(start, min(start + 16, 40))])
        source = CmqSource(client, QUEUE, wait_seconds=1, max_in_flight=8, pollers=2)
        await run_until(app, source, done)
    assert sorted(seen) == sorted(f"task-{n}" for n in range(40))
    queue = server.queue(QUEUE)
    assert len(queue) == 0
    assert source.deleted == 40


async def advance_after(clock: FakeClock, event: anyio.Event, seconds: float) -> None:
    """Once ``event`` is set, move the server's clock past the visibility timeout."""
    await event.wait()
    clock.advance(seconds)


async def test_failure_waits_for_the_visibility_timeout_and_counts_attempts(
    queue_server: QueueServer, cmq_credential: Credential, clock: FakeClock
) -> None:
    server = await queue_server(clock=clock, visibility_timeout=30)
    app, dead = make_app(retry=RetryPolicy(max_attempts=3))
    attempts: list[int] = []
    failed_once = anyio.Event()
    done = anyio.Event()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            failed_once.set()
            raise ConnectionError("downstream busy")
        done.set()

    async with CmqClient(server.url, cmq_credential) as client:
        await client.send(QUEUE, body(1))
        source = CmqSource(client, QUEUE, wait_seconds=0, pollers=1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(advance_after, clock, failed_once, 31)
            await run_until(app, source, done)
    assert attempts == [1, 2]  # attempt 2 = dequeueCount from the server
    assert len(server.queue(QUEUE)) == 0
    assert dead.records == []


class SettleSignals(CmqSource):
    """A ``CmqSource`` that says when it settled a delivery (``settled``: a new event each
    time, swapped by the waiter) and when one was settled for good (``done``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settled = anyio.Event()
        self.done = anyio.Event()

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        await super().settle(delivery, outcome)
        self.settled.set()
        if outcome.settled:
            self.done.set()


async def test_runs_put_off_by_middleware_do_not_use_up_attempts(
    queue_server: QueueServer, cmq_credential: Credential, clock: FakeClock
) -> None:
    server = await queue_server(clock=clock, visibility_timeout=30)
    app, dead = make_app(retry=RetryPolicy(max_attempts=2))
    put_off: list[int] = []
    attempts: list[int] = []

    async def busy_first(call: Call, call_next: CallNext) -> Outcome:
        if len(put_off) < 3:  # as if a duplicate were in progress on another worker
            put_off.append(call.delivery.attempt)
            return Outcome(Settlement.RETRY, retry_after=1, cause=Cause.DEFERRED)
        return await call_next(call)

    app.add_middleware(busy_first)

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        raise ConnectionError("downstream busy")

    async def visible_again(source: SettleSignals) -> None:
        """After each settled run, move the server's clock past the visibility timeout."""
        while True:
            await source.settled.wait()
            source.settled = anyio.Event()
            clock.advance(31)

    async with CmqClient(server.url, cmq_credential) as client:
        await client.send(QUEUE, body(1))
        source = SettleSignals(client, QUEUE, wait_seconds=0, pollers=1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(visible_again, source)
            await run_until(app, source, source.done)
            tg.cancel_scope.cancel()
    assert put_off == [1, 1, 1]
    assert attempts == [1, 2]  # both attempts of the policy ran the handler
    assert [r.attempt for r in dead.records if isinstance(r, DeadLetter)] == [2]


async def test_exhausted_and_poison_messages_are_dead_lettered_then_deleted(
    queue_server: QueueServer, cmq_credential: Credential, clock: FakeClock
) -> None:
    server = await queue_server(clock=clock, visibility_timeout=30)
    app, dead = make_app(retry=RetryPolicy(max_attempts=2))
    failed_once = anyio.Event()
    done = anyio.Event()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        failed_once.set()
        raise RuntimeError("always broken")

    async with CmqClient(server.url, cmq_credential) as client:
        await client.send(QUEUE, body(1))
        await client.send(QUEUE, "this is not an MPS notification")
        source = CmqSource(client, QUEUE, wait_seconds=0, pollers=1, delete_delay=0)

        async def watch() -> None:
            await dead.wait_for(2)
            await source.wait_deleted(2)
            done.set()

        async def advance_once_poison_is_gone() -> None:
            # Only move time once the poison message's delete went out, as it would in real
            # life (a 30 s visibility timeout against a delete that takes milliseconds).
            await failed_once.wait()
            await dead.wait_for(1)
            await source.wait_deleted(1)
            clock.advance(31)

        async with anyio.create_task_group() as tg:
            tg.start_soon(advance_once_poison_is_gone)
            tg.start_soon(watch)
            await run_until(app, source, done)
    kinds = sorted(record.kind for record in dead.records)  # type: ignore[attr-defined]
    assert kinds == ["exhausted", "poison"]
    assert len(server.queue(QUEUE)) == 0


async def test_in_flight_limit_is_respected_before_receiving_more(
    queue_server: QueueServer, cmq_credential: Credential
) -> None:
    server = await queue_server()
    app, _ = make_app()
    release = anyio.Event()
    started = 0
    three = anyio.Event()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        nonlocal started
        started += 1
        if started == 3:
            three.set()
        await release.wait()

    async with CmqClient(server.url, cmq_credential) as client:
        await client.batch_send(QUEUE, [body(n) for n in range(10)])
        source = CmqSource(client, QUEUE, wait_seconds=0, max_in_flight=3, pollers=2)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: app.run(source, handle_signals=False))
            with anyio.fail_after(10):
                await three.wait()
            queue = server.queue(QUEUE)
            assert queue.inflight_count() == 3
            assert queue.visible_count() == 7
            release.set()
            app.stop()
    assert started >= 3


async def test_expired_receipt_handle_is_not_lost_nor_processed_twice(
    queue_server: QueueServer, cmq_credential: Credential, clock: FakeClock
) -> None:
    server = await queue_server(clock=clock, visibility_timeout=10)
    app, dead = make_app(idempotency=MemoryStore(clock=clock), clock=clock)
    runs: list[int] = []
    first_started = anyio.Event()
    release = anyio.Event()
    outcomes: list[tuple[int, Settlement]] = []
    outcome_seen = anyio.Event()

    async def record(call: Call, call_next: CallNext) -> Outcome:
        nonlocal outcome_seen
        outcome = await call_next(call)
        outcomes.append((call.delivery.attempt, outcome.settlement))
        outcome_seen.set()
        outcome_seen = anyio.Event()
        return outcome

    app.add_middleware(record, scope="delivery")

    @app.on("WorkflowTask")
    async def slow(event: WorkflowTask, ctx: Context) -> None:
        runs.append(ctx.attempt)
        first_started.set()
        await release.wait()

    async def wait_for_outcome(attempt: int) -> None:
        while not any(a == attempt for a, _ in outcomes):
            await outcome_seen.wait()

    async with CmqClient(server.url, cmq_credential) as client:
        await client.send(QUEUE, body(1))
        source = CmqSource(client, QUEUE, wait_seconds=0, pollers=1, delete_delay=0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: app.run(source, handle_signals=False))
            with anyio.fail_after(10):
                await first_started.wait()
                clock.advance(11)  # the handler outlives the visibility timeout: redelivered
                await wait_for_outcome(2)  # the duplicate is deferred: a claim is live
                release.set()  # the first run ends; its delete uses the expired handle
                await wait_for_outcome(1)
                while source.expired_handles == 0:
                    await source._deleted_changed.wait()
                clock.advance(11)  # the message comes back once more: dedup skips it
                await source.wait_deleted(1)
            app.stop()
    assert runs == [1]  # the handler ran once in effect
    assert (2, Settlement.RETRY) in outcomes
    assert outcomes[-1] == (3, Settlement.ACK)
    assert source.expired_handles == 1
    assert len(server.queue(QUEUE)) == 0
    assert dead.records == []


# -- startup failures and restarts -------------------------------------------------------------


async def test_wrong_credentials_end_run_with_one_startup_error(queue_server: QueueServer) -> None:
    server = await queue_server()
    app, _ = make_app()
    async with CmqClient(server.url, Credential("AKIDwrong", "wrong-key")) as client:
        source = CmqSource(client, QUEUE, wait_seconds=0, pollers=2)
        with pytest.raises(StartupError) as raised:
            await app.run(source, handle_signals=False)
    message = str(raised.value)
    assert message.startswith(f"CMQ refused the credentials for queue {QUEUE} at {client.url} ")
    assert "(code 4100: " in message
    assert message.endswith("): check TENCENTCLOUD_SECRETID/TENCENTCLOUD_SECRETKEY")
    assert isinstance(raised.value.__cause__, CmqAuthError)


async def test_a_missing_queue_ends_run_with_one_startup_error(
    cmq_server_factory: CmqServerFactory, cmq_credential: Credential
) -> None:
    server = await cmq_server_factory(auto_create=False)
    app, _ = make_app()
    async with CmqClient(server.url, cmq_credential) as client:
        source = CmqSource(client, "missing", wait_seconds=0, pollers=1)
        with pytest.raises(StartupError) as raised:
            await app.run(source, handle_signals=False)
    assert str(raised.value) == (
        f"CMQ queue missing at {client.url} does not exist (code 4440): create it, or check "
        "the queue name and the endpoint's region"
    )


async def test_a_missing_queue_fails_at_once_however_long_the_source_polls(
    cmq_server_factory: CmqServerFactory,
    cmq_credential: Credential,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mpsflow.sources.cmq")
    server = await cmq_server_factory(auto_create=False)
    app, _ = make_app()
    async with CmqClient(server.url, cmq_credential) as client:
        source = CmqSource(client, "missing", wait_seconds=30, pollers=1)
        with pytest.raises(StartupError), anyio.fail_after(10):  # not after a 30 s poll
            await app.run(source, handle_signals=False)
    assert not [r for r in caplog.records if "consuming" in r.getMessage()]


async def test_an_endpoint_that_never_answers_ends_run_with_one_startup_error(
    cmq_credential: Credential,
) -> None:
    app, _ = make_app()
    with socket.socket() as silent:  # takes connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        retry = RetryPolicy(max_attempts=2, base_delay=0.01, jitter=0.0)
        client = CmqClient(
            f"http://127.0.0.1:{port}", cmq_credential, poll_timeout_margin=0.2, retry=retry
        )
        async with client:
            source = CmqSource(client, QUEUE, wait_seconds=30, pollers=2)
            with pytest.raises(StartupError) as raised, anyio.fail_after(20):
                await app.run(source, handle_signals=False)
    message = str(raised.value)
    assert message.startswith(f"CMQ at {client.url} did not answer (")
    assert "no answer within 0.2s" in message  # the first receive does not wait
    assert isinstance(raised.value.__cause__, CmqNetworkError)
    assert raised.value.__cause__.timed_out


async def test_an_endpoint_that_never_answers_is_asked_once_at_startup(
    silent_cmq: SilentEndpoint, cmq_credential: Credential
) -> None:
    """The first receive is not sent again after a timeout (it ends the run anyway): one
    timeout, not one per attempt of the client's retry policy, which stays as it is."""
    app, _ = make_app()
    retries = FakeClock()
    retry = RetryPolicy(max_attempts=4, base_delay=0.5, jitter=0.0)
    client = CmqClient(
        silent_cmq.url, cmq_credential, poll_timeout_margin=0.2, retry=retry, clock=retries
    )
    async with client:
        source = CmqSource(client, QUEUE, wait_seconds=30, pollers=1)
        with pytest.raises(StartupError) as raised, anyio.fail_after(20):
            await app.run(source, handle_signals=False)
    assert silent_cmq.connections() == 1
    assert retries.sleeps == []
    assert isinstance(raised.value.__cause__, CmqNetworkError)
    assert raised.value.__cause__.timed_out


class ReceiveRecorder(CmqClient):
    """A client that notes each receive's ``retry_timeouts``; ``polled`` once 3 were made."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_timeouts: list[bool | None] = []
        self.polled = anyio.Event()

    async def batch_receive(
        self, queue: str, n: int, wait: int | None = None, *, retry_timeouts: bool | None = None
    ) -> list[Message]:
        self.retry_timeouts.append(retry_timeouts)
        if len(self.retry_timeouts) >= 3:
            self.polled.set()
        return await super().batch_receive(queue, n, wait, retry_timeouts=retry_timeouts)


async def test_receives_after_the_first_keep_the_clients_retries(
    queue_server: QueueServer, cmq_credential: Credential
) -> None:
    """Once the queue works, a consumer rides out timeouts: only the first receive of a run
    gives up after one."""
    server = await queue_server()
    app, _ = make_app()
    async with ReceiveRecorder(server.url, cmq_credential) as client:
        source = CmqSource(client, QUEUE, wait_seconds=0, pollers=1)
        await run_until(app, source, client.polled)
    first, *later = client.retry_timeouts
    assert first is False
    assert len(later) >= 2
    assert set(later) == {None}


async def test_consuming_is_logged_once_the_first_receive_worked_on_an_empty_queue(
    queue_server: QueueServer, cmq_credential: Credential
) -> None:
    server = await queue_server()
    app, _ = make_app()
    watch = LineWatch(f"consuming CMQ queue {QUEUE} at ")
    cmq_log = logging.getLogger("mpsflow.sources.cmq")
    cmq_log.addHandler(watch)
    previous_level = cmq_log.level
    cmq_log.setLevel(logging.INFO)
    try:
        async with CmqClient(server.url, cmq_credential) as client:
            # Long polls of 30 s: the line comes from the first receive, which does not wait.
            source = CmqSource(client, QUEUE, wait_seconds=30, pollers=2)
            await run_until(app, source, watch.seen)
    finally:
        cmq_log.removeHandler(watch)
        cmq_log.setLevel(previous_level)


async def test_caught_up_at_is_when_a_receive_last_got_fewer_messages_than_it_asked_for(
    queue_server: QueueServer, cmq_credential: Credential, clock: FakeClock
) -> None:
    """CMQ tells no count: a full batch says more may wait, a short one that nothing did."""
    server = await queue_server()
    async with CmqClient(server.url, cmq_credential) as client:
        for n in range(3):
            await client.send(QUEUE, body(n))
        source = CmqSource(client, QUEUE, batch_size=2, wait_seconds=0, clock=clock)
        assert source.caught_up_at == 0.0
        assert len(await source.receive(5)) == 2  # as many as a batch takes
        assert len(await source.receive(1)) == 1  # as many as asked (one free slot)
        assert source.caught_up_at == 0.0
        clock.advance(5.0)
        assert await source.receive(2) == []
        assert source.caught_up_at == clock.time()
        await client.send(QUEUE, body(3))
        clock.advance(5.0)
        assert len(await source.receive(2)) == 1
        assert source.caught_up_at == clock.time()


class RestartWatch(logging.Handler):
    """Sets ``seen`` once ``count`` "restarting in" lines were logged."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.seen = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "restarting in" in record.getMessage():
            self.count -= 1
            if self.count <= 0:
                self.seen.set()


class LineWatch(logging.Handler):
    """Sets ``seen`` once a line starting with ``start`` was logged."""

    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start
        self.seen = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(self.start):
            self.seen.set()


class SwitchableKeys:
    """Credentials that can be swapped while the source runs (keys revoked, then fixed)."""

    def __init__(self, credential: Credential) -> None:
        self.credential = credential

    async def get_credential(self) -> Credential:
        return self.credential


async def test_credentials_refused_after_serving_restart_the_source_with_backoff(
    queue_server: QueueServer,
    cmq_credential: Credential,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await queue_server()
    app, _ = make_app(clock=clock)
    keys = SwitchableKeys(cmq_credential)
    seen: list[str] = []
    first, done = anyio.Event(), anyio.Event()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        seen.append(ctx.task_id)
        if len(seen) == 1:
            keys.credential = Credential("AKIDrevoked", "revoked")  # the next receive fails
            first.set()
        else:
            done.set()

    restarts = RestartWatch(2)
    logging.getLogger("mpsflow.app").addHandler(restarts)

    async def fix_keys_after_two_restarts() -> None:
        await restarts.seen.wait()
        keys.credential = cmq_credential
        async with CmqClient(server.url, cmq_credential) as sender:
            await sender.send(QUEUE, body(2))

    try:
        async with CmqClient(server.url, keys) as client:
            await client.send(QUEUE, body(1))
            source = CmqSource(client, QUEUE, wait_seconds=0, pollers=1, clock=FakeClock())
            async with anyio.create_task_group() as tg:
                tg.start_soon(fix_keys_after_two_restarts)
                await run_until(app, source, done)
    finally:
        logging.getLogger("mpsflow.app").removeHandler(restarts)
    assert seen == ["task-1", "task-2"]
    assert clock.sleeps[:2] == [0.5, 1.0]
    lines = [r.getMessage() for r in caplog.records if r.name == "mpsflow.app"]
    assert lines[0].startswith("source cmq failed: BatchReceiveMessage failed: code 4100")
    assert lines[0].endswith("; restarting in 0.5s")
    assert lines[1].startswith("source cmq cannot run: CMQ refused the credentials for queue")
    assert lines[1].endswith("; restarting in 1s")


async def test_an_endpoint_that_goes_away_after_serving_is_polled_until_it_is_back(
    queue_server: QueueServer, cmq_credential: Credential, caplog: pytest.LogCaptureFixture
) -> None:
    server = await queue_server()
    port = server.port
    app, _ = make_app()
    seen: list[str] = []
    first, second = anyio.Event(), anyio.Event()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        seen.append(ctx.task_id)
        (first if len(seen) == 1 else second).set()

    caplog.set_level(logging.INFO, logger="mpsflow.sources.cmq")
    failed = LineWatch(f"receive from {QUEUE} failed")
    logging.getLogger("mpsflow.sources.cmq").addHandler(failed)
    fast = RetryPolicy(max_attempts=1_000_000, base_delay=0.01, max_delay=0.05, jitter=0.0)
    async with CmqClient(server.url, cmq_credential, retry=RetryPolicy(max_attempts=1)) as client:
        source = CmqSource(client, QUEUE, wait_seconds=0, pollers=1, error_backoff=fast)
        await client.send(QUEUE, body(1))
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: app.run(source, handle_signals=False))
            with anyio.fail_after(20):
                await first.wait()
                await server.stop()  # gone after serving: not a startup error
                await failed.seen.wait()
                await server.start("127.0.0.1", port)
                await client.send(QUEUE, body(2))
                await second.wait()
            app.stop()
    logging.getLogger("mpsflow.sources.cmq").removeHandler(failed)
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith(f"receive from {QUEUE} failed (") for line in lines)
    assert any(line.startswith(f"receive from {QUEUE} works again after ") for line in lines)
    assert seen == ["task-1", "task-2"]
