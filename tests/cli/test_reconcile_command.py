"""``mpsflow reconcile`` and ``mpsflow run --reconcile`` as processes, against the local MPS
API server on loopback: they list or process the finished tasks with no arrival recorded, once."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import anyio
import pytest

from mpsflow.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STARTUP,
    any_duration,
    duration,
)
from mpsflow.clock import format_duration
from mpsflow.dedup.stores import SQLiteStore
from mpsflow.devservers.mps import MpsServer
from mpsflow.testing import build_notification
from tests.process_output import mpsflow_process

ROOT = Path(__file__).resolve().parents[2]
SECRET_ID, SECRET_KEY = "AKIDreconcileCLI00000000000000001", "reconcile-cli-key"
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    "TENCENTCLOUD_SECRETID": SECRET_ID,
    "TENCENTCLOUD_SECRETKEY": SECRET_KEY,
}
TASKS = [f"task-{n:02d}" for n in range(6)]
APP = """
import argparse
import os

from mpsflow import App, Context

app = App()


@app.on("WorkflowTask")
async def record(event, ctx: Context) -> None:
    with open("handled.txt", "a") as out:
        out.write(f"{ctx.task_id} {ctx.delivery.source}\\n")
"""


@pytest.fixture
async def server() -> AsyncIterator[MpsServer]:
    """The local MPS API with six tasks finished within the last hour."""
    server = MpsServer({SECRET_ID: SECRET_KEY})
    now = time.time()
    for n, task_id in enumerate(TASKS):
        server.add_from_notification(
            build_notification(task_id=task_id),
            create_time=now - 3600 + n * 60,
            finish_time=now - 3000 + n * 60,
        )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def handled(folder: Path) -> Counter[str]:
    path = folder / "handled.txt"
    return Counter(path.read_text().splitlines() if path.exists() else [])


def options(server: MpsServer) -> tuple[str, ...]:
    return ("--mps-endpoint", server.url, "--grace", "1m")


async def test_reconcile_lists_then_processes_then_finds_nothing(
    server: MpsServer, tmp_path: Path
) -> None:
    (tmp_path / "reconapp.py").write_text(APP)
    command = ("reconcile", "reconapp:app", "--since", "2h", *options(server))
    async with mpsflow_process(tmp_path, ENV, *command, "--dry-run") as (process, output):
        with anyio.fail_after(60):
            assert await process.wait() == EXIT_OK
    listed = re.findall(r"^(task-\d+)\tWorkflowTask\tfinished ", output.text, re.MULTILINE)
    assert sorted(listed) == TASKS
    assert "; 6 with no arrival recorded (dry run: nothing processed" in output.text
    assert handled(tmp_path) == Counter()
    async with mpsflow_process(tmp_path, ENV, *command) as (process, output):
        with anyio.fail_after(60):
            assert await process.wait() == EXIT_OK
    assert "; 6 with no arrival recorded: 6 processed, 0 left for a retry" in output.text
    assert handled(tmp_path) == Counter(f"{task} reconcile" for task in TASKS)
    async with mpsflow_process(tmp_path, ENV, *command) as (process, output):
        with anyio.fail_after(60):
            assert await process.wait() == EXIT_OK
    assert "; 0 with no arrival recorded" in output.text
    assert server.calls["DescribeTaskDetail"] == len(TASKS)  # each fetched once


async def test_tasks_a_plain_run_handled_are_listed_as_unrecorded_not_as_lost(
    server: MpsServer, tmp_path: Path
) -> None:
    """A run without --reconcile records no arrivals, so a dry run lists the tasks it handled:
    the summary says no arrival was recorded and why, not that they never notified; processing
    them runs no handler again (dedup remembers them)."""
    (tmp_path / "reconapp.py").write_text(APP)
    inbox = tmp_path / "notifications"
    inbox.mkdir()
    for task_id in TASKS:
        (inbox / f"{task_id}.json").write_text(json.dumps(build_notification(task_id=task_id)))
    plain_run = ("run", "reconapp:app", "--files", str(inbox))
    async with mpsflow_process(tmp_path, ENV, *plain_run) as (process, output):
        with anyio.fail_after(60):
            assert await process.wait() == EXIT_OK, output.text
    assert handled(tmp_path) == Counter(f"{task} file" for task in TASKS)
    command = ("reconcile", "reconapp:app", "--since", "2h", *options(server))
    async with mpsflow_process(tmp_path, ENV, *command, "--dry-run") as (process, output):
        with anyio.fail_after(60):
            assert await process.wait() == EXIT_OK
    [summary] = [line for line in output.text.splitlines() if "window(s) listed" in line]
    assert "never notified" not in summary
    assert "6 with no arrival recorded" in summary
    assert "without --reconcile" in summary
    async with mpsflow_process(tmp_path, ENV, *command) as (process, output):
        with anyio.fail_after(60):
            assert await process.wait() == EXIT_OK
    assert handled(tmp_path) == Counter(f"{task} file" for task in TASKS)


async def test_run_reconciles_beside_http_and_stops_cleanly(
    server: MpsServer, tmp_path: Path
) -> None:
    (tmp_path / "reconapp.py").write_text(APP)
    command = (
        *("run", "reconapp:app", "--http", "127.0.0.1:0", "--reconcile"),
        *("--lookback", "2h", "--interval", "10m", *options(server)),
    )
    async with mpsflow_process(tmp_path, ENV, *command) as (process, output):
        with anyio.fail_after(60):
            while sum(handled(tmp_path).values()) < len(TASKS):  # noqa: ASYNC110 - a child writes
                await anyio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == EXIT_OK
    assert handled(tmp_path) == Counter(f"{task} reconcile" for task in TASKS)
    assert "Traceback" not in output.text


@pytest.mark.parametrize("command", ["reconcile", "run"])
async def test_refused_keys_are_one_line_and_exit_3(
    server: MpsServer, tmp_path: Path, command: str
) -> None:
    (tmp_path / "reconapp.py").write_text(APP)
    env = {**ENV, "TENCENTCLOUD_SECRETKEY": "wrong"}
    args = ("--reconcile", "--http", "127.0.0.1:0") if command == "run" else ()
    full = (command, "reconapp:app", *args, *options(server))
    async with mpsflow_process(tmp_path, env, *full) as (process, output):
        with anyio.fail_after(60):
            assert await process.wait() == EXIT_STARTUP
    errors = [line for line in output.text.splitlines() if "error:" in line]
    assert errors == [
        f"mpsflow {command}: error: the MPS API refused the credentials"
        f" (AuthFailure.SignatureFailure): check TENCENTCLOUD_SECRETID/TENCENTCLOUD_SECRETKEY"
    ], output.text


LISTENING = re.compile(r"mpsflow mps-server listening on (http://127\.0\.0\.1:\d+)$")
SERVING = re.compile(r"serving MPS callbacks on http://")


async def test_the_mps_dev_loop_as_the_readme_shows_it(tmp_path: Path) -> None:
    """The README's dev loop: the local MPS API with the examples' tasks, a dry run that lists
    the two finished ones, then ``run --reconcile`` that processes them."""
    (tmp_path / "reconapp.py").write_text(APP)
    tasks = ("--tasks", str(ROOT / "examples" / "notifications"))
    async with mpsflow_process(tmp_path, ENV, "mps-server", "--port", "0", *tasks) as (
        server,
        server_output,
    ):
        url = (await server_output.wait_for(LISTENING)).group(1)
        # The tasks finished in the second the server loaded them, and a window ends at now
        # (grace 0), exclusive, in whole seconds: list them once that second is over.
        await anyio.sleep(1.05 - time.time() % 1)
        local = ("--mps-endpoint", url, "--grace", "0")
        dry_run = ("reconcile", "reconapp:app", *local, "--dry-run")
        async with mpsflow_process(tmp_path, ENV, *dry_run) as (process, output):
            with anyio.fail_after(60):
                assert await process.wait() == EXIT_OK
        listed = sorted(re.findall(r"^\S+\t(\w+)\tfinished ", output.text, re.MULTILINE))
        assert listed == ["EditMediaTask", "WorkflowTask"]
        run = (
            *("run", "reconapp:app", "--http", "127.0.0.1:0", "--reconcile"),
            *("--lookback", "1h", *local),
        )
        async with mpsflow_process(tmp_path, ENV, *run) as (process, output):
            with anyio.fail_after(60):
                while not handled(tmp_path):  # noqa: ASYNC110 - a child writes
                    await anyio.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                assert await process.wait() == EXIT_OK
        server.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await server.wait() == 0
    [(line, count)] = handled(tmp_path).items()  # the one finished WorkflowTask
    assert (line.split()[1], count) == ("reconcile", 1)
    assert "Traceback" not in output.text


async def test_workers_share_the_reconcile_lease_and_process_each_task_once(
    server: MpsServer, tmp_path: Path
) -> None:
    (tmp_path / "reconapp.py").write_text(APP)
    command = (
        *("run", "reconapp:app", "--http", "127.0.0.1:0", "--workers", "2", "--reconcile"),
        *("--lookback", "2h", "--interval", "10m", *options(server)),
    )
    async with mpsflow_process(tmp_path, ENV, *command) as (process, output):
        with anyio.fail_after(60):
            while sum(handled(tmp_path).values()) < len(TASKS):  # noqa: ASYNC110 - a child writes
                await anyio.sleep(0.05)
        await output.wait_for_all(SERVING, 2)  # each worker serves
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == EXIT_OK
    assert handled(tmp_path) == Counter(f"{task} reconcile" for task in TASKS)
    assert server.calls["DescribeTaskDetail"] == len(TASKS)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("1.5h", 5400.0), ("7d", 604800.0)],
)
def test_durations_read_as_seconds(text: str, seconds: float) -> None:
    assert duration(text) == any_duration(text) == seconds
    assert duration(format_duration(seconds)) == seconds  # as messages quote them


@pytest.mark.parametrize("text", ["", "h", "5x", "-1m", "inf", "nan"])
def test_a_malformed_duration_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected a duration"):
        any_duration(text)


def test_zero_is_a_grace_but_not_an_interval() -> None:
    assert any_duration("0") == 0.0
    with pytest.raises(argparse.ArgumentTypeError, match="above 0"):
        duration("0m")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("run", "--lookback", "1h"), ["--lookback goes with --reconcile"]),
        (("run", "--grace", "0", "--region", "x"), ["--grace, --region go with --reconcile"]),
        (
            ("run", "--reconcile", "--lookback", "1h", "--grace", "2h"),
            ["--lookback 1h must be longer than --grace 2h:", "a longer --lookback"],
        ),
        (
            ("reconcile", "--since", "1h", "--grace", "1h"),
            ["--since 1h must be longer than --grace 1h:", "a longer --since"],
        ),
        # A forgotten unit: 24 seconds, shorter than the default grace (10m).
        (
            ("reconcile", "--since", "24"),
            ["--since 24s must be longer than --grace 10m", "did you mean --since 24h?"],
        ),
        (
            ("run", "--reconcile", "--lookback", "24"),
            ["--lookback 24s must be longer than --grace 10m", "did you mean --lookback 24h?"],
        ),
        (
            ("run", "--reconcile", "--lookback", "2m", "--grace", "0"),
            ["--interval 5m (its default) must not be longer than --lookback 2m"],
        ),
        (("reconcile", "--since", "30m", "--window", "2h"), None),  # the window fits --since
    ],
)
async def test_reconcile_option_mistakes_are_one_line(
    server: MpsServer, tmp_path: Path, args: tuple[str, ...], says: list[str] | None
) -> None:
    """Each names the options as the command spells them (``--since`` and ``--window`` for
    ``reconcile``, ``--lookback`` and ``--interval`` for ``run``) and what to change."""
    (tmp_path / "reconapp.py").write_text(APP)
    command, *rest = args
    endpoint = (
        ("--mps-endpoint", server.url) if command == "reconcile" or "--reconcile" in rest else ()
    )
    full = (command, "reconapp:app", *endpoint, *rest)
    if command == "run":
        full += ("--http", "127.0.0.1:0")
    async with mpsflow_process(tmp_path, ENV, *full) as (process, output):
        with anyio.fail_after(60):
            status = await process.wait()
    if says is None:
        assert status == EXIT_OK, output.text
        return
    assert status == 2, output.text
    [line] = [line for line in output.text.splitlines() if line.strip()]
    assert line.startswith(f"mpsflow {command}: error: "), line
    for part in says:
        assert part in line


async def test_reconcile_says_when_another_holds_the_lease(
    server: MpsServer, tmp_path: Path
) -> None:
    """A reconciler that was killed leaves its lease for minutes, not silently."""
    (tmp_path / "reconapp.py").write_text(APP)
    store = SQLiteStore(tmp_path / "mpsflow-dedup.sqlite3")  # the default store of reconcile
    try:
        held = await store.claim("mpsflow:reconcile:pass", lease_seconds=180, payload_hash="")
        assert held.token
    finally:
        await store.close()
    command = ("reconcile", "reconapp:app", "--since", "2h", *options(server))
    async with mpsflow_process(tmp_path, ENV, *command) as (process, output):
        with anyio.fail_after(60):
            assert await process.wait() == EXIT_FAILED
    assert "another reconciler is scanning" in output.text
    assert handled(tmp_path) == Counter()


PROMETHEUS_APP = APP.replace(
    "app = App()",
    "from mpsflow.observability.prometheus import PrometheusMetrics\n\n"
    "app = App(metrics=PrometheusMetrics())",
)
SERVING_AT = re.compile(r"serving MPS callbacks on (http://127\.0\.0\.1:\d+)/mps/callback")
PASS_ENDED = re.compile(r"reconcile pass (full|partial): |another reconciler is scanning")
LAST_FULL_SCAN = re.compile(
    r"^mpsflow_reconcile_last_full_scan_timestamp_seconds (\S+)$", re.MULTILINE
)


async def last_full_scans(base: str, scrapes: int) -> list[float | None]:
    """The last-full-pass gauge of each of ``scrapes`` scrapes of ``/metrics`` (None: not
    there), each on a new connection, so with ``--workers`` any worker may answer."""
    found: list[float | None] = []
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for _ in range(scrapes):
            async with session.get(f"{base}/metrics") as response:
                assert response.status == 200
                match = LAST_FULL_SCAN.search(await response.text())
            found.append(float(match.group(1)) if match else None)
    return found


@pytest.mark.parametrize(
    ("backend", "workers"),
    [("in-memory", 1), ("in-memory", 2), ("prometheus-client", 1)],
)
async def test_the_last_full_pass_gauge_is_shown_only_where_reconciliation_runs(
    server: MpsServer, tmp_path: Path, backend: str, workers: int
) -> None:
    """An app that does not reconcile has no last-full-pass gauge (its age would be an alert
    firing for nothing); one that does shows it, in every path: the default metrics, the
    prometheus-client backend, and the workers' combined metrics."""
    (tmp_path / "reconapp.py").write_text(PROMETHEUS_APP if backend != "in-memory" else APP)
    run = ("run", "reconapp:app", "--http", "127.0.0.1:0", "--workers", str(workers))
    scrapes = 4 * workers
    async with mpsflow_process(tmp_path, ENV, *run) as (process, output):
        base = (await output.wait_for_all(SERVING_AT, workers))[0].group(1)
        assert await last_full_scans(base, scrapes) == [None] * scrapes
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == EXIT_OK
    reconciling = (*run, "--reconcile", "--lookback", "2h", "--interval", "10m", *options(server))
    async with mpsflow_process(tmp_path, ENV, *reconciling) as (process, output):
        base = (await output.wait_for_all(SERVING_AT, workers))[0].group(1)
        await output.wait_for_all(PASS_ENDED, workers)  # each worker's first pass ended
        found = await last_full_scans(base, scrapes)
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == EXIT_OK
    assert None not in found, output.text
    if workers == 1:  # its pass was full (with two, one that skipped it may show 0 until the
        # other's counts are published)
        [last] = set(found)
        assert last is not None
        assert 0 < time.time() - last < 60
