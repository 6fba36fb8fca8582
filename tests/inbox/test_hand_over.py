"""InboxSource's hand-over from a receiver in the same process: appends taken in memory ahead
of the free slots, and given back (visible at once, for a fresh lease) once they waited half
their lease."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from mpsflow import Context
from mpsflow.clock import FakeClock
from mpsflow.events import WorkflowTask
from mpsflow.inbox import InboxSource, SQLiteInbox
from tests.inbox.door import post, signed
from tests.sources.http_app import make_app, serve

LEASE = 10.0


async def test_a_handed_over_item_that_waited_half_its_lease_is_leased_afresh(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    app, dead = make_app(clock=clock)
    runs: list[tuple[str, int]] = []
    release = anyio.Event()
    first_started = anyio.Event()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        runs.append((ctx.task_id, ctx.attempt))
        if ctx.task_id == "t-0":
            first_started.set()
            await release.wait()

    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3", clock=clock)
    options = {"inbox": inbox, "max_in_flight": 1, "handler_budget": LEASE}
    async with serve(app, **options) as source:
        for n in range(3):  # one slot: t-1 and t-2 are handed over, and wait in memory
            assert (await post(source.url, signed(f"t-{n}")))[0] == 200
        with anyio.fail_after(10):
            await first_started.wait()
        clock.advance(LEASE / 2 + 1)  # they waited past half their lease
        release.set()
        with anyio.fail_after(10):
            while await inbox.size():
                await inbox.wait_for_items(0.05)
    # t-1 and t-2 were given back, then leased from the inbox: still their first attempt
    # (they never ran), each run once
    assert runs == [("t-0", 1), ("t-1", 1), ("t-2", 1)]
    assert dead.records == []


def table_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (count,) = conn.execute("SELECT count(*) FROM mpsflow_inbox").fetchone()
    return int(count)


class Blocked:
    """An app consuming an ``InboxSource`` (one slot) on its own ``SQLiteInbox``, whose
    handler records each run (task, attempt), then waits for ``release``."""

    def __init__(self, path: Path, group: anyio.abc.TaskGroup, **options: Any) -> None:
        self.path = path
        self.group = group
        self.inbox = SQLiteInbox(path)
        self.source = InboxSource(self.inbox, max_in_flight=1, **options)
        self.app, self.dead = make_app()
        self.runs: list[tuple[str, int]] = []
        self.release = anyio.Event()
        self.stopped = anyio.Event()

        @self.app.on("WorkflowTask")
        async def handler(event: WorkflowTask, ctx: Context) -> None:
            self.runs.append((ctx.task_id, ctx.attempt))
            await self.release.wait()

    def appending(self, task_id: str) -> anyio.Event:
        """Append ``task_id`` in a task of its own; the event is set once it was appended."""
        appended = anyio.Event()

        async def append() -> None:
            assert await self.source.append(signed(task_id))
            appended.set()

        self.group.start_soon(append)
        return appended

    async def until_empty(self) -> None:
        while await self.inbox.size():
            await self.inbox.wait_for_items(0.05)

    async def stop(self) -> None:
        """Stop the app and wait until its run returned (the source gave back what it held)."""
        self.app.stop()
        await self.stopped.wait()


@asynccontextmanager
async def blocked(tmp_path: Path, **options: Any) -> AsyncIterator[Blocked]:
    """A running ``Blocked`` consumer, waiting for items; stopped and closed at the end."""
    async with anyio.create_task_group() as tg:
        consumer = Blocked(tmp_path / "inbox.sqlite3", tg, **options)
        await consumer.inbox.size()  # counted: the first append need not go to the table

        async def run() -> None:
            await consumer.app.run(consumer.source, handle_signals=False)
            consumer.stopped.set()

        tg.start_soon(run)
        try:
            with anyio.fail_after(10):
                await anyio.wait_all_tasks_blocked()  # the source runs: it waits for items
                yield consumer
                consumer.release.set()
                await consumer.stop()
        finally:
            consumer.app.stop()
            consumer.release.set()
    await consumer.inbox.close()
    assert consumer.dead.records == []


@pytest.mark.parametrize(
    ("room_wait", "rows"), [(30.0, 0), (0.01, 1)], ids=["room-frees", "waited-enough"]
)
async def test_an_append_with_no_room_waits_for_a_settle_then_goes_to_the_table(
    tmp_path: Path, room_wait: float, rows: int
) -> None:
    """One slot, nothing ahead: the second append waits until the first is settled and is
    then handed over too, unless ``room_wait`` passes first: it is then a row, leased later.
    Each runs once, on its first attempt."""
    async with blocked(tmp_path, hand_over_ahead=0, room_wait=room_wait) as consumer:
        assert await consumer.source.append(signed("first"))
        await anyio.wait_all_tasks_blocked()  # its handler runs
        assert consumer.runs == [("first", 1)]
        appended = consumer.appending("second")
        if rows == 0:
            await anyio.wait_all_tasks_blocked()
            assert not appended.is_set()  # waiting for room
            consumer.release.set()
        await appended.wait()
        assert table_rows(consumer.path) == rows
        consumer.release.set()
        await consumer.until_empty()
    assert consumer.runs == [("first", 1), ("second", 1)]


async def test_an_append_cancelled_while_it_waits_for_room_leaves_the_line(
    tmp_path: Path,
) -> None:
    """The sender went away: its place goes to the next append that waits, whose notification
    is handed over once the item ahead is settled."""
    async with blocked(tmp_path, hand_over_ahead=0, room_wait=30.0) as consumer:
        assert await consumer.source.append(signed("first"))
        await anyio.wait_all_tasks_blocked()
        gone = anyio.CancelScope()

        async def cancelled() -> None:  # waits in line first, then is cancelled
            with gone:
                await consumer.source.append(signed("gone"))

        consumer.group.start_soon(cancelled)
        await anyio.wait_all_tasks_blocked()
        gone.cancel()
        appended = consumer.appending("third")
        await anyio.wait_all_tasks_blocked()
        assert not appended.is_set()
        consumer.release.set()
        await appended.wait()
        assert table_rows(consumer.path) == 0
        await consumer.until_empty()
    assert consumer.runs == [("first", 1), ("third", 1)]


async def test_items_still_queued_at_stop_are_given_back_not_run(tmp_path: Path) -> None:
    """The drain finishes what runs; what waits in memory is durable already and goes back to
    the inbox, first attempt kept, for the next run."""
    async with blocked(tmp_path) as consumer:
        for name in ("running", "queued-1", "queued-2"):
            assert await consumer.source.append(signed(name))
        await anyio.wait_all_tasks_blocked()
        assert consumer.runs == [("running", 1)]
        consumer.group.start_soon(consumer.stop)
        await anyio.wait_all_tasks_blocked()  # draining: the running one only
        consumer.release.set()
        await consumer.stopped.wait()
        assert table_rows(consumer.path) == 2
        items = await consumer.inbox.lease(5, LEASE)
        assert sorted(item.attempt for item in items) == [1, 1]
    assert consumer.runs == [("running", 1)]
