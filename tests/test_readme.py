"""The README is executable: every Python block runs here, and every command line it shows is run.

* The Quickstart is written out as ``myapp.py`` and driven through ``TestClient`` and as a real
  ``mpsflow run`` that ``mpsflow send`` posts to; its handlers must fire on signed samples.
* The testing example is copied verbatim next to it, into an empty folder with no configuration
  file, and run twice in a row with ``python -m pytest``: both runs must pass.
* The fragments (routers, typed notifications, watching a source) run in a harness that provides
  the names the README says they use, and every Python block is type-checked with mypy --strict.
* ``COMMANDS`` maps every command line in the README's code blocks (and every command in its
  inline code) to the test that runs it; a command without a row fails
  :func:`test_every_readme_command_is_run_by_a_test`.
* :func:`test_the_newcomer_path_in_a_fresh_venv` follows the README from nothing: a fresh virtual
  environment holding only what the README installs, the example app and ``send``, the
  Quickstart and ``send``, then ``pip install pytest`` and the testing example, twice.

Blocks are found by the heading they sit under, so the README is read, never copied.
"""

from __future__ import annotations

import ast
import itertools
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import anyio
import anyio.abc
import pytest
from mypy import api as mypy_api

import mpsflow
from mpsflow import App, Cause, Context, Outcome
from mpsflow.app import DEFAULT_DEAD_LETTER_PATH
from mpsflow.cli import build_parser
from mpsflow.cli.common import DEFAULT_DEDUP_PATH
from mpsflow.clock import FakeClock
from mpsflow.dedup import Idempotency
from mpsflow.dedup.stores import MemoryStore, SQLiteStore
from mpsflow.events import WorkflowTask
from mpsflow.middleware.base import Call, CallNext
from mpsflow.signing import SignatureVerifier
from mpsflow.sinks.jsonl import JsonlSink
from mpsflow.sources.memory import MemorySource
from mpsflow.sources.reconcile import ReconcileSource
from mpsflow.testing import (
    DEFAULT_EXPIRES_IN,
    TestClient,
    build_live_notification,
    build_notification,
    sign_payload,
)
from tests.modules import imported
from tests.plugins.samples import LIVE_SAMPLE_PATHS
from tests.process_output import Output, child_process, mpsflow_process
from tests.readme import (
    CLONE,
    README,
    ROOT,
    block,
    blocks,
    code_blocks,
    command_lines,
    copy_checkout,
    inline_commands,
    readme_commands,
    synopsis_commands,
)

NOTIFICATIONS = ROOT / "examples" / "notifications"
SEED = NOTIFICATIONS / "01_workflow_task_seed_verbatim.json"
QUICKSTART_KEY = "key-2026"
"""One of the Quickstart's ``notify_keys`` (the README's test and commands sign with it)."""

ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}
SERVING = re.compile(r"serving MPS callbacks on (http://127\.0\.0\.1:(\d+)/mps/callback)")
README_URL = "http://127.0.0.1:8080/mps/callback"


# -- the commands and the tests that run them ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """``test`` (``path::function``) runs the command; ``how`` says what it changes, if anything."""

    test: str
    how: str = ""


@dataclass(frozen=True, slots=True)
class NotRun:
    """No test runs the command, for this reason."""

    why: str


FRESH = "tests/test_readme.py::test_the_newcomer_path_in_a_fresh_venv"
LOOP = "tests/cli/test_cmq_server.py::test_the_local_cmq_loop_as_the_readme_shows_it"
CMQ_INBOX = (
    "tests/cli/test_run_inbox.py::"
    "test_receivers_append_to_a_cmq_inbox_and_a_worker_handles_each_once_across_kill_9"
)
MPS_LOOP = "tests/cli/test_reconcile_command.py::test_the_mps_dev_loop_as_the_readme_shows_it"
FREE_PORT = "on a free port instead of 8080 (--http 127.0.0.1:0; send goes to that port)"

COMMANDS: dict[str, Run | NotRun] = {
    # Two commands
    "python3 -m venv .venv && .venv/bin/python -m pip install -e . && "
    ".venv/bin/python -m mpsflow run examples.app:app": Run(
        FRESH, f"in a copy of the checkout, {FREE_PORT}"
    ),
    "bash scripts/test.sh": NotRun(
        "it is the test suite itself (it installs redis-server with apt and runs pytest); "
        ".ci/run runs it from a fresh virtual environment"
    ),
    ".venv/bin/python -m mpsflow send http://127.0.0.1:8080/mps/callback examples/notifications "
    "--sign-key mps-sample-notify-key": Run(FRESH, FREE_PORT),
    ". .venv/bin/activate": Run(FRESH, "before each of the Quickstart's and the test's commands"),
    # Quickstart
    "mpsflow run myapp:app --http 127.0.0.1:8080": Run(
        "tests/test_readme.py::test_the_quickstart_under_mpsflow_run_answers_send", FREE_PORT
    ),
    "mpsflow send http://127.0.0.1:8080/mps/callback path/to/mpsflow/examples/notifications "
    "--sign-key key-2026": Run(
        "tests/test_readme.py::test_the_quickstart_under_mpsflow_run_answers_send",
        f"{FREE_PORT}; path/to/mpsflow is this checkout",
    ),
    "mpsflow run myapp:app --cmq https://cmq-gz.public.tencenttdmq.com --queue mps-events": Run(
        "tests/cli/test_cmq_server.py::test_run_consumes_cmq_and_serves_http_together_then_stops_cleanly",
        "against the local CMQ server (a loopback machine cannot reach Tencent Cloud)",
    ),
    # Delivery contract: a CMQ queue as the inbox
    "mpsflow run myapp:app --http :8080 --inbox "
    "cmq://cmq-gz.public.tencenttdmq.com/mps-inbox --receive-only": Run(
        CMQ_INBOX, "against the local CMQ server (cmq+http://), with its own small app"
    ),
    "mpsflow run myapp:app --cmq https://cmq-gz.public.tencenttdmq.com --queue mps-inbox "
    "--from-inbox": Run(CMQ_INBOX, "against the same local CMQ server"),
    # Reconciliation
    "mpsflow reconcile MODULE:APP --since 24h --dry-run": Run(
        "tests/cli/test_reconcile_command.py::test_reconcile_lists_then_processes_then_finds_nothing",
        "against the local MPS API server, --since 2h",
    ),
    # Handlers and routing keys; Signatures and dedup
    "pip install -e .": Run(
        "tests/test_editable_install.py::test_mypy_sees_the_editable_install",
        "into a fresh virtual environment, then mypy --strict on a user module",
    ),
    "pip install -e '.[bench]'": NotRun(
        "it installs the benchmarks' peers (FastAPI, uvicorn, orjson, pydantic, the SDK); the dev "
        "extra includes the bench extra, so scripts/test.sh installs them and tests/benchmarks "
        "runs every peer"
    ),
    'python -c "from MODULE import APP"': NotRun(
        "a placeholder, not a command: it says what MODULE:APP means"
    ),
    "mpsflow run qs/myapp.py:app": Run(
        "tests/test_loader.py::test_a_file_path_says_which_module_to_run_from_where",
        "the mistake the README warns of: the one-line answer is checked",
    ),
    "mpsflow run myapp": Run(
        "tests/cli/test_run.py::test_a_module_without_its_app_attribute_gets_the_spec_to_give",
        "the mistake the README shows: its one line, with the App named service, not app",
    ),
    "pip install 'mpsflow[redis]'": NotRun(
        "it installs from the package index; tests/dedup/test_store_errors.py checks that the "
        "error without the extra names this command"
    ),
    # The CMQ dev loop
    "export TENCENTCLOUD_SECRETID=local-dev-id TENCENTCLOUD_SECRETKEY=local-dev-key": Run(
        LOOP, "as the environment of every process"
    ),
    "mpsflow cmq-server --queue mps-events": Run(LOOP, "on a free port"),
    "mpsflow run myapp:app --cmq http://127.0.0.1:9800 --queue mps-events": Run(
        LOOP, "against that port, with a small app of its own in place of myapp"
    ),
    "mpsflow send --cmq http://127.0.0.1:9800 --queue mps-events "
    "path/to/mpsflow/examples/notifications --sign-key key-2026": Run(
        LOOP, "against that port; path/to/mpsflow is this checkout"
    ),
    # The MPS API dev loop
    "mpsflow mps-server --tasks path/to/mpsflow/examples/notifications": Run(
        MPS_LOOP, "on a free port; path/to/mpsflow is this checkout"
    ),
    "mpsflow reconcile myapp:app --mps-endpoint http://127.0.0.1:9801 --grace 0 --dry-run": Run(
        MPS_LOOP, "against that port, with a small app of its own in place of myapp"
    ),
    "mpsflow run myapp:app --reconcile --lookback 1h --mps-endpoint http://127.0.0.1:9801 "
    "--grace 0": Run(MPS_LOOP, "against that port, with its own app, HTTP on a free port"),
    # Testing your app
    "pip install pytest": Run(FRESH, "in the fresh virtual environment"),
    "python -m pytest": Run(
        "tests/test_readme.py::test_the_testing_example_passes_twice_in_an_empty_folder",
        "twice, in an empty folder holding myapp.py and test_myapp.py (and in the fresh venv)",
    ),
    # Command line (the synopsis: each command is run as a process by its tests)
    "mpsflow run": Run("tests/cli/test_run.py::test_run_serves_until_sigterm_then_exits_cleanly"),
    "mpsflow send": Run("tests/cli/test_send.py::test_send_signs_afresh_and_summarises"),
    "mpsflow decode": Run("tests/cli/test_decode.py::test_decode_prints_a_summary_of_the_seed"),
    "mpsflow deadletters list": Run(
        "tests/cli/test_deadletters.py::test_python_m_mpsflow_deadletters_list"
    ),
    "mpsflow deadletters show": Run(
        "tests/cli/test_deadletters.py::test_show_prints_the_whole_record_with_secrets_masked"
    ),
    "mpsflow deadletters replay": Run("tests/cli/test_deadletters.py::test_replay_into_an_app"),
    "mpsflow reconcile": Run(
        "tests/cli/test_reconcile_command.py::test_reconcile_lists_then_processes_then_finds_nothing"
    ),
    "mpsflow mps-server": Run(
        "tests/devservers/test_mps_command.py::test_mps_server_serves_the_loaded_tasks_until_sigterm"
    ),
    "mpsflow cmq-server": Run(
        "tests/cli/test_cmq_server.py::test_cmq_server_command_serves_the_queue_api_until_sigterm"
    ),
    "python -m mpsflow.devservers.cmq": Run(
        "tests/devservers/test_cmq.py::test_cli_process_persists_queues_across_restarts"
    ),
    "python -m mpsflow.cmq.server": NotRun(
        "the 0.1 command that the Upgrading table says is gone (replaced by the one above)"
    ),
    # Development
    "python scripts/gen_events.py": Run(
        "tests/events/test_exports.py::test_generated_module_is_up_to_date", "with --check"
    ),
    "python scripts/gen_typed_on.py": Run(
        "tests/events/test_exports.py::test_generated_module_is_up_to_date", "with --check"
    ),
}


def test_every_readme_command_is_run_by_a_test() -> None:
    commands = readme_commands()
    assert commands, "no commands found: has the README's layout changed?"
    missing = [c for c in dict.fromkeys(commands) if c not in COMMANDS]
    assert not missing, (
        "README commands that no test runs; add a row to COMMANDS in tests/test_readme.py naming "
        "the test that runs each (Run), or why none can (NotRun):\n  " + "\n  ".join(missing)
    )
    stale = sorted(set(COMMANDS) - set(commands))
    assert not stale, f"rows of COMMANDS for commands the README no longer shows: {stale}"
    for command, row in COMMANDS.items():
        if isinstance(row, Run):
            path, _, name = row.test.partition("::")
            tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
            tests = {
                n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            }
            assert name in tests, f"{command!r}: {row.test} does not exist"


def test_the_synopsis_shows_only_options_the_commands_have() -> None:
    parser = build_parser()

    def options(words: list[str]) -> set[str]:
        current: Any = parser
        for word in words:
            subparsers = next(a for a in current._actions if a.choices and word in a.choices)
            current = subparsers.choices[word]
        return {o for action in current._actions for o in action.option_strings}

    synopsis = synopsis_commands(block("Command line", lang=""))
    assert {words for words, _ in synopsis} >= {"mpsflow run", "mpsflow send", "mpsflow decode"}
    for words, usage in synopsis:
        shown = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", usage))
        unknown = shown - options(words.split()[1:])
        assert not unknown, f"{words}: the README shows options it does not have: {unknown}"


# -- the Quickstart ----------------------------------------------------------------------------


def write_project(folder: Path, *, with_test: bool = False) -> Path:
    """A folder of one's own with the Quickstart as ``myapp.py`` (and the README's test)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "myapp.py").write_text(block("Quickstart"), encoding="utf-8")
    if with_test:
        (folder / "test_myapp.py").write_text(block("Testing your app"), encoding="utf-8")
    return folder


_modules = itertools.count(1)


@pytest.fixture
def myapp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The Quickstart imported from ``myapp.py``, with the project folder as working directory."""
    project = write_project(tmp_path / "project")
    monkeypatch.chdir(project)
    with imported(f"readme_myapp_{next(_modules)}", project / "myapp.py") as module:
        yield module


def seed() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(SEED.read_bytes())
    return document


def catalogued(*paths: Path) -> list[tuple[str, str]]:
    """What the Quickstart's ``catalogue`` handler must record for these notifications."""
    expected = []
    for path in paths:
        notification = mpsflow.decode(path.read_bytes())
        for sub in notification.subtasks():
            if sub.key == "Transcode" and sub.status == "SUCCESS":
                result: Any = sub.result
                expected.append((notification.task_id or "", result.output.path))
    assert expected, "the samples have no finished transcodes"
    return sorted(expected)


async def test_the_quickstart_handlers_fire_on_a_signed_sample(
    myapp: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    async with TestClient(myapp.app) as client:
        result = await client.send(sign_payload(seed(), QUICKSTART_KEY))
        unsigned = await client.send(seed())
        records = client.emitted("catalogue")
    assert result.acked
    ran = sorted(c.handler.rsplit(".", 1)[-1] for c in result.calls if c.result == "ok")
    transcodes = catalogued(SEED)
    assert ran == ["alert"] + ["catalogue"] * len(transcodes)
    assert sorted((r["task"], r["path"]) for r in records) == transcodes  # type: ignore[index]
    assert "AnimatedGraphics failed with 30010" in caplog.text
    assert unsigned.dead_lettered  # notify_keys: an unsigned notification is refused
    assert unsigned.outcome.cause is Cause.UNAUTHENTICATED
    assert unsigned.calls == []
    # TestClient kept everything in memory: no sink file, no dedup file, no dead letters
    assert {p.name for p in Path.cwd().iterdir()} - {"__pycache__"} == {"myapp.py"}


async def inbox_settled(callback_url: str) -> None:
    """Wait (up to 30 s) until ``mpsflow run``'s inbox holds nothing: all it took is settled."""
    metrics = callback_url.rsplit("/", 2)[0] + "/metrics"
    with anyio.fail_after(30):
        async with aiohttp.ClientSession() as session:
            while True:
                async with session.get(metrics) as answer:
                    if "\nmpsflow_inbox_items 0\n" in await answer.text():
                        return
                await anyio.sleep(0.02)  # another process settles: nothing here to wait on


async def test_the_quickstart_under_mpsflow_run_answers_send(tmp_path: Path) -> None:
    project = write_project(tmp_path / "project")
    [run_line, send_line] = command_lines(block("Quickstart", lang="bash"))
    run_args = shlex.split(run_line.replace("127.0.0.1:8080", "127.0.0.1:0"))
    assert run_args[:2] == ["mpsflow", "run"]
    async with mpsflow_process(project, ENV, *run_args[1:]) as (process, output):
        url = (await output.wait_for(SERVING)).group(1)
        send_args = shlex.split(send_line.replace(README_URL, url).replace(CLONE, str(ROOT)))
        assert send_args[:2] == ["mpsflow", "send"]
        expected = catalogued(*sorted(NOTIFICATIONS.glob("*.json")))
        for _ in range(2):  # the second time, every effect has already run: nothing is added
            sent = await anyio.run_process(
                [sys.executable, "-m", "mpsflow", *send_args[1:]], cwd=project, env=ENV, check=False
            )
            assert sent.returncode == 0, sent.stdout.decode() + sent.stderr.decode()
            await inbox_settled(url)  # a 200 meant "in the inbox"; handling comes right after
            lines = (project / "catalogue.jsonl").read_text().splitlines()
            assert sorted((r["task"], r["path"]) for r in map(json.loads, lines)) == expected
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=SEED.read_bytes()) as answer,
        ):
            assert answer.status == 401  # unsigned
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(60):
            assert await process.wait() == 0
    assert "AnimatedGraphics failed with 30010" in output.text
    assert (project / "dedup.sqlite3").exists()
    dead = (project / DEFAULT_DEAD_LETTER_PATH).read_text().splitlines()
    assert [json.loads(line)["kind"] for line in dead] == ["signature"]


# -- the testing example -----------------------------------------------------------------------


def pytest_env() -> dict[str, str]:
    """The environment without anything that configures pytest from outside."""
    return {k: v for k, v in ENV.items() if not k.startswith("PYTEST_")}


def test_the_testing_example_passes_twice_in_an_empty_folder(tmp_path: Path) -> None:
    project = write_project(tmp_path / "project", with_test=True)
    assert sorted(p.name for p in project.iterdir()) == ["myapp.py", "test_myapp.py"]
    assert command_lines(block("Testing your app", lang="bash"))[-1] == "python -m pytest"
    for run in (1, 2):
        result = subprocess.run(
            [sys.executable, "-m", "pytest"],
            cwd=project,
            env=pytest_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        report = f"run {run}:\n{result.stdout}{result.stderr}"
        assert result.returncode == 0, report
        assert re.search(r"\b1 passed\b", result.stdout), report
        assert "configfile" not in result.stdout, report  # no configuration file was used
    # the test left no sink, dedup or dead-letter file behind (TestClient keeps them in memory)
    left = {p.name for p in project.iterdir()} - {"__pycache__", ".pytest_cache"}
    assert left == {"myapp.py", "test_myapp.py"}


# -- the fragments -----------------------------------------------------------------------------

PYTHON_BLOCKS = {
    "Quickstart": "test_the_quickstart_handlers_fire_on_a_signed_sample (and under mpsflow run)",
    "Handlers and routing keys": "test_the_routers_block",
    "Typed notifications": "test_the_typed_notifications_block",
    "Sources": "test_the_watched_source_block",
    "Reconciliation": "test_the_reconciliation_block",
    "Testing your app": "test_the_testing_example_passes_twice_in_an_empty_folder",
}
"""Each Python block of the README, by heading, and the test that runs it."""


def test_every_python_block_is_run() -> None:
    headings = [b.heading for b in code_blocks() if b.lang == "python"]
    assert sorted(headings) == sorted(PYTHON_BLOCKS), (
        "a Python block was added, moved or removed: run it in tests/test_readme.py and list it "
        "in PYTHON_BLOCKS"
    )


def review(suggestion: str) -> dict[str, Any]:
    porn = {
        "Status": "SUCCESS",
        "ErrCodeExt": "",
        "ErrCode": 0,
        "Message": "SUCCESS",
        "Input": {"Definition": 10},
        "Output": {"Confidence": 95.0, "Suggestion": suggestion, "Label": "porn", "SegmentSet": []},
    }
    event = {"AiContentReviewResultSet": [{"Type": "Porn", "PornTask": porn}]}
    return build_notification(event=event, sign_key=QUICKSTART_KEY)


async def test_the_routers_block(myapp: ModuleType, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="myapp.audit")
    namespace: dict[str, Any] = {"__name__": "readme_routers", "app": myapp.app}
    exec(compile(block("Handlers and routing keys"), "README.md: Routers", "exec"), namespace)
    async with TestClient(myapp.app) as client:
        blocked = await client.send(review("block"))
        passed = await client.send(review("pass"))
    assert blocked.acked
    assert passed.acked
    assert blocked.handlers() == ["readme_routers.takedown"]
    assert passed.handlers() == []
    # The router's middleware wraps its handlers, and only those.
    audited = [r.getMessage() for r in caplog.records if r.name == "myapp.audit"]
    assert audited == ["readme_routers.takedown: ack"]


def test_the_typed_notifications_block() -> None:
    body = SEED.read_bytes()
    live_body = LIVE_SAMPLE_PATHS[0].read_bytes() if LIVE_SAMPLE_PATHS else None
    if live_body is None:
        live_body = json.dumps(build_live_notification("ProcessEof", {"ErrCode": 0})).encode()
    namespace: dict[str, Any] = {"body": body, "live_body": live_body}
    exec(compile(block("Typed notifications"), "README.md: Typed notifications", "exec"), namespace)
    n = namespace["n"]
    assert (n.event_type, n.status) == ("WorkflowTask", "FINISH")
    assert n.task_id == seed()["WorkflowTaskEvent"]["TaskId"]
    assert namespace["sub"].key  # the loop ran
    assert type(namespace["live"]).__name__ == "LiveStreamNotification"
    assert type(namespace["any_"]) is type(namespace["live"])


async def test_the_watched_source_block(
    myapp: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    source = MemorySource([json.dumps(sign_payload(seed(), QUICKSTART_KEY)).encode()])
    namespace: dict[str, Any] = {"app": myapp.app, "source": source}
    code = compile(
        block("Sources"), "README.md: Sources", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    )
    with anyio.fail_after(60):
        pending = eval(code, namespace)  # the block's top-level `async with` (an async function)
        if pending is not None:
            await pending
    printed = capsys.readouterr().out.split()
    assert printed[1:] == ["Settlement.ACK", "Cause.OK"], printed  # `id settlement cause`
    lines = Path("catalogue.jsonl").read_text().splitlines()  # the app ran for real
    assert sorted((r["task"], r["path"]) for r in map(json.loads, lines)) == catalogued(SEED)


async def test_the_reconciliation_block() -> None:
    """It builds the source on the real API (nothing is called here: a loopback machine cannot
    reach Tencent Cloud; tests/sources/test_reconcile.py runs it against the local server)."""
    app, store = App(), MemoryStore()
    namespace: dict[str, Any] = {"app": app, "store": store}
    exec(compile(block("Reconciliation"), "README.md: Reconciliation", "exec"), namespace)
    reconcile = namespace["reconcile"]
    assert isinstance(reconcile, ReconcileSource)
    assert reconcile.store is store
    assert reconcile.client.region == "ap-guangzhou"  # type: ignore[attr-defined]
    assert reconcile.recorder in app._delivery_middleware
    await reconcile.client.aclose()  # type: ignore[attr-defined]


MYPY_HARNESS = {
    "Handlers and routing keys": (
        "readme_routers",
        "from myapp import app\n\n",
    ),
    "Typed notifications": ("readme_typed", 'body = b"{}"\nlive_body = b"{}"\n\n'),
    "Reconciliation": (
        "readme_reconcile",
        "from mpsflow.dedup.stores import MemoryStore\n"
        "from myapp import app\n\n"
        "store = MemoryStore()\n",
    ),
    "Sources": (
        "readme_watched",
        "from mpsflow import Source\n"
        "from myapp import app\n\n\n"
        "async def fragment(source: Source) -> None:\n",
    ),
}
"""The names each fragment uses, for mypy: (module name, code before the block)."""


@pytest.mark.slow
def test_every_python_block_type_checks(tmp_path: Path) -> None:
    """mypy --strict over the README's Python: the Quickstart, its test and the fragments."""
    folder = write_project(tmp_path / "readme", with_test=True)
    for heading, (module, prelude) in MYPY_HARNESS.items():
        code = block(heading)
        if prelude.rstrip().endswith(":"):  # a fragment that runs inside an async function
            code = textwrap.indent(code, "    ")
        (folder / f"{module}.py").write_text(prelude + code, encoding="utf-8")
    config = tmp_path / "mypy.ini"
    config.write_text(
        f"[mypy]\nstrict = True\nwarn_unreachable = True\nmypy_path = {ROOT}\n\n"
        "[mypy-mpsflow.*]\nfollow_imports = silent\n"
    )
    files = sorted(str(p) for p in folder.glob("*.py"))
    assert len(files) == 2 + len(MYPY_HARNESS)
    out, err, status = mypy_api.run(
        ["--config-file", str(config), "--cache-dir", str(tmp_path / "cache"), *files]
    )
    assert status == 0, out + err


# -- what the testing path relies on -----------------------------------------------------------


def verifier(*keys: str, now: float) -> SignatureVerifier:
    return SignatureVerifier(keys, clock=FakeClock(now))


def test_a_signed_notification_expires_in_ten_minutes_by_default() -> None:
    before = int(time.time())
    payload = build_notification(sign_key="k")
    after = int(time.time())
    assert DEFAULT_EXPIRES_IN == 600  # MPS signs notifications valid for 10 minutes
    assert before + 600 <= payload["Timestamp"] <= after + 600
    assert verifier("k", now=after).verify_payload(payload).ok
    assert not verifier("k", now=payload["Timestamp"] + 31).verify_payload(payload).ok
    assert TestClient(App()).clock.time() <= after  # TestClient's FakeClock: the real time
    assert not verifier("k", now=after - 3600 - 31).verify_payload(payload).ok  # too far ahead
    assert build_notification(sign_key="k", expires_at=1234)["Timestamp"] == 1234
    assert before + 60 <= build_notification(sign_key="k", expires_in=60)["Timestamp"] <= after + 60
    live = build_live_notification("ProcessEof", {"ErrCode": 0}, sign_key="k")
    assert before + 600 <= live["Timestamp"] <= after + 600
    assert sign_payload({"EventType": "WorkflowTask"}, "k", expires_at=9)["Timestamp"] == 9
    assert "Timestamp" not in build_notification()


async def test_the_readme_clock_advance_expires_a_signature_made_now() -> None:
    """The README's ``client.clock.advance(N)`` makes a notification signed now expire for a
    ``TestClient`` of an app checking signatures with its defaults; a little less does not."""
    found = re.search(r"`client\.clock\.advance\((\d+)\)` expires a", README.read_text())
    assert found is not None
    seconds = int(found.group(1))
    for advance, expired in ((seconds - 2, False), (seconds, True)):
        app = App(notify_keys=["k"])

        @app.on("WorkflowTask")
        async def handle(task: WorkflowTask, ctx: Context) -> None:
            pass

        async with TestClient(app) as client:
            payload = build_notification(sign_key="k")
            client.clock.advance(advance)
            result = await client.send(payload)
        assert result.dead_lettered is expired, advance


def counting_app(store: Any) -> tuple[App, list[str]]:
    app = App(idempotency=store, notify_keys=["k"])
    runs: list[str] = []

    @app.on("WorkflowTask", name="count")
    async def count(task: WorkflowTask, ctx: Context) -> None:
        runs.append(ctx.task_id)

    return app, runs


async def test_each_test_client_starts_from_a_clean_dedup_store(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "dedup.sqlite3")
    app, runs = counting_app(store)
    payload = build_notification(task_id="t-1", sign_key="k")
    for _ in range(2):  # two test runs: the second is not skipped as a duplicate of the first
        async with TestClient(app) as client:
            assert isinstance(client.dedup_store, MemoryStore)
            assert (await client.send(payload)).acked
            again = await client.send(payload)
            assert again.outcome.cause is Cause.ALREADY_DONE  # dedup is on, in memory
    assert runs == ["t-1", "t-1"]
    assert app.idempotency is store  # put back
    assert not (tmp_path / "dedup.sqlite3").exists()  # the app's store was never opened


async def test_dedup_store_app_keeps_the_apps_store(tmp_path: Path) -> None:
    """With the app's own store, a second test run finds the first one's records (the trap)."""
    runs: list[str] = []
    payload = build_notification(task_id="t-1", sign_key="k")
    for _ in range(2):  # two runs of a test suite: the app is imported afresh each time
        app, seen = counting_app(SQLiteStore(tmp_path / "dedup.sqlite3"))
        async with TestClient(app, dedup_store="app") as client:
            assert isinstance(client.dedup_store, SQLiteStore)
            assert (await client.send(payload)).acked
        runs += seen
    assert runs == ["t-1"]  # the second run skipped it as already done


async def test_a_given_store_is_used_and_idempotency_options_are_kept() -> None:
    original = MemoryStore()
    idempotency = Idempotency(original, key_function=lambda document: "one-key-for-all")
    app, runs = counting_app(idempotency)
    given = MemoryStore()
    async with TestClient(app, dedup_store=given) as client:
        assert client.dedup_store is given
        await client.send(build_notification(task_id="t-1", sign_key="k"))
        await client.send(build_notification(task_id="t-2", sign_key="k"))  # same key: skipped
    assert runs == ["t-1"]
    assert app.idempotency is idempotency
    assert idempotency.store is original


async def test_an_app_without_dedup_gets_none_and_bad_choices_are_refused() -> None:
    app, _ = counting_app(None)
    async with TestClient(app) as client:
        assert client.dedup_store is None
    assert app.idempotency is None
    with pytest.raises(ValueError, match="dedup_store must be 'memory', 'app' or an"):
        TestClient(app, dedup_store="sqlite")  # type: ignore[arg-type]


async def test_a_failed_start_puts_the_app_back(tmp_path: Path) -> None:
    store = MemoryStore()
    app, runs = counting_app(store)
    out = JsonlSink(tmp_path / "out.jsonl")
    app.sink("out", out)
    starts: list[int] = []

    @app.on_startup
    async def flaky_start() -> None:
        starts.append(len(starts))
        if len(starts) == 1:
            raise ConnectionError("the first start fails")

    wrapped: list[str] = []

    async def spy(call: Call, call_next: CallNext) -> Outcome:
        wrapped.append("spy")
        return await call_next(call)

    clock = app.clock
    with pytest.raises(ConnectionError):
        async with TestClient(app, middleware=[spy]):
            pass
    assert app.idempotency is store
    assert app.clock is clock
    assert isinstance(app.dead_letter_sink, JsonlSink)
    assert app.replace_sink("out", out) is out
    async with TestClient(app) as client:  # nothing of the failed client is left behind
        assert (await client.send(build_notification(task_id="t-1", sign_key="k"))).acked
    assert runs == ["t-1"]
    assert wrapped == []


# -- .gitignore --------------------------------------------------------------------------------


def test_the_files_a_readme_run_leaves_in_the_clone_are_ignored() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    defaults = build_parser().parse_args(["run", "myapp:app"])
    dedup, inbox = DEFAULT_DEDUP_PATH, defaults.inbox
    assert defaults.dedup is None  # --dedup not given: DEFAULT_DEDUP_PATH
    dead = DEFAULT_DEAD_LETTER_PATH
    keys = JsonlSink(dead).keys_path.name
    names = [
        dead,
        keys,  # the dead-letter sink's dedup keys
        f"{dead}.1",  # rotated
        f"{dead}.replayed",  # the replay journal of `deadletters replay`
        dedup,
        f"{dedup}-wal",
        f"{dedup}-shm",
        f"{dedup}-writers",  # the lock file of the processes writing it
        inbox,  # the HTTP source's durable inbox
        f"{inbox}-wal",
        f"{inbox}-shm",
        f"{inbox}-writers",
        "out/catalogue.jsonl",  # the example app's records
        "build/scf/function.zip",  # the SCF deployment folder
        "examples/mpsflow-dead-letters.jsonl",
    ]
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "--verbose", "--non-matching", *names],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    not_ignored = [
        line.split("\t")[-1] for line in result.stdout.splitlines() if line.startswith("::")
    ]
    assert not not_ignored, f"not in .gitignore: {not_ignored}"


# -- the newcomer's path, from nothing ---------------------------------------------------------


def fresh_env() -> dict[str, str]:
    """The environment of a new shell: no active virtual environment, no PYTHONPATH."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME") and not k.startswith("PYTEST_")
    }
    env["PATH"] = os.pathsep.join(path)
    return env


@asynccontextmanager
async def shell_process(
    cwd: Path, env: Mapping[str, str], command: str
) -> AsyncIterator[tuple[anyio.abc.Process, Output]]:
    """``bash -c COMMAND`` in a session of its own, output collected, killed at the end."""
    async with child_process(["bash", "-c", command], cwd, env) as (process, output):
        yield process, output


async def shell(cwd: Path, env: Mapping[str, str], command: str) -> str:
    result = await anyio.run_process(
        ["bash", "-c", command], cwd=cwd, env=dict(env), check=False, stderr=subprocess.STDOUT
    )
    text = result.stdout.decode(errors="replace")
    assert result.returncode == 0, f"$ {command}\n{text}"
    return text


async def serve_and_send(
    cwd: Path, env: Mapping[str, str], run: str, send: str, *, activate: str = ""
) -> Output:
    """Run the README's ``run`` line on a free port, then its ``send`` line against it."""
    run = run.replace("127.0.0.1:8080", "127.0.0.1:0")
    if "--http" not in run:
        run += " --http 127.0.0.1:0"
    async with shell_process(cwd, env, f"{activate}exec {run}") as (process, output):
        url = (await output.wait_for(SERVING)).group(1)
        await shell(cwd, env, activate + send.replace(README_URL, url))
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(60):
            assert await process.wait() == 0, output.text
    return output


@pytest.mark.slow
async def test_the_newcomer_path_in_a_fresh_venv(tmp_path: Path) -> None:
    clone = copy_checkout(tmp_path / "mpsflow")
    env = fresh_env()
    with anyio.fail_after(900):  # a hang guard: pip fetches from the package index
        # Two commands: install into .venv and run the example app; send the samples to it
        commands, (send_samples,) = map(command_lines, blocks("Two commands", lang="bash"))
        assert commands[1] == "bash scripts/test.sh"  # not run here: it is the suite itself
        create, install, run = commands[0].split(" && ")
        await shell(clone, env, f"{create} && {install}")
        await serve_and_send(clone, env, run, send_samples)
        for name in ("catalogue", "alerts", "images"):
            assert (clone / "out" / f"{name}.jsonl").read_text().strip(), name

        # Quickstart: myapp.py in a folder of one's own; run it and send it the samples
        activate = f". {shlex.quote(str(clone / '.venv/bin/activate'))} && "
        assert ". .venv/bin/activate" in inline_commands()
        project = write_project(tmp_path / "project", with_test=True)
        run_line, send_line = command_lines(block("Quickstart", lang="bash"))
        output = await serve_and_send(
            project, env, run_line, send_line.replace(CLONE, str(clone)), activate=activate
        )
        assert "AnimatedGraphics failed with 30010" in output.text
        lines = (project / "catalogue.jsonl").read_text().splitlines()
        assert len(lines) == len(catalogued(*sorted(NOTIFICATIONS.glob("*.json"))))
        for name in ("catalogue.jsonl", "dedup.sqlite3", "mpsflow-dead-letters.jsonl"):
            (project / name).unlink(missing_ok=True)

        # Testing your app: pip install pytest, then python -m pytest, twice
        install_pytest, run_tests = command_lines(block("Testing your app", lang="bash"))
        await shell(project, env, activate + install_pytest)
        for _ in range(2):
            report = await shell(project, env, activate + run_tests)
            assert re.search(r"\b1 passed\b", report), report
            assert "configfile" not in report, report
