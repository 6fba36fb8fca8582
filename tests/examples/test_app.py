"""The examples work: the quickstart app over every sample, the WeCom alert app end to end."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mpsflow import Cause
from mpsflow.testing import TestClient, sign_payload
from tests.plugins.samples import SAMPLE_PATHS
from tests.sinks.peers import RobotPeer

SAMPLE_KEY = "mps-sample-notify-key"
"""What the samples are signed with, and the example app's key unless MPS_NOTIFY_KEYS is set."""


def fresh_import(name: str) -> ModuleType:
    sys.modules.pop(name, None)
    return importlib.import_module(name)


@pytest.fixture
def example_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("MPSFLOW_EXAMPLE_OUT", str(tmp_path / "out"))
    monkeypatch.delenv("MPS_NOTIFY_KEYS", raising=False)  # the samples' key
    module = fresh_import("examples.app")
    yield module.app
    sys.modules.pop("examples.app", None)


async def test_example_app_catalogues_alerts_and_collects(example_app: Any) -> None:
    async with TestClient(example_app) as client:
        for path in SAMPLE_PATHS:
            result = await client.send(sign_payload(json.loads(path.read_bytes()), SAMPLE_KEY))
            assert result.acked, path.name
        catalogue = client.emitted("catalogue")
        alerts = client.emitted("alerts")
        images = client.emitted("images")
    seed_task = "245****654-WorkflowTask-f46dac7fe2436c47******d71946986t0"
    assert any(r["task_id"] == seed_task and r["path"] for r in catalogue)  # type: ignore[index]
    seed_alert = next(a for a in alerts if a["task_id"] == seed_task)  # type: ignore[index]
    assert [f["key"] for f in seed_alert["failures"]] == ["AnimatedGraphics"]  # type: ignore[index]
    assert seed_alert["failures"][0]["error"] == "30010"  # type: ignore[index]
    kinds = {r["kind"] for r in images}  # type: ignore[index]
    assert kinds == {"snapshot", "sprite"}
    assert client.dead_letters == []


async def test_example_app_refuses_what_its_keys_did_not_sign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MPSFLOW_EXAMPLE_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("MPS_NOTIFY_KEYS", "key-2026,key-2025")
    app = fresh_import("examples.app").app
    sys.modules.pop("examples.app", None)
    seed = json.loads(SAMPLE_PATHS[0].read_bytes())
    async with TestClient(app) as client:
        samples_key = await client.send(sign_payload(dict(seed), SAMPLE_KEY))
        rotated = await client.send(sign_payload(dict(seed), "key-2025"))
    assert samples_key.dead_lettered
    assert samples_key.outcome.cause is Cause.UNAUTHENTICATED
    assert rotated.acked


async def test_wecom_example_posts_markdown_for_failed_tasks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # the example's default dead-letter file lands here
    seed = next(p for p in SAMPLE_PATHS if p.name.startswith("01_"))
    async with RobotPeer("test-robot-key").running() as robot:
        monkeypatch.setenv("WECOM_WEBHOOK_URL", robot.url)
        module = fresh_import("examples.wecom_alerts")
        async with TestClient(module.app, capture_sinks=False) as client:
            result = await client.send(seed.read_bytes())
    assert result.acked
    [message] = robot.messages
    assert message["msgtype"] == "markdown"
    assert "AnimatedGraphics" in message["markdown"]["content"]
    assert "30010" in message["markdown"]["content"]
