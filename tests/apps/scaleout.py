"""The app the scale-out test runs in several worker processes (``mpsflow run … --cmq``).

Each handler run records itself in Redis: ``started`` when it begins and ``completed`` when it
ends, so the test can tell a run cut short by SIGKILL from a completed one; ``ready`` gets the
pid of every worker that has started. Dedup uses the same Redis server with a short lease, so a
killed worker's claims free up quickly.

The worker started with ``MPSFLOW_TEST_PARK_AFTER=N`` is the one the test kills. Once
``started`` holds N entries it *parks*: its handler runs stop where they are and never write
``completed``. It pushes its pid to ``parked`` as soon as no run of it sits between writing
``completed`` and recording that in the dedup store. That gap is the one place where a crash
turns into a second effect on redelivery (at-least-once delivery cannot close it). Parking
keeps the kill out of the gap, so the test is deterministic. The worker is still killed in the
middle of handler runs, holding claims and unsettled messages.
"""

from __future__ import annotations

import os

import anyio
import redis.asyncio as aioredis

from mpsflow import App, Context, RetryPolicy
from mpsflow.dedup.idempotency import Idempotency
from mpsflow.dedup.stores.redis import RedisStore
from mpsflow.delivery import Outcome
from mpsflow.events import WorkflowTask
from mpsflow.middleware.base import Call, CallNext

__all__ = ["PARK_AFTER", "REDIS_URL", "WORK_SECONDS", "app"]

REDIS_URL = os.environ["MPSFLOW_TEST_REDIS"]
WORK_SECONDS = float(os.environ.get("MPSFLOW_TEST_WORK_SECONDS", "0.05"))
PARK_AFTER = int(os.environ.get("MPSFLOW_TEST_PARK_AFTER", "0"))
"""Park once ``started`` holds this many entries (0: never)."""

app = App(
    idempotency=Idempotency(RedisStore(REDIS_URL), lease_seconds=2.0, lease_margin=0.5),
    retry=RetryPolicy(max_attempts=20, base_delay=0.1, max_delay=1.0),
    dead_letters=os.environ.get("MPSFLOW_TEST_DEAD_LETTERS", "dead-letters.jsonl"),
)
_redis = aioredis.from_url(REDIS_URL)


class _Parking:
    """Stops this worker's handler runs at checkpoints and says when it is safe to kill.

    ``track`` is app-wide handler middleware, so it wraps the dedup middleware: a run counts
    as ``inside`` from before its claim until after its completion is recorded.
    """

    def __init__(self) -> None:
        self.on = False
        self.inside = 0
        self.parked = 0
        self._announced = False

    async def track(self, call: Call, call_next: CallNext) -> Outcome:
        self.inside += 1
        try:
            return await call_next(call)
        finally:
            self.inside -= 1
            await self._announce_when_safe()

    async def checkpoint(self) -> None:
        """Park this run for good once parking is on."""
        if not self.on:
            return
        self.parked += 1
        try:
            await self._announce_when_safe()
            await anyio.sleep_forever()
        finally:
            self.parked -= 1

    async def _announce_when_safe(self) -> None:
        if self.on and not self._announced and self.inside == self.parked:
            self._announced = True
            await _redis.rpush("parked", os.getpid())


_parking = _Parking()
app.add_middleware(_parking.track)


@app.on_startup
async def announce_ready() -> None:
    await _redis.rpush("ready", os.getpid())


@app.on("WorkflowTask")
async def record(event: WorkflowTask, ctx: Context) -> None:
    """Mark the start, do some 'work', mark the completion."""
    started = await _redis.rpush("started", ctx.task_id)
    if 0 < PARK_AFTER <= started:
        _parking.on = True
    await _parking.checkpoint()
    await anyio.sleep(WORK_SECONDS)
    await _parking.checkpoint()
    await _redis.rpush("completed", ctx.task_id)


@app.on_shutdown
async def close_redis() -> None:
    await _redis.aclose()
