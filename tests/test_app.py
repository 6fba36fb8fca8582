"""Sources, concurrency limits, lifecycle hooks, graceful shutdown and source supervision."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from mpsflow import (
    App,
    Call,
    CallNext,
    Cause,
    Context,
    Delivery,
    Outcome,
    RetryPolicy,
    Settlement,
)
from mpsflow.clock import FakeClock
from mpsflow.dedup.stores.memory import MemoryStore
from mpsflow.errors import ConfigurationError, StartupError, StoreUnavailable
from mpsflow.events import MediaProcessTaskTranscodeResult, WorkflowTask
from mpsflow.sinks.memory import MemorySink
from mpsflow.sources.file import FileSource
from mpsflow.sources.memory import MemorySource
from mpsflow.sources.runtime import SourceRuntime
from mpsflow.testing import build_notification, media_result
from tests.blocking import blocking_handler


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


async def test_a_handler_waiting_for_its_concurrency_slot_has_claimed_nothing() -> None:
    """The slot comes before dedup's claim: a crash leaves no claims of waiting runs, whose
    redeliveries would otherwise be deferred until those claims' leases end."""
    store = MemoryStore()
    app = quiet_app(idempotency=store)
    release = anyio.Event()

    @app.on("WorkflowTask", max_concurrency=1)
    async def slow(event: WorkflowTask, ctx: Context) -> None:
        await release.wait()

    async with app:
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(app.process, Delivery(note(n), source="test"))
            await anyio.wait_all_tasks_blocked()
            assert len(store) == 1  # the running one's claim only
            release.set()
        assert len(store) == 3


async def test_a_wait_for_a_concurrency_slot_into_the_deadline_defers_the_run() -> None:
    """Waiting is not failing: the run is put off, its attempt not used, and no cut-off
    counts the wait."""
    clock = FakeClock()
    app = quiet_app(clock=clock)
    release = anyio.Event()
    runs: list[str] = []

    @app.on("WorkflowTask", max_concurrency=1)
    async def slow(event: WorkflowTask, ctx: Context) -> None:
        runs.append(ctx.task_id)
        if ctx.task_id == "task-0":
            await release.wait()

    async with app, anyio.create_task_group() as tg:
        first = Delivery(note(0), source="test")  # no deadline: never cut off
        tg.start_soon(app.process, first)
        await anyio.wait_all_tasks_blocked()
        outcomes: list[Outcome] = []

        async def second() -> None:
            delivery = Delivery(note(1), source="test", deadline=clock.monotonic() + 10)
            outcomes.append(await app.process(delivery))

        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        clock.advance(20)  # its deadline passes while it waits for the slot
        release.set()
    [outcome] = outcomes
    assert (outcome.settlement, outcome.cause) == (Settlement.RETRY, Cause.DEFERRED)
    assert runs == ["task-0"]


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
    started = blocking_handler(app)

    source = MemorySource([note(1)], close_when_done=False)
    left: list[dict[str, int]] = []

    async def run() -> None:
        left.append(await app.run(source, handle_signals=False))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await started.wait()
        app.stop()
    assert source.report == []  # not acked: the queue would redeliver it
    assert left == [{"memory": 1}]  # run says what it left


async def test_a_run_that_drained_everything_left_nothing() -> None:
    app = quiet_app()
    source = MemorySource([note(1)])
    assert await app.run(source, handle_signals=False) == {}
    assert [s.outcome.settlement for s in source.report] == [Settlement.ACK]


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
    lines = [r for r in caplog.records if "source crashy" in r.getMessage()]
    assert [r.getMessage() for r in lines] == [
        "source crashy crashed; restarting in 0.5s",
        "source crashy crashed; restarting in 1s",
    ]
    assert all(isinstance(r.exc_info[1], ConnectionError) for r in lines if r.exc_info)


class GroupCrashingSource(CrashingSource):
    """Fails inside a task group, as sources with several tasks do: an exception group."""

    async def run(self, runtime: SourceRuntime) -> None:
        async with anyio.create_task_group() as tg:  # what fails in it: an ExceptionGroup
            tg.start_soon(super().run, runtime)


async def test_a_restart_logs_the_root_cause_not_the_exception_group(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = GroupCrashingSource()
    source.runs = 1  # its first run served: a crash now is a restart, not a startup failure
    await run_until_it_delivers(source)
    [line] = [r for r in caplog.records if "source crashy" in r.getMessage()]
    assert line.getMessage() == "source crashy crashed; restarting in 0.5s"
    assert line.exc_info is not None
    assert line.exc_info[1] is source.error


async def test_a_source_that_cannot_start_ends_run_with_its_error_at_once() -> None:
    error = StartupError("cannot listen on 127.0.0.1:8080: address already in use")
    source = CrashingSource(error)
    other = MemorySource([], close_when_done=False)  # would run forever: stopped, drained
    clock = FakeClock()
    app = quiet_app(clock=clock)
    with pytest.raises(StartupError) as raised:
        await app.run(source, other, handle_signals=False)
    assert raised.value is error  # the error itself, not an exception group around it
    assert source.runs == 1  # not restarted
    assert clock.sleeps == []
    assert not app.started


async def test_a_startup_error_inside_an_exception_group_is_unwrapped() -> None:
    error = StartupError("CMQ refused the credentials (code 4100): check the keys")
    with pytest.raises(StartupError) as raised:
        await quiet_app().run(GroupCrashingSource(error), handle_signals=False)
    assert raised.value is error


async def test_a_setting_missing_on_the_first_run_ends_run() -> None:
    error = ConfigurationError("TENCENTCLOUD_SECRETID and … must both be set")
    source = CrashingSource(error)
    with pytest.raises(ConfigurationError) as raised:
        await quiet_app().run(source, handle_signals=False)
    assert raised.value is error
    assert source.runs == 1


class LaterFailingSource(CrashingSource):
    """Serves on its first run, then crashes; its restarts cannot start twice (``errors``)."""

    def __init__(self, errors: list[Exception]) -> None:
        super().__init__()
        self.errors = errors

    async def run(self, runtime: SourceRuntime) -> None:
        self.runs += 1
        if self.runs == 1:
            raise ConnectionError("lost the connection after serving")
        if self.errors:
            raise self.errors.pop(0)
        outcome = await runtime.consumer(Delivery(note(7), source=self.name))
        self.outcomes.append(outcome.settlement.value)


async def test_a_source_that_cannot_restart_is_retried_with_one_line_per_try(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = LaterFailingSource(
        [StartupError("the port is taken"), ConfigurationError("a key is missing")]
    )
    clock = await run_until_it_delivers(source)
    assert source.outcomes == ["ack"]  # it recovers once the cause is gone
    assert clock.sleeps == [0.5, 1.0, 2.0]
    lines = [r for r in caplog.records if "source crashy" in r.getMessage()]
    assert [r.getMessage() for r in lines] == [
        "source crashy crashed; restarting in 0.5s",
        "source crashy cannot run: the port is taken; restarting in 1s",
        "source crashy cannot run: a key is missing; restarting in 2s",
    ]
    assert [r.exc_info is None for r in lines] == [False, True, True]
    assert all(r.levelname == "ERROR" for r in lines)


class DownStore(MemoryStore):
    """A store that does not answer: ``ping`` says no, and every call raises why."""

    async def ping(self) -> bool:
        return False

    async def release(self, key: str, token: str) -> bool:
        raise StoreUnavailable("idempotency store redis://db:6379/0 unavailable (refused)")


async def test_run_does_not_start_without_the_dedup_store() -> None:
    store = DownStore()
    app = quiet_app(idempotency=store)
    source = CrashingSource()
    with pytest.raises(StartupError) as raised:
        await app.run(source, handle_signals=False)
    assert str(raised.value) == (
        "idempotency store redis://db:6379/0 unavailable (refused): start it or fix its "
        "address (dedup cannot run without it)"
    )
    assert source.runs == 0
    assert not app.started


async def test_run_starts_when_the_dedup_store_answers() -> None:
    source = CrashingSource()
    source.runs = 2
    app = quiet_app(idempotency=MemoryStore())

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        pass

    await app.run(source, handle_signals=False)
    assert source.outcomes == ["ack"]


class LogWatch(logging.Handler):
    """Collects the messages of one logger and sets ``seen`` once ``count`` match ``text``."""

    def __init__(self, text: str, count: int) -> None:
        super().__init__()
        self.text = text
        self.count = count
        self.messages: list[str] = []
        self.levels: list[int] = []
        """The level of each of ``messages``."""
        self.seen = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.levels.append(record.levelno)
        if sum(self.text in m for m in self.messages) >= self.count:
            self.seen.set()


@pytest.fixture
def app_log() -> Iterator[Callable[[str, int], LogWatch]]:
    logger = logging.getLogger("mpsflow.app")
    watches: list[LogWatch] = []

    def watch(text: str, count: int = 1) -> LogWatch:
        handler = LogWatch(text, count)
        logger.addHandler(handler)
        watches.append(handler)
        return handler

    level = logger.level
    logger.setLevel(logging.INFO)
    yield watch
    logger.setLevel(level)
    for handler in watches:
        logger.removeHandler(handler)


async def test_the_drain_says_what_it_waits_for_until_done(
    app_log: Callable[[str, int], LogWatch],
) -> None:
    app = quiet_app(shutdown_timeout=60)
    app.drain_report_interval = 0.001
    release = anyio.Event()
    started = blocking_handler(app, release)

    watch = app_log("draining: ", 3)
    source = MemorySource([note(1)], close_when_done=False, name="queue")
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: app.run(source, handle_signals=False))
        await started.wait()
        app.stop()
        with anyio.fail_after(10):
            await watch.seen.wait()  # reported at once, then again every interval
        release.set()
    draining = [m for m in watch.messages if m.startswith("draining: ")]
    assert draining[0] == "draining: 1 delivery in flight (queue 1); up to 60s left"
    assert all(
        re.fullmatch(r"draining: 1 delivery in flight \(queue 1\); up to \d+s left", m)
        for m in draining
    )
    assert [s.outcome.settlement for s in source.report] == [Settlement.ACK]


async def test_the_shutdown_timeout_says_what_it_leaves_for_redelivery(
    app_log: Callable[[str, int], LogWatch],
) -> None:
    app = quiet_app(shutdown_timeout=0.01)
    started = blocking_handler(app)

    watch = app_log("shutdown timeout", 1)
    source = MemorySource([note(1), note(2)], close_when_done=False, max_in_flight=2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: app.run(source, handle_signals=False))
        await started.wait()
        await anyio.wait_all_tasks_blocked()
        app.stop()
    assert watch.messages[-1] == (
        "shutdown timeout (0.01s) reached; leaving 2 deliveries in flight (memory 2) for redelivery"
    )


async def test_deferred_runs_are_info_lines_and_one_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    app = quiet_app(clock=clock)
    reasons = ["a duplicate is in progress elsewhere or its worker stopped"] * 2 + [
        "idempotency store unavailable"
    ]

    async def defer_three(call: Call, call_next: CallNext) -> Outcome:
        if reasons:
            return Outcome(Settlement.RETRY, retry_after=5, reason=reasons.pop(0))
        return await call_next(call)

    app.add_middleware(defer_three)

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        pass

    caplog.set_level(logging.INFO)
    source = MemorySource([note(1)])
    await app.run(source, handle_signals=False)
    assert [s.outcome.settlement for s in source.report][-1] is Settlement.ACK
    deferred = [r for r in caplog.records if "deferred" in r.getMessage()]
    assert [(r.levelname, r.getMessage().partition(".handler ")[2]) for r in deferred[:3]] == [
        ("INFO", "deferred: a duplicate is in progress elsewhere or its worker stopped"),
        ("INFO", "deferred: a duplicate is in progress elsewhere or its worker stopped"),
        ("INFO", "deferred: idempotency store unavailable"),
    ]
    [summary] = deferred[3:]  # the last one, when run ends
    assert summary.levelname == "INFO"
    assert re.fullmatch(
        r"deferred 3 handler runs in the last \d+s \(a duplicate is in progress elsewhere or its "
        r"worker stopped: 2, idempotency store unavailable: 1\)",
        summary.getMessage(),
    )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


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


async def test_the_same_signal_twice_stops_at_once_and_raises_keyboard_interrupt(
    app_log: Callable[[str, int], LogWatch],
) -> None:
    app = quiet_app(shutdown_timeout=600)
    draining = app_log("draining: ", 1)

    @app.on("WorkflowTask")
    async def interrupting(event: WorkflowTask, ctx: Context) -> None:
        # app.run handles SIGINT here: its receiver was installed before the sources started
        os.kill(os.getpid(), signal.SIGINT)
        await draining.seen.wait()  # the app drains, waiting for this run
        os.kill(os.getpid(), signal.SIGINT)
        await anyio.sleep_forever()

    source = MemorySource([note(1)], close_when_done=False)
    with anyio.fail_after(10), pytest.raises(KeyboardInterrupt):
        await app.run(source)
    assert draining.messages[-1] == (
        "received SIGINT again: stopping now, leaving 1 delivery in flight (memory 1) "
        "for redelivery"
    )
    assert source.report == []  # not settled: left for redelivery
    assert not app.started


def supervised(app: App, received: signal.Signals | None) -> None:
    """Make ``app`` a worker of ``mpsflow run --workers``: SIGUSR1 is its supervisor's stop,
    forwarded when the supervisor ``received`` that signal (None: of its own accord)."""
    app.stop_signals = (*app.stop_signals, signal.SIGUSR1)
    app.forwarded_stops = {signal.SIGUSR1: lambda: received}


async def test_a_forwarded_stop_is_named_by_the_signal_the_supervisor_received(
    app_log: Callable[[str, int], LogWatch],
) -> None:
    """The lines say SIGINT, never SIGUSR1; the same Ctrl-C reaching the worker directly too is
    not announced twice (DEBUG only), and the supervisor's next stop stops at once."""
    app = quiet_app(shutdown_timeout=600)
    supervised(app, signal.SIGINT)
    draining = app_log("draining: ", 1)
    direct = app_log("already draining", 1)
    logging.getLogger("mpsflow.app").setLevel(logging.DEBUG)  # the fixture puts it back

    @app.on("WorkflowTask")
    async def interrupting(event: WorkflowTask, ctx: Context) -> None:
        os.kill(os.getpid(), signal.SIGUSR1)  # the supervisor got SIGINT and forwards it
        await draining.seen.wait()  # the app drains, waiting for this run
        os.kill(os.getpid(), signal.SIGINT)  # the same Ctrl-C, sent to the whole group
        await direct.seen.wait()
        os.kill(os.getpid(), signal.SIGUSR1)  # the supervisor got SIGINT again
        await anyio.sleep_forever()

    source = MemorySource([note(1)], close_when_done=False)
    with anyio.fail_after(10), pytest.raises(KeyboardInterrupt):
        await app.run(source)
    said = [
        (level, message)
        for level, message in zip(draining.levels, draining.messages, strict=True)
        if level >= logging.INFO and not message.startswith("draining: ")
    ]
    assert said == [
        (
            logging.INFO,
            "the supervisor received SIGINT; draining for up to 600s (SIGINT again stops at once)",
        ),
        (
            logging.WARNING,
            "the supervisor received SIGINT again: stopping now, leaving 1 delivery in flight"
            " (memory 1) for redelivery",
        ),
    ]
    assert "received SIGINT: already draining" in draining.messages
    assert not any("SIGUSR1" in message for message in draining.messages)


async def test_a_supervisor_that_stops_of_its_own_accord_says_so(
    app_log: Callable[[str, int], LogWatch],
) -> None:
    """Another worker could not start: no signal to name, and none to send again."""
    app = quiet_app(shutdown_timeout=600)
    supervised(app, None)
    draining = app_log("; draining for up to ", 1)

    @app.on("WorkflowTask")
    async def stopped(event: WorkflowTask, ctx: Context) -> None:
        os.kill(os.getpid(), signal.SIGUSR1)
        await draining.seen.wait()

    source = MemorySource([note(1)], close_when_done=False)
    with anyio.fail_after(10):
        await app.run(source)
    assert [m for m in draining.messages if "; draining for up to " in m] == [
        "the supervisor is stopping the workers; draining for up to 600s"
    ]
    assert [settled.outcome.settlement for settled in source.report] == [Settlement.ACK]
