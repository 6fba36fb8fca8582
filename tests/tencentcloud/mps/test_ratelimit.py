"""TokenBucket: the client-side request rate cap, on a FakeClock."""

from __future__ import annotations

import itertools

import anyio
import pytest

from mpsflow.clock import FakeClock
from mpsflow.tencentcloud.mps import TokenBucket


async def test_a_full_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4.0, burst=3, clock=clock)
    for _ in range(5):
        await bucket.acquire()
    assert clock.sleeps == pytest.approx([0.25, 0.25])


async def test_idle_time_refills_up_to_the_burst_only() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, burst=2, clock=clock)
    await bucket.acquire()
    clock.advance(60.0)
    for _ in range(3):
        await bucket.acquire()
    assert clock.sleeps == pytest.approx([0.1])


async def test_concurrent_callers_never_exceed_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(20.0, clock=clock)
    granted: list[float] = []

    async def take() -> None:
        await bucket.acquire()
        granted.append(clock.monotonic())

    async with anyio.create_task_group() as group:
        for _ in range(10):
            group.start_soon(take)
    assert len(granted) == 10
    gaps = [b - a for a, b in itertools.pairwise(granted)]
    assert all(gap == pytest.approx(0.05) for gap in gaps)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_bad_settings_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - our own message; the type is the contract
        TokenBucket(rate, burst)
