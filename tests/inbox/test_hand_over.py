"""InboxSource's hand-over from a receiver in the same process: appends taken in memory ahead
of the free slots, and given back (visible at once, for a fresh lease) once they waited half
their lease."""

from __future__ import annotations

import sqlite3
from functools import partial
from pathlib import Path

import anyio
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


@pytest.mark.parametrize(
    ("room_wait", "rows"), [(30.0, 0), (0.01, 1)], ids=["room-frees", "waited-enough"]
)
async def test_an_append_with_no_room_waits_for_a_settle_then_goes_to_the_table(
    tmp_path: Path, room_wait: float, rows: int
) -> None:
    """One slot, nothing ahead: the second append waits until the first is settled and is
    then handed over too, unless ``room_wait`` passes first: it is then a row, leased later.
    Each runs once, on its first attempt."""
    app, dead = make_app()
    runs: list[tuple[str, int]] = []
    release = anyio.Event()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        runs.append((ctx.task_id, ctx.attempt))
        await release.wait()

    path = tmp_path / "inbox.sqlite3"
    inbox = SQLiteInbox(path)
    await inbox.size()  # counted: the first append need not go to the table to count
    source = InboxSource(inbox, max_in_flight=1, hand_over_ahead=0, room_wait=room_wait)
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(app.run, source, handle_signals=False))
        with anyio.fail_after(10):
            await anyio.wait_all_tasks_blocked()  # the source runs: it waits for items
            assert await source.append(signed("first"))
            await anyio.wait_all_tasks_blocked()  # its handler runs
            assert runs == [("first", 1)]
            appended = anyio.Event()

            async def second() -> None:
                assert await source.append(signed("second"))
                appended.set()

            tg.start_soon(second)
            if rows == 0:
                await anyio.wait_all_tasks_blocked()
                assert not appended.is_set()  # waiting for room
                release.set()
            await appended.wait()
            assert table_rows(path) == rows
            release.set()
            while await inbox.size():
                await inbox.wait_for_items(0.05)
        app.stop()
    await inbox.close()
    assert runs == [("first", 1), ("second", 1)]
    assert dead.records == []


async def test_an_append_cancelled_while_it_waits_for_room_leaves_the_line(
    tmp_path: Path,
) -> None:
    """The sender went away: its place goes to the next append that waits, whose notification
    is handed over once the item ahead is settled."""
    app, dead = make_app()
    runs: list[str] = []
    release = anyio.Event()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        runs.append(ctx.task_id)
        await release.wait()

    path = tmp_path / "inbox.sqlite3"
    inbox = SQLiteInbox(path)
    await inbox.size()
    source = InboxSource(inbox, max_in_flight=1, hand_over_ahead=0, room_wait=30.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(app.run, source, handle_signals=False))
        with anyio.fail_after(10):
            await anyio.wait_all_tasks_blocked()
            assert await source.append(signed("first"))
            await anyio.wait_all_tasks_blocked()
            gone = anyio.CancelScope()

            async def cancelled() -> None:  # waits in line first, then is cancelled
                with gone:
                    await source.append(signed("gone"))

            tg.start_soon(cancelled)
            await anyio.wait_all_tasks_blocked()
            gone.cancel()
            appended = anyio.Event()

            async def third() -> None:
                assert await source.append(signed("third"))
                appended.set()

            tg.start_soon(third)
            await anyio.wait_all_tasks_blocked()
            assert not appended.is_set()
            release.set()
            await appended.wait()
            assert table_rows(path) == 0
            while await inbox.size():
                await inbox.wait_for_items(0.05)
        app.stop()
    await inbox.close()
    assert runs == ["first", "third"]
    assert dead.records == []


async def test_items_still_queued_at_stop_are_given_back_not_run(tmp_path: Path) -> None:
    """The drain finishes what runs; what waits in memory is durable already and goes back to
    the inbox, first attempt kept, for the next run."""
    app, dead = make_app()
    runs: list[str] = []
    release = anyio.Event()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        runs.append(ctx.task_id)
        await release.wait()

    path = tmp_path / "inbox.sqlite3"
    inbox = SQLiteInbox(path)
    await inbox.size()
    source = InboxSource(inbox, max_in_flight=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(app.run, source, handle_signals=False))
        with anyio.fail_after(10):
            await anyio.wait_all_tasks_blocked()
            for name in ("running", "queued-1", "queued-2"):
                assert await source.append(signed(name))
            await anyio.wait_all_tasks_blocked()
            assert runs == ["running"]
            app.stop()
            await anyio.wait_all_tasks_blocked()
            release.set()
    assert runs == ["running"]
    assert table_rows(path) == 2
    items = await inbox.lease(5, LEASE)
    await inbox.close()
    assert sorted(item.attempt for item in items) == [1, 1]
    assert dead.records == []
