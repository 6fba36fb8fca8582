"""The deployable SCF example, invoked exactly as the runtime does: import once, call often."""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mpsflow import App, Context
from mpsflow.errors import InvocationFailed
from mpsflow.testing import sign_payload
from tests.modules import imported, run_ok
from tests.readme import CLONE, block, command_lines, copy_checkout

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
    with imported(f"scf_index_{tmp_path.name}", FUNCTION) as module:
        yield module


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


# -- the deployment folder, built the way the example's README says ----------------------------

SCF_README = FUNCTION.parent / "README.md"
INVOKE = """
import json, sys
import index, mpsflow

signed, unsigned = (json.load(open(path)) for path in sys.argv[1:3])
context = json.loads(sys.argv[3])
print(json.dumps({
    "signed": index.main_handler(signed, context),
    "unsigned": index.main_handler(unsigned, context),
    "mpsflow": mpsflow.__file__,
    "index": index.__file__,
}))
"""


@pytest.mark.slow
def test_the_deployment_folder_built_from_this_checkout_runs_main_handler(tmp_path: Path) -> None:
    """The README's build commands, in a copy of this checkout; then main_handler from the zip.

    mpsflow itself is built into a wheel from the checkout and installed into the folder; its
    dependencies (msgspec, anyio, aiohttp) come from this test's environment (``--no-deps``), so
    the test stays offline-fast. What the zip holds is then unpacked, as SCF does, and invoked
    with this interpreter: mpsflow must be imported from the folder, not from the checkout.
    """
    assert shutil.which("zip"), (
        "the README's build ends with zip: install it (scripts/test.sh does)"
    )
    clone = copy_checkout(tmp_path / "mpsflow")
    commands = command_lines(block("Deploy", lang="sh", path=SCF_README))
    assert commands[0] == f"cd {CLONE}"
    script = [f"cd {shlex.quote(str(clone))}"]
    for command in commands[1:]:  # the dependencies come from this test's environment:
        no_deps = " --no-deps" if command.startswith("pip install --target") else ""
        script.append(command + no_deps)
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }
    env.pop("PYTHONPATH", None)
    run_ok(["bash", "-euo", "pipefail", "-c", "\n".join(script)], tmp_path, env, timeout=600)
    package = clone / "build" / "scf" / "function.zip"
    instance = tmp_path / "var-user"  # where SCF unpacks the code package
    with zipfile.ZipFile(package) as archive:
        archive.extractall(instance)
    assert (instance / "index.py").is_file()
    assert (instance / "mpsflow" / "py.typed").is_file()

    key = "scf-notify-key"
    seed = json.loads(
        (clone / "examples" / "notifications" / "01_workflow_task_seed_verbatim.json").read_bytes()
    )
    events = tmp_path / "events"
    events.mkdir()
    (events / "signed.json").write_text(json.dumps(sign_payload(copy.deepcopy(seed), key)))
    (events / "unsigned.json").write_text(json.dumps(seed))
    run_env = {
        **env,
        "PYTHONPATH": str(instance),
        "MPS_NOTIFY_KEYS": key,
        "MPSFLOW_DEAD_LETTERS": str(tmp_path / "dead.jsonl"),
        "MPSFLOW_OUTPUTS": str(tmp_path / "outputs.jsonl"),
    }
    invoked = run_ok(
        [
            sys.executable,
            "-c",
            INVOKE,
            str(events / "signed.json"),
            str(events / "unsigned.json"),
            json.dumps(CONTEXT),
        ],
        instance,
        run_env,
        timeout=120,
    )
    answer = json.loads(invoked.stdout.splitlines()[-1])
    assert Path(answer["mpsflow"]).is_relative_to(instance)
    assert Path(answer["index"]).is_relative_to(instance)
    task_id = seed["WorkflowTaskEvent"]["TaskId"]
    assert answer["signed"] == {"status": "ok", "taskId": task_id, "handlers": 1}
    assert answer["unsigned"]["status"] == "rejected"
    assert len(lines(tmp_path / "outputs.jsonl")) == 4
    assert [r["kind"] for r in lines(tmp_path / "dead.jsonl")] == ["signature"]

    # "Try it locally", verbatim, in the unpacked folder (no MPS_NOTIFY_KEYS: nothing is checked)
    edit = clone / "examples" / "notifications" / "06_edit_media_task_success.json"
    shutil.copy(edit, instance / "notification.json")
    local_env = {k: v for k, v in run_env.items() if k != "MPS_NOTIFY_KEYS"}
    tried = run_ok(
        [sys.executable, "-c", block("Try it locally", path=SCF_README)],
        instance,
        local_env,
        timeout=120,
    )
    assert "'status': 'ok'" in tried.stdout
