"""Sources, concurrency limits, lifecycle hooks, graceful shutdown and source supervision."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from mpsflow import App, Context, Delivery, RetryPolicy, Settlement
from mpsflow.clock import FakeClock
from mpsflow.errors import ConfigurationError
from mpsflow.events import MediaProcessTaskTranscodeResult, WorkflowTask
from mpsflow.sinks.memory import MemorySink
from mpsflow.sources.file import FileSource
from mpsflow.sources.memory import MemorySource
from mpsflow.sources.runtime import SourceRuntime
from mpsflow.testing import build_notification, media_result


def note(n: int = 0) -> bytes:
    return json.dumps(
        build_notification(
            task_id=f"task-{n}",
            media_results=[media_result("Transcode", output={"Path": f"/o/{n}.mp4"})],
        )
    ).encode()


def quiet_app(**kwargs: Any) -> App:
    kwargs.setdefault("dead_letters", MemorySink())
    return App(**kwargs)


class Overlap:
    """How many runs are inside ``visit`` at once (``running``), and the most ever (``peak``)."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0

    async def visit(self) -> None:
        """Stay a few scheduling rounds, long enough for other runs to come in."""
        self.running += 1
        self.peak = max(self.peak, self.running)
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        self.running -= 1


async def test_memory_source_runs_to_completion_and_reports() -> None:
    app = quiet_app()
    done: list[str] = []

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        done.append(ctx.task_id)

    source = MemorySource([note(i) for i in range(20)], max_in_flight=4)
    await app.run(source, handle_signals=False)
    assert sorted(done) == sorted(f"task-{i}" for i in range(20))
    assert len(source.report) == 20
    assert all(s.outcome.settlement is Settlement.ACK for s in source.report)


async def test_max_in_flight_is_enforced_before_pulling_more() -> None:
    app = quiet_app()
    handlers = Overlap()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        await handlers.visit()

    source = MemorySource([note(i) for i in range(30)], max_in_flight=3)
    await app.run(source, handle_signals=False)
    assert handlers.peak == 3
    assert len(source.report) == 30


async def test_per_handler_concurrency_limit_holds() -> None:
    app = quiet_app()
    limited_runs = Overlap()
    unlimited_runs = Overlap()

    @app.on("WorkflowTask", max_concurrency=2)
    async def limited(event: WorkflowTask, ctx: Context) -> None:
        await limited_runs.visit()

    @app.on("Transcode")
    async def unlimited(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        await unlimited_runs.visit()

    await app.run(
        MemorySource([note(i) for i in range(20)], max_in_flight=10), handle_signals=False
    )
    assert limited_runs.peak == 2
    assert unlimited_runs.peak > 2


async def test_in_process_retries_use_the_clock_not_sleeps() -> None:
    clock = FakeClock()
    app = quiet_app(retry=RetryPolicy(max_attempts=3, base_delay=60, jitter=0), clock=clock)
    tries: dict[str, int] = {}

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        tries[ctx.task_id] = ctx.attempt
        if ctx.attempt < 2:
            raise RuntimeError("first try fails")

    source = MemorySource([note(1), note(2)], clock=clock)
    await app.run(source, handle_signals=False)
    assert tries == {"task-1": 2, "task-2": 2}
    assert clock.sleeps == [60.0, 60.0]


async def test_lifespan_and_hooks_run_in_order() -> None:
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        events.append("lifespan-start")
        yield
        events.append("lifespan-stop")

    app = quiet_app(lifespan=lifespan)

    @app.on_startup
    async def start() -> None:
        events.append("startup")

    @app.on_shutdown
    async def stop() -> None:
        events.append("shutdown")

    async with app:
        events.append("running")
    assert events == ["lifespan-start", "startup", "running", "shutdown", "lifespan-stop"]


async def test_graceful_shutdown_finishes_in_flight_work() -> None:
    app = quiet_app()
    started = anyio.Event()
    release = anyio.Event()
    finished: list[str] = []

    @app.on("WorkflowTask")
    async def slow(event: WorkflowTask, ctx: Context) -> None:
        started.set()
        await release.wait()
        finished.append(ctx.task_id)

    source = MemorySource([note(1)], close_when_done=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: app.run(source, handle_signals=False))
        await started.wait()
        app.stop()
        await anyio.wait_all_tasks_blocked()  # the app has seen the stop
        source.add(note(2))  # arrives after the stop: must not be pulled
        release.set()
    assert finished == ["task-1"]
    assert [s.outcome.settlement for s in source.report] == [Settlement.ACK]


async def test_shutdown_timeout_leaves_unfinished_work_unsettled() -> None:
    app = quiet_app(shutdown_timeout=0.01)
    started = anyio.Event()

    @app.on("WorkflowTask")
    async def stuck(event: WorkflowTask, ctx: Context) -> None:
        started.set()
        await anyio.sleep_forever()

    source = MemorySource([note(1)], close_when_done=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: app.run(source, handle_signals=False))
        await started.wait()
        app.stop()
    assert source.report == []  # not acked: the queue would redeliver it


class CrashingSource:
    """Crashes on its first two runs, then delivers one notification and ends."""

    name = "crashy"

    def __init__(self, error: Exception | None = None) -> None:
        self.runs = 0
        self.outcomes: list[str] = []
        self.error = error or ConnectionError("queue unreachable")

    async def run(self, runtime: SourceRuntime) -> None:
        self.runs += 1
        if self.runs <= 2:
            raise self.error
        outcome = await runtime.consumer(Delivery(note(7), source=self.name))
        self.outcomes.append(outcome.settlement.value)


async def run_until_it_delivers(source: CrashingSource) -> FakeClock:
    """Run an app with one no-op handler on ``source``; return the clock its backoff slept on."""
    clock = FakeClock()
    app = quiet_app(clock=clock)

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        pass

    await app.run(source, handle_signals=False)
    return clock


async def test_a_crashing_source_is_restarted_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = CrashingSource()
    clock = await run_until_it_delivers(source)
    assert source.runs == 3
    assert source.outcomes == ["ack"]
    assert clock.sleeps == [0.5, 1.0]
    assert sum("source crashy crashed" in r.getMessage() for r in caplog.records) == 2


async def test_a_source_missing_a_setting_logs_one_line_per_try_not_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = CrashingSource(ConfigurationError("TENCENTCLOUD_SECRETID and … must both be set"))
    await run_until_it_delivers(source)
    assert source.outcomes == ["ack"]  # retried with backoff, and it recovers once set
    lines = [r for r in caplog.records if "cannot run" in r.getMessage()]
    assert [r.getMessage() for r in lines] == [
        "source crashy cannot run: TENCENTCLOUD_SECRETID and … must both be set; "
        f"retrying in {delay}s"
        for delay in ("0.5", "1.0")
    ]
    assert all(r.exc_info is None and r.levelname == "ERROR" for r in lines)


async def test_file_source_reads_jsonl_and_folders(tmp_path: Path) -> None:
    (tmp_path / "batch.jsonl").write_bytes(note(1) + b"\n\n" + note(2) + b"\n")
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(json.loads(note(3)), indent=2))
    (folder / "ignored.txt").write_text("nope")
    app = quiet_app()
    seen: list[str] = []

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        seen.append(f"{ctx.task_id}@{ctx.delivery.id.rsplit('/', 1)[-1]}")

    source = FileSource(tmp_path / "batch.jsonl", folder)
    await app.run(source, handle_signals=False)
    assert sorted(seen) == ["task-1@batch.jsonl:1", "task-2@batch.jsonl:3", "task-3@a.json"]


def test_file_source_rejects_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        FileSource(tmp_path / "missing.jsonl")


class StubbornSource:
    """Ignores the stop request for a long time, so the app must be cancelled from outside."""

    name = "stubborn"

    async def run(self, runtime: SourceRuntime) -> None:
        await runtime.stop.wait()
        await anyio.sleep_forever()


async def test_an_app_can_be_cancelled_from_outside_and_closes_its_sinks() -> None:
    sink = MemorySink()
    app = quiet_app()
    app.sink("out", sink)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: app.run(StubbornSource(), handle_signals=False))
        await anyio.wait_all_tasks_blocked()
        app.stop()
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert sink.closed
    assert not app.started
