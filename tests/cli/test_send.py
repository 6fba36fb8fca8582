"""``mpsflow send`` against a real HTTP source: fresh signatures, repeats, rate, a summary."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from mpsflow import App, Context
from mpsflow.cli.send import Pacer, SendItem, signed_body
from mpsflow.clock import FakeClock
from tests.plugins.samples import LIVE_SAMPLE_PATHS, SAMPLE_KEY, SAMPLE_PATHS
from tests.sources.http_app import make_app, serve

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}


async def send(*args: str) -> tuple[int, str, str]:
    """Run ``python -m mpsflow send ARGS`` without blocking the server in this process."""
    result = await anyio.run_process(
        [sys.executable, "-m", "mpsflow", "send", *args], env=ENV, check=False
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def send_to(app: App, *args: str) -> tuple[int, str, str]:
    """``send`` to ``app``, served on loopback for the run (its URL the first argument)."""
    async with serve(app) as source:
        return await send(source.url, *args)


def task_ids(app: App, key: str) -> list[str]:
    """The task ids a handler on ``key``, registered on ``app`` now, will be called with."""
    seen: list[str] = []

    @app.on(key)
    async def handler(event: Any, ctx: Context) -> None:
        seen.append(ctx.task_id)

    return seen


def summary(stdout: str) -> dict[str, int]:
    """The status-code lines of the summary: ``{"200": 20, ...}``."""
    counts: dict[str, int] = {}
    for line in stdout.splitlines()[1:]:
        status, _, count = line.strip().rpartition(": ")
        counts[status] = int(count)
    return counts


async def test_send_signs_afresh_and_summarises(samples_dir: Path) -> None:
    app, dead = make_app(notify_keys=[SAMPLE_KEY])
    seen = task_ids(app, "WorkflowTask")
    code, out, err = await send_to(
        app,
        str(samples_dir),
        str(samples_dir / "live"),
        "--sign-key",
        SAMPLE_KEY,
        "--repeat",
        "2",
        "--concurrency",
        "4",
    )
    total = 2 * (len(SAMPLE_PATHS) + len(LIVE_SAMPLE_PATHS))
    assert code == 0, out + err
    assert out.splitlines()[0].startswith(f"sent {total} notification(s) in ")
    assert summary(out) == {"200": total}
    assert f"sent {total}/{total}" in err  # plain progress lines when not on a terminal
    workflow_samples = [
        p
        for p in SAMPLE_PATHS
        if b'"EventType":"WorkflowTask"' in p.read_bytes().replace(b" ", b"")
    ]
    assert len(seen) == 2 * len(workflow_samples)
    assert SAMPLE_KEY not in out + err
    assert dead.records == []


async def test_send_reports_failures_and_exits_non_zero(samples_dir: Path) -> None:
    app, _ = make_app(notify_keys=[SAMPLE_KEY])
    # The samples' own signatures expired long ago: sent as they are, they are refused.
    code, out, _ = await send_to(app, str(samples_dir / "07_edit_media_task_failure.json"))
    assert code == 1
    assert summary(out) == {"401": 1}


async def test_send_with_a_rate_sends_them_all(samples_dir: Path) -> None:
    app, _ = make_app()
    handled = task_ids(app, "EditMediaTask")
    code, out, _ = await send_to(
        app,
        str(samples_dir / "06_edit_media_task_success.json"),
        "--repeat",
        "5",
        "--rate",
        "50",
        "--concurrency",
        "5",
    )
    assert code == 0, out
    assert summary(out) == {"200": 5}
    assert len(handled) == 5


async def test_pacer_spaces_requests_across_senders() -> None:
    clock = FakeClock()
    pacer = Pacer(20.0, clock)
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(pacer.wait)
    # the first goes at once; the others follow 1/20 s apart, whoever sends them
    assert clock.sleeps == pytest.approx([0.05] * 4)
    assert clock.monotonic() == pytest.approx(0.2)
    unlimited = Pacer(None, clock)
    await unlimited.wait()
    assert len(clock.sleeps) == 4


async def test_send_to_nothing_counts_connection_errors(tmp_path: Path, seed_sample: bytes) -> None:
    body = tmp_path / "seed.json"
    body.write_bytes(seed_sample)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # a port nobody listens on
    code, out, _ = await send(f"http://127.0.0.1:{port}/mps/callback", str(body))
    assert code == 1
    [(status, count)] = summary(out).items()
    assert status.startswith("error (")
    assert count == 1


def test_signed_body_is_the_way_mps_signs(seed_sample: bytes) -> None:
    doc = json.loads(seed_sample)
    item = SendItem("seed", seed_sample, doc)
    before = int(time.time())
    signed = json.loads(signed_body(item, "secret", 600))
    assert before + 600 <= signed["Timestamp"] <= int(time.time()) + 600
    expected = hashlib.md5(f"{signed['Timestamp']}secret".encode()).hexdigest()
    assert signed["Sign"] == expected
    assert signed["WorkflowTaskEvent"] == doc["WorkflowTaskEvent"]
    assert signed_body(item, None, 600) == seed_sample  # no key: the bytes go as they are
    assert "Sign" not in doc  # the loaded document is not changed


def test_send_with_no_notifications(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mpsflow.cli import main

    assert main(["send", "http://127.0.0.1:9/x", str(tmp_path)]) == 2
    assert "no notifications found" in capsys.readouterr().err
