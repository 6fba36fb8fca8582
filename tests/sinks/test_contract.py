"""The sink contract: what every sink does behind a ``SinkChannel``, the way the app uses sinks.

One test shape, run against every sink on its real peer (``tests/sinks/harness.py``): memory,
JSONL, webhook, WeCom, COS/S3 (moto), SCF Invoke and CMQ (the local server). A harness skips
only the cases its sink cannot go through, and says why.

Time is a ``FakeClock`` (sleeps pass at once and are recorded) or a ``ManualClock`` (a
``max_delay`` passes only when the test advances it); no test sleeps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, TypeVar

import anyio
import pytest

from mpsflow.clock import Clock, FakeClock
from mpsflow.errors import SinkError
from mpsflow.sinks.base import Sink, keyed_sender
from mpsflow.sinks.channel import Receipt, SinkChannel
from tests.sinks.harness import SinkHarness, Unencodable, contract, record
from tests.sinks.peers import Fault, ManualClock

EFFECT = "0123456789abcdef0123456789abcdef"  # a ctx.effect_key
HOLD = 3600.0
"""A ``max_delay`` that never passes on ``ManualClock(instant=60)``: batches form by size only."""

_T = TypeVar("_T", int, str)


def key(n: int) -> str:
    """The idempotency key ``ctx.emit`` gives the ``n``-th record of the effect."""
    return f"{EFFECT}-{n}"


def _channel(
    harness: SinkHarness, *, sink: Sink | None = None, clock: Clock | None = None, **options: Any
) -> SinkChannel:
    options.setdefault("max_delay", 0)
    sink = harness.sink if sink is None else sink
    return SinkChannel(sink, clock=clock or FakeClock(), **options)


def _held(harness: SinkHarness, batch_size: int) -> SinkChannel:
    """A channel that sends only full batches until it closes; its retries do not wait."""
    return _channel(harness, batch_size=batch_size, max_delay=HOLD, clock=ManualClock(60.0))


async def _submit(channel: SinkChannel, numbers: Iterable[int], *, keyed: bool) -> list[Receipt]:
    return [
        await channel.submit(record(n), idempotency_key=key(n) if keyed else None) for n in numbers
    ]


async def _settle(receipts: Iterable[Receipt]) -> None:
    for receipt in receipts:
        await receipt.wait()


def _in_order(harness: SinkHarness, items: list[_T]) -> list[_T]:
    """``items`` as the sink promises them: as they are where it keeps order, else sorted."""
    return items if harness.ordered else sorted(items)


@contract()
async def test_every_record_is_delivered_exactly_once_in_order(harness: SinkHarness) -> None:
    async with _channel(harness, batch_size=4) as channel:
        await _settle(await _submit(channel, range(10), keyed=False))
    assert _in_order(harness, await harness.ids()) == list(range(10))
    assert sum(harness.sink_batches) == 10
    assert max(harness.sink_batches) <= 4


@contract()
async def test_full_batches_go_at_once_and_close_flushes_the_rest(harness: SinkHarness) -> None:
    async with _held(harness, batch_size=3) as channel:
        receipts = await _submit(channel, range(7), keyed=True)
        await _settle(receipts[:6])
        assert harness.sink_batches == [3, 3]
        assert not receipts[6].done
        assert sorted(await harness.ids()) == list(range(6))

        await channel.close()
        await receipts[6].wait()
        assert harness.sink_batches == [3, 3, 1]
        assert _in_order(harness, await harness.ids()) == list(range(7))

        with pytest.raises(SinkError) as caught:
            await channel.submit(record(7), idempotency_key=key(7))
        assert caught.value.transient
    assert harness.sink_calls == 3
    assert len(await harness.ids()) == 7


@contract("peer_batches")
async def test_the_peer_gets_batches_no_larger_than_batch_size(harness: SinkHarness) -> None:
    async with _held(harness, batch_size=3) as channel:
        receipts = await _submit(channel, range(7), keyed=True)
    await _settle(receipts)
    assert await harness.peer_batches() == [3, 3, 1]


@contract()
async def test_a_lone_record_is_flushed_after_max_delay(harness: SinkHarness) -> None:
    clock = ManualClock()
    async with _channel(harness, batch_size=100, max_delay=0.05, clock=clock) as channel:
        receipt = await channel.submit(record(0), idempotency_key=key(0))
        await anyio.wait_all_tasks_blocked()
        clock.advance(0.049)
        await anyio.wait_all_tasks_blocked()
        assert not receipt.done
        assert harness.sink_calls == 0
        assert await harness.requests() == 0

        clock.advance(0.001)
        await receipt.wait()
        assert await harness.ids() == [0]
    assert clock.sleeps == [0.05]


@contract("transient")
async def test_transient_failures_are_retried_until_delivered_once(harness: SinkHarness) -> None:
    faults = (harness.transient_faults * 2)[:2]
    harness.fail(*faults)
    clock = FakeClock()
    async with _channel(harness, clock=clock, max_attempts=5) as channel:
        await (await channel.submit(record(0), idempotency_key=key(0))).wait()
    assert await harness.ids() == [0]
    assert await harness.requests() == 3
    retried = harness.sink_calls - 1  # by the channel, each after its backoff
    below = sum(fault in harness.client_retries for fault in faults)  # maybe by the client
    assert len(faults) - below <= retried <= len(faults)
    assert len(clock.sleeps) == retried


@contract("permanent")
async def test_a_permanent_refusal_is_not_retried(harness: SinkHarness) -> None:
    harness.fail(Fault.PERMANENT)
    clock = FakeClock()
    async with _channel(harness, clock=clock) as channel:
        receipt = await channel.submit(record(0), idempotency_key=key(0))
        with pytest.raises(SinkError) as caught:
            await receipt.wait()
        assert await harness.requests() == 1
    assert caught.value.transient is False
    assert receipt.error is caught.value
    assert harness.sink_calls == 1
    assert clock.sleeps == []
    assert await harness.requests() == 1
    assert await harness.ids() == []


@contract("unencodable")
async def test_a_record_that_cannot_be_encoded_fails_for_good(harness: SinkHarness) -> None:
    clock = FakeClock()
    async with _channel(harness, clock=clock) as channel:
        receipt = await channel.submit(Unencodable(), idempotency_key=key(0))
        with pytest.raises(SinkError) as caught:
            await receipt.wait()
        requests = await harness.requests()
    assert caught.value.transient is False
    assert harness.sink_calls == 1
    assert clock.sleeps == []
    assert await harness.requests() == requests
    assert await harness.ids() == []


@contract("unencodable")
async def test_a_bad_record_does_not_fail_its_batch_neighbours(harness: SinkHarness) -> None:
    async with _held(harness, batch_size=3) as channel:
        first, bad, last = [
            await channel.submit(item, idempotency_key=key(n))
            for n, item in enumerate([record(0), Unencodable(), record(2)])
        ]
        await _settle([first, last])
        with pytest.raises(SinkError) as caught:
            await bad.wait()
    assert caught.value.transient is False
    assert _in_order(harness, await harness.ids()) == [0, 2]


@contract()
async def test_keyed_sinks_receive_each_records_key(harness: SinkHarness) -> None:
    assert isinstance(harness.sink, Sink)
    assert (keyed_sender(harness.sink) is not None) is harness.keyed
    async with _held(harness, batch_size=3) as channel:
        receipts = [
            await channel.submit(record(0), idempotency_key=key(0)),
            await channel.submit(record(1)),  # outside a handler: no key
            await channel.submit(record(2), idempotency_key=key(2)),
        ]
        await _settle(receipts)
    assert harness.sink_batches == [3]
    assert _in_order(harness, await harness.ids()) == [0, 1, 2]
    expected = [key(0), key(2)] if harness.keys_reach_peer else []
    assert _in_order(harness, await harness.peer_keys()) == expected


@contract()
async def test_a_record_resent_with_its_key_is_delivered_as_documented(
    harness: SinkHarness,
) -> None:
    async with _channel(harness) as channel:
        for _ in range(2):  # the same record emitted again in this process
            await (await channel.submit(record(0), idempotency_key=key(0))).wait()
    async with _channel(harness, sink=harness.build()) as channel:  # a re-run after a crash
        await (await channel.submit(record(0), idempotency_key=key(0))).wait()
    repeats = int(not harness.dedup_in_process) + int(not harness.dedup_across_processes)
    assert await harness.ids() == [0] * (1 + repeats)
    assert set(await harness.peer_keys()) == ({key(0)} if harness.keys_reach_peer else set())


@contract("half_way")
async def test_a_batch_failing_half_way_is_retried_as_documented(harness: SinkHarness) -> None:
    size = harness.records_per_request + 2
    harness.fail(None, Fault.TRANSIENT)  # the first request goes through, the second fails
    async with _held(harness, batch_size=size) as channel:
        await _settle(await _submit(channel, range(size), keyed=True))
    assert harness.sink_calls == 2
    # What the first request delivered is sent again, unless the sink drops known keys.
    again = 0 if harness.dedup_in_process else harness.records_per_request
    assert Counter(await harness.ids()) == {n: 2 if n < again else 1 for n in range(size)}
