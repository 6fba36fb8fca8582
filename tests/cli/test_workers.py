"""Scale-out: three ``mpsflow run --cmq`` worker processes on one queue, one of them SIGKILLed.

The local CMQ server runs in this test's event loop with a 2 s visibility timeout; dedup goes
through a real ``redis-server``. Duplicates are sent on purpose, and one worker is killed while
its handler runs are under way (``tests/apps/scaleout.py`` explains how the kill is kept out of
the one gap at-least-once delivery cannot close). Every notification must then complete exactly
once in effect: its messages were redelivered, or skipped as duplicates, and nothing was lost.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest
import redis.asyncio as aioredis

from mpsflow.devservers.cmq import CmqServer
from mpsflow.tencentcloud.cmq.client import CmqClient
from mpsflow.tencentcloud.cmq.credentials import Credential
from tests.plugins.cmq_server import CMQ_SECRET_ID, CMQ_SECRET_KEY, CmqServerFactory

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "scaleout"
WORKERS = 3
UNIQUE = 60
DUPLICATED = 20
PARK_AFTER = 15
VISIBILITY_TIMEOUT = 2
DEADLINE = 45.0
STOP_TIMEOUT = 20.0


def body(n: int) -> str:
    return json.dumps(
        {
            "EventType": "WorkflowTask",
            "WorkflowTaskEvent": {"TaskId": f"scale-{n}", "Status": "FINISH", "ErrCode": 0},
        }
    )


class Worker:
    """One ``python -m mpsflow run tests.apps.scaleout:app --cmq …`` process; log in a file."""

    def __init__(self, process: anyio.abc.Process, log: Path) -> None:
        self.process = process
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@asynccontextmanager
async def worker(
    index: int, server: CmqServer, redis_url: str, tmp_path: Path, *, park_after: int = 0
) -> AsyncIterator[Worker]:
    """Start a worker; it is killed (if still running) and reaped on exit."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "TENCENTCLOUD_SECRETID": CMQ_SECRET_ID,
        "TENCENTCLOUD_SECRETKEY": CMQ_SECRET_KEY,
        "MPSFLOW_TEST_REDIS": redis_url,
        "MPSFLOW_TEST_DEAD_LETTERS": str(tmp_path / "dead-letters.jsonl"),
        "MPSFLOW_TEST_WORK_SECONDS": "0.1",
        "MPSFLOW_TEST_PARK_AFTER": str(park_after),
    }
    env.pop("TENCENTCLOUD_SESSIONTOKEN", None)
    command = [
        *(sys.executable, "-W", "error::ResourceWarning", "-m", "mpsflow", "run"),
        *("tests.apps.scaleout:app", "--cmq", server.url, "--queue", QUEUE),
        *("--pollers", "1", "--batch", "4", "--max-in-flight", "4", "--wait", "1", "--no-dedup"),
    ]
    log_path = tmp_path / f"worker-{index}.log"
    with log_path.open("wb") as log:
        process = await anyio.open_process(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        try:
            yield Worker(process, log_path)
        finally:
            if process.returncode is None:
                process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
                await process.aclose()


async def eventually(check: Callable[[], Awaitable[bool]], what: str, logs: list[Worker]) -> None:
    """Poll ``check`` until it holds; fail after ``DEADLINE`` seconds with the workers' logs."""
    with anyio.move_on_after(DEADLINE):
        while True:
            if await check():
                return
            await anyio.sleep(0.05)
    tails = "\n".join(f"--- worker log {w.log.name}:\n{w.output()[-3000:]}" for w in logs)
    pytest.fail(f"timed out waiting until {what}\n{tails}")


async def strings(redis: aioredis.Redis, key: str) -> list[str]:
    items = await redis.lrange(key, 0, -1)
    return [item.decode() if isinstance(item, bytes) else item for item in items]


async def test_three_workers_one_killed_every_notification_completes_exactly_once(
    tmp_path: Path,
    cmq_server_factory: CmqServerFactory,
    cmq_credential: Credential,
    redis_url: str,
) -> None:
    server = await cmq_server_factory(visibility_timeout=VISIBILITY_TIMEOUT)
    queue = server.create_queue(QUEUE)
    tasks = {f"scale-{n}" for n in range(UNIQUE)}
    rng = random.Random(20261121)
    first_wave = [body(n) for n in range(UNIQUE)] + [body(n) for n in range(DUPLICATED // 2)]
    rng.shuffle(first_wave)
    second_wave = [body(n) for n in range(DUPLICATED // 2, DUPLICATED)]

    async with (
        aioredis.from_url(redis_url) as redis,
        CmqClient(server.url, cmq_credential) as client,
        AsyncExitStack() as stack,
    ):
        victim = await stack.enter_async_context(
            worker(0, server, redis_url, tmp_path, park_after=PARK_AFTER)
        )
        workers = [victim]
        for index in range(1, WORKERS):
            workers.append(
                await stack.enter_async_context(worker(index, server, redis_url, tmp_path))
            )

        async def all_ready() -> bool:
            return await redis.llen("ready") == WORKERS

        await eventually(all_ready, "every worker is ready", workers)
        for start in range(0, len(first_wave), 16):
            await client.batch_send(QUEUE, first_wave[start : start + 16])

        async def victim_parked() -> bool:
            return await redis.llen("parked") == 1

        await eventually(victim_parked, "the victim has parked its handler runs", workers)
        assert [int(pid) for pid in await strings(redis, "parked")] == [victim.process.pid]
        completed_at_kill = await redis.llen("completed")
        victim.process.send_signal(signal.SIGKILL)
        with anyio.fail_after(STOP_TIMEOUT):
            assert await victim.process.wait() == -signal.SIGKILL
        await client.batch_send(QUEUE, second_wave)

        async def all_done() -> bool:
            completed = set(await strings(redis, "completed"))
            return completed >= tasks and len(queue) == 0

        await eventually(all_done, "every task completed and the queue is empty", workers)

        survivors = workers[1:]
        for survivor in survivors:
            survivor.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(STOP_TIMEOUT):
            codes = [await survivor.process.wait() for survivor in survivors]
        started = Counter(await strings(redis, "started"))
        completed = Counter(await strings(redis, "completed"))

    logs = {w.log.name: w.output() for w in survivors}
    assert codes == [0] * len(survivors), logs
    assert completed_at_kill < UNIQUE  # the kill came midway
    assert set(completed) == tasks  # none lost
    assert completed == Counter(dict.fromkeys(tasks, 1))  # and each exactly once in effect
    cut_short = [task for task, runs in started.items() if runs > 1]
    assert cut_short, "the victim's parked runs should have been redelivered and run again"
    assert len(queue) == 0
    dead = tmp_path / "dead-letters.jsonl"
    assert not dead.exists() or dead.read_text() == ""
    for name, text in logs.items():
        assert "Traceback" not in text, (name, text)
        assert "Unclosed" not in text, (name, text)


SLOW_WORKERS = """
import sys, time
from mpsflow.cli.supervisor import Supervisor

def work() -> int:  # never gets as far as an app and its signal handling
    print("worker ready", flush=True)
    time.sleep(60)
    return 0

sys.exit(Supervisor(2, work).run())
"""


async def test_workers_stopped_before_their_app_runs_are_a_clean_stop() -> None:
    """SIGTERM forwarded to a worker that has not set up its signal handling kills it (-15):
    it held no work, so the supervisor still exits 0."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    process = await anyio.open_process([sys.executable, "-c", SLOW_WORKERS], env=env)
    async with process:
        assert process.stdout is not None
        received = b""
        with anyio.fail_after(20):
            while received.count(b"worker ready") < 2:
                received += await process.stdout.receive()
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
