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

ROOT = Path(__file__).resolve().parents[2]
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


async def scrape_acks(url: str, scrapes: int = 4) -> int:
    """The acks ``/metrics`` counts in all, the same on every one of ``scrapes`` scrapes.

    Each scrape is on a new connection, so any worker may answer it: each adds its own live
    counts to the others' files, which hold every callback they answered (no waiting for a
    periodic publish).
    """
    metrics_url = url.removesuffix("/mps/callback") + "/metrics"
    counts: list[int] = []
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(scrapes):
            async with session.get(metrics_url) as response:
                assert response.status == 200
                match = ACKS.search(await response.text())
            counts.append(int(match.group(1)) if match else 0)
    assert len(set(counts)) == 1, counts
    return counts[0]


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
        started = [int(m.group(1)) for m in await output.wait_for_all(WORKER, 2)]
        await output.wait_for_all(SERVING, 3)  # the supervisor's line and each worker's
        url = (await output.wait_for(SERVING)).group(1)
        batch = [note(f"a-{n}") for n in range(10)]
        assert await post_all(url, batch, new_connections=True) == [200] * 10

        # SIGKILL every worker that answered one of them, at once: well within the second
        # between two periodic publishes, so only what it recorded before answering is left.
        crashed = {int(str(r["pid"])) for r in seen(tmp_path)}
        assert crashed <= set(started)
        for pid in crashed:
            os.kill(pid, signal.SIGKILL)
        workers = [int(m.group(1)) for m in await output.wait_for_all(WORKER, 2 + len(crashed))]
        replacements = workers[2:]
        assert not set(replacements) & set(started)
        assert await scrape_acks(url) == 10  # the killed workers' counts are all kept

        batch = [note(f"b-{n}") for n in range(10)]
        assert await post_all(url, batch, new_connections=True) == [200] * 10
        assert await scrape_acks(url) == 20

        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0
    tasks = sorted(str(r["task"]) for r in seen(tmp_path))
    assert tasks == sorted([f"a-{n}" for n in range(10)] + [f"b-{n}" for n in range(10)])
    for pid in set(workers) - crashed:
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
