"""The in-process sources (memory, in-process, file) keep what a stop leaves for their next run.

A delivery cut off by the shutdown timeout (or any cancellation of ``run``) before it was
settled goes back to the front of the queue with its attempt unchanged: it is not settled,
so neither ``report`` nor ``counts`` shows it. Retries waiting for their backoff wait on in
the next run for what is left of their delay.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from mpsflow import App, Context, Delivery, Outcome, Settlement
from mpsflow.clock import FakeClock
from mpsflow.events import WorkflowTask
from mpsflow.sinks.memory import MemorySink
from mpsflow.sources.file import FileSource
from mpsflow.sources.inprocess import InProcessSource
from mpsflow.sources.memory import MemorySource
from mpsflow.sources.runtime import SourceRuntime
from mpsflow.testing import build_notification

TIMEOUT = 10.0
"""A guard: a lost delivery fails the test instead of hanging it."""

ACK = Outcome(Settlement.ACK)


def note(n: int) -> bytes:
    return json.dumps(build_notification(task_id=f"task-{n}")).encode()


class Blocking:
    """A consumer that notes each delivery and never finishes (until cancelled)."""

    def __init__(self, count: int) -> None:
        self.seen: list[Delivery] = []
        self.all_started = anyio.Event()
        self._count = count

    async def __call__(self, delivery: Delivery) -> Outcome:
        self.seen.append(delivery)
        if len(self.seen) == self._count:
            self.all_started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


async def cut_off(
    source: InProcessSource,
    consumer: Callable[[Delivery], Awaitable[Outcome]],
    blocking: Blocking | None = None,
) -> None:
    """Run ``source`` into ``consumer`` until ``blocking`` (``consumer`` itself by default) has
    every delivery it waits for, then cancel the run (what the app does at its shutdown
    timeout)."""
    held = blocking if blocking is not None else consumer
    assert isinstance(held, Blocking)
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run, SourceRuntime(consumer=consumer, stop=anyio.Event()))
        await held.all_started.wait()
        tg.cancel_scope.cancel()


def acking(seen: list[Delivery]) -> Callable[[Delivery], Awaitable[Outcome]]:
    async def consume(delivery: Delivery) -> Outcome:
        seen.append(delivery)
        return ACK

    return consume


async def test_the_shutdown_timeout_leaves_the_running_delivery_for_the_next_run() -> None:
    app = App(dead_letters=MemorySink(), shutdown_timeout=0.0)  # cut off at once on stop
    release = anyio.Event()
    started = anyio.Event()
    runs: list[tuple[str, int]] = []

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        runs.append((ctx.task_id, ctx.attempt))
        started.set()
        await release.wait()

    source = MemorySource(max_in_flight=1)
    for n in (1, 2, 3):
        source.add(note(n))
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: app.run(source, handle_signals=False))
            await started.wait()
            app.stop()
        # app.run returned: task-1 was cut off; it is not settled, and not lost
        assert runs == [("task-1", 1)]
        assert source.report == []
        assert source.counts == {}
        assert not source.idle

        release.set()
        await app.run(source, handle_signals=False)  # ends once everything is settled

    # the cut-off delivery comes first, as attempt 1 again: being cut off is not a failure
    assert runs == [("task-1", 1), ("task-1", 1), ("task-2", 1), ("task-3", 1)]
    assert [s.outcome.settlement for s in source.report] == [Settlement.ACK] * 3
    assert source.counts == {Settlement.ACK: 3}
    assert source.idle


async def test_cut_off_deliveries_go_back_first_in_order_with_their_attempts() -> None:
    source = InProcessSource(name="inprocess", max_in_flight=3, close_when_done=False)
    first = Delivery(b"1", source="inprocess", id="1")
    second = Delivery(b"2", source="inprocess", id="2", attempt=2)
    third = Delivery(b"3", source="inprocess", id="3")
    for delivery in (first, second, third):
        source.put(delivery)
    blocking = Blocking(3)
    with anyio.fail_after(TIMEOUT):
        await cut_off(source, blocking)
    assert [d.id for d in blocking.seen] == ["1", "2", "3"]
    assert source.report == []
    blocking.seen[0].state["note"] = "left by the cut-off run"

    source.put(Delivery(b"4", source="inprocess", id="4"))
    seen: list[Delivery] = []
    stop = anyio.Event()

    async def consume(delivery: Delivery) -> Outcome:
        seen.append(delivery)
        if len(seen) == 4:
            stop.set()
        return ACK

    with anyio.fail_after(TIMEOUT):
        await source.run(SourceRuntime(consumer=consume, stop=stop))
    assert [(d.id, d.attempt) for d in seen] == [("1", 1), ("2", 2), ("3", 1), ("4", 1)]
    assert seen[0].state == {}  # per-delivery state starts afresh, as for a retry
    assert [s.delivery.id for s in source.report] == ["1", "2", "3", "4"]
    assert source.idle


async def test_the_same_delivery_object_queued_again_is_cut_off_and_comes_back_each_time() -> None:
    source = MemorySource(max_in_flight=3)
    delivery = source.add(note(1))
    source.put(delivery)  # twice in the first batch
    blocking = Blocking(3)

    async def put_it_once_more(received: Delivery) -> Outcome:
        if not blocking.seen:
            source.put(delivery)  # a third time, while the first two are in flight
        return await blocking(received)

    with anyio.fail_after(TIMEOUT):
        await cut_off(source, put_it_once_more, blocking)
        seen: list[Delivery] = []
        await source.run(SourceRuntime(consumer=acking(seen), stop=anyio.Event()))
    assert [d.id for d in seen] == [delivery.id] * 3
    assert source.counts == {Settlement.ACK: 3}


class HeldClock(FakeClock):
    """A FakeClock whose sleeps wait for ``released`` (then pass at once, advancing time)."""

    def __init__(self) -> None:
        super().__init__()
        self.released = anyio.Event()

    async def sleep(self, seconds: float) -> None:
        await self.released.wait()
        await super().sleep(seconds)


async def test_a_retry_waiting_for_its_backoff_at_stop_is_delivered_by_the_next_run() -> None:
    clock = HeldClock()
    source = MemorySource([note(1)], clock=clock)
    stop = anyio.Event()
    attempts: list[int] = []

    async def retry_then_stop(delivery: Delivery) -> Outcome:
        attempts.append(delivery.attempt)
        stop.set()
        return Outcome(Settlement.RETRY, retry_after=5.0)

    with anyio.fail_after(TIMEOUT):
        await source.run(SourceRuntime(consumer=retry_then_stop, stop=stop))
        assert [d.attempt for d in source.pending_retries] == [2]

        clock.advance(2.0)  # time passes between the runs
        clock.released.set()
        seen: list[Delivery] = []
        await source.run(SourceRuntime(consumer=acking(seen), stop=anyio.Event()))

    assert attempts == [1]
    assert [d.attempt for d in seen] == [2]
    assert clock.sleeps == [3.0]  # what was left of the 5 s backoff
    assert source.counts == {Settlement.RETRY: 1, Settlement.ACK: 1}
    assert source.pending_retries == ()


def _lines(tmp_path: Path, *bodies: bytes) -> Path:
    path = tmp_path / "batch.jsonl"
    path.write_bytes(b"\n".join(bodies) + b"\n")
    return path


async def test_running_the_same_file_source_again_resumes_where_it_was_cut_off(
    tmp_path: Path,
) -> None:
    path = _lines(tmp_path, note(1), note(2), note(3))
    source = FileSource(path, max_in_flight=1)
    first_run: list[Any] = []

    async def ack_first_then_block(delivery: Delivery) -> Outcome:
        first_run.append(delivery.id)
        if len(first_run) == 1:
            return ACK
        return await blocking(delivery)

    blocking = Blocking(1)
    with anyio.fail_after(TIMEOUT):
        await cut_off(source, ack_first_then_block, blocking)
        seen: list[Delivery] = []
        await source.run(SourceRuntime(consumer=acking(seen), stop=anyio.Event()))

    assert first_run == [f"{path}:1", f"{path}:2"]
    assert [(d.id, d.attempt) for d in seen] == [(f"{path}:2", 1), (f"{path}:3", 1)]
    assert [s.delivery.id for s in source.report] == [f"{path}:{n}" for n in (1, 2, 3)]


async def test_a_consumer_that_raises_leaves_the_delivery_for_redelivery() -> None:
    """The pipeline never raises, but a wrapper around it may: the delivery is retried, not
    left unsettled (which would keep a finite source from ever finishing)."""
    source = MemorySource([note(1)], clock=FakeClock())
    seen: list[Delivery] = []

    async def fail_once(delivery: Delivery) -> Outcome:
        seen.append(delivery)
        if len(seen) == 1:
            raise RuntimeError("a broken wrapper")
        return ACK

    with anyio.fail_after(TIMEOUT):
        await source.run(SourceRuntime(consumer=fail_once, stop=anyio.Event()))
    assert [d.attempt for d in seen] == [1, 2]
    assert source.counts == {Settlement.RETRY: 1, Settlement.ACK: 1}
