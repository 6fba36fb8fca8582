"""The app the scale-out test runs in several worker processes (``mpsflow run … --cmq``).

Each handler run records itself in Redis: ``started`` when it begins and ``completed`` when it
ends, so the test can tell a run cut short by SIGKILL from a completed one. Dedup uses the same
Redis server with a short lease, so a killed worker's claims free up quickly.
"""

from __future__ import annotations

import os

import anyio
import redis.asyncio as aioredis

from mpsflow import App, Context, RetryPolicy
from mpsflow.events import WorkflowTask
from mpsflow.idempotency import Idempotency
from mpsflow.stores.redis import RedisStore

REDIS_URL = os.environ["MPSFLOW_TEST_REDIS"]
WORK_SECONDS = float(os.environ.get("MPSFLOW_TEST_WORK_SECONDS", "0.05"))

app = App(
    idempotency=Idempotency(RedisStore(REDIS_URL), lease_seconds=2.0, lease_margin=0.5),
    retry=RetryPolicy(max_attempts=20, base_delay=0.1, max_delay=1.0),
    dead_letters=os.environ.get("MPSFLOW_TEST_DEAD_LETTERS", "dead-letters.jsonl"),
)
_redis = aioredis.from_url(REDIS_URL)


@app.on("WorkflowTask")
async def record(event: WorkflowTask, ctx: Context) -> None:
    """Mark the start, do some 'work', mark the completion."""
    await _redis.rpush("started", ctx.task_id)
    await anyio.sleep(WORK_SECONDS)
    await _redis.rpush("completed", ctx.task_id)


@app.on_shutdown
async def close_redis() -> None:
    await _redis.aclose()
