"""PullSource's loop: every poller waiting for a free slot is woken when slots free up.

With ``pollers`` > 1 each poller that finds no free slot waits for one. They must wait on one
shared wake-up: a poller left waiting on a wake-up nobody sets any more stops polling for
good, and the source quietly runs with fewer pollers than configured.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import anyio

from mpsflow.delivery import Delivery, Outcome, Settlement
from mpsflow.sources.base import PullSource
from mpsflow.sources.runtime import SourceRuntime

_ACK = Outcome(Settlement.ACK)


class _Gated(PullSource):
    """Each ``receive`` waits until the test releases it, then returns ``sizes``' next count."""

    name = "gated"

    def __init__(self, watch: _Watch) -> None:
        super().__init__(max_in_flight=2, pollers=2)
        self.watch = watch
        self.calls: list[anyio.Event] = []
        self.sizes: deque[int] = deque()
        self.numbers = iter(range(1_000_000))

    async def receive(self, max_count: int) -> Sequence[Delivery]:
        release = anyio.Event()
        self.calls.append(release)
        self.watch.poke()
        await release.wait()
        size = min(self.sizes.popleft() if self.sizes else 0, max_count)
        return [Delivery(b"{}", source=self.name, id=str(next(self.numbers))) for _ in range(size)]

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """Nothing to settle: the deliveries exist only here."""


class _Watch:
    """Wakes the test whenever the source or the consumer did something."""

    def __init__(self) -> None:
        self._changed = anyio.Event()

    def poke(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()


async def test_every_poller_waiting_for_a_slot_is_woken() -> None:
    watch = _Watch()
    source = _Gated(watch)
    running: dict[str, anyio.Event] = {}

    async def consume(delivery: Delivery) -> Outcome:
        running[delivery.id] = finish = anyio.Event()
        watch.poke()
        await finish.wait()
        return _ACK

    stop = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(source.run, SourceRuntime(consumer=consume, stop=stop))
            await watch.until(lambda: len(source.calls) == 1)  # one poller asks for both slots
            source.sizes.append(2)
            source.calls[0].set()  # both slots taken: both pollers wait for one
            await watch.until(lambda: len(running) == 2)
            running["0"].set()  # a slot frees: one poller asks for it
            await watch.until(lambda: len(source.calls) == 2)
            running["1"].set()  # the other slot frees: the other poller asks for it
            await watch.until(lambda: len(source.calls) == 3)
            stop.set()
            for release in source.calls:
                release.set()
