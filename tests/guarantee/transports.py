"""The app under test on a real transport: a consumer that notes every outcome, and a source
run for the length of a block (``test_sources.py``, ``test_redis_outage.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio

from mpsflow import App
from mpsflow.delivery import Delivery, Outcome
from mpsflow.sources.base import Source
from tests.guarantee.model import Ledger, Verdicts
from tests.guarantee.traffic import Notice

__all__ = ["Consumer", "recording", "running"]

Consumer = Callable[[Delivery], Awaitable[Outcome]]


def recording(
    app: App,
    notices: dict[bytes, Notice],
    ledger: Ledger,
    verdicts: Verdicts,
    settled: set[str] | None = None,
) -> Consumer:
    """``app.process`` that settles the verdict of every delivery that ends (and notes the
    ids of the settled deliveries in ``settled``)."""

    async def consume(delivery: Delivery) -> Outcome:
        outcome = await app.process(delivery)
        if outcome.settled:
            if settled is not None:
                settled.add(delivery.id)
            body = delivery.body
            assert isinstance(body, bytes)  # HTTP and CMQ hand over the raw bytes
            notice = notices[body]
            verdicts.settle(notice, outcome, ledger, doomed_handler=False)
        return outcome

    return consume


@asynccontextmanager
async def running(
    app: App, source: Source, consume: Consumer, *more: Source
) -> AsyncIterator[None]:
    """``app`` started and ``source`` (and ``more``) feeding ``consume``; the sources are
    stopped (and have settled what they started) when the block ends."""
    async with app, anyio.create_task_group() as tg:
        stop = anyio.Event()
        for each in (source, *more):
            tg.start_soon(each.run, app.source_runtime(stop, consumer=consume))
        try:
            yield
        finally:
            stop.set()
