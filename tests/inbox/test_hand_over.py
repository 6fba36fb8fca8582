"""InboxSource's hand-over from a receiver in the same process: appends taken in memory ahead
of the free slots, and given back (visible at once, for a fresh lease) once they waited half
their lease."""

from __future__ import annotations

from pathlib import Path

import anyio

from mpsflow import Context
from mpsflow.clock import FakeClock
from mpsflow.events import WorkflowTask
from mpsflow.inbox import SQLiteInbox
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
