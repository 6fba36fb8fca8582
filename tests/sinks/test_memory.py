"""MemorySink: the test double every other suite leans on must itself behave as documented."""

from __future__ import annotations

import anyio
import pytest

from mpsflow.errors import SinkError
from mpsflow.sinks.base import Sink
from mpsflow.sinks.memory import MemorySink


async def test_records_batches_and_lifecycle() -> None:
    sink = MemorySink()
    assert isinstance(sink, Sink)
    await sink.start()
    await sink.send([1, 2])
    await sink.send([3])
    await sink.close()
    assert sink.records == [1, 2, 3]
    assert sink.batches == [[1, 2], [3]]
    assert (sink.started, sink.closed, sink.attempts) == (True, True, 2)
    assert repr(sink) == "MemorySink(records=3)"


async def test_fail_next_counts_down_in_order() -> None:
    sink = MemorySink()
    sink.fail_next(1, transient=True)
    sink.fail_next(1, transient=False)
    with pytest.raises(SinkError) as first:
        await sink.send(["a"])
    with pytest.raises(SinkError) as second:
        await sink.send(["a"])
    await sink.send(["a"])
    assert first.value.transient
    assert not second.value.transient
    assert sink.records == ["a"]
    assert sink.attempts == 3


async def test_poison_refuses_the_whole_batch() -> None:
    sink = MemorySink(poison=lambda record: record == "bad")
    with pytest.raises(SinkError, match="poisoned") as caught:
        await sink.send(["ok", "bad"])
    assert not caught.value.transient
    assert sink.records == []


async def test_pause_holds_sends_and_wait_for_sees_them_land() -> None:
    sink = MemorySink()
    sink.pause()
    async with anyio.create_task_group() as group:
        group.start_soon(sink.send, ["x", "y"])
        await anyio.wait_all_tasks_blocked()
        assert sink.attempts == 1
        assert sink.records == []
        sink.resume()
        await sink.wait_for(2)
    assert sink.records == ["x", "y"]
