"""``mpsflow run``'s durable inbox, as processes: every notification answered 200 is handled
exactly once, across a ``kill -9`` and a restart, across workers sharing the inbox, and with a
CMQ queue as the inbox, shared by receivers and workers."""

from __future__ import annotations

import json
import os
import re
import signal
from collections import Counter
from pathlib import Path

import aiohttp
import anyio
import pytest

from mpsflow.cli.common import EXIT_USAGE
from mpsflow.testing import build_notification
from tests.plugins.cmq_server import CMQ_SECRET_ID, CMQ_SECRET_KEY, CmqServerProcessFactory
from tests.process_output import Output, mpsflow_process

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}
SERVING = re.compile(r"serving MPS callbacks on (http://127\.0\.0\.1:(\d+)/mps/callback)")
STARTED = re.compile(r"started (\S+)")

# Handlers wait while the file "closed" exists, then record the task id as their effect.
APP = """
import os

import anyio

from mpsflow import App, Context

app = App(dead_letters="dead.jsonl")


@app.on("WorkflowTask")
async def record(event, ctx: Context) -> None:
    print(f"started {ctx.task_id}", flush=True)
    while os.path.exists("closed"):
        await anyio.sleep(0.01)
    with open("handled.txt", "a") as out:
        out.write(f"{ctx.task_id} {os.getpid()}\\n")
"""


def note(task_id: str) -> bytes:
    return json.dumps(build_notification(task_id=task_id)).encode()


def handled(folder: Path) -> Counter[str]:
    path = folder / "handled.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(line.split()[0] for line in lines)


async def post_all(url: str, task_ids: list[str], *, new_connections: bool = False) -> list[int]:
    """POST each notification at once; the statuses."""
    statuses: list[int] = []
    connector = aiohttp.TCPConnector(force_close=new_connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(task_id: str) -> None:
            async with session.post(url, data=note(task_id)) as response:
                statuses.append(response.status)

        async with anyio.create_task_group() as tg:
            for task_id in task_ids:
                tg.start_soon(one, task_id)
    return statuses


async def wait_handled(folder: Path, count: int, output: Output) -> None:
    """Wait until ``count`` handler runs recorded their effect (polling the file they write)."""
    with anyio.fail_after(30):
        while sum(handled(folder).values()) < count:  # noqa: ASYNC110 - another process writes
            await anyio.sleep(0.02)
    assert "Traceback" not in output.text


async def test_every_notification_answered_200_is_handled_once_across_kill_9(
    tmp_path: Path,
) -> None:
    (tmp_path / "inboxapp.py").write_text(APP)
    # The dedup leases of the killed process's handlers end 2 s (+ the 5 s margin) after
    # they started; the inbox's leases are taken back at once.
    args = ("run", "inboxapp:app", "--http", "127.0.0.1:0", "--handler-budget", "2")
    done = [f"done-{n}" for n in range(10)]
    waiting = [f"waiting-{n}" for n in range(30)]
    async with mpsflow_process(tmp_path, ENV, *args) as (process, output):
        url = (await output.wait_for(SERVING)).group(1)
        assert await post_all(url, done) == [200] * len(done)
        await wait_handled(tmp_path, len(done), output)
        (tmp_path / "closed").touch()  # from now on handlers wait
        assert await post_all(url, waiting) == [200] * len(waiting)
        await output.wait_for(re.compile(r"started waiting-"))
        os.killpg(process.pid, signal.SIGKILL)  # no drain, no goodbye
        await process.wait()
    assert sum(handled(tmp_path).values()) == len(done)  # the waiting ones never finished
    (tmp_path / "closed").unlink()
    async with mpsflow_process(tmp_path, ENV, *args) as (process, output):
        await output.wait_for(SERVING)
        await wait_handled(tmp_path, len(done) + len(waiting), output)
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0
    assert handled(tmp_path) == Counter(done + waiting)  # each exactly once
    assert "took back" in output.text  # the dead process's leases, at once


async def test_workers_share_the_inbox_and_handle_each_notification_once(
    tmp_path: Path,
) -> None:
    (tmp_path / "inboxapp.py").write_text(APP)
    args = ("run", "inboxapp:app", "--http", "127.0.0.1:0", "--workers", "2")
    tasks = [f"task-{n}" for n in range(60)]
    async with mpsflow_process(tmp_path, ENV, *args) as (process, output):
        url = (await output.wait_for(SERVING)).group(1)
        statuses = await post_all(url, tasks, new_connections=True)
        assert statuses == [200] * len(tasks)
        await wait_handled(tmp_path, len(tasks), output)
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0, output.text[-4000:]
    assert handled(tmp_path) == Counter(tasks)


async def test_a_stop_leaves_what_was_not_started_in_the_inbox_for_the_next_start(
    tmp_path: Path,
) -> None:
    (tmp_path / "inboxapp.py").write_text(APP)
    (tmp_path / "closed").touch()
    args = ("run", "inboxapp:app", "--http", "127.0.0.1:0", "--shutdown-timeout", "0.5")
    tasks = [f"task-{n}" for n in range(5)]
    async with mpsflow_process(tmp_path, ENV, *args) as (process, output):
        url = (await output.wait_for(SERVING)).group(1)
        assert await post_all(url, tasks) == [200] * len(tasks)
        await output.wait_for_all(STARTED, len(tasks))
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 1  # the timeout cut the waiting handlers off
    assert "5 notification(s) wait in the inbox" in output.text
    (tmp_path / "closed").unlink()
    async with mpsflow_process(tmp_path, ENV, *args) as (process, output):
        await wait_handled(tmp_path, len(tasks), output)
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0, output.text[-4000:]
    assert handled(tmp_path) == Counter(tasks)


# -- a CMQ queue as the inbox --------------------------------------------------------------

CMQ_ENV = {**ENV, "TENCENTCLOUD_SECRETID": CMQ_SECRET_ID, "TENCENTCLOUD_SECRETKEY": CMQ_SECRET_KEY}
CONSUMING = re.compile(r"consuming CMQ queue inbox")


async def test_receivers_append_to_a_cmq_inbox_and_a_worker_handles_each_once_across_kill_9(
    tmp_path: Path, cmq_server_process: CmqServerProcessFactory
) -> None:
    """Receivers only append (``--receive-only``); a CMQ worker (``--from-inbox``) processes.
    What the killed worker held comes back after the queue's visibility timeout, and runs once
    the dead worker's dedup leases end (that timeout plus the 5 s margin)."""
    (tmp_path / "inboxapp.py").write_text(APP)
    server = cmq_server_process("--queue", "inbox", "--visibility-timeout", "2")
    address = server.url.split("://", 1)[1].split("/", 1)[0]
    receiver = (
        *("run", "inboxapp:app", "--http", "127.0.0.1:0", "--receive-only"),
        *("--inbox", f"cmq+http://{address}/inbox"),
    )
    worker = (
        *("run", "inboxapp:app", "--cmq", f"http://{address}", "--queue", "inbox"),
        *("--from-inbox", "--wait", "1"),
    )
    done = [f"done-{n}" for n in range(10)]
    waiting = [f"waiting-{n}" for n in range(20)]
    async with mpsflow_process(tmp_path, CMQ_ENV, *receiver) as (http, http_output):
        url = (await http_output.wait_for(SERVING)).group(1)
        async with mpsflow_process(tmp_path, CMQ_ENV, *worker) as (process, output):
            await output.wait_for(CONSUMING)
            assert await post_all(url, done) == [200] * len(done)
            await wait_handled(tmp_path, len(done), output)
            (tmp_path / "closed").touch()  # from now on handlers wait
            assert await post_all(url, waiting) == [200] * len(waiting)
            await output.wait_for(re.compile(r"started waiting-"))
            os.killpg(process.pid, signal.SIGKILL)  # the worker: no drain, no goodbye
            await process.wait()
        assert sum(handled(tmp_path).values()) == len(done)
        (tmp_path / "closed").unlink()
        async with mpsflow_process(tmp_path, CMQ_ENV, *worker) as (process, output):
            await wait_handled(tmp_path, len(done) + len(waiting), output)
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                assert await process.wait() == 0
        http.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await http.wait() == 0
    assert handled(tmp_path) == Counter(done + waiting)  # each exactly once
    assert "Traceback" not in http_output.text


ACKS = re.compile(r'^mpsflow_deliveries_total\{source="http",outcome="ack"\} (\d+)$', re.M)
CAUGHT_UP = re.compile(r"^mpsflow_inbox_last_caught_up_timestamp_seconds (\S+)$", re.M)


async def test_a_receiver_that_processes_its_cmq_inbox_reports_it_on_metrics(
    tmp_path: Path, cmq_server_process: CmqServerProcessFactory
) -> None:
    """Its deliveries count under ``source="http"``, as with a SQLite inbox (they came in
    through it); CMQ tells no count, so ``/metrics`` shows when it last took everything
    waiting in the queue."""
    (tmp_path / "inboxapp.py").write_text(APP)
    server = cmq_server_process("--queue", "inbox")
    address = server.url.split("://", 1)[1].split("/", 1)[0]
    command = ("run", "inboxapp:app", "--http", "127.0.0.1:0", "--wait", "1")
    tasks = [f"task-{n}" for n in range(5)]
    async with mpsflow_process(
        tmp_path, CMQ_ENV, *command, "--inbox", f"cmq+http://{address}/inbox"
    ) as (process, output):
        url = (await output.wait_for(SERVING)).group(1)
        assert await post_all(url, tasks) == [200] * len(tasks)
        await wait_handled(tmp_path, len(tasks), output)
        metrics_url = url.removesuffix("/mps/callback") + "/metrics"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            with anyio.fail_after(30):
                while True:  # the count follows the handler's effect by a moment
                    async with session.get(metrics_url) as response:
                        metrics = await response.text()
                    acks = ACKS.search(metrics)
                    if acks and int(acks.group(1)) == len(tasks):
                        break
                    await anyio.sleep(0.05)
        caught_up = CAUGHT_UP.search(metrics)
        assert caught_up is not None, metrics
        assert float(caught_up.group(1)) > 0
        assert "mpsflow_inbox_items" not in metrics
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0, output.text[-4000:]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--receive-only",), "--receive-only goes with --inbox cmq://HOST/QUEUE"),
        (("--inbox", "cmq://127.0.0.1:9/"), "expected cmq://HOST[:PORT]/QUEUE"),
        (("--inbox", "cmq://127.0.0.1:9/9bad"), "expected a CMQ queue name"),
        (("--inbox", "cmq:/127.0.0.1:9/q"), "a file path, or cmq://HOST[:PORT]/QUEUE"),
        (("--inbox", "http://127.0.0.1:9/q"), "a file path, or cmq://HOST[:PORT]/QUEUE"),
        (("--from-inbox",), "--from-inbox goes with --cmq ENDPOINT"),
        (("--no-inbox", "--inbox-max", "5"), "--inbox-max bounds a SQLite inbox"),
    ],
)
async def test_cmq_inbox_mistakes_are_one_line(
    tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    (tmp_path / "inboxapp.py").write_text(APP)
    command = ("run", "inboxapp:app", "--http", "127.0.0.1:0", *args)
    async with mpsflow_process(tmp_path, CMQ_ENV, *command) as (process, output):
        with anyio.fail_after(30):
            assert await process.wait() == EXIT_USAGE
    [line] = [line for line in output.text.splitlines() if line.strip()]
    assert line.startswith("mpsflow run: error: "), output.text
    assert says in line, output.text


async def test_a_cmq_inbox_needs_the_api_keys(tmp_path: Path) -> None:
    (tmp_path / "inboxapp.py").write_text(APP)
    env = {k: v for k, v in ENV.items() if not k.startswith("TENCENTCLOUD_")}
    command = ("run", "inboxapp:app", "--http", "127.0.0.1:0", "--inbox", "cmq://h/q")
    async with mpsflow_process(tmp_path, env, *command) as (process, output):
        with anyio.fail_after(30):
            assert await process.wait() == EXIT_USAGE
    assert "--inbox cmq://… needs API keys in the environment" in output.text


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_receiver_that_processes_a_misspelt_cmq_inbox_exits_3_with_one_line(
    tmp_path: Path, cmq_server_process: CmqServerProcessFactory, workers: str
) -> None:
    """It fails before it serves, with one line and nothing else: with ``--workers`` too, as
    the first worker starts alone (no other worker's start, stop or failure to say)."""
    (tmp_path / "inboxapp.py").write_text(APP)
    server = cmq_server_process("--queue", "inbox")
    address = server.url.split("://", 1)[1].split("/", 1)[0]
    command = ("run", "inboxapp:app", "--http", "127.0.0.1:0", "--workers", workers, "--inbox")
    async with mpsflow_process(tmp_path, CMQ_ENV, *command, f"cmq+http://{address}/inbx") as (
        process,
        output,
    ):
        with anyio.fail_after(30):
            assert await process.wait() == 3
    [line] = [line for line in output.lines if line.strip()]
    assert line.startswith("mpsflow run: error: CMQ queue inbx "), output.text
    assert "does not exist (code 4440)" in line


async def test_an_inbox_that_cannot_be_opened_is_one_line_at_startup(tmp_path: Path) -> None:
    (tmp_path / "inboxapp.py").write_text(APP)
    (tmp_path / "no").write_text("a file where the inbox's folder would be made")
    command = ("run", "inboxapp:app", "--http", "127.0.0.1:0", "--inbox", "no/such/inbox.db")
    async with mpsflow_process(tmp_path, ENV, *command) as (process, output):
        with anyio.fail_after(30):
            assert await process.wait() == 3
    [line] = output.lines  # the error alone: no warning about the inbox's files before it
    assert line.startswith("mpsflow run: error: "), output.text
    assert "its folder must be writable (it is made if missing)" in line


@pytest.mark.parametrize(("workers", "given"), [("1", "."), ("2", "."), ("1", "sub/")])
async def test_a_folder_given_as_the_inbox_is_one_line_saying_so(
    tmp_path: Path, workers: str, given: str
) -> None:
    """``--inbox .``: the folder is writable, the path is just not a file; the one line says
    that and what to give instead. ``--inbox sub/`` names a folder too, missing or not (SQLite
    would make a file named ``sub``)."""
    (tmp_path / "inboxapp.py").write_text(APP)
    command = ("run", "inboxapp:app", "--http", "127.0.0.1:0", "--inbox", given)
    async with mpsflow_process(tmp_path, ENV, *command, "--workers", workers) as (
        process,
        output,
    ):
        with anyio.fail_after(30):
            assert await process.wait() == 3
    [line] = output.lines
    folder = (tmp_path / given).resolve()
    assert not (tmp_path / "sub").exists()
    assert line == (
        f"mpsflow run: error: the inbox cannot open {folder}: it is a directory, not a file:"
        f" give --inbox a file path, e.g. {folder / 'inbox.sqlite3'}"
    )
    assert not folder.with_name(f"{folder.name}-writers").exists()  # nothing made beside it
