"""``mpsflow mps-server`` and ``python -m mpsflow.devservers.mps`` as real processes."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.mps.v20190612 import models
from tencentcloud.mps.v20190612.mps_client import MpsClient

from mpsflow.cli import main as cli_main
from mpsflow.devservers.mps import main as module_main
from tests.process_output import child_process, mpsflow_process

SECRET_ID = "AKIDmpsflowMPSTEST00000000000002"
SECRET_KEY = "mpsflow-mps-test-secret-key-0002"
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "notifications"
LISTENING = re.compile(r"mpsflow mps-server listening on (http://127\.0\.0\.1:(\d+))$")
KEY_VARIABLES = (
    "TENCENTCLOUD_SECRETID",
    "TENCENTCLOUD_SECRETKEY",
    "TENCENTCLOUD_SESSIONTOKEN",
    "MPSFLOW_MPS_SECRET_ID",
    "MPSFLOW_MPS_SECRET_KEY",
)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")


def child_env(**extra: str) -> dict[str, str]:
    hidden = {*KEY_VARIABLES, *PROXY_VARIABLES}
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


def exit_code(main: Any, argv: Sequence[str]) -> int:
    """``main(argv)`` in process: its return value, or the status argparse exits with."""
    try:
        return int(main(argv))
    except SystemExit as exc:
        return int(exc.code or 0)


def list_tasks(port: str) -> Any:
    """``DescribeTasks`` (Limit 100) with the official SDK, over HTTP to 127.0.0.1:port."""
    profile = ClientProfile(
        httpProfile=HttpProfile(protocol="http", endpoint=f"127.0.0.1:{port}", reqTimeout=10)
    )
    client = MpsClient(credential.Credential(SECRET_ID, SECRET_KEY), "ap-guangzhou", profile)
    request = models.DescribeTasksRequest()
    request.Limit = 100
    return client.DescribeTasks(request)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


async def test_mps_server_serves_the_loaded_tasks_until_sigterm(tmp_path: Path) -> None:
    env = child_env(TENCENTCLOUD_SECRETID=SECRET_ID, TENCENTCLOUD_SECRETKEY=SECRET_KEY)
    args = ["mps-server", "--port", "0", "--tasks", str(EXAMPLES)]
    async with mpsflow_process(tmp_path, env, *args) as (process, output):
        port = (await output.wait_for(LISTENING)).group(2)
        summary = await output.wait_for(re.compile(r"^tasks: .*"))
        assert summary.group(0) == (
            "tasks: 3 (1 EditMediaTask FINISH, 1 WorkflowTask FINISH, 1 WorkflowTask PROCESSING)"
        )
        listed = await anyio.to_thread.run_sync(list_tasks, port)
        expected = {
            json.loads(p.read_bytes())[event]["TaskId"]
            for p, event in [
                (EXAMPLES / "01_workflow_task_seed_verbatim.json", "WorkflowTaskEvent"),
                (EXAMPLES / "04_workflow_task_processing_change_mode.json", "WorkflowTaskEvent"),
                (EXAMPLES / "06_edit_media_task_success.json", "EditMediaTaskEvent"),
            ]
        }
        assert {info.TaskId for info in listed.TaskSet} == expected
        assert (listed.TotalCount, listed.ScrollToken) == (3, "")
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0
    assert "Traceback" not in output.text
    assert SECRET_KEY not in output.text


async def test_python_m_mpsflow_devservers_mps_takes_the_keys_as_options(tmp_path: Path) -> None:
    argv = [sys.executable, "-W", "error::ResourceWarning", "-m", "mpsflow.devservers.mps"]
    argv += ["--port", "0", "--secret-id", SECRET_ID, "--secret-key", SECRET_KEY]
    async with child_process(argv, tmp_path, child_env()) as (process, output):
        port = (await output.wait_for(LISTENING)).group(2)
        await output.wait_for(re.compile(r"tasks: none \(load some with --tasks FILE\|DIR\)"))
        listed = await anyio.to_thread.run_sync(list_tasks, port)
        assert listed.TaskSet == []
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(30):
            assert await process.wait() == 0
    assert "Traceback" not in output.text


async def test_mps_server_on_a_port_in_use_exits_3_with_one_line(tmp_path: Path) -> None:
    env = child_env(TENCENTCLOUD_SECRETID=SECRET_ID, TENCENTCLOUD_SECRETKEY=SECRET_KEY)
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as taken:
        port = taken.extra(anyio.abc.SocketAttribute.local_port)
        result = await anyio.run_process(
            [sys.executable, "-m", "mpsflow", "mps-server", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            check=False,
        )
    assert result.returncode == 3
    assert result.stderr.decode().strip() == (
        f"mpsflow mps-server: error: cannot listen on 127.0.0.1:{port}: address already in use"
        " (is another mpsflow running? pick another port with --port)"
    )


@pytest.mark.parametrize("main", [cli_main, module_main], ids=["mpsflow", "python-m"])
def test_mps_server_without_a_key_pair_exits_2(
    main: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    argv = ["--port", "0", "--secret-id", "AKIDonly"]
    assert exit_code(main, ["mps-server", *argv] if main is cli_main else argv) == 2
    err = capsys.readouterr().err
    assert "mps-server: error: a SecretId and a SecretKey are required" in err


def test_mps_server_with_a_tasks_file_that_reports_no_task_exits_2_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TENCENTCLOUD_SECRETID", SECRET_ID)
    monkeypatch.setenv("TENCENTCLOUD_SECRETKEY", SECRET_KEY)
    bad = tmp_path / "bad.json"
    bad.write_text('{"EventType": "Other"}')
    assert exit_code(cli_main, ["mps-server", "--port", "0", "--tasks", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mpsflow mps-server: error: {bad}: not a task notification: unknown EventType 'Other'"
    )
    missing = tmp_path / "missing"
    assert exit_code(cli_main, ["mps-server", "--port", "0", "--tasks", str(missing)]) == 2
    assert f"no such file or folder: {missing}" in capsys.readouterr().err


def test_mps_server_help_says_it_is_a_development_and_test_tool(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert exit_code(cli_main, ["--help"]) == 0
    listing = capsys.readouterr().out
    assert "mps-server" in listing
    assert "run a local MPS-API-compatible server" in listing
    assert exit_code(cli_main, ["mps-server", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "for development and tests (not for production)" in out
    for option in ("--port", "--secret-id ID", "--secret-key KEY", "--tasks FILE|DIR"):
        assert option in out
    assert "--time-filter {create,finish}" in out
    assert "TENCENTCLOUD_SECRETID and TENCENTCLOUD_SECRETKEY" in out
