"""SinkChannel: batching by size and delay, backpressure, retries, and no record ever lost."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from mpsflow.clock import FakeClock
from mpsflow.errors import SinkError
from mpsflow.sinks.channel import Receipt, SinkChannel
from mpsflow.sinks.memory import MemorySink
from tests.sinks.peers import ManualClock


async def test_full_batches_go_at_once_and_close_flushes_the_rest() -> None:
    sink = MemorySink()
    channel = SinkChannel(sink, batch_size=3, max_delay=3600.0)
    await channel.start()
    receipts = [await channel.submit(i) for i in range(7)]
    for receipt in receipts[:6]:
        await receipt.wait()
    assert sink.batches == [[0, 1, 2], [3, 4, 5]]
    assert not receipts[6].done
    await channel.close()
    await receipts[6].wait()
    assert sink.batches[-1] == [6]
    assert sink.closed


async def test_partial_batch_waits_for_max_delay_on_the_clock() -> None:
    clock = ManualClock()
    sink = MemorySink()
    async with SinkChannel(sink, batch_size=100, max_delay=0.05, clock=clock) as channel:
        first = await channel.submit("a")
        second = await channel.submit("b")
        await anyio.wait_all_tasks_blocked()
        assert sink.batches == []
        clock.advance(0.049)
        await anyio.wait_all_tasks_blocked()
        assert sink.batches == []
        clock.advance(0.001)
        await first.wait()
        await second.wait()
        assert sink.batches == [["a", "b"]]


async def test_max_delay_is_slept_on_the_injected_clock() -> None:
    clock = FakeClock()
    sink = MemorySink()
    async with SinkChannel(sink, batch_size=10, max_delay=0.25, clock=clock) as channel:
        await (await channel.submit({"n": 1})).wait()
    assert sink.records == [{"n": 1}]
    assert clock.sleeps == [0.25]


async def test_submit_waits_while_the_buffer_is_full_and_resumes() -> None:
    sink = MemorySink()
    sink.pause()
    submitted = anyio.Event()
    receipts: list[Receipt] = []

    async def third() -> None:
        receipts.append(await channel.submit(3))
        submitted.set()

    async with SinkChannel(sink, batch_size=1, max_delay=0, buffer_size=2) as channel:
        receipts.append(await channel.submit(1))
        receipts.append(await channel.submit(2))
        assert channel.pending == 2
        async with anyio.create_task_group() as group:
            group.start_soon(third)
            await anyio.wait_all_tasks_blocked()
            assert not submitted.is_set()
            sink.resume()
            await submitted.wait()
        for receipt in receipts:
            await receipt.wait()
    assert sink.records == [1, 2, 3]
    assert channel.pending == 0


async def test_transient_failures_are_retried_with_growing_backoff() -> None:
    clock = FakeClock()
    sink = MemorySink()
    sink.fail_next(2, transient=True)
    channel = SinkChannel(sink, max_delay=0, max_attempts=5, backoff=(0.1, 5.0), clock=clock)
    async with channel:
        await (await channel.submit("x")).wait()
    assert sink.records == ["x"]
    assert sink.attempts == 3
    first, second = clock.sleeps
    assert 0.05 <= first <= 0.1
    assert 0.1 <= second <= 0.2


async def test_transient_failures_past_max_attempts_fail_the_receipt() -> None:
    clock = FakeClock()
    sink = MemorySink()
    sink.fail_next(10, transient=True)
    async with SinkChannel(sink, max_delay=0, max_attempts=3, clock=clock) as channel:
        receipt = await channel.submit("x")
        with pytest.raises(SinkError, match="failed 3 times") as caught:
            await receipt.wait()
    assert caught.value.transient
    assert sink.attempts == 3
    assert len(clock.sleeps) == 2
    assert receipt.done
    assert receipt.error is caught.value


async def test_permanent_failure_is_not_retried() -> None:
    clock = FakeClock()
    sink = MemorySink()
    sink.fail_next(1, transient=False)
    async with SinkChannel(sink, max_delay=0, clock=clock) as channel:
        receipt = await channel.submit("x")
        with pytest.raises(SinkError) as caught:
            await receipt.wait()
    assert not caught.value.transient
    assert sink.attempts == 1
    assert clock.sleeps == []
    assert sink.records == []


async def test_one_bad_record_does_not_fail_its_batch_neighbours() -> None:
    sink = MemorySink(poison=lambda record: record == "bad")
    channel = SinkChannel(sink, batch_size=3, max_delay=3600.0, clock=FakeClock())
    async with channel:
        good1, bad, good2 = [await channel.submit(r) for r in ("a", "bad", "c")]
        await good1.wait()
        await good2.wait()
        with pytest.raises(SinkError, match="poisoned"):
            await bad.wait()
    assert sink.records == ["a", "c"]


class _FlakySink(MemorySink):
    """Raises a non-SinkError once: the channel must treat it as transient."""

    def __init__(self) -> None:
        super().__init__()
        self.crashed = False

    async def send(self, batch: Sequence[object]) -> None:
        if not self.crashed:
            self.crashed = True
            raise ConnectionResetError("peer went away")
        await super().send(batch)


async def test_unexpected_exceptions_count_as_transient() -> None:
    sink = _FlakySink()
    async with SinkChannel(sink, max_delay=0, clock=FakeClock()) as channel:
        await (await channel.submit("x")).wait()
    assert sink.records == ["x"]


async def test_submit_outside_the_running_window_raises_transient() -> None:
    sink = MemorySink()
    channel = SinkChannel(sink)
    with pytest.raises(SinkError, match="not started") as before:
        await channel.submit("x")
    assert before.value.transient
    async with channel:
        pass
    with pytest.raises(SinkError, match="closed") as after:
        await channel.submit("x")
    assert after.value.transient
    assert sink.started
    assert sink.closed


@pytest.mark.parametrize(("concurrency", "settle_first"), [(1, True), (3, True), (3, False)])
async def test_cancelled_channel_fails_every_pending_receipt(
    concurrency: int, settle_first: bool
) -> None:
    sink = MemorySink()
    sink.pause()
    channel = SinkChannel(sink, batch_size=2, max_delay=0, concurrency=concurrency)
    with anyio.CancelScope() as scope:
        await channel.start()
        receipts = [await channel.submit(i) for i in range(5)]
        if settle_first:
            await anyio.wait_all_tasks_blocked()
        scope.cancel()
        await channel.close()
    assert sink.records == []
    for receipt in receipts:
        assert receipt.done
        with pytest.raises(SinkError):
            await receipt.wait()
    assert channel.pending == 0


async def test_concurrent_batches_are_all_delivered() -> None:
    sink = MemorySink()
    channel = SinkChannel(sink, batch_size=5, max_delay=0, concurrency=4)
    async with channel:
        receipts = [await channel.submit(i) for i in range(50)]
        for receipt in receipts:
            await receipt.wait()
    assert sorted(sink.records) == list(range(50))  # type: ignore[type-var]


def test_invalid_options_are_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        SinkChannel(MemorySink(), batch_size=0)
    with pytest.raises(ValueError, match="max_delay"):
        SinkChannel(MemorySink(), max_delay=-1)
    assert "MemorySink" in repr(SinkChannel(MemorySink()))
    assert repr(Receipt()) == "<Receipt pending>"
