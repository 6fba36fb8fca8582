"""HttpSource with an inbox: 200 once the body is durable, refusals at the door answered and
recorded as before, 503 when full, and the pipeline fed from the inbox with its retries,
dead letters and attempt numbers."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import anyio
import pytest

from mpsflow import App, Call, CallNext, Cause, Context, Outcome, Retry, RetryPolicy, Settlement
from mpsflow.events import WorkflowTask
from mpsflow.inbox import InboxItem, SQLiteInbox
from mpsflow.sinks.memory import MemorySink
from mpsflow.sources.base import ConfirmsStart, Source
from mpsflow.sources.http import HttpSource
from mpsflow.sources.runtime import SourceRuntime
from tests.inbox.door import KEY, post, probe, signed
from tests.sources.http_app import make_app, records, serve


async def until_dead_lettered(
    app: App, dead: MemorySink, folder: Path, attempts: list[int]
) -> None:
    """Serve ``app`` with an inbox and a handler that always fails (recording its attempts),
    POST one notification, and return once it is dead-lettered and gone from the inbox."""

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError("catalogue down")

    inbox = SQLiteInbox(folder / "inbox.sqlite3")
    async with serve(app, inbox=inbox) as source:
        assert (await post(source.url, signed("t-1")))[0] == 200
        with anyio.fail_after(20):  # the record is written before the item is settled
            while not records(dead) or await inbox.size():
                await inbox.wait_for_items(0.05)


async def test_an_admitted_notification_is_answered_then_processed_once(tmp_path: Path) -> None:
    app, dead = make_app(notify_keys=[KEY])
    handled: list[tuple[str, int]] = []
    done = anyio.Event()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        handled.append((ctx.task_id, ctx.attempt))
        done.set()

    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3")
    async with serve(app, inbox=inbox) as source:
        assert (await post(source.url, signed("t-1")))[:2] == (200, {"code": 0})
        with anyio.fail_after(10):
            await done.wait()
    assert handled == [("t-1", 1)]
    assert dead.records == []
    reopened = SQLiteInbox(tmp_path / "inbox.sqlite3")
    assert await reopened.size() == 0  # settled: removed
    await reopened.close()


async def test_refusals_at_the_door_are_answered_recorded_and_not_queued(tmp_path: Path) -> None:
    app, dead = make_app(notify_keys=[KEY])
    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3")
    async with serve(app, inbox=inbox) as source:
        status, body, _ = await post(source.url, signed("t-1").replace(b"Sign", b"Sig_"))
        assert status == 401
        status, body, _ = await post(source.url, b'{"EventType": "WorkflowTask", "Wor')
        assert (status, body["path"]) == (400, "$")
        assert await inbox.size() == 0
    assert [record.kind for record in records(dead)] == ["signature", "poison"]


async def test_a_full_inbox_answers_503_with_retry_after(tmp_path: Path) -> None:
    app, _ = make_app(notify_keys=[KEY])
    release = anyio.Event()
    started = anyio.Event()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        started.set()
        await release.wait()

    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3", max_items=1)
    async with serve(app, inbox=inbox, inbox_retry_after=7) as source:
        assert (await post(source.url, signed("t-1")))[0] == 200
        with anyio.fail_after(10):
            await started.wait()  # leased and running: still in the inbox until settled
        status, body, retry_after = await post(source.url, signed("t-2"))
        assert (status, body["error"], retry_after) == (503, "inbox full", "7")
        ready, metrics = await probe(source)
        assert ready == (503, {"ready": False, "reason": "inbox full"})
        assert "\nmpsflow_inbox_items 1\n" in metrics
        release.set()
        with anyio.fail_after(10):
            while await inbox.size():
                await inbox.wait_for_items(0.05)
        ready, metrics = await probe(source)
        assert ready == (200, {"ready": True})
        assert "\nmpsflow_inbox_items 0\n" in metrics


async def test_readyz_says_when_the_inbox_is_unavailable(tmp_path: Path) -> None:
    app, _ = make_app(notify_keys=[KEY])
    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3")
    async with serve(app, inbox=inbox, consume_inbox=False) as source:
        assert (await probe(source))[0] == (200, {"ready": True})
        await inbox.close()  # its storage is gone: every call fails from now on
        ready, metrics = await probe(source)
        assert ready == (503, {"ready": False, "reason": "inbox unavailable"})
        assert "mpsflow_inbox_items" not in metrics


class UnstartedConsumer:
    """An inbox's consumer that does not get to work (a queue that keeps answering "busy"):
    ``running`` is set once its run started."""

    name = "inbox"

    def __init__(self) -> None:
        self.running = anyio.Event()

    async def run(self, runtime: SourceRuntime) -> None:
        self.running.set()
        await runtime.stop.wait()

    async def wait_started(self) -> None:
        await anyio.sleep_forever()


class QueueInbox:
    """An inbox kept by a queue service, whose consumer is ``consumer``."""

    def __init__(self, consumer: UnstartedConsumer) -> None:
        self._consumer = consumer

    def describe(self) -> str:
        return "a queue"

    async def append(self, body: bytes) -> bool:
        return True

    async def size(self) -> int | None:
        return None

    def consumer(
        self, *, name: str = "inbox", max_in_flight: int = 64, lease_seconds: float = 60.0
    ) -> Source:
        return self._consumer

    async def close(self) -> None:
        pass


async def test_a_receiver_stopped_before_its_consumer_works_ends_without_serving() -> None:
    """The server waits for a consumer that can say it works (a CMQ queue's); a stop meanwhile
    ends the run at once, with nothing served."""
    consumer = UnstartedConsumer()
    assert isinstance(consumer, ConfirmsStart)
    app, _ = make_app()
    source = HttpSource(port=0, inbox=QueueInbox(consumer))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(app.run, source, handle_signals=False))
            await consumer.running.wait()
            app.stop()
    assert source.address is None  # it never listened


async def test_a_failing_handler_is_retried_from_the_inbox_then_dead_lettered(
    tmp_path: Path,
) -> None:
    app, dead = make_app(
        notify_keys=[KEY], retry=RetryPolicy(max_attempts=3, base_delay=0.01, jitter=0.0)
    )
    attempts: list[int] = []

    await until_dead_lettered(app, dead, tmp_path, attempts)
    assert attempts == [1, 2, 3]
    [record] = records(dead)
    assert (record.kind, record.attempt) == ("exhausted", 3)


async def test_a_signature_that_expires_while_it_waits_is_not_checked_again(
    tmp_path: Path,
) -> None:
    app, dead = make_app(notify_keys=[KEY])
    attempts: list[int] = []
    done = anyio.Event()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise Retry("later", delay=1.5)  # the signature expires meanwhile
        done.set()

    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3")
    async with serve(app, inbox=inbox) as source:
        assert (await post(source.url, signed("t-1", expires_in=1)))[0] == 200
        with anyio.fail_after(20):
            await done.wait()
    assert attempts == [1, 2]
    assert dead.records == []


@pytest.mark.parametrize("count", [40])
async def test_a_burst_is_processed_exactly_once(tmp_path: Path, count: int) -> None:
    app, _ = make_app(notify_keys=[KEY])
    handled: list[str] = []
    all_done = anyio.Event()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        handled.append(ctx.task_id)
        if len(handled) == count:
            all_done.set()

    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3")
    async with serve(app, inbox=inbox) as source:
        statuses: list[int] = []

        async def one(n: int) -> None:
            statuses.append((await post(source.url, signed(f"t-{n}")))[0])

        async with anyio.create_task_group() as tg:
            for n in range(count):
                tg.start_soon(one, n)
        with anyio.fail_after(20):
            await all_done.wait()
    assert statuses == [200] * count
    assert sorted(handled) == sorted(f"t-{n}" for n in range(count))


async def test_runs_put_off_by_middleware_do_not_use_up_attempts(tmp_path: Path) -> None:
    app, dead = make_app(
        notify_keys=[KEY], retry=RetryPolicy(max_attempts=2, base_delay=0.01, jitter=0.0)
    )
    put_off: list[int] = []
    attempts: list[int] = []

    async def busy_first(call: Call, call_next: CallNext) -> Outcome:
        if len(put_off) < 3:  # as if a duplicate were in progress on another worker
            put_off.append(call.delivery.attempt)
            return Outcome(Settlement.RETRY, retry_after=0.01, cause=Cause.DEFERRED)
        return await call_next(call)

    app.add_middleware(busy_first)

    await until_dead_lettered(app, dead, tmp_path, attempts)
    assert put_off == [1, 1, 1]
    assert attempts == [1, 2]  # both attempts of the policy ran the handler
    assert [r.attempt for r in records(dead)] == [2]


async def test_a_delivery_cut_off_at_shutdown_keeps_its_attempt(tmp_path: Path) -> None:
    app, _ = make_app(notify_keys=[KEY], shutdown_timeout=0.05)
    started = anyio.Event()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        started.set()
        await anyio.sleep_forever()

    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3")
    async with serve(app, inbox=inbox) as source:
        assert (await post(source.url, signed("t-1")))[0] == 200
        with anyio.fail_after(10):
            await started.wait()
    reopened = SQLiteInbox(tmp_path / "inbox.sqlite3")
    try:
        [item] = await reopened.lease(1, 30.0)  # visible at once, not after the lease
        assert item.attempt == 1
    finally:
        await reopened.close()


class CountingInbox(SQLiteInbox):
    """Counts the items leased (the handover in memory takes none)."""

    leased = 0

    async def lease(self, max_count: int, lease_seconds: float) -> list[InboxItem]:
        items = await super().lease(max_count, lease_seconds)
        self.leased += len(items)
        return items


async def test_appends_the_consumer_has_room_for_are_handed_over_decoded_the_rest_leased(
    tmp_path: Path,
) -> None:
    """With two slots and room for eight more ahead of them: ten notifications go to the
    consumer in memory, already decoded (one decode, no lease); the other three wait in the
    inbox for a lease."""
    app, dead = make_app(notify_keys=[KEY])
    release = anyio.Event()
    started: list[str] = []
    decoded_at_door: list[bool] = []

    async def note_decoded(call: Call, call_next: CallNext) -> Outcome:
        decoded_at_door.append(call.delivery.notification is not None)
        return await call_next(call)

    app.add_middleware(note_decoded, scope="delivery")

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        started.append(ctx.task_id)
        await release.wait()

    inbox = CountingInbox(tmp_path / "inbox.sqlite3")
    async with serve(app, inbox=inbox, max_in_flight=2) as source:
        for n in range(13):  # one at a time: max_in_flight also bounds the door's requests
            assert (await post(source.url, signed(f"t-{n}")))[0] == 200
        with anyio.fail_after(10):
            while len(started) < 2:
                await inbox.wait_for_items(0.01)
        assert await inbox.size() == 13  # all are durable
        release.set()
        with anyio.fail_after(10):
            while await inbox.size():
                await inbox.wait_for_items(0.05)
    assert sorted(started) == sorted(f"t-{n}" for n in range(13))
    assert sorted(decoded_at_door) == [False] * 3 + [True] * 10
    assert inbox.leased == 3
    assert dead.records == []


async def test_a_handler_past_the_handler_budget_is_cut_off_then_dead_lettered(
    tmp_path: Path,
) -> None:
    """Left running, it would outlive its lease and run again, concurrently and forever."""
    app, dead = make_app(retry=RetryPolicy(max_attempts=2, base_delay=0.01, jitter=0.0))
    attempts: list[int] = []
    never = anyio.Event()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        await never.wait()  # far slower than the budget

    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3")
    async with serve(app, inbox=inbox, handler_budget=2.2) as source:
        assert (await post(source.url, signed("t-1")))[0] == 200
        with anyio.fail_after(20):
            while not records(dead) or await inbox.size():
                await inbox.wait_for_items(0.05)
    assert attempts == [1, 2]  # one run per attempt, none concurrent with another
    [record] = records(dead)
    assert record.attempt == 2
    [failure] = record.failures
    assert failure.kind == "timeout"
    assert "still running at the delivery's deadline" in failure.message


async def test_an_item_whose_body_was_lost_is_dead_lettered_as_lost_and_removed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "inbox.sqlite3"
    appended = SQLiteInbox(path)
    assert await appended.append(signed("t-lost"))
    await appended.close()
    shutil.rmtree(f"{path}-bodies")  # as a removed folder (or a power cut before a sync)
    app, dead = make_app(notify_keys=[KEY])
    handled: list[str] = []

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        handled.append(ctx.task_id)

    inbox = SQLiteInbox(path)
    async with serve(app, inbox=inbox):
        with anyio.fail_after(10):
            while not records(dead) or await inbox.size():
                await inbox.wait_for_items(0.05)
    [record] = records(dead)
    assert "lost this notification's body" in record.reason
    assert handled == []
