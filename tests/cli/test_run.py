"""``mpsflow run`` as a real process: serve, SIGTERM, exit 0; ``--workers``; ``--files`` and
its summary; startup failures (one line, exit 3); the drain, ``--shutdown-timeout`` and a
second SIGINT (exit 130); deferrals logged at INFO with a summary line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path

import aiohttp
import anyio
import anyio.abc
import pytest
from aiohttp import web

from mpsflow import App
from mpsflow._listen import listen
from mpsflow.cli._heap import YOUNG_COLLECTION_THRESHOLD
from mpsflow.cli.common import use_dedup_option
from mpsflow.dedup.stores.memory import MemoryStore
from mpsflow.sinks.memory import MemorySink
from mpsflow.sources.http import HttpSource
from mpsflow.testing import build_notification, media_result
from tests.plugins.cmq_server import CmqServerFactory, SilentEndpoint
from tests.process_output import Output, mpsflow_process

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


CLIENT_TIMEOUT = 30.0
"""Seconds one request may take, connecting included (aiohttp's own default is 5 minutes)."""


def client(*, new_connections: bool = False) -> aiohttp.ClientSession:
    """A client whose every request gives up after ``CLIENT_TIMEOUT``; ``new_connections``:
    one connection per request (so with ``--workers`` any worker may take each)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=new_connections),
        timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT),
    )


@contextmanager
def answered(request: str, output: Output | None = None) -> Iterator[None]:
    """Fail saying which ``request`` got no answer (and what mpsflow logged) when the client
    gives up on it, instead of a bare timeout."""
    try:
        yield
    except asyncio.TimeoutError:  # aiohttp's (TimeoutError itself from Python 3.11 on)
        logged = f"; mpsflow logged:\n{output.text}" if output is not None else ""
        pytest.fail(f"no answer to {request} within {CLIENT_TIMEOUT:g}s{logged}")


async def post_all(
    url: str, bodies: list[bytes], *, new_connections: bool = False, output: Output | None = None
) -> list[int]:
    """The status of each of ``bodies`` POSTed to ``url`` in turn."""
    async with client(new_connections=new_connections) as session:
        statuses: list[int] = []
        for n, body in enumerate(bodies, 1):
            with answered(f"POST {n} of {len(bodies)} to {url}", output):
                async with session.post(url, data=body) as response:
                    statuses.append(response.status)
        return statuses


async def scrape_acks(url: str, scrapes: int = 4, *, output: Output | None = None) -> int:
    """The acks ``/metrics`` counts in all, the same on every one of ``scrapes`` scrapes.

    Each scrape is on a new connection, so any worker may answer it: each adds its own live
    counts to the others' files, which hold every callback they answered (no waiting for a
    periodic publish).
    """
    metrics_url = url.removesuffix("/mps/callback") + "/metrics"
    counts: list[int] = []
    async with client(new_connections=True) as session:
        for n in range(1, scrapes + 1):
            with answered(f"GET {n} of {scrapes} of {metrics_url}", output):
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
    # Without the inbox, so that each answer waits for its handler: the workers that answered
    # are those that handled, and the acks are counted before the answers go out.
    args = ("cliapp:app", "--http", "127.0.0.1:0", "--workers", "2", "--no-inbox")
    async with mpsflow_process(tmp_path, ENV, "run", *args) as (process, output):
        started = [int(m.group(1)) for m in await output.wait_for_all(WORKER, 2)]
        await output.wait_for_all(SERVING, 2)  # each worker's
        url = (await output.wait_for(SERVING)).group(1)
        batch = [note(f"a-{n}") for n in range(10)]
        assert await post_all(url, batch, new_connections=True, output=output) == [200] * 10

        # SIGKILL every worker that answered one of them, at once: well within the second
        # between two periodic publishes, so only what it recorded before answering is left.
        crashed = {int(str(r["pid"])) for r in seen(tmp_path)}
        assert crashed <= set(started)
        for pid in crashed:
            os.kill(pid, signal.SIGKILL)
        workers = [int(m.group(1)) for m in await output.wait_for_all(WORKER, 2 + len(crashed))]
        replacements = workers[2:]
        assert not set(replacements) & set(started)
        # Right away, while the replacements start: the port answers all along (a request
        # no worker takes yet waits in the listen backlog).
        assert await scrape_acks(url, output=output) == 10  # the killed workers' counts stay

        batch = [note(f"b-{n}") for n in range(10)]
        assert await post_all(url, batch, new_connections=True, output=output) == [200] * 10
        assert await scrape_acks(url, output=output) == 20
        await output.wait_for_all(SERVING, 2 + len(crashed))  # every replacement serves

        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0
    tasks = sorted(str(r["task"]) for r in seen(tmp_path))
    assert tasks == sorted([f"a-{n}" for n in range(10)] + [f"b-{n}" for n in range(10)])
    for pid in set(workers) - crashed:
        with pytest.raises(ProcessLookupError):  # every worker is gone with the supervisor
            os.kill(pid, 0)


PROMETHEUS_APP_MODULE = """
import asyncio
import logging
import os

from mpsflow import App, Context
from mpsflow.observability.prometheus import PrometheusMetrics
from mpsflow.sinks.jsonl import JsonlSink

app = App(metrics=PrometheusMetrics(), dead_letters="dead.jsonl")
app.sink("seen", JsonlSink("seen.jsonl"))


@app.on("WorkflowTask", emits=["seen"])
async def seen(event, ctx: Context) -> None:
    if ctx.task_id.startswith("hold"):
        logging.getLogger("cliapp").warning("worker %d holds %s", os.getpid(), ctx.task_id)
        await asyncio.Event().wait()
    await ctx.emit("seen", {"task": ctx.task_id, "pid": os.getpid()})
"""
HOLDS = re.compile(r"worker (\d+) holds hold-1")
PROMETHEUS_SAMPLES = {
    "acks": ("mpsflow_deliveries_total", (("outcome", "ack"), ("source", "http"))),
    "answered": ("mpsflow_http_callback_responses_total", (("code", "200"),)),
    "in_flight": ("mpsflow_in_flight", (("source", "http"),)),
}


async def scrape_prometheus(url: str, output: Output, scrapes: int = 4) -> dict[str, float]:
    """``PROMETHEUS_SAMPLES`` as ``/metrics`` shows them, the same on every one of
    ``scrapes`` scrapes, each on a new connection (so any worker may answer it)."""
    from prometheus_client.parser import text_string_to_metric_families

    metrics_url = url.removesuffix("/mps/callback") + "/metrics"
    seen_values: list[dict[str, float]] = []
    async with client(new_connections=True) as session:
        for n in range(1, scrapes + 1):
            with answered(f"GET {n} of {scrapes} of {metrics_url}", output):
                async with session.get(metrics_url) as response:
                    assert response.status == 200
                    text = await response.text()
            found = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }
            seen_values.append({k: found.get(key, 0.0) for k, key in PROMETHEUS_SAMPLES.items()})
    assert all(values == seen_values[0] for values in seen_values), seen_values
    return seen_values[0]


async def test_prometheus_metrics_of_two_workers_are_reported_whole(tmp_path: Path) -> None:
    """``PrometheusMetrics`` with ``--workers``: whichever worker answers ``/metrics`` reports
    every worker's counts (prometheus-client's multiprocess mode, on a directory of the run's
    own, removed at the end); a killed worker's counts stay, its delivery in flight goes."""
    (tmp_path / "cliapp.py").write_text(PROMETHEUS_APP_MODULE)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**ENV, "TMPDIR": str(scratch)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    args = ("cliapp:app", "--http", "127.0.0.1:0", "--workers", "2", "--no-inbox")
    async with mpsflow_process(tmp_path, env, "run", *args) as (process, output):
        await output.wait_for_all(SERVING, 2)
        url = (await output.wait_for(SERVING)).group(1)
        batch = [note(f"a-{n}") for n in range(10)]
        assert await post_all(url, batch, new_connections=True, output=output) == [200] * 10
        assert await scrape_prometheus(url, output) == {
            "acks": 10,
            "answered": 10,
            "in_flight": 0,
        }

        async def hold() -> None:
            with contextlib.suppress(aiohttp.ClientError):  # its worker is killed
                await post_all(url, [note("hold-1")])

        async with anyio.create_task_group() as group:
            group.start_soon(hold)
            holder = int((await output.wait_for(HOLDS)).group(1))
            assert (await scrape_prometheus(url, output))["in_flight"] == 1
            os.kill(holder, signal.SIGKILL)
            await output.wait_for(re.compile(rf"worker {holder} exited unexpectedly"))
        assert await scrape_prometheus(url, output) == {
            "acks": 10,
            "answered": 10,
            "in_flight": 0,
        }
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0
    assert "PROMETHEUS_MULTIPROC_DIR" not in output.text
    assert list(scratch.iterdir()) == []  # the run's directories are gone with it


async def test_sigterm_to_the_whole_process_group_drains_the_workers_once(tmp_path: Path) -> None:
    """``kill -TERM -PGID`` (or systemd stopping the unit's cgroup) reaches every worker twice,
    from the sender and forwarded by the supervisor: one stop request, a drain, exit 0."""
    write_app(tmp_path)
    args = ("cliapp:app", "--http", "127.0.0.1:0", "--workers", "2")
    async with mpsflow_process(tmp_path, ENV, "run", *args) as (process, output):
        await output.wait_for_all(WORKER, 2)
        await output.wait_for_all(SERVING, 2)  # each worker's
        url = (await output.wait_for(SERVING)).group(1)
        assert await post_all(url, [note("g-1")], output=output) == [200]
        os.killpg(process.pid, signal.SIGTERM)  # its own session: the group is its pid
        with anyio.fail_after(30):
            assert await process.wait() == 0
    text = "\n".join(output.lines)
    assert "again: stopping now" not in text
    assert "SIGUSR1" not in text  # the supervisor's own signal to its workers
    # One line per worker, whichever came first: SIGTERM itself or the supervisor's SIGUSR1.
    announced = re.compile(r"\[(\d+)\] (?:the supervisor )?received SIGTERM; draining for up to")
    workers = [int(m.group(1)) for m in await output.wait_for_all(WORKER, 2)]
    assert sorted(int(m.group(1)) for m in announced.finditer(text)) == sorted(workers), text
    assert [str(r["task"]) for r in seen(tmp_path)] == ["g-1"]


async def test_ctrl_c_while_the_workers_start_is_a_stop_not_a_failure(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the group) right as the workers start may kill one before its app
    handles signals: it held no work, so that is a stop, exit 0, in words, not a failure."""
    write_app(tmp_path)
    args = ("cliapp:app", "--http", "127.0.0.1:0", "--workers", "2")
    async with mpsflow_process(tmp_path, ENV, "run", *args) as (process, output):
        await output.wait_for_all(WORKER, 2)
        os.killpg(process.pid, signal.SIGINT)
        with anyio.fail_after(30):
            assert await process.wait() == 0
    ends = re.findall(r"worker \d+ exited \((.*?)\)", "\n".join(output.lines))
    assert len(ends) == 2
    assert set(ends) <= {"drained", "stopped, holding no work"}, ends


async def test_a_worker_starting_leaves_the_shared_socket_non_blocking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker starting on the listening socket the others serve never makes it blocking.

    The blocking mode belongs to the open file all the workers share: were it blocking even
    for a moment, a serving worker's event loop would take a connection, then block in its
    next ``accept()`` until another one came, and the one it took would wait unanswered (a
    crashed worker's replacement starting up left the port without answers).
    """
    modes: list[bool] = []
    start = web.SockSite.start

    async def start_serving(site: web.SockSite) -> None:
        modes.append(os.get_blocking(shared.fileno()))  # as the serving workers see it now
        await start(site)

    monkeypatch.setattr(web.SockSite, "start", start_serving)
    with listen("127.0.0.1", 0) as shared:  # a blocking socket object, bound before forking
        os.set_blocking(shared.fileno(), False)  # as the serving workers' event loops keep it
        app = App(dead_letters=MemorySink())
        source = HttpSource(sock=shared)
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(app.run, source, handle_signals=False))
            with anyio.fail_after(30):
                await source.wait_serving()
            app.stop()
    assert modes == [False]


async def run_mpsflow(cwd: Path, *args: str) -> tuple[int, str, str]:
    """``python -m mpsflow ARGS`` to the end: exit code, stdout, stderr."""
    result = await anyio.run_process(
        [sys.executable, "-W", "error::ResourceWarning", "-m", "mpsflow", *args],
        cwd=cwd,
        env=ENV,
        check=False,
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_a_module_without_its_app_attribute_gets_the_spec_to_give(tmp_path: Path) -> None:
    """``mpsflow run MODULE``: one line with the ``MODULE:ATTRIBUTE`` of the module's App."""
    (tmp_path / "myapp.py").write_text("from mpsflow import App\n\nservice = App()\n")
    code, out, err = await run_mpsflow(tmp_path, "run", "myapp")
    assert (code, out) == (2, "")
    assert err == (
        "mpsflow run: error: expected MODULE:ATTRIBUTE (like 'myapp:app'), got 'myapp';"
        " did you mean myapp:service?\n"
    )


async def test_run_files_processes_them_and_exits(tmp_path: Path) -> None:
    write_app(tmp_path)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "one.json").write_bytes(note("f-1"))
    (inbox / "more.jsonl").write_bytes(note("f-2") + b"\n" + note("f-3") + b"\n")
    code, out, err = await run_mpsflow(
        tmp_path, "run", "cliapp:app", "--files", str(inbox), "--no-dedup"
    )
    assert code == 0, err
    assert out == "file: 3 acked, 0 dead-lettered, 0 retries\n"
    assert sorted(str(r["task"]) for r in seen(tmp_path)) == ["f-1", "f-2", "f-3"]
    assert not (tmp_path / "mpsflow-dedup.sqlite3").exists()


HEAP_APP = """
import gc, json
from mpsflow import App, Context

app = App(dead_letters="dead.jsonl")


@app.on("WorkflowTask")
async def frozen(event, ctx: Context) -> None:
    with open("frozen.json", "w") as out:
        json.dump([gc.get_freeze_count(), gc.get_threshold()[0]], out)
"""


async def test_run_readies_the_heap_before_serving(tmp_path: Path) -> None:
    """Objects alive once the app is loaded are out of the collector's full collections, and
    young collections run at mpsflow's threshold, not CPython's 700."""
    (tmp_path / "heapapp.py").write_text(HEAP_APP)
    (tmp_path / "one.json").write_bytes(note("h-1"))
    code, _, err = await run_mpsflow(
        tmp_path, "run", "heapapp:app", "--files", str(tmp_path / "one.json"), "--no-dedup"
    )
    assert code == 0, err
    frozen, threshold = json.loads((tmp_path / "frozen.json").read_text())
    assert frozen > 1000
    assert threshold == YOUNG_COLLECTION_THRESHOLD


async def test_run_files_a_missing_path_is_a_wrong_command_line(tmp_path: Path) -> None:
    (tmp_path / "heapapp.py").write_text(HEAP_APP)
    code, _, err = await run_mpsflow(
        tmp_path, "run", "heapapp:app", "--files", "typo.json", "--no-dedup"
    )
    assert code == 2
    assert err.strip().endswith("mpsflow run: error: no such file or folder: typo.json")


FLAKY_APP = """
from mpsflow import App, Context, RetryPolicy
from mpsflow.clock import FakeClock

app = App(dead_letters="dead.jsonl", retry=RetryPolicy(max_attempts=2), clock=FakeClock())


@app.on("WorkflowTask")
async def flaky(event, ctx: Context) -> None:
    if ctx.task_id.startswith("bad") or ctx.attempt == 1:
        raise RuntimeError("downstream refused")
"""


async def test_run_files_summary_counts_dead_letters_by_kind_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "flakyapp.py").write_text(FLAKY_APP)
    other = json.dumps(build_notification("EditMediaTask", task_id="no-handler")).encode()
    lines = [note("ok-1"), note("ok-2"), note("bad-1"), b"{not json", other]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    code, out, err = await run_mpsflow(
        tmp_path, "run", "flakyapp:app", "--files", "in.jsonl", "--no-dedup"
    )
    assert code == 1, err
    assert out == (
        "file: 3 acked (1 with no handler), 2 dead-lettered (exhausted 1, poison 1), "
        "3 retries; dead letters are in dead.jsonl\n"
    )
    kinds = [
        json.loads(line)["kind"] for line in (tmp_path / "dead.jsonl").read_text().splitlines()
    ]
    assert sorted(kinds) == ["exhausted", "poison"]


# -- startup failures: one line, a non-zero exit, no restart loop ------------------------------

EXIT_STARTUP = 3


async def test_a_port_in_use_exits_3_with_one_line(tmp_path: Path) -> None:
    write_app(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        for workers in ("1", "2"):
            code, out, err = await run_mpsflow(
                tmp_path, "run", "cliapp:app", "--http", f"127.0.0.1:{port}", "--workers", workers
            )
            assert code == EXIT_STARTUP
            assert err == (
                f"mpsflow run: error: cannot listen on 127.0.0.1:{port}: address already in use "
                "(is another mpsflow running? pick another port with --http HOST:PORT)\n"
            )
            assert out == ""
            # refused before the app started: no dedup store, inbox or sink file was made
            assert sorted(p.name for p in tmp_path.iterdir()) == ["cliapp.py"], workers


async def test_an_unusable_dedup_store_exits_3_with_one_line(tmp_path: Path) -> None:
    write_app(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    missing = tmp_path / "a-file" / "dedup.sqlite3"  # its folder cannot be made
    for workers in ("1", "2"):
        code, _, err = await run_mpsflow(
            tmp_path,
            "run",
            "cliapp:app",
            "--http",
            "127.0.0.1:0",
            "--dedup",
            str(missing),
            "--workers",
            workers,
        )
        assert code == EXIT_STARTUP, err
        errors = [line for line in err.splitlines() if "error" in line.lower()]
        assert len(errors) == 1, err  # once, also when every worker fails the same way
        assert errors[0].startswith("mpsflow run: error: idempotency store ")
        assert str(missing) in errors[0]
        assert errors[0].endswith(": start it or fix its address (dedup cannot run without it)")
        assert "Traceback" not in err
        assert "restarting" not in err


@pytest.mark.parametrize(("workers", "given"), [("1", "."), ("2", "."), ("1", "sub/")])
async def test_a_folder_given_as_the_dedup_store_is_one_line_saying_so(
    tmp_path: Path, workers: str, given: str
) -> None:
    """``--dedup .``: not a store that is down (start it, fix its address) but a path that is
    not a file; the one line says that and what to give instead. ``sub/`` names a folder too,
    missing or not (SQLite would make a file named ``sub``)."""
    write_app(tmp_path)
    command = ("run", "cliapp:app", "--http", "127.0.0.1:0", "--dedup", given, "--workers", workers)
    with anyio.fail_after(60):  # (it served, with a file named after the folder)
        code, out, err = await run_mpsflow(tmp_path, *command)
    assert (code, out) == (EXIT_STARTUP, ""), err
    folder = (tmp_path / given).resolve()
    assert not (tmp_path / "sub").exists()
    assert err == (
        f"mpsflow run: error: the idempotency store cannot open {folder}: it is a directory,"
        f" not a file: give it a file path (--dedup PATH), e.g. {folder / 'dedup.sqlite3'}\n"
    )
    assert not folder.with_name(f"{folder.name}-writers").exists()  # nothing made beside it


HOOKED_APP = """
import os

from mpsflow import App, Context

app = App()


@app.on_startup
async def connect() -> None:  # a database the app needs, down
    if os.path.exists("database-down"):
        raise {error}


@app.on("WorkflowTask")
async def seen(event, ctx: Context) -> None:
    pass
"""


@pytest.mark.parametrize(
    ("error", "said"),
    [
        ('ConnectionRefusedError(111, "Connection refused (db:5432)")', "one line"),
        ('RuntimeError("a bug in the hook")', "a traceback"),
    ],
)
async def test_a_start_that_fails_otherwise_ends_the_workers_once(
    tmp_path: Path, error: str, said: str
) -> None:
    """A worker whose app fails to start for any reason (its startup hook raised) ends the run
    as one worker does, exit 1, its error said once: the others are never started, none is
    restarted."""
    (tmp_path / "cliapp.py").write_text(HOOKED_APP.format(error=error))
    (tmp_path / "database-down").touch()
    args = ("cliapp:app", "--http", "127.0.0.1:0", "--no-dedup", "--workers", "2")
    async with mpsflow_process(tmp_path, ENV, "run", *args) as (process, output):
        with anyio.fail_after(60):  # (it restarted them for good)
            assert await process.wait() == 1
    err = "\n".join(output.lines)
    lines = [line for line in output.lines if " mpsflow." in line]
    assert len(lines) == 2, err
    assert re.search(r"worker (\d+) ended before it served \(exit status 1\)", lines[1]), err
    assert lines[1].endswith("; not starting the others")
    assert "restarting" not in err
    if said == "one line":
        assert lines[0].endswith("worker failed: [Errno 111] Connection refused (db:5432)")
        assert "Traceback" not in err
    else:
        assert err.count("Traceback") == 1
        assert err.rstrip().splitlines()[-2].endswith("RuntimeError: a bug in the hook")


async def test_replacements_that_cannot_start_make_the_supervisor_give_up(
    tmp_path: Path,
) -> None:
    """Workers that serve, then die at once, and whose replacements fail to start: the
    supervisor gives up after five failed starts in a row (counted by serving, not by time:
    a worker reaped late, after a backoff wait, is still a failed start), exit 1."""
    (tmp_path / "cliapp.py").write_text(HOOKED_APP.format(error='OSError("db down")'))
    args = ("cliapp:app", "--http", "127.0.0.1:0", "--no-dedup", "--workers", "2")
    async with mpsflow_process(tmp_path, ENV, "run", *args) as (process, output):
        workers = [int(m.group(1)) for m in await output.wait_for_all(WORKER, 2)]
        await output.wait_for_all(SERVING, 2)
        (tmp_path / "database-down").touch()
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        with anyio.fail_after(60):
            assert await process.wait() == 1
    text = "\n".join(output.lines)
    # The two killed, then four failed starts: at most, since a worker killed the instant it
    # logged "serving", before it told the supervisor so, counts as a failed start too.
    assert text.count("; restarting it") <= 2 + 4, text
    assert "; 5 workers in a row ended before they served: giving up" in text


def cmq_address(url: str) -> str:
    """The ``HOST:PORT`` of a CMQ API address."""
    return url.split("://", 1)[1].split("/", 1)[0]


CMQ_ENV = {**ENV, "TENCENTCLOUD_SECRETID": "AKIDlocal", "TENCENTCLOUD_SECRETKEY": "local"}


@pytest.mark.parametrize("inbox", [False, True], ids=["cmq", "inbox"])
async def test_a_cmq_endpoint_that_never_answers_exits_3_after_one_timeout(
    tmp_path: Path, silent_cmq: SilentEndpoint, inbox: bool
) -> None:
    """The run's first receive is not sent again after its timeout (10 s): the one line comes
    then, not after each of the client's four attempts (over 40 s)."""
    write_app(tmp_path)
    where = cmq_address(silent_cmq.url)
    source = (
        ("--http", "127.0.0.1:0", "--inbox", f"cmq+http://{where}/notify")
        if inbox
        else ("--cmq", silent_cmq.url, "--queue", "notify")
    )
    argv = [sys.executable, "-m", "mpsflow", "run", "cliapp:app", *source, "--pollers", "1"]
    with anyio.fail_after(30):
        result = await anyio.run_process(argv, cwd=tmp_path, env=CMQ_ENV, check=False)
    err = result.stderr.decode()
    assert result.returncode == EXIT_STARTUP, err
    [line] = err.splitlines()
    assert line.startswith(
        f"mpsflow run: error: CMQ at {silent_cmq.url}/v2/index.php did not answer"
    )
    assert silent_cmq.connections() == 1


@pytest.mark.parametrize("inbox", [False, True], ids=["cmq", "inbox"])
async def test_an_https_cmq_address_of_a_plain_http_server_names_the_options_spelling(
    tmp_path: Path, cmq_server_factory: CmqServerFactory, inbox: bool
) -> None:
    """``--cmq`` takes ``http://…`` and ``--inbox`` ``cmq+http://…``: the line says which."""
    server = await cmq_server_factory()
    server.create_queue("notify")
    write_app(tmp_path)
    where = cmq_address(server.url)
    if inbox:
        source: tuple[str, ...] = ("--http", "127.0.0.1:0", "--inbox", f"cmq://{where}/notify")
        spelled = f"--inbox cmq+http://{where}/notify"
    else:
        source = ("--cmq", f"https://{where}", "--queue", "notify")
        spelled = f"--cmq http://{where}"
    argv = [sys.executable, "-m", "mpsflow", "run", "cliapp:app", *source]
    with anyio.fail_after(30):
        result = await anyio.run_process(argv, cwd=tmp_path, env=CMQ_ENV, check=False)
    err = result.stderr.decode()
    assert result.returncode == EXIT_STARTUP, err
    [line] = err.splitlines()
    assert line.startswith(f"mpsflow run: error: cannot reach CMQ at https://{where}/"), line
    assert f"use {spelled})" in line, line


OWN_STORE_APP = """
from mpsflow import App
from mpsflow.dedup.stores.memory import MemoryStore

app = App(idempotency=MemoryStore())


@app.on("WorkflowTask")
async def noop(event, ctx) -> None:
    pass
"""


async def test_dedup_given_to_an_app_with_its_own_store_is_one_line(tmp_path: Path) -> None:
    """Two stores named: refused at startup, not one of them silently ignored."""
    (tmp_path / "ownstore.py").write_text(OWN_STORE_APP)
    code, _, err = await run_mpsflow(
        tmp_path, "run", "ownstore:app", "--http", "127.0.0.1:0", "--dedup", "mine.sqlite3"
    )
    assert code == 2, err
    assert err.strip().splitlines() == [
        "mpsflow run: error: --dedup mine.sqlite3: the app sets its own dedup store"
        " (memory), which is the one used; drop --dedup"
    ]
    assert not (tmp_path / "mine.sqlite3").exists()


def test_no_dedup_keeps_the_apps_own_store_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """``--no-dedup`` adds no store; an app's own store stays, and the flag's no-op is logged."""
    store = MemoryStore()
    own = App(idempotency=store)
    use_dedup_option(own, None, none=True)
    assert own.idempotency is store
    [record] = caplog.records
    assert record.levelname == "WARNING"
    assert "--no-dedup" in record.getMessage()
    assert "(memory)" in record.getMessage()
    caplog.clear()
    bare = App()
    use_dedup_option(bare, None, none=True)
    assert bare.idempotency is None
    assert caplog.records == []


async def test_cmq_credentials_refused_exit_3_with_one_line(
    tmp_path: Path, cmq_server_factory: CmqServerFactory
) -> None:
    server = await cmq_server_factory()
    server.create_queue("notify")
    write_app(tmp_path)
    env = {**ENV, "TENCENTCLOUD_SECRETID": "AKIDwrong", "TENCENTCLOUD_SECRETKEY": "wrong"}
    result = await anyio.run_process(
        [
            sys.executable,
            "-m",
            "mpsflow",
            "run",
            "cliapp:app",
            "--cmq",
            server.url,
            "--queue",
            "notify",
            "--wait",
            "0",
        ],
        cwd=tmp_path,
        env=env,
        check=False,
    )
    err = result.stderr.decode()
    assert result.returncode == EXIT_STARTUP, err
    [line] = [line for line in err.splitlines() if "error" in line]
    assert line.startswith("mpsflow run: error: CMQ refused the credentials for queue notify at ")
    assert line.endswith("): check TENCENTCLOUD_SECRETID/TENCENTCLOUD_SECRETKEY")
    assert "Traceback" not in err
    assert "restarting" not in err


async def test_a_cmq_endpoint_nothing_listens_on_exits_3_with_one_line(tmp_path: Path) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # a port nobody listens on
    write_app(tmp_path)
    env = {**ENV, "TENCENTCLOUD_SECRETID": "AKIDlocal", "TENCENTCLOUD_SECRETKEY": "local"}
    argv = ["run", "cliapp:app", "--cmq", f"http://127.0.0.1:{port}", "--queue", "notify"]
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [sys.executable, "-m", "mpsflow", *argv], cwd=tmp_path, env=env, check=False
        )
    err = result.stderr.decode()
    assert result.returncode == EXIT_STARTUP, err
    [line] = err.splitlines()  # the clients' attempts are not lines of their own
    assert line == (
        f"mpsflow run: error: cannot reach CMQ at http://127.0.0.1:{port}/v2/index.php"
        " (connection refused):"
        " check the endpoint, and that the queue service is running there (`mpsflow cmq-server`"
        " for a local one)"
    )
    assert "Traceback" not in err


# -- shutdown ----------------------------------------------------------------------------------

STUCK_APP = """
import anyio

from mpsflow import App, Context

app = App(dead_letters="dead.jsonl")


@app.on("WorkflowTask")
async def stuck(event, ctx: Context) -> None:
    print("handler started", flush=True)
    await anyio.sleep_forever()
"""


async def post_in_background(url: str, body: bytes, results: list[BaseException | int]) -> None:
    """POST ``body``; record the status, or the error when the server hangs up."""
    try:
        async with aiohttp.ClientSession() as session, session.post(url, data=body) as response:
            results.append(response.status)
    except aiohttp.ClientError as exc:
        results.append(exc)


@asynccontextmanager
async def stuck_app(
    tmp_path: Path, *options: str
) -> AsyncIterator[tuple[anyio.abc.Process, Output]]:
    """``mpsflow run`` of ``STUCK_APP`` on a free HTTP port, without dedup, plus ``options``.

    Without the inbox, so that each answer waits for its handler: what a stop leaves in
    flight shows in the answers (tests/cli/test_run_inbox.py has the inbox's side).
    """
    (tmp_path / "stuckapp.py").write_text(STUCK_APP)
    args = ("stuckapp:app", "--http", "127.0.0.1:0", "--no-dedup", "--no-inbox", *options)
    async with mpsflow_process(tmp_path, ENV, "run", *args) as (process, output):
        yield process, output


async def test_a_second_sigint_stops_at_once_and_exits_130(tmp_path: Path) -> None:
    async with stuck_app(tmp_path, "--shutdown-timeout", "600") as (process, output):
        url = (await output.wait_for(SERVING)).group(1)
        results: list[BaseException | int] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(post_in_background, url, note("s-1"), results)
            tg.start_soon(post_in_background, url, note("s-2"), results)
            await output.wait_for_all(re.compile("handler started"), 2)
            process.send_signal(signal.SIGINT)
            draining = await output.wait_for(re.compile(r"draining: .*"))
            assert draining.group(0) == (
                "draining: 2 deliveries in flight (http 2); up to 600s left"
            )
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(30):
                assert await process.wait() == 130
    assert len(results) == 2
    assert all(isinstance(r, BaseException) for r in results)  # left: no answer at all
    text = output.text
    assert "received SIGINT; draining for up to 600s (SIGINT again stops at once)" in text
    assert (
        "received SIGINT again: stopping now, leaving 2 deliveries in flight (http 2) for "
        "redelivery" in text
    )
    assert "Traceback" not in text


async def test_a_second_sigint_stops_workers_at_once_and_exits_130(tmp_path: Path) -> None:
    """SIGINT to the supervisor alone: the workers get its SIGUSR1 only, and say what the
    supervisor received."""
    async with stuck_app(tmp_path, "--workers", "2") as (process, output):
        await output.wait_for_all(SERVING, 2)  # each worker's
        url = (await output.wait_for(SERVING)).group(1)
        results: list[BaseException | int] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(post_in_background, url, note("s-1"), results)
            await output.wait_for(re.compile("handler started"))
            process.send_signal(signal.SIGINT)
            await output.wait_for(re.compile(r"draining: 1 delivery in flight \(http 1\)"))
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(30):
                assert await process.wait() == 130
    assert isinstance(results[0], BaseException)
    text = output.text
    draining = "the supervisor received SIGINT; draining for up to 30s (SIGINT again stops at once)"
    assert text.count(draining) == 2, text  # each worker's
    assert (
        "the supervisor received SIGINT again: stopping now, leaving 1 delivery in flight"
        " (http 1) for redelivery" in text
    )
    assert "SIGUSR1" not in text  # the supervisor's own signal to its workers
    assert "Traceback" not in text


async def test_the_shutdown_timeout_leaves_stuck_work_for_redelivery(tmp_path: Path) -> None:
    results: list[BaseException | int] = []
    async with stuck_app(tmp_path, "--shutdown-timeout", "0.5") as (process, output):
        url = (await output.wait_for(SERVING)).group(1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(post_in_background, url, note("s-1"), results)
            await output.wait_for(re.compile("handler started"))
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                assert await process.wait() == 1  # work was left: not a clean exit
    assert (
        "shutdown timeout (0.5s) reached; leaving 1 delivery in flight (http 1) for redelivery"
        in output.text
    )
    assert "Traceback" not in output.text


# -- logs --------------------------------------------------------------------------------------

GATED_APP = """
import os

import anyio

from mpsflow import App, Context

app = App(dead_letters="dead.jsonl")


@app.on("WorkflowTask")
async def gated(event, ctx: Context) -> None:
    print("handler started", flush=True)
    while not os.path.exists("release"):
        await anyio.sleep(0.01)
"""


async def test_concurrent_duplicates_are_info_lines_and_one_summary(tmp_path: Path) -> None:
    (tmp_path / "gatedapp.py").write_text(GATED_APP)
    args = ("gatedapp:app", "--http", "127.0.0.1:0", "--no-inbox")  # answers wait for handlers
    async with mpsflow_process(tmp_path, ENV, "run", *args) as (process, output):
        url = (await output.wait_for(SERVING)).group(1)
        first: list[BaseException | int] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(post_in_background, url, note("dup"), first)
            await output.wait_for(re.compile("handler started"))
            # the same notification again, 10 times at once, while the first still runs
            duplicates = await asyncio_gather_posts(url, note("dup"), 10)
            assert duplicates == [503] * 10
            (tmp_path / "release").touch()
        assert first == [200]
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0
    lines = output.lines
    deferred = [line for line in lines if " deferred: " in line]
    assert len(deferred) == 10
    assert all(" INFO mpsflow.handler " in line for line in deferred)
    assert not [line for line in lines if " WARNING " in line]
    [summary] = [line for line in lines if "handler runs in the last" in line]
    assert re.search(
        r" INFO mpsflow\.app \[\d+\] deferred 10 handler runs in the last \d+s "
        r"\(a duplicate is in progress in this process: 10\)$",
        summary,
    )


async def test_a_duplicate_says_whether_it_waits_for_this_process_or_another(
    tmp_path: Path,
) -> None:
    """Two processes sharing a dedup store: a duplicate of what one of them runs is deferred
    by that one as in progress in this process, by the other as in progress elsewhere."""
    (tmp_path / "gatedapp.py").write_text(GATED_APP)
    args = ("run", "gatedapp:app", "--http", "127.0.0.1:0", "--no-inbox", "--dedup", "dedup.db")
    async with (
        mpsflow_process(tmp_path, ENV, *args) as (running, running_output),
        mpsflow_process(tmp_path, ENV, *args) as (other, other_output),
    ):
        url = (await running_output.wait_for(SERVING)).group(1)
        other_url = (await other_output.wait_for(SERVING)).group(1)
        first: list[BaseException | int] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(post_in_background, url, note("dup"), first)
            await running_output.wait_for(re.compile("handler started"))
            assert await post_all(url, [note("dup")]) == [503]
            assert await post_all(other_url, [note("dup")]) == [503]
            (tmp_path / "release").touch()
        assert first == [200]
        for process in (running, other):
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                assert await process.wait() == 0
    [here] = [line for line in running_output.lines if " deferred: " in line]
    assert here.endswith(" deferred: a duplicate is in progress in this process"), here
    [elsewhere] = [line for line in other_output.lines if " deferred: " in line]
    assert elsewhere.endswith(
        " deferred: a duplicate is in progress elsewhere or its worker stopped"
    ), elsewhere


async def asyncio_gather_posts(url: str, body: bytes, count: int) -> list[int]:
    """POST ``body`` ``count`` times at once; the statuses."""
    statuses: list[int] = []

    async def one(session: aiohttp.ClientSession) -> None:
        async with session.post(url, data=body) as response:
            statuses.append(response.status)

    async with aiohttp.ClientSession() as session, anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one, session)
    return statuses
