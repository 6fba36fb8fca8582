"""``mpsflow run`` as a real process: serve, SIGTERM, exit 0; ``--workers``; ``--files``."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import anyio
import anyio.abc
import pytest

from mpsflow.testing import build_notification, media_result
from tests.process_output import mpsflow_process

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}
SERVING = re.compile(r"serving MPS callbacks on (http://127\.0\.0\.1:(\d+)/mps/callback)")
WORKER = re.compile(r"worker (\d+) started")
ACKS = re.compile(r'^mpsflow_deliveries_total\{source="http",outcome="ack"\} (\d+)$', re.MULTILINE)

APP_MODULE = """
import os

from mpsflow import App, Context
from mpsflow.sinks.jsonl import JsonlSink

app = App(dead_letters="dead.jsonl")
app.sink("seen", JsonlSink("seen.jsonl"))


@app.on("WorkflowTask", emits=["seen"])
async def seen(event, ctx: Context) -> None:
    await ctx.emit("seen", {"task": ctx.task_id, "pid": os.getpid()})
"""


def write_app(tmp_path: Path) -> None:
    (tmp_path / "cliapp.py").write_text(APP_MODULE)


def note(task_id: str) -> bytes:
    return json.dumps(
        build_notification(
            task_id=task_id, media_results=[media_result("Transcode", output={"Path": "/o.mp4"})]
        )
    ).encode()


def seen(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "seen.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def post_all(url: str, bodies: list[bytes], *, new_connections: bool = False) -> list[int]:
    connector = aiohttp.TCPConnector(force_close=new_connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        statuses: list[int] = []
        for body in bodies:
            async with session.post(url, data=body) as response:
                statuses.append(response.status)
        return statuses


async def scrape_until_acks(url: str, expected: int) -> None:
    """Scrape ``/metrics`` on fresh connections until it counts ``expected`` acks in all.

    Workers publish their counters every second, so the total may lag that long.
    """
    metrics_url = url.removesuffix("/mps/callback") + "/metrics"
    counted = None
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        with anyio.move_on_after(20):
            while counted != expected:
                async with session.get(metrics_url) as response:
                    assert response.status == 200
                    match = ACKS.search(await response.text())
                counted = int(match.group(1)) if match else 0
                assert counted <= expected
                if counted != expected:
                    await anyio.sleep(0.1)  # another process publishes: no event to wait on
    assert counted == expected


async def test_run_serves_until_sigterm_then_exits_cleanly(tmp_path: Path) -> None:
    write_app(tmp_path)
    async with mpsflow_process(tmp_path, ENV, "run", "cliapp:app", "--http", "127.0.0.1:0") as (
        process,
        output,
    ):
        serving = await output.wait_for(SERVING)
        url = serving.group(1)
        base = url.removesuffix("/mps/callback")
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/healthz") as response:
                assert response.status == 200
            async with session.get(base + "/readyz") as response:
                assert response.status == 200
        # the second POST of t-1 is a duplicate: the default SQLite dedup store skips it
        statuses = await post_all(url, [note("t-1"), note("t-2"), note("t-1"), b"{oops"])
        assert statuses == [200, 200, 200, 400]
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0
    assert sorted(str(r["task"]) for r in seen(tmp_path)) == ["t-1", "t-2"]
    assert (tmp_path / "mpsflow-dedup.sqlite3").exists()
    [dead] = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert dead["kind"] == "poison"
    assert "Traceback" not in "\n".join(output.lines)


async def test_run_with_two_workers_restarts_a_crashed_one(tmp_path: Path) -> None:
    write_app(tmp_path)
    args = ("cliapp:app", "--http", "127.0.0.1:0", "--workers", "2")
    async with mpsflow_process(tmp_path, ENV, "run", *args) as (process, output):
        first, second = await output.wait_for_all(WORKER, 2)
        await output.wait_for_all(SERVING, 3)  # the supervisor's line and each worker's
        url = (await output.wait_for(SERVING)).group(1)
        batch = [note(f"a-{n}") for n in range(10)]
        assert await post_all(url, batch, new_connections=True) == [200] * 10
        await scrape_until_acks(url, 10)  # whichever worker answers counts them all

        crashed = int(first.group(1))
        os.kill(crashed, signal.SIGKILL)
        *_, replacement = await output.wait_for_all(WORKER, 3)
        assert int(replacement.group(1)) not in (crashed, int(second.group(1)))
        batch = [note(f"b-{n}") for n in range(10)]
        assert await post_all(url, batch, new_connections=True) == [200] * 10
        await scrape_until_acks(url, 20)  # the killed worker's counts are kept

        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0
    tasks = sorted(str(r["task"]) for r in seen(tmp_path))
    assert tasks == sorted([f"a-{n}" for n in range(10)] + [f"b-{n}" for n in range(10)])
    for pid in (int(second.group(1)), int(replacement.group(1))):
        with pytest.raises(ProcessLookupError):  # every worker is gone with the supervisor
            os.kill(pid, 0)


async def test_run_files_processes_them_and_exits(tmp_path: Path) -> None:
    write_app(tmp_path)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "one.json").write_bytes(note("f-1"))
    (inbox / "more.jsonl").write_bytes(note("f-2") + b"\n" + note("f-3") + b"\n")
    result = await anyio.run_process(
        [sys.executable, "-m", "mpsflow", "run", "cliapp:app", "--files", str(inbox), "--no-dedup"],
        cwd=tmp_path,
        env=ENV,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert sorted(str(r["task"]) for r in seen(tmp_path)) == ["f-1", "f-2", "f-3"]
    assert not (tmp_path / "mpsflow-dedup.sqlite3").exists()
