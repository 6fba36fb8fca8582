"""``mpsflow deadletters`` on a rotated dead-letter file holding refusals that kept only an
excerpt of their body: every file is read, ``show`` says what was kept, ``replay`` refuses to
send an excerpt."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from mpsflow import App, Context, RetryPolicy
from mpsflow.cli import main
from mpsflow.cli.deadletters import read_dead_letters
from mpsflow.clock import FakeClock
from mpsflow.deadletter import DeadLetterLimits
from mpsflow.delivery import Delivery
from mpsflow.signing import sign_notification
from mpsflow.sinks.jsonl import JsonlSink, jsonl_files
from mpsflow.testing import build_notification, media_result

KEY = "the-real-notify-key"
NOW = 1_700_000_000
BIG = 100_000


def _body(task_id: str, key: str = KEY, pad: int = 0) -> bytes:
    payload: dict[str, Any] = build_notification(
        task_id=task_id, media_results=[media_result("Transcode", output={"Path": "/o.mp4"})]
    )
    if pad:
        payload["Pad"] = "z" * pad
    return sign_notification(json.dumps(payload).encode(), key, expires_at=NOW + 3600)


FORGED = _body("forged", key="wrong-key", pad=BIG)
POISON = b'{"EventType": "WorkflowTask", "Pad": "' + b"q" * BIG
BROKEN = _body("task-x", pad=BIG)


async def _write(path: Path) -> None:
    """A forged request, a large poison body and a failing real notification, in files
    rotated at 8 KiB: the two refusals' excerpts share one, the whole failing body (100 KB)
    starts the next."""
    clock = FakeClock(NOW)
    app = App(
        dead_letters=JsonlSink(path, rotate_bytes=8 * 1024),
        notify_keys=[KEY],
        retry=RetryPolicy(max_attempts=1),
        clock=clock,
        dead_letter_limits=DeadLetterLimits(),
    )

    @app.on("WorkflowTask")
    async def broken(event: Any, ctx: Context) -> None:
        raise RuntimeError("bug")

    async with app:
        for name, body in (("forged", FORGED), ("poison", POISON), ("broken", BROKEN)):
            meta = {"remote": "203.0.113.9"}
            await app.process(Delivery(body, source="http", id=f"req-{name}", meta=meta))
            clock.advance(60.0)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    file = tmp_path / "dead.jsonl"
    anyio.run(_write, file)
    return file


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["deadletters", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_records_are_spread_over_rotated_files_and_read_as_one(path: Path) -> None:
    assert [f.name for f in jsonl_files(path)] == ["dead.jsonl.1", "dead.jsonl"]
    records = read_dead_letters(path)
    assert [r.kind for r in records] == ["signature", "poison", "exhausted"]
    forged, poison, broken = records
    assert [forged.body_truncated, poison.body_truncated, broken.body_truncated] == [
        True,
        True,
        False,
    ]
    assert forged.body_size == len(FORGED)
    assert forged.body_sha256 == hashlib.sha256(FORGED).hexdigest()
    assert broken.raw_body() == BROKEN


def test_list_reads_the_rotated_files(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", str(path))
    assert code == 0
    assert out.splitlines()[-1] == (
        "3 dead letter(s): exhausted 1, poison 1, signature 1; read with its 1 rotated file(s)"
    )
    path.unlink()  # only rotated files left
    code, out, _ = run(capsys, "list", str(path))
    assert code == 0
    assert out.splitlines()[-1].startswith("2 dead letter(s)")


def test_show_says_the_body_is_an_excerpt(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    forged = read_dead_letters(path)[0]
    code, out, _ = run(capsys, "show", str(path), forged.id[:8])
    assert code == 0
    kept = len(forged.raw_body())
    digest = hashlib.sha256(FORGED).hexdigest()
    assert (
        f"body:     first {kept} of {len(FORGED)} bytes (an excerpt: not replayable),"
        f" not JSON, sha256 {digest}"
    ) in out.splitlines()


def test_replay_leaves_excerpts_out_and_says_so(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    forged, poison, broken = read_dead_letters(path)
    code, out, _ = run(capsys, "replay", str(path), "--to", "http://127.0.0.1:9/", "--dry-run")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == (
        f"{forged.id[:8]}  signature  WorkflowTask  forged  not replayable: only the first"
        f" {len(forged.raw_body())} of {len(FORGED)} bytes of its body were kept"
    )
    assert lines[1].startswith(f"{poison.id[:8]}  poison  ")
    assert "not replayable" in lines[1]
    assert lines[2].startswith(f"{broken.id[:8]}  exhausted  WorkflowTask  task-x  would POST")
    assert lines[-1] == (
        "dry run: 1 would be replayed, 2 not replayable (only an excerpt of the body was kept)"
    )


def test_replay_of_an_excerpt_named_by_id_is_an_error(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    forged = read_dead_letters(path)[0]
    code, out, err = run(capsys, "replay", str(path), forged.id[:8], "--to", "http://127.0.0.1:9/")
    assert code == 2
    assert out == ""
    assert err == (
        f"mpsflow deadletters replay: error: dead letter {forged.id[:8]} (signature) cannot be"
        f" replayed: only the first {len(forged.raw_body())} of {len(FORGED)} bytes of its"
        " body were kept (a refused request is recorded with an excerpt only)\n"
    )
