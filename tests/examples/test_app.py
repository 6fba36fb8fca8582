"""The examples work: the quickstart app over every sample, the WeCom alert app end to end."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mpsflow.testing import TestClient
from tests.plugins.samples import SAMPLE_PATHS
from tests.sinks.peers import RobotPeer


def fresh_import(name: str) -> ModuleType:
    sys.modules.pop(name, None)
    return importlib.import_module(name)


@pytest.fixture
def example_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("MPSFLOW_EXAMPLE_OUT", str(tmp_path / "out"))
    module = fresh_import("examples.app")
    yield module.app
    sys.modules.pop("examples.app", None)


async def test_example_app_catalogues_alerts_and_collects(example_app: Any) -> None:
    async with TestClient(example_app) as client:
        for path in SAMPLE_PATHS:
            result = await client.send(path.read_bytes())
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
