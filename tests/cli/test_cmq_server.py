"""``mpsflow run --cmq`` and ``mpsflow cmq-server``: options, keys, lifecycle, real processes."""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import secrets
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import aiohttp
import anyio
import anyio.abc
import pytest

from mpsflow import App, Context
from mpsflow.cli import build_parser, main
from mpsflow.cli.run import SOURCE_FLAGS, SourceFlag
from mpsflow.devservers.cmq import CmqServer
from mpsflow.events import WorkflowTask
from mpsflow.sinks.memory import MemorySink
from mpsflow.sources.cmq import CmqSource
from mpsflow.tencentcloud.cmq.client import CmqClient
from mpsflow.tencentcloud.cmq.credentials import Credential
from mpsflow.tencentcloud.cmq.errors import CmqQueueFullError
from tests.plugins.cmq_server import CMQ_SECRET_ID, CMQ_SECRET_KEY
from tests.process_output import mpsflow_process

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "mps-notify"
KEY_VARIABLES = ("TENCENTCLOUD_SECRETID", "TENCENTCLOUD_SECRETKEY", "TENCENTCLOUD_SESSIONTOKEN")
CONSUMING = re.compile(r"consuming CMQ queue (\S+) at (\S+)")
SERVING = re.compile(r"serving MPS callbacks on (http://127\.0\.0\.1:\d+/mps/callback)")
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")

APP_MODULE = """
import os

from mpsflow import App, Context
from mpsflow.sinks.jsonl import JsonlSink

app = App(dead_letters="dead.jsonl")
app.sink("seen", JsonlSink("seen.jsonl"), max_delay=0.01)


@app.on("WorkflowTask", emits=["seen"])
async def seen(event, ctx: Context) -> None:
    await ctx.emit("seen", {"task": ctx.task_id, "source": ctx.delivery.source})
"""


def body(task_id: str) -> str:
    return json.dumps(
        {
            "EventType": "WorkflowTask",
            "WorkflowTaskEvent": {"TaskId": task_id, "Status": "FINISH", "ErrCode": 0},
        }
    )


def cmq_flag() -> SourceFlag:
    [flag] = [flag for flag in SOURCE_FLAGS if flag.name == "cmq"]
    return flag


def exit_code(argv: Sequence[str]) -> int:
    """``mpsflow ARGV`` in process: its return value, or the status argparse exits with."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.fixture
def app_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``MODULE:app`` of a small app written to ``tmp_path`` (a fresh module name each test)."""
    name = f"cmq_cli_app_{secrets.token_hex(4)}"
    (tmp_path / f"{name}.py").write_text(APP_MODULE)
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.chdir(tmp_path)
    yield f"{name}:app"
    sys.modules.pop(name, None)


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test key pair in the environment, as SCF or an operator would provide it."""
    monkeypatch.setenv("TENCENTCLOUD_SECRETID", CMQ_SECRET_ID)
    monkeypatch.setenv("TENCENTCLOUD_SECRETKEY", CMQ_SECRET_KEY)
    monkeypatch.delenv("TENCENTCLOUD_SESSIONTOKEN", raising=False)


# -- options ----------------------------------------------------------------------------------


def test_run_help_lists_the_cmq_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--cmq ENDPOINT", "--queue NAME", "--pollers N", "--batch N", "--wait SECONDS"):
        assert option in out
    assert "TENCENTCLOUD_SECRETKEY" in out


@pytest.mark.usefixtures("keys")
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--cmq", "ftp://127.0.0.1:9800", "--queue", "q"], "http(s)://HOST[:PORT]"),
        (["--cmq", "127.0.0.1:9800", "--queue", "q"], "http(s)://HOST[:PORT]"),
        (["--cmq", "http://127.0.0.1:99999", "--queue", "q"], "http(s)://HOST[:PORT]"),
        (["--cmq", "http://user:pass@127.0.0.1:9800", "--queue", "q"], "http(s)://HOST[:PORT]"),
        (["--cmq", "http://127.0.0.1:9800", "--queue", "9-lives"], "queue name"),
        (["--cmq", "http://127.0.0.1:9800", "--queue", "q", "--batch", "17"], "1 to 16"),
        (["--cmq", "http://127.0.0.1:9800", "--queue", "q", "--batch", "0"], "1 to 16"),
        (["--cmq", "http://127.0.0.1:9800", "--queue", "q", "--wait", "31"], "0 to 30"),
        (["--cmq", "http://127.0.0.1:9800", "--queue", "q", "--pollers", "0"], "at least 1"),
        (["--cmq", "http://127.0.0.1:9800"], "--cmq needs --queue NAME"),
        (["--queue", "q"], "--queue goes with --cmq"),
        (
            ["--cmq", "http://127.0.0.1:9800", "--queue", "q", "--workers", "2"],
            "--workers applies to --http only, not --cmq",
        ),
    ],
)
def test_run_rejects_bad_cmq_options_with_status_2(
    app_spec: str, arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(["run", app_spec, *arguments]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("present", [(), ("TENCENTCLOUD_SECRETID",), ("TENCENTCLOUD_SECRETKEY",)])
def test_run_cmq_without_keys_in_the_environment_exits_2(
    app_spec: str,
    present: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name in present:
        monkeypatch.setenv(name, "value-that-must-not-be-shown")
    argv = ["run", app_spec, "--cmq", "http://127.0.0.1:9800", "--queue", "q"]
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert "--cmq needs API keys in the environment" in err
    for name in KEY_VARIABLES[:2]:
        assert (name in err) == (name not in present)
    assert "value-that-must-not-be-shown" not in err


# -- the source it builds ---------------------------------------------------------------------


async def _consume_then_rotate_keys(
    server: CmqServer, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], tuple[object, ...]]:
    """Build the source as ``run`` does, process 3 messages, rotate the key, process 2 more.

    Everything that refers to the source's client stays in this frame, so the caller can
    check that nothing is left open once it has returned.
    """
    args = build_parser().parse_args(
        [
            *("run", "unused:app", "--cmq", server.url, "--queue", QUEUE),
            *("--pollers", "1", "--batch", "4", "--wait", "1", "--max-in-flight", "8"),
        ]
    )
    app = App(dead_letters=MemorySink())
    seen: list[str] = []
    arrived = anyio.Event()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        seen.append(ctx.task_id)
        arrived.set()

    async def wait_for(count: int) -> None:
        nonlocal arrived
        with anyio.fail_after(20):
            while len(seen) < count:
                await arrived.wait()
                arrived = anyio.Event()

    source = cmq_flag().build(args, app)
    assert isinstance(source, CmqSource)
    settings = (
        source.queue,
        source.pollers,
        source.batch_size,
        source.wait_seconds,
        source.max_in_flight,
    )
    rotated = Credential(CMQ_SECRET_ID, "rotated-secret-key-0002")
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: app.run(source, handle_signals=False))
        async with CmqClient(server.url, Credential(CMQ_SECRET_ID, CMQ_SECRET_KEY)) as sender:
            await sender.batch_send(QUEUE, [body(f"before-{n}") for n in range(3)])
        await wait_for(3)
        # Rotate the key under the running source once its only request is a long poll the
        # server has already authenticated; every later request must read the new key.
        await source.wait_deleted(3)
        with anyio.fail_after(10):
            while True:
                if server.queue(QUEUE).waiting_count() == 1:
                    break
                await anyio.sleep(0.005)  # server state, no event for it: poll
        monkeypatch.setenv("TENCENTCLOUD_SECRETKEY", rotated.secret_key)
        server.set_credential(rotated)
        async with CmqClient(server.url, rotated) as sender:
            await sender.batch_send(QUEUE, [body(f"after-{n}") for n in range(2)])
        await wait_for(5)
        app.stop()
    return seen, settings


@pytest.mark.usefixtures("keys")
async def test_run_builds_a_cmq_source_that_reads_keys_per_request_and_closes_its_session(
    cmq_server: CmqServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cmq_server.create_queue(QUEUE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen, settings = await _consume_then_rotate_keys(cmq_server, monkeypatch)
        gc.collect()  # an HTTP session left open would warn "Unclosed client session" here
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert settings == (QUEUE, 1, 4, 1, 8)
    assert sorted(seen) == [f"after-{n}" for n in range(2)] + [f"before-{n}" for n in range(3)]
    assert len(cmq_server.queue(QUEUE)) == 0  # the last deletes went out while draining
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == []  # no request was refused, the source never had to restart


def test_the_cmq_source_is_built_only_when_asked_for() -> None:
    args = build_parser().parse_args(["run", "unused:app", "--http", "127.0.0.1:0"])
    app = App(dead_letters=MemorySink())
    assert cmq_flag().build(args, app) is None


# -- real processes ---------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


def seen_records(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_run_consumes_cmq_and_serves_http_together_then_stops_cleanly(
    tmp_path: Path, cmq_server: CmqServer
) -> None:
    (tmp_path / "cliapp.py").write_text(APP_MODULE)
    cmq_server.create_queue(QUEUE)
    env = child_env(TENCENTCLOUD_SECRETID=CMQ_SECRET_ID, TENCENTCLOUD_SECRETKEY=CMQ_SECRET_KEY)
    # The default 30 s long poll: SIGTERM must not wait for it to end.
    args = ["run", "cliapp:app", "--cmq", cmq_server.url, "--queue", QUEUE]
    args += ["--http", "127.0.0.1:0", "--no-dedup"]
    async with mpsflow_process(tmp_path, env, *args) as (process, output):
        consuming = await output.wait_for(CONSUMING)
        assert consuming.groups() == (QUEUE, f"{cmq_server.url}/v2/index.php")
        url = (await output.wait_for(SERVING)).group(1)
        async with CmqClient(cmq_server.url, Credential(CMQ_SECRET_ID, CMQ_SECRET_KEY)) as sender:
            await sender.batch_send(QUEUE, [body(f"queued-{n}") for n in range(3)])
        async with aiohttp.ClientSession() as session:
            for n in range(2):
                async with session.post(url, data=body(f"posted-{n}")) as response:
                    assert response.status == 200
        with anyio.fail_after(20):  # another process writes the file: poll it
            while True:
                if len(seen_records(tmp_path / "seen.jsonl")) == 5 and not cmq_server.queue(QUEUE):
                    break
                await anyio.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            assert await process.wait() == 0
    seen = sorted((r["source"], r["task"]) for r in seen_records(tmp_path / "seen.jsonl"))
    assert seen == [("cmq", f"queued-{n}") for n in range(3)] + [
        ("http", f"posted-{n}") for n in range(2)
    ]
    assert "Traceback" not in output.text
    assert "Unclosed" not in output.text  # the CMQ client's HTTP session was closed
    assert CMQ_SECRET_KEY not in output.text
    assert not (tmp_path / "dead.jsonl").exists() or not (tmp_path / "dead.jsonl").read_text()


def test_cmq_server_help_says_it_is_a_development_and_test_tool(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert exit_code(["--help"]) == 0
    listing = capsys.readouterr().out
    assert "cmq-server" in listing
    assert "development and test tool" in listing
    assert exit_code(["cmq-server", "--help"]) == 0
    out = capsys.readouterr().out
    assert "for development and tests (not for production)" in out
    for option in ("--port", "--queue", "--secret-id", "--secret-key", "--visibility-timeout"):
        assert option in out
    assert "--max-messages N" in out


def test_cmq_server_without_a_key_pair_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in (*KEY_VARIABLES, "MPSFLOW_CMQ_SECRET_ID", "MPSFLOW_CMQ_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert exit_code(["cmq-server", "--port", "0", "--secret-id", "AKIDonly"]) == 2
    assert "mpsflow cmq-server: error: a SecretId and a SecretKey are required" in (
        capsys.readouterr().err
    )


async def test_cmq_server_command_serves_the_queue_api_until_sigterm(tmp_path: Path) -> None:
    env = child_env()
    args = ["cmq-server", "--port", "0", "--queue", QUEUE, "--visibility-timeout", "5"]
    args += ["--secret-id", CMQ_SECRET_ID, "--secret-key", CMQ_SECRET_KEY]
    async with mpsflow_process(tmp_path, env, *args) as (process, output):
        url = (await output.wait_for(LISTENING)).group(1)
        async with CmqClient(url, Credential(CMQ_SECRET_ID, CMQ_SECRET_KEY)) as client:
            await client.send(QUEUE, body("via-cli"))
            [message] = await client.batch_receive(QUEUE, 16, 1)
            assert json.loads(message.msg_body)["WorkflowTaskEvent"]["TaskId"] == "via-cli"
            assert await client.batch_delete(QUEUE, [message.receipt_handle]) == []
            assert await client.batch_receive(QUEUE, 16, 0) == []
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0
    assert "Traceback" not in output.text
    assert CMQ_SECRET_KEY not in output.text


async def test_cmq_server_max_messages_bounds_its_queues_with_4410(tmp_path: Path) -> None:
    env = child_env(TENCENTCLOUD_SECRETID=CMQ_SECRET_ID, TENCENTCLOUD_SECRETKEY=CMQ_SECRET_KEY)
    args = ["cmq-server", "--port", "0", "--queue", QUEUE, "--max-messages", "2"]
    async with mpsflow_process(tmp_path, env, *args) as (process, output):
        url = (await output.wait_for(LISTENING)).group(1)
        async with CmqClient(url, Credential(CMQ_SECRET_ID, CMQ_SECRET_KEY)) as client:
            await client.send(QUEUE, body("first"))
            with pytest.raises(CmqQueueFullError) as caught:
                await client.batch_send(QUEUE, [body("second"), body("third")])
            assert caught.value.code == 4410
            await client.send(QUEUE, body("second"))
            with pytest.raises(CmqQueueFullError):
                await client.send(QUEUE, body("third"))
            [message, _] = await client.batch_receive(QUEUE, 16, 0)
            await client.delete(QUEUE, message.receipt_handle)
            await client.send(QUEUE, body("third"))
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0
    assert "Traceback" not in output.text


def test_cmq_server_rejects_max_messages_below_one_with_status_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["cmq-server", "--secret-id", "id", "--secret-key", "key", "--max-messages", "0"]
    assert exit_code(argv) == 2
    assert "--max-messages" in capsys.readouterr().err


async def test_cmq_server_without_queues_creates_them_on_first_use(tmp_path: Path) -> None:
    env = child_env(TENCENTCLOUD_SECRETID=CMQ_SECRET_ID, TENCENTCLOUD_SECRETKEY=CMQ_SECRET_KEY)
    async with mpsflow_process(tmp_path, env, "cmq-server", "--port", "0") as (process, output):
        url = (await output.wait_for(LISTENING)).group(1)
        await output.wait_for(re.compile(r"queues: none yet \(others are created on first use\)"))
        async with CmqClient(url, Credential(CMQ_SECRET_ID, CMQ_SECRET_KEY)) as client:
            await client.send("any-name", body("created"))
            [message] = await client.batch_receive("any-name", 16, 0)
        assert json.loads(message.msg_body)["WorkflowTaskEvent"]["TaskId"] == "created"
        await output.wait_for(re.compile("created queue any-name on first use"))
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0


async def test_cmq_server_auto_create_can_be_asked_for_with_queues(tmp_path: Path) -> None:
    env = child_env(TENCENTCLOUD_SECRETID=CMQ_SECRET_ID, TENCENTCLOUD_SECRETKEY=CMQ_SECRET_KEY)
    args = ["cmq-server", "--port", "0", "--queue", QUEUE, "--auto-create"]
    async with mpsflow_process(tmp_path, env, *args) as (process, output):
        url = (await output.wait_for(LISTENING)).group(1)
        await output.wait_for(re.compile(rf"queues: {QUEUE} \(others are created on first use\)"))
        async with CmqClient(url, Credential(CMQ_SECRET_ID, CMQ_SECRET_KEY)) as client:
            await client.send("other", body("other"))
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0


# -- the local CMQ loop: cmq-server, run --cmq, send --cmq ------------------------------------

LOOP_APP = """
from mpsflow import App, Context

app = App(dead_letters="dead.jsonl")


@app.on("WorkflowTask")
async def handled(event, ctx: Context) -> None:
    print(f"handled {ctx.task_id} attempt {ctx.delivery.attempt}", flush=True)
"""


def handled(task_id: str) -> re.Pattern[str]:
    return re.compile(rf"handled {re.escape(task_id)} attempt (\d+)")


async def send_cli(cwd: Path, env: dict[str, str], url: str, *paths: str) -> str:
    """``mpsflow send --cmq URL --queue QUEUE PATHS``, as the README shows it; its stdout."""
    result = await anyio.run_process(
        [sys.executable, "-m", "mpsflow", "send", "--cmq", url, "--queue", QUEUE, *paths],
        cwd=cwd,
        env=env,
        check=False,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    return out


def write_loop(tmp_path: Path) -> dict[str, str]:
    """The loop's app and notifications in ``tmp_path``; the environment of its commands."""
    (tmp_path / "loopapp.py").write_text(LOOP_APP)
    for task in ("first", "second", "third"):
        (tmp_path / f"{task}.json").write_text(body(task))
    return child_env(TENCENTCLOUD_SECRETID=CMQ_SECRET_ID, TENCENTCLOUD_SECRETKEY=CMQ_SECRET_KEY)


async def test_the_local_cmq_loop_as_the_readme_shows_it(tmp_path: Path) -> None:
    env = write_loop(tmp_path)
    # One key pair in the environment serves all three commands.
    server_args = ["cmq-server", "--port", "0", "--queue", QUEUE]
    async with mpsflow_process(tmp_path, env, *server_args) as (server, out):
        url = (await out.wait_for(LISTENING)).group(1)
        await out.wait_for(re.compile(rf"queues: {QUEUE} \(others answer 4440, no such queue\)"))
        # A misspelt queue fails at once, for the consumer and for the producer.
        misspelt = await anyio.run_process(
            [sys.executable, "-m", "mpsflow", "run", "loopapp:app", "--cmq", url, "--queue", "x"],
            cwd=tmp_path,
            env=env,
            check=False,
        )
        assert misspelt.returncode == 3
        assert f"CMQ queue x at {url}/v2/index.php does not exist" in misspelt.stderr.decode()
        assert "consuming CMQ queue" not in misspelt.stderr.decode()
        run_args = ["run", "loopapp:app", "--cmq", url, "--queue", QUEUE]
        async with mpsflow_process(tmp_path, env, *run_args) as (consumer, consumed):
            await consumed.wait_for(CONSUMING)
            sent = await send_cli(tmp_path, env, url, "first.json", "second.json")
            assert "  queued: 2" in sent.splitlines()
            for task in ("first", "second"):
                assert (await consumed.wait_for(handled(task))).group(1) == "1"
            consumer.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                assert await consumer.wait() == 0
        # A new consumer gets what is sent next at once, not after a visibility timeout.
        async with mpsflow_process(tmp_path, env, *run_args) as (consumer, consumed):
            await consumed.wait_for(CONSUMING)
            await send_cli(tmp_path, env, url, "third.json")
            with anyio.fail_after(15):
                assert (await consumed.wait_for(handled("third"))).group(1) == "1"
            consumer.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                assert await consumer.wait() == 0
        server.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await server.wait() == 0
    assert "Traceback" not in out.text + consumed.text
    assert CMQ_SECRET_KEY not in out.text + consumed.text


async def test_a_killed_consumers_long_polls_end_so_its_successor_gets_new_messages_at_once(
    tmp_path: Path, cmq_server: CmqServer
) -> None:
    env = write_loop(tmp_path)
    queue = cmq_server.create_queue(QUEUE, visibility_timeout=30)
    run_args = ["run", "loopapp:app", "--cmq", cmq_server.url, "--queue", QUEUE, "--no-dedup"]
    async with mpsflow_process(tmp_path, env, *run_args, "--pollers", "2") as (first, consumed):
        await send_cli(tmp_path, env, cmq_server.url, "first.json")
        await consumed.wait_for(handled("first"))
        await queue.wait_for_waiting(2)  # both pollers parked in 30 s long polls
        os.killpg(first.pid, signal.SIGKILL)  # no goodbye: the kernel closes its sockets
        await first.wait()
    with anyio.fail_after(10):
        await queue.wait_for_waiting(0)  # the server ended the dead consumer's polls
    await send_cli(tmp_path, env, cmq_server.url, "second.json")
    # Nothing took it and hid it. ("first" may still be in flight: the dead consumer's delete
    # may not have gone out before it was killed.)
    assert queue.visible_count() == 1
    async with mpsflow_process(tmp_path, env, *run_args) as (_, consumed):
        with anyio.fail_after(15):  # well inside the 30 s visibility timeout
            match = await consumed.wait_for(handled("second"))
        assert match.group(1) == "1"  # its first delivery: no poll had received it before


@pytest.mark.parametrize(
    "command", [["-m", "mpsflow", "cmq-server"], ["-m", "mpsflow.devservers.cmq"]]
)
async def test_cmq_server_data_that_cannot_be_a_file_is_one_line_saying_what_it_needs(
    tmp_path: Path, command: list[str]
) -> None:
    """``--data .`` (or ``sub/``) and a ``--data`` path under a file: exit 2 with one line
    that says what ``--data`` takes, before it serves (not a bare OSError, nor a failed save
    at stop, nor a file named ``sub``)."""
    env = child_env(TENCENTCLOUD_SECRETID=CMQ_SECRET_ID, TENCENTCLOUD_SECRETKEY=CMQ_SECRET_KEY)
    (tmp_path / "notes.txt").write_text("a file where --data's folder would be")
    malformed = tmp_path / "queues.json"
    malformed.write_text("{not json")

    async def error_line(data: str) -> str:
        with anyio.fail_after(30):  # not serving: it ends by itself
            result = await anyio.run_process(
                [sys.executable, *command, "--port", "0", "--data", data],
                cwd=tmp_path,
                env=env,
                check=False,
            )
        assert (result.returncode, result.stdout) == (2, b""), result.stderr
        [line] = result.stderr.decode().splitlines()
        return line

    assert await error_line(".") == (
        "mpsflow cmq-server: error: --data .: it is a directory, not a file: give --data a"
        " file path (the queues are kept there as JSON), e.g. ./queues.json"
    )
    # written as a folder, missing: not saved to as a file named "sub"
    assert await error_line("sub/") == (
        "mpsflow cmq-server: error: --data sub/: it is a directory, not a file: give --data a"
        " file path (the queues are kept there as JSON), e.g. sub/queues.json"
    )
    assert not (tmp_path / "sub").exists()
    assert await error_line("notes.txt/queues.json") == (
        "mpsflow cmq-server: error: --data notes.txt/queues.json: cannot make its folder"
        " notes.txt (a file is in the way): give --data a file path in a folder this user can"
        " write"
    )
    not_saved = await error_line("queues.json")
    assert not_saved.startswith(
        "mpsflow cmq-server: error: --data queues.json: not a file of queues this server saved"
    )
    assert not_saved.endswith(": give --data such a file, or a new path")
    assert malformed.read_text() == "{not json"  # left as it was


def test_cmq_server_help_says_the_keys_are_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["cmq-server", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "API keys (required)" in out
    assert "TENCENTCLOUD_SECRETID and TENCENTCLOUD_SECRETKEY" in out


async def test_cmq_server_on_a_port_in_use_exits_3_with_one_line(tmp_path: Path) -> None:
    env = child_env(TENCENTCLOUD_SECRETID=CMQ_SECRET_ID, TENCENTCLOUD_SECRETKEY=CMQ_SECRET_KEY)
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as taken:
        port = taken.extra(anyio.abc.SocketAttribute.local_port)
        result = await anyio.run_process(
            [sys.executable, "-m", "mpsflow", "cmq-server", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            check=False,
        )
    assert result.returncode == 3
    assert result.stderr.decode().strip() == (
        f"mpsflow cmq-server: error: cannot listen on 127.0.0.1:{port}: address already in use"
        " (is another mpsflow running? pick another port with --port)"
    )
