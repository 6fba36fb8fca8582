"""Reconciliation, end to end on loopback: tasks on the local MPS API server, the callbacks of
some dropped; one pass processes exactly those, a late callback changes nothing, and a
restarted reconciler does not scan the finished windows again."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from mpsflow import App, Context
from mpsflow.dedup.stores import SQLiteStore
from mpsflow.delivery import Delivery, Settlement
from mpsflow.devservers.mps import MpsServer
from mpsflow.errors import StartupError
from mpsflow.events import WorkflowTask
from mpsflow.observability.metrics import InMemoryMetrics
from mpsflow.observability.prometheus import render_in_memory
from mpsflow.sinks.memory import MemorySink
from mpsflow.sources.reconcile import ReconcileSource
from mpsflow.tencentcloud.cmq.credentials import Credential
from mpsflow.tencentcloud.mps import MpsApiClient
from mpsflow.testing import build_notification

SECRET_ID, SECRET_KEY = "AKIDreconcileTEST0000000000000001", "reconcile-test-key"
N, K = 12, 4
HOUR = 3600.0


@pytest.fixture
async def server() -> AsyncIterator[MpsServer]:
    server = MpsServer({SECRET_ID: SECRET_KEY})
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def notifications(server: MpsServer, now: float) -> list[dict[str, Any]]:
    """N finished tasks, created and finished one minute apart within the last hour."""
    notes = [build_notification(task_id=f"task-{n:02d}") for n in range(N)]
    for n, note in enumerate(notes):
        server.add_from_notification(
            note, create_time=now - HOUR + n * 60, finish_time=now - HOUR + n * 60 + 300
        )
    return notes


class Recorded:
    """An app whose one handler counts its runs per (TaskId, source)."""

    def __init__(self, store_path: Path) -> None:
        self.store = SQLiteStore(store_path)
        self.metrics = InMemoryMetrics()
        self.app = App(idempotency=self.store, dead_letters=MemorySink(), metrics=self.metrics)
        self.runs: Counter[tuple[str, str]] = Counter()

        @self.app.on("WorkflowTask")
        async def record(event: WorkflowTask, ctx: Context) -> None:
            self.runs[ctx.task_id, ctx.delivery.source] += 1


_CLIENTS: list[MpsApiClient] = []


@pytest.fixture(autouse=True)
async def close_clients() -> AsyncIterator[None]:
    yield
    while _CLIENTS:
        await _CLIENTS.pop().aclose()


def reconciler(server: MpsServer, store: SQLiteStore, **options: Any) -> ReconcileSource:
    """A source on ``server``, scanning the last two hours in ten-minute windows."""
    client = MpsApiClient(Credential(SECRET_ID, SECRET_KEY), endpoint=server.url, rate_limit=None)
    _CLIENTS.append(client)
    return ReconcileSource(client, store, lookback=2 * HOUR, grace=600, interval=600, **options)


async def test_one_pass_processes_exactly_the_dropped_and_a_restart_does_not_rescan(
    server: MpsServer, tmp_path: Path
) -> None:
    notes = notifications(server, time.time())
    first = Recorded(tmp_path / "dedup.sqlite3")
    reconcile = reconciler(server, first.store)
    first.app.add_middleware(reconcile.recorder, scope="delivery")
    async with first.app:
        for note in notes[K:]:  # the callbacks of the first K were dropped
            await first.app.process(Delivery(json.dumps(note).encode(), source="http"))
        report = await reconcile.scan(first.app.source_runtime(anyio.Event()))
        late = await first.app.process(Delivery(json.dumps(notes[0]).encode(), source="http"))
    dropped = [f"task-{n:02d}" for n in range(K)]
    assert sorted(task.task_id for task in report.missing) == dropped
    assert (report.reconciled, report.failed) == (K, 0)
    assert server.calls["DescribeTaskDetail"] == K  # the notified ones cost no detail call
    assert first.runs == Counter(
        {(f"task-{n:02d}", "reconcile" if n < K else "http"): 1 for n in range(N)}
    )
    assert late.settlement is Settlement.ACK  # and no handler ran again (the runs above)
    listings = server.calls["DescribeTasks"]
    text = render_in_memory(first.metrics).decode()
    assert f'mpsflow_reconcile_tasks_total{{outcome="processed"}} {K}' in text
    assert 'mpsflow_reconcile_scans_total{outcome="full"} 1' in text
    assert first.metrics.reconcile_last_full_scan == reconcile.last_full_scan
    assert first.metrics.deliveries[("reconcile", "ack")] == K

    second = Recorded(tmp_path / "dedup.sqlite3")  # a restart: the same store
    again = reconciler(server, second.store)
    async with second.app:
        report = await again.scan(second.app.source_runtime(anyio.Event()))
    # Every whole window was marked scanned: the pass lists the running tasks (WAITING,
    # PROCESSING) and, again, only the part of the current window that has passed.
    assert report.windows <= 1
    assert server.calls["DescribeTasks"] - listings == 2 + report.windows
    assert server.calls["DescribeTaskDetail"] == K
    assert (report.missing, second.runs) == ([], Counter())
    assert again.last_full_scan is not None


async def test_a_window_with_a_task_still_running_is_scanned_again(
    server: MpsServer, tmp_path: Path
) -> None:
    """Whatever time the API filters on, a window is marked scanned only once all its tasks
    finished: the one still running is reconciled by a later pass."""
    now = time.time()
    running = build_notification(task_id="task-late", status="PROCESSING")
    server.add_from_notification(running, create_time=now - HOUR)
    app = Recorded(tmp_path / "dedup.sqlite3")
    reconcile = reconciler(server, app.store)
    async with app.app:
        runtime = app.app.source_runtime(anyio.Event())
        first = await reconcile.scan(runtime)
        assert first.missing == []
        assert first.completed == first.windows - 2  # neither its window nor the current one
        assert reconcile.last_full_scan is not None  # all that could be done was done
        finished = build_notification(task_id="task-late")
        server.add_from_notification(finished, finish_time=now - HOUR + 60)
        second = await reconcile.scan(runtime)
    assert [task.task_id for task in second.missing] == ["task-late"]
    assert app.runs == Counter({("task-late", "reconcile"): 1})
    assert reconcile.last_full_scan is not None


async def test_a_dry_run_lists_and_changes_nothing(server: MpsServer, tmp_path: Path) -> None:
    notifications(server, time.time())
    app = Recorded(tmp_path / "dedup.sqlite3")
    reconcile = reconciler(server, app.store, dry_run=True)
    async with app.app:
        runtime = app.app.source_runtime(anyio.Event())
        listed = await reconcile.scan(runtime)
        again = await reconcile.scan(runtime)
    assert len(listed.missing) == len(again.missing) == N
    assert app.runs == Counter()
    assert server.calls["DescribeTaskDetail"] == 0


async def test_two_reconcilers_on_one_store_take_turns(server: MpsServer, tmp_path: Path) -> None:
    notifications(server, time.time())
    app = Recorded(tmp_path / "dedup.sqlite3")
    one, other = reconciler(server, app.store), reconciler(server, app.store)
    async with app.app:
        runtime = app.app.source_runtime(anyio.Event())
        lease = await app.store.claim(
            "mpsflow:reconcile:pass", lease_seconds=60, payload_hash=""
        )  # as if one were scanning now
        skipped = await other.scan(runtime)
        await app.store.release("mpsflow:reconcile:pass", lease.token)
        done = await one.scan(runtime)
    assert skipped.skipped_pass
    assert skipped.missing == []
    assert len(done.missing) == N
    assert sum(app.runs.values()) == N


async def test_refused_keys_fail_at_startup_with_what_to_check(
    server: MpsServer, tmp_path: Path
) -> None:
    app = Recorded(tmp_path / "dedup.sqlite3")
    client = MpsApiClient(Credential(SECRET_ID, "wrong"), endpoint=server.url, rate_limit=None)
    reconcile = ReconcileSource(client, app.store)
    with pytest.raises(StartupError, match="TENCENTCLOUD_SECRETID"):
        await app.app.run(reconcile, handle_signals=False)
    await client.aclose()
