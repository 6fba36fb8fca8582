"""The deployable SCF example, invoked exactly as the runtime does: import once, call often."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mpsflow import App, Context
from mpsflow.errors import InvocationFailed

FUNCTION = Path(__file__).resolve().parents[2] / "examples" / "scf_function" / "index.py"
CONTEXT = {
    "time_limit_in_ms": 3000,
    "memory_limit_in_mb": 128,
    "request_id": "0f9c2ba8-0000-4d8a-9c52-1d8a8f1b2c3d",
    "function_name": "mps-notifications",
    "function_version": "$LATEST",
    "namespace": "default",
    "environment": '{"SCF_NAMESPACE":"default"}',
}


@pytest.fixture
def function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``index.py`` imported once (a cold start), with its files under ``tmp_path``."""
    monkeypatch.setenv("MPSFLOW_DEAD_LETTERS", str(tmp_path / "dead.jsonl"))
    monkeypatch.setenv("MPSFLOW_OUTPUTS", str(tmp_path / "outputs.jsonl"))
    monkeypatch.delenv("MPS_NOTIFY_KEYS", raising=False)
    name = f"scf_index_{tmp_path.name}"
    spec = importlib.util.spec_from_file_location(name, FUNCTION)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[name]


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_seed_event_invocations(function: ModuleType, seed_sample: bytes, tmp_path: Path) -> None:
    event = json.loads(seed_sample)
    task_id = event["WorkflowTaskEvent"]["TaskId"]
    for _ in range(3):  # warm invocations reuse the module, each in a fresh event loop
        summary = function.main_handler(json.loads(seed_sample), CONTEXT)
        assert summary == {"status": "ok", "taskId": task_id, "handlers": 1}
        outputs = lines(tmp_path / "outputs.jsonl")
        # Flushed to disk before each call returned; the same event again is the same effects,
        # whose records the JSONL sink skips by their effect keys (written once).
        assert len(outputs) == 4
    assert {o["key"] for o in outputs} == {"Transcode", "SnapshotByTimeOffset", "ImageSprites"}
    assert all(o["task_id"] == task_id for o in outputs)
    assert lines(tmp_path / "dead.jsonl") == []


def test_edit_event(function: ModuleType, samples_dir: Path, tmp_path: Path) -> None:
    event = json.loads((samples_dir / "06_edit_media_task_success.json").read_bytes())
    summary = function.main_handler(event, CONTEXT)
    assert summary["status"] == "ok"
    [output] = lines(tmp_path / "outputs.jsonl")
    assert output["key"] == "EditMediaTask"


def test_failures_raise_then_dead_letter(
    function: ModuleType, seed_sample: bytes, tmp_path: Path
) -> None:
    failures: list[int] = []
    app: App = function.app

    @app.on("Transcode", name="flaky_catalogue")
    async def flaky(result: Any, ctx: Context) -> None:
        failures.append(ctx.attempt)
        raise TimeoutError("catalogue did not answer")

    for _ in range(2):  # SCF retries an async invocation twice by default
        with pytest.raises(InvocationFailed):
            function.main_handler(json.loads(seed_sample), CONTEXT)
    summary = function.main_handler(json.loads(seed_sample), CONTEXT)
    assert summary["status"] == "dead_lettered"
    assert failures == [1, 2, 3]
    [record] = lines(tmp_path / "dead.jsonl")
    assert record["kind"] == "exhausted"
    assert record["source"] == "scf"
    assert json.loads(record["body"]) == json.loads(seed_sample)


def test_unknown_event_shape_is_dead_lettered(function: ModuleType, tmp_path: Path) -> None:
    summary = function.main_handler({"Records": [{"CMQ": {"msgBody": "{"}}]}, CONTEXT)
    assert summary["status"] == "dead_lettered"
    assert [r["kind"] for r in lines(tmp_path / "dead.jsonl")] == ["poison"]
