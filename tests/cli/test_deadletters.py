"""``mpsflow deadletters list|show|replay`` on dead letters written by a real running app."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import pytest
from aiohttp import web

from mpsflow import App, Context, Reject, RetryPolicy
from mpsflow.app import DEFAULT_DEAD_LETTER_PATH
from mpsflow.cli import main
from mpsflow.cli.deadletters import read_dead_letters, redact, utc_time
from mpsflow.clock import FakeClock
from mpsflow.deadletter import DeadLetter, DeadLetterLimits, make_dead_letter
from mpsflow.delivery import Delivery
from mpsflow.signing.verifier import DEFAULT_MAX_LIFETIME, DEFAULT_SKEW, VerifyReason
from mpsflow.sinks.jsonl import JsonlSink
from mpsflow.sinks.memory import MemorySink
from mpsflow.testing import build_notification, media_result
from tests.cli.test_decode import closed_pipe
from tests.modules import run_ok
from tests.plugins.samples import SAMPLE_KEY
from tests.sinks.peers import serve

ROOT = Path(__file__).resolve().parents[2]
START = 1_700_000_000.0  # 2023-11-14T22:13:20Z
HOUR = 3600.0
S3_ID = "AKID-s3-secret-id-value"
S3_KEY = "s3-secret-key-value"
OLD_SIGN = hashlib.md5(f"{int(START) + 600}{SAMPLE_KEY}".encode()).hexdigest()

REPLAY_APP = """
from mpsflow import App, RetryPolicy
from mpsflow.sinks.memory import MemorySink

SEEN = []
OWN_DEAD_LETTERS = MemorySink()
app = App(dead_letters=OWN_DEAD_LETTERS, retry=RetryPolicy(max_attempts=RETRIES))


@app.on("WorkflowTask")
async def fixed(event, ctx):
    SEEN.append((ctx.task_id, ctx.delivery.source, ctx.delivery.id))
    if ctx.task_id == "task-b":
        raise RuntimeError("still broken")
"""


def _body(task_id: str, **kwargs: Any) -> bytes:
    payload = build_notification(
        task_id=task_id,
        media_results=[media_result("Transcode", output={"Path": "/out/a.mp4"})],
        **kwargs,
    )
    return json.dumps(payload, ensure_ascii=False).encode()


def _s3_body() -> bytes:
    """A signed notification carrying S3 credentials, as MPS sends for AWS-S3 inputs."""
    s3 = {
        "Type": "AWS-S3",
        "S3InputInfo": {
            "S3Bucket": "bucket",
            "S3Region": "us-east-1",
            "S3Object": "/in/a.mp4",
            "S3SecretId": S3_ID,
            "S3SecretKey": S3_KEY,
        },
    }
    return _body(
        "task-a", event={"InputInfo": s3}, sign_key=SAMPLE_KEY, expires_at=int(START) + 600
    )


BODIES: list[tuple[str, bytes]] = [
    ("a", _s3_body()),
    ("b", _body("task-b")),
    ("c", _body("reject-c")),
    ("poison", b"{not json"),
    ("binary", b"\xff\xfe\x00garbage"),
]


async def _write_dead_letters(path: Path) -> None:
    """Run an app whose handler fails on every body, one hour apart on a fake clock."""
    clock = FakeClock(START)
    app = App(dead_letters=JsonlSink(path), retry=RetryPolicy(max_attempts=1), clock=clock)

    @app.on("WorkflowTask", name="transcode_done")
    async def transcode_done(event: Any, ctx: Context) -> None:
        if ctx.task_id.startswith("reject"):
            raise Reject("input is unusable")
        raise RuntimeError(f"bug for {ctx.task_id}")

    async with app:
        for name, body in BODIES:
            await app.process(Delivery(body, source="http", id=f"req-{name}"))
            clock.advance(HOUR)


@dataclass
class Letters:
    path: Path
    ids: dict[str, str] = field(default_factory=dict)
    """``a``, ``b``, ``c``, ``poison``, ``binary`` → record id."""


@pytest.fixture
def letters(tmp_path: Path) -> Letters:
    path = tmp_path / "dl.jsonl"
    anyio.run(_write_dead_letters, path)
    records = read_dead_letters(path)
    assert len(records) == len(BODIES)
    return Letters(path, {name: r.id for (name, _), r in zip(BODIES, records, strict=True)})


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["deadletters", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_misspelt_option_of_an_action_gets_its_usage_and_a_guess(
    letters: Letters, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["deadletters", "list", "--pendng", str(letters.path)])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.startswith("usage: mpsflow deadletters list ")
    assert err.splitlines()[-1] == (
        "mpsflow deadletters list: error: unrecognized arguments: --pendng (did you mean"
        " --pending?)"
    )


def rows(out: str) -> list[str]:
    """The record lines of ``list`` (no header, no summary)."""
    return out.splitlines()[1:-1]


# -- list -------------------------------------------------------------------------------------


def test_records_keep_the_raw_bodies(letters: Letters) -> None:
    records = read_dead_letters(letters.path)
    assert [r.raw_body() for r in records] == [body for _, body in BODIES]
    assert [r.kind for r in records] == ["exhausted", "exhausted", "rejected", "poison", "poison"]
    assert records[-1].body_encoding == "base64"


def test_list_shows_one_line_per_record_and_counts(
    letters: Letters, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "list", str(letters.path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "TIME",
        "ID",
        "KIND",
        "EVENT",
        "TASK",
        "ATTEMPT",
        "FAILURE",
        "REPLAYED",
        "REASON",
    ]
    first = lines[1].split()
    assert first[:9] == [
        "2023-11-14T22:13:20Z",
        letters.ids["a"][:8],
        "exhausted",
        "WorkflowTask",
        "task-a",
        "1",
        "transcode_done:RuntimeError",
        "-",  # not replayed: there is no FILE.replayed
        "1",
    ]
    assert "still failing after 1 attempt(s)" in lines[1]
    assert "transcode_done:Reject" in lines[3]
    assert lines[4].split()[2:5] == ["poison", "-", "-"]
    assert lines[-1] == "5 dead letter(s): exhausted 2, rejected 1, poison 2"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--kind", "poison"], ["poison", "binary"]),
        (["--task", "task-b"], ["b"]),
        (["--since", "2023-11-14T23:13:20Z"], ["b", "c", "poison", "binary"]),
        (["--since", "2023-11-15T08:13:20+08:00"], ["c", "poison", "binary"]),
        (["--since", "2023-11-15T01:13:20"], ["poison", "binary"]),  # no offset: UTC
        (["--last", "2"], ["poison", "binary"]),
        (["--kind", "exhausted", "--last", "1"], ["b"]),
    ],
)
def test_list_filters(
    letters: Letters, capsys: pytest.CaptureFixture[str], flags: list[str], expected: list[str]
) -> None:
    code, out, _ = run(capsys, "list", str(letters.path), *flags)
    assert code == 0
    assert [line.split()[1] for line in rows(out)] == [letters.ids[n][:8] for n in expected]
    assert out.splitlines()[-1].startswith(f"{len(expected)} dead letter(s) (of 5): ")


def test_list_with_no_match_says_so(letters: Letters, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", str(letters.path), "--task", "nope")
    assert code == 0
    assert out == "0 dead letter(s) (of 5)\n"


def test_list_json_prints_the_records(letters: Letters, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", str(letters.path), "--json", "--kind", "exhausted")
    assert code == 0
    printed = [msgspec.json.decode(line, type=DeadLetter) for line in out.splitlines()]
    assert printed == read_dead_letters(letters.path)[:2]
    assert [json.loads(line)["replayed_at"] for line in out.splitlines()] == [None, None]


@pytest.mark.parametrize(
    "flags", [["--since", "yesterday"], ["--last", "0"], ["--since", "2024-01-01", "--last", "1"]]
)
def test_list_rejects_bad_options(
    letters: Letters, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["deadletters", "list", str(letters.path), *flags])
    assert exited.value.code == 2
    capsys.readouterr()


# -- show -------------------------------------------------------------------------------------


def test_show_prints_the_whole_record_with_secrets_masked(
    letters: Letters, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "show", str(letters.path), letters.ids["a"][:6])
    assert code == 0
    expected = [
        f"id:       {letters.ids['a']}",
        "time:     2023-11-14T22:13:20Z (1700000000.0)",
        "delivery: req-a",
        "  1. handler transcode_done (key WorkflowTask): error RuntimeError",
        "     message: RuntimeError: bug for task-a",
        "Traceback (most recent call last):",
        'raise RuntimeError(f"bug for {ctx.task_id}")',
        "JSON, secrets redacted",
        '    "EventType": "WorkflowTask",',  # pretty-printed, indented
        '"S3SecretKey": "<redacted>"',
    ]
    assert [text for text in expected if text not in out] == []
    assert '"Sign": "<redacted>"' in out
    assert '"Timestamp": 1700000600' in out
    for secret in (S3_ID, S3_KEY, OLD_SIGN):
        assert secret not in out


def test_show_non_json_bodies(letters: Letters, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", str(letters.path), letters.ids["poison"])
    assert code == 0
    assert "kind:     poison" in out
    assert "failures: 1" in out
    assert "body:     9 bytes, not JSON" in out
    assert out.endswith("  {not json\n")
    code, out, _ = run(capsys, "show", str(letters.path), letters.ids["binary"][:10].upper())
    assert code == 0
    assert "body:     10 bytes, not UTF-8 (base64)" in out
    assert "//4AZ2FyYmFnZQ==" in out


async def _write_torn(path: Path, body: bytes) -> None:
    async with App(dead_letters=JsonlSink(path)) as app:
        await app.process(Delivery(body, source="http"))


def test_show_masks_secrets_in_a_torn_body(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "torn.jsonl"
    torn = f'{{"Sign": "{OLD_SIGN}", "S3SecretKey": "{S3_KEY}'.encode()
    anyio.run(_write_torn, path, torn)
    [record] = read_dead_letters(path)
    code, out, _ = run(capsys, "show", str(path), record.id)
    assert code == 0
    assert "not JSON" in out
    assert '{"Sign": "<redacted>", "S3SecretKey": "<redacted>"' in out
    assert OLD_SIGN not in out
    assert S3_KEY not in out


def test_show_errors_on_unknown_and_ambiguous_ids(
    letters: Letters, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "show", str(letters.path), "zzzz")
    assert code == 2
    assert "no dead letter with id 'zzzz'" in err
    # Two records whose ids share a prefix: a short prefix is ambiguous, a longer one is not.
    records = read_dead_letters(letters.path)
    twins = tmp_path / "twins.jsonl"
    twins.write_bytes(
        b"".join(
            msgspec.json.encode(msgspec.structs.replace(r, id=new_id)) + b"\n"
            for r, new_id in zip(records, ["abc1" + "0" * 28, "abc2" + "0" * 28], strict=False)
        )
    )
    code, _, err = run(capsys, "show", str(twins), "abc")
    assert code == 2
    assert "matches 2 dead letters" in err
    code, out, _ = run(capsys, "show", str(twins), "abc2")
    assert code == 0
    assert "task:     task-b" in out


@pytest.mark.parametrize(
    "args",
    [
        ["list", "{path}"],
        ["show", "{path}", "abc"],
        ["replay", "{path}", "--to", "http://127.0.0.1:9/"],
    ],
)
def test_a_missing_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    path = str(tmp_path / "absent.jsonl")
    code, out, err = run(capsys, *[a.format(path=path) for a in args])
    assert code == 2
    assert out == ""
    assert f"no dead-letter file at {path}" in err


@pytest.mark.parametrize("folder", [".", "/", "..", "named", ""])
@pytest.mark.parametrize(
    "args",
    [
        ["list", "{path}"],
        ["show", "{path}", "abc"],
        ["replay", "{path}", "--to", "http://127.0.0.1:9/"],
    ],
)
def test_a_folder_is_a_usage_error_naming_the_file_to_give(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    folder: str,
    args: list[str],
) -> None:
    """``.`` and ``/`` (no name to add ``.1`` or ``.replayed`` to) are refused as a named folder
    is: one line, exit 2; the app's default file is named when the folder holds it."""
    (tmp_path / "named").mkdir()
    (tmp_path / DEFAULT_DEAD_LETTER_PATH).write_text("")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *[a.format(path=folder) for a in args])
    assert (code, out) == (2, ""), err
    [line] = err.splitlines()
    shown = folder or "."
    assert line.startswith(f"mpsflow deadletters {args[0]}: error: {shown} is a folder: "), line
    default_file = os.path.join(shown, DEFAULT_DEAD_LETTER_PATH)
    assert (default_file in line) == (shown == "."), line


def test_a_file_of_something_else_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.jsonl"
    other.write_text('{"hello": "world"}\n')
    code, _, err = run(capsys, "list", str(other))
    assert code == 2
    assert "record 1 is not a dead letter" in err


def test_redact_masks_secret_fields_at_any_depth() -> None:
    document = {"Sign": "x", "A": [{"S3SecretId": "y", "S3SecretKey": None}], "Timestamp": 1}
    assert redact(document) == {
        "Sign": "<redacted>",
        "A": [{"S3SecretId": "<redacted>", "S3SecretKey": None}],
        "Timestamp": 1,
    }


# -- replay --app -----------------------------------------------------------------------------


@pytest.fixture(params=[1])
def replay_app(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A fixed app module on ``sys.path`` (its retry policy's ``max_attempts`` the param),
    run from ``tmp_path`` as ``mpsflow`` would be from a project folder; yields its
    ``MODULE:APP``."""
    name = f"replay_app_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{name}.py").write_text(REPLAY_APP.replace("RETRIES", str(request.param)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield f"{name}:app"
    sys.modules.pop(name, None)


def seen(spec: str) -> list[tuple[str, str, str]]:
    module = sys.modules[spec.partition(":")[0]]
    result: list[tuple[str, str, str]] = module.SEEN
    return result


def journal(letters: Letters) -> list[str]:
    path = letters.path.with_name("dl.jsonl.replayed")
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_replay_into_an_app(
    letters: Letters, replay_app: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = letters.path.read_bytes()
    code, out, _ = run(capsys, "replay", str(letters.path), "--app", replay_app)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"{letters.ids['a'][:8]}  exhausted  WorkflowTask  task-a  -> ack")
    assert lines[0].endswith("ok")
    assert lines[1].startswith(
        f"{letters.ids['b'][:8]}  exhausted  WorkflowTask  task-b  -> dead_lettered"
    )
    assert lines[1].endswith("FAILED")
    assert lines[-1] == (
        "replay: 1 succeeded, 1 failed, "
        "3 not tried (stopped at the first failure; --keep-going goes on)"
    )
    assert seen(replay_app) == [
        ("task-a", "replay", letters.ids["a"]),
        ("task-b", "replay", letters.ids["b"]),
    ]
    assert journal(letters) == [letters.ids["a"]]
    assert (tmp_path / "mpsflow-dedup.sqlite3").is_file()  # the store `mpsflow run` uses

    # Again, going on after failures: task-a is skipped, the rest tried.
    code, out, _ = run(capsys, "replay", str(letters.path), "--app", replay_app, "--keep-going")
    assert code == 1
    assert out.splitlines()[0].startswith(f"{letters.ids['a'][:8]}  exhausted")
    assert "skipped: replayed at " in out.splitlines()[0]
    assert out.count("FAILED") == 3  # task-b still broken; the two poison bodies still poison
    assert "-> ack" in out  # reject-c: the fixed app takes it
    assert out.splitlines()[-1] == (
        "replay: 1 succeeded, 3 failed, 1 skipped (replayed before; --force replays them again)"
    )
    assert journal(letters) == [letters.ids["a"], letters.ids["c"]]

    # --force sends a recorded one again; ids select records. Its handler succeeded before,
    # and the dedup store remembers it: the delivery is acked without running it again.
    code, out, _ = run(
        capsys, "replay", str(letters.path), letters.ids["a"][:8], "--app", replay_app, "--force"
    )
    assert code == 0
    assert "-> ack (already done: the dedup store remembers its handlers)  ok" in out
    assert out.splitlines()[-1] == "replay: 1 succeeded, 0 failed"
    tasks = [task for task, _, _ in seen(replay_app)]
    assert tasks == ["task-a", "task-b", "reject-c", "task-b"]  # b's newer version is last
    # The file was only appended to (the failed records' newer versions), and still holds
    # five dead letters: the ones that failed again were updated, not duplicated.
    assert letters.path.read_bytes().startswith(before)
    records = {r.id: r for r in read_dead_letters(letters.path)}
    assert set(records) == set(letters.ids.values())
    assert records[letters.ids["b"]].attempt == 3  # 1, then two replays
    assert records[letters.ids["poison"]].attempt == 2
    assert records[letters.ids["a"]].attempt == 1  # replayed fine: as it was
    module = sys.modules[replay_app.partition(":")[0]]
    assert module.OWN_DEAD_LETTERS.records == []  # nothing went to the app's own sink
    assert module.app.dead_letter_sink is module.OWN_DEAD_LETTERS  # and it is the app's again


def test_a_replay_that_fails_again_updates_the_record_and_the_next_sends_it_once(
    letters: Letters, replay_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    b = letters.ids["b"]
    original = {r.id: r for r in read_dead_letters(letters.path)}[b]
    for replay in (1, 2, 3):
        code, out, _ = run(capsys, "replay", str(letters.path), b, "--app", replay_app)
        assert code == 1
        assert out.splitlines()[-1] == "replay: 0 succeeded, 1 failed"
        assert [task for task, _, _ in seen(replay_app)] == ["task-b"] * replay  # once each time
        records = read_dead_letters(letters.path)
        assert len(records) == len(BODIES)
        [record] = [r for r in records if r.id == b]
        assert record.attempt == original.attempt + replay
        # The replay's failure, not the first one.
        assert [f.message for f in original.failures] == ["RuntimeError: bug for task-b"]
        assert [f.message for f in record.failures] == ["RuntimeError: still broken"]
        assert (record.body, record.source, record.delivery_id) == (
            original.body,
            original.source,
            original.delivery_id,
        )
    code, out, _ = run(capsys, "list", str(letters.path))
    assert out.splitlines()[-1] == "5 dead letter(s): exhausted 2, rejected 1, poison 2"
    assert out.splitlines()[-2].split()[1] == b[:8]  # the latest version: listed last
    assert out.splitlines()[-2].split()[5] == "4"  # attempts: 1 and three replays


def test_the_app_logs_the_id_of_the_record_its_replay_updates(
    letters: Letters,
    replay_app: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The app's own line about a dead letter it writes during a replay names the replayed
    record, the one ``show`` finds, not a new id; a normal run names the new record's id."""
    written = [r for r in caplog.get_records("setup") if r.name == "mpsflow.deadletter"]
    assert [getattr(r, "dead_letter_id", None) for r in written] == list(letters.ids.values())
    b, poison = letters.ids["b"], letters.ids["poison"]
    caplog.set_level(logging.WARNING, logger="mpsflow.deadletter")
    for replayed in (b, poison):  # exhausted again; refused as poison again
        caplog.clear()
        assert run(capsys, "replay", str(letters.path), replayed, "--app", replay_app)[0] == 1
        [line] = [r for r in caplog.records if r.name == "mpsflow.deadletter"]
        assert getattr(line, "dead_letter_id", None) == replayed
        assert replayed in line.getMessage()
        code, out, _ = run(capsys, "show", str(letters.path), replayed)
        assert code == 0
        assert out.splitlines()[0].split() == ["id:", replayed]
    records = {r.id: r for r in read_dead_letters(letters.path)}
    assert set(records) == set(letters.ids.values())  # updated, not added
    assert (records[b].attempt, records[poison].attempt) == (2, 2)


def test_a_replay_updates_every_poison_record_past_the_refusal_limit(
    tmp_path: Path, replay_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refusal's records are limited per sender (20 a minute by default), and a replay's
    deliveries all come from one ("replay"); a replayed record's refusal updates it, so no
    limit applies and none of them keeps its old attempt count."""
    path = tmp_path / "poison.jsonl"
    count = DeadLetterLimits().per_peer_per_minute
    assert count is not None
    unlimited = DeadLetterLimits(per_peer_per_minute=None, total_per_minute=None)

    async def write() -> None:
        async with App(dead_letters=JsonlSink(path), dead_letter_limits=unlimited) as app:
            for n in range(int(count) + 5):
                await app.process(Delivery(b"{poison %d" % n, source="http", id=f"req-{n}"))

    anyio.run(write)
    before = read_dead_letters(path)
    assert len(before) == count + 5
    code, out, _ = run(capsys, "replay", str(path), "--app", replay_app, "--keep-going")
    assert code == 1
    assert len(out.splitlines()) >= count + 5
    after = read_dead_letters(path)
    assert {r.id for r in after} == {r.id for r in before}  # updated, not added
    assert [r.attempt for r in after] == [2] * (int(count) + 5)


@pytest.mark.parametrize("replay_app", [3], indirect=True)
def test_a_replay_that_asks_for_a_retry_leaves_the_record_as_it_was(
    letters: Letters, replay_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = letters.path.read_bytes()
    code, out, _ = run(capsys, "replay", str(letters.path), letters.ids["b"], "--app", replay_app)
    assert code == 1
    assert f"{letters.ids['b'][:8]}  exhausted  WorkflowTask  task-b  -> retry" in out
    assert letters.path.read_bytes() == before  # no new version: nothing was dead-lettered


def test_replay_appends_so_a_running_app_loses_no_dead_letter(
    letters: Letters, replay_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def scenario() -> None:
        # A running app holds the file open for appending: its writes and the replay's
        # updates go to the same file, one after another.
        async with App(dead_letters=JsonlSink(letters.path)) as running:
            await running.process(Delivery(b"{poison before", source="http", id="before"))
            code = await anyio.to_thread.run_sync(
                main,
                ["deadletters", "replay", str(letters.path), "--app", replay_app, "--keep-going"],
            )
            assert code == 1
            await running.process(Delivery(b"{poison after", source="http", id="after"))

    anyio.run(scenario)
    capsys.readouterr()
    records = read_dead_letters(letters.path)
    assert len(records) == len(BODIES) + 2
    assert {"before", "after"} <= {r.delivery_id for r in records}
    assert [task for task, _, _ in seen(replay_app)] == ["task-a", "task-b", "reject-c"]


def test_a_record_dead_lettered_again_after_its_replay_is_replayed_again(
    letters: Letters, replay_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    a = letters.ids["a"]
    assert run(capsys, "replay", str(letters.path), a, "--app", replay_app)[0] == 0
    code, out, _ = run(capsys, "replay", str(letters.path), a, "--app", replay_app)
    assert code == 0
    assert "skipped: replayed at " in out
    # A newer version of the record, written after the replay (a --force replay that failed):
    # the record is pending again.
    [record] = [r for r in read_dead_letters(letters.path) if r.id == a]
    newer = msgspec.structs.replace(record, time=time.time() + 1, attempt=2)
    with letters.path.open("ab") as file:
        file.write(msgspec.json.encode(newer) + b"\n")
    code, out, _ = run(capsys, "replay", str(letters.path), a, "--app", replay_app, "--no-dedup")
    assert code == 0
    assert out.splitlines()[-1] == "replay: 1 succeeded, 0 failed"
    assert [task for task, _, _ in seen(replay_app)] == ["task-a", "task-a"]


def test_replay_dedup_options(
    letters: Letters, replay_app: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = letters.ids["a"]
    store = tmp_path / "elsewhere" / "dedup.sqlite3"
    store.parent.mkdir()
    code, _, _ = run(
        capsys, "replay", str(letters.path), a, "--app", replay_app, "--dedup", str(store)
    )
    assert code == 0
    assert store.is_file()
    assert not (tmp_path / "mpsflow-dedup.sqlite3").exists()
    # The same store: the handler is not run again.
    argv = ["replay", str(letters.path), a, "--app", replay_app, "--force"]
    assert run(capsys, *argv, "--dedup", str(store))[0] == 0
    assert len(seen(replay_app)) == 1
    # --no-dedup: every handler runs again, as before dedup existed.
    assert run(capsys, *argv, "--no-dedup")[0] == 0
    assert len(seen(replay_app)) == 2
    assert not (tmp_path / "mpsflow-dedup.sqlite3").exists()
    # With --to, the app behind the URL has its own store: the options are refused.
    code, _, err = run(
        capsys, "replay", str(letters.path), "--to", "http://127.0.0.1:9/", "--no-dedup"
    )
    assert code == 2
    assert "--dedup and --no-dedup go with --app" in err


def test_replay_selects_by_kind_and_refuses_unknown_ids(
    letters: Letters, replay_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "replay", str(letters.path), "--kind", "rejected", "--app", replay_app
    )
    assert code == 0
    assert out.splitlines()[-1] == "replay: 1 succeeded, 0 failed"
    code, _, err = run(capsys, "replay", str(letters.path), "nope", "--app", replay_app)
    assert code == 2
    assert "no dead letter with id 'nope'" in err
    code, _, err = run(capsys, "replay", str(letters.path), "--app", "no_such_module:app")
    assert code == 2
    assert "cannot import module 'no_such_module'" in err


# -- list and show after a replay ------------------------------------------------------------


def journal_times(letters: Letters) -> dict[str, float]:
    """Record id → replay time, as ``replay`` wrote them to ``FILE.replayed``."""
    path = letters.path.with_name("dl.jsonl.replayed")
    return {e["id"]: e["time"] for e in map(json.loads, path.read_text().splitlines())}


def listed(out: str) -> dict[str, str]:
    """Short id → the REPLAYED column of ``list``'s text output."""
    return {line.split()[1]: line.split()[7] for line in rows(out)}


def test_list_and_show_mark_what_a_replay_noted(
    letters: Letters, replay_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(capsys, "replay", str(letters.path), "--app", replay_app, "--keep-going")
    assert code == 1  # task-b and the two poison bodies fail again; a and reject-c succeed
    times = journal_times(letters)
    assert set(times) == {letters.ids["a"], letters.ids["c"]}
    short = {name: record_id[:8] for name, record_id in letters.ids.items()}

    code, out, _ = run(capsys, "list", str(letters.path))
    assert code == 0
    assert out.splitlines()[0].split()[7] == "REPLAYED"
    assert listed(out) == {
        short["a"]: utc_time(times[letters.ids["a"]]),
        short["b"]: "-",
        short["c"]: utc_time(times[letters.ids["c"]]),
        short["poison"]: "-",
        short["binary"]: "-",
    }
    assert out.splitlines()[-1] == (
        "5 dead letter(s): exhausted 2, rejected 1, poison 2; 2 replayed (replay skips them)"
    )

    code, out, _ = run(capsys, "list", str(letters.path), "--json")
    assert code == 0
    printed = [json.loads(line) for line in out.splitlines()]
    assert {d["id"]: d["replayed_at"] for d in printed} == {
        letters.ids["a"]: times[letters.ids["a"]],
        letters.ids["b"]: None,
        letters.ids["c"]: times[letters.ids["c"]],
        letters.ids["poison"]: None,
        letters.ids["binary"]: None,
    }
    # Otherwise the records as they are stored.
    stored = {r.id: r for r in read_dead_letters(letters.path)}
    assert [msgspec.convert(d, DeadLetter) for d in printed] == [stored[d["id"]] for d in printed]

    code, out, _ = run(capsys, "list", str(letters.path), "--pending")
    assert code == 0
    assert set(listed(out)) == {short["b"], short["poison"], short["binary"]}
    assert set(listed(out).values()) == {"-"}
    assert out.splitlines()[-1] == "3 dead letter(s) (of 5): exhausted 1, poison 2"
    code, out, _ = run(capsys, "list", str(letters.path), "--pending", "--kind", "exhausted")
    assert list(listed(out)) == [short["b"]]
    code, out, _ = run(capsys, "list", str(letters.path), "--pending", "--json")
    assert {json.loads(line)["id"] for line in out.splitlines()} == {
        letters.ids[name] for name in ("b", "poison", "binary")
    }

    code, out, _ = run(capsys, "show", str(letters.path), short["a"])
    assert code == 0
    assert f"replayed: {utc_time(times[letters.ids['a']])} " in out
    code, out, _ = run(capsys, "show", str(letters.path), short["b"])
    assert code == 0
    assert "replayed: no\n" in out

    # What list marks is what replay skips: nothing is left but the pending ones.
    code, out, _ = run(capsys, "replay", str(letters.path), "--app", replay_app, "--dry-run")
    assert code == 0
    assert {line.split()[0] for line in out.splitlines() if "  would " in line} == {
        short["b"],
        short["poison"],
        short["binary"],
    }


def test_a_record_dead_lettered_again_after_its_replay_is_listed_as_pending(
    letters: Letters, replay_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    a = letters.ids["a"]
    assert run(capsys, "replay", str(letters.path), a, "--app", replay_app)[0] == 0
    [replayed] = journal_times(letters).values()
    [record] = [r for r in read_dead_letters(letters.path) if r.id == a]
    newer = msgspec.structs.replace(record, time=replayed + 1, attempt=2)
    with letters.path.open("ab") as file:
        file.write(msgspec.json.encode(newer) + b"\n")
    code, out, _ = run(capsys, "list", str(letters.path))
    assert code == 0
    assert listed(out)[a[:8]] == "-"
    code, out, _ = run(capsys, "list", str(letters.path), "--pending")
    assert a[:8] in listed(out)
    assert out.splitlines()[-1] == "5 dead letter(s): exhausted 2, rejected 1, poison 2"
    code, out, _ = run(capsys, "list", str(letters.path), "--json", "--task", "task-a")
    assert json.loads(out)["replayed_at"] is None
    code, out, _ = run(capsys, "show", str(letters.path), a)
    assert f"replayed: no: dead-lettered again since its replay at {utc_time(replayed)}\n" in out


def test_list_reads_a_journal_with_a_torn_last_line_and_stray_lines(
    letters: Letters, capsys: pytest.CaptureFixture[str]
) -> None:
    a, c = letters.ids["a"], letters.ids["c"]
    journal_file = letters.path.with_name("dl.jsonl.replayed")
    entries = [
        {"id": a, "time": START + 10 * HOUR, "via": "http", "result": '200 {"code":0}'},
        [1, 2],  # not an entry: skipped
        {"time": START + 10 * HOUR},  # no id: skipped
    ]
    torn = json.dumps({"id": c, "time": START + 10 * HOUR})[:20]  # a write cut short
    journal_file.write_text("".join(json.dumps(e) + "\n" for e in entries) + torn)
    code, out, err = run(capsys, "list", str(letters.path))
    assert (code, err) == (0, "")
    marks = listed(out)
    assert marks.pop(a[:8]) == "2023-11-15T08:13:20Z"
    assert set(marks.values()) == {"-"}  # c's torn line does not count
    code, out, _ = run(capsys, "show", str(letters.path), a)
    assert code == 0
    assert "replayed: 2023-11-15T08:13:20Z " in out

    # A line in the middle that is not JSON is an error naming it, for list as for replay,
    # not a traceback.
    journal_file.write_text("{broken\n" + json.dumps(entries[0]) + "\n")
    path = str(letters.path)
    for argv in (
        ["list", path],
        ["show", path, a],
        ["replay", path, "--to", "http://127.0.0.1:9/"],
    ):
        code, out, err = run(capsys, *argv)
        assert (code, out) == (2, "")
        assert f"{journal_file}:1" in err


# -- replay --to ------------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    requests: list[tuple[bytes, str]] = field(default_factory=list)
    """Body and ``X-Request-Id`` of every POST."""


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    """A callback endpoint on loopback: ``{"code":0}``, but 500 for task-b."""
    state = Receiver("")

    async def callback(request: web.Request) -> web.Response:
        body = await request.read()
        state.requests.append((body, request.headers.get("X-Request-Id", "")))
        if b"task-b" in body:
            return web.json_response({"code": 500, "error": "still broken"}, status=500)
        return web.json_response({"code": 0})

    server = web.Application()
    server.router.add_post("/mps/callback", callback)
    async with serve(server) as base:
        state.url = f"{base}/mps/callback"
        yield state


async def run_in_thread(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``main`` runs its own event loop: run it beside the one serving the receiver."""
    code = await anyio.to_thread.run_sync(main, ["deadletters", *args])
    out, err = capsys.readouterr()
    return code, out, err


async def test_replay_posts_the_original_bodies(
    letters: Letters, capsys: pytest.CaptureFixture[str]
) -> None:
    async with receiver() as server:
        code, out, _ = await run_in_thread(
            capsys, "replay", str(letters.path), "--to", server.url, "--keep-going"
        )
    assert code == 1
    assert server.requests == [(body, letters.ids[name]) for name, body in BODIES]
    assert out.count('-> 200 {"code": 0}  ok') == 4
    assert '-> 500 {"code": 500, "error": "still broken"}  FAILED' in out
    assert out.splitlines()[-1] == "replay: 4 succeeded, 1 failed"
    assert set(journal(letters)) == set(letters.ids.values()) - {letters.ids["b"]}


async def test_replay_re_signs_when_asked(
    letters: Letters, capsys: pytest.CaptureFixture[str]
) -> None:
    earliest = int(time.time()) + 1234
    async with receiver() as server:
        code, out, err = await run_in_thread(
            capsys,
            "replay",
            str(letters.path),
            letters.ids["a"],
            letters.ids["binary"],
            "--to",
            server.url,
            "--sign-key",
            SAMPLE_KEY,
            "--expires-in",
            "1234",
        )
    latest = int(time.time()) + 1234
    assert code == 0, out + err
    (signed, _), (binary, _) = server.requests
    sent = json.loads(signed)
    original = json.loads(BODIES[0][1])
    assert earliest <= sent["Timestamp"] <= latest
    assert sent["Sign"] == hashlib.md5(f"{sent['Timestamp']}{SAMPLE_KEY}".encode()).hexdigest()
    assert {**sent, "Timestamp": 0, "Sign": ""} == {**original, "Timestamp": 0, "Sign": ""}
    assert list(sent) == list(original)  # same fields in the same order
    assert binary == BODIES[-1][1]  # not JSON: sent as it was
    assert "(re-signed)" in out
    assert (
        "(--sign-key cannot sign a body that is not JSON, so it goes as it was; signing would not"
        " help: it is no notification, which an app refuses signed or not)"
    ) in out
    assert SAMPLE_KEY not in out + err


def write_records(path: Path, records: list[DeadLetter]) -> None:
    """A dead-letter file of ``records``, one JSON line each."""
    path.write_bytes(b"".join(msgspec.json.encode(record) + b"\n" for record in records))


def dry_run_plan(out: str) -> dict[str, str]:
    """A dry run's line for each record, by the first 8 characters of its id (the lines that
    follow one, indented, left out)."""
    return {line[:8]: line for line in out.splitlines() if not line.startswith(" ")}


async def test_a_body_sign_key_cannot_sign_is_named_with_what_an_app_makes_of_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--sign-key`` signs a JSON object only: each other body goes as it was, and its line
    says what it is (a URL-encoded form, URL-encoded JSON, a JSON string, JSON of another kind,
    not JSON) and what an app that checks signatures makes of it, by what it carries."""
    now = int(time.time())
    unsigned = _body("task-form").decode()
    expired = _body("task-string", sign_key=SAMPLE_KEY, expires_at=int(START) + 600).decode()
    ahead = _body("task-ahead", sign_key=SAMPLE_KEY, expires_at=now + 2 * int(HOUR)).decode()
    fresh = _body("task-fresh", sign_key=SAMPLE_KEY, expires_at=now + 600).decode()
    refused = ": an app that checks signatures refuses it"
    cases = {
        b"payload=" + urllib.parse.quote(unsigned).encode(): (
            "a URL-encoded form, so it goes as it was, unsigned: an app that checks signatures"
            " refuses it unless it allows unsigned notifications"
        ),
        json.dumps(expired).encode(): (
            f"JSON that is a string, so it goes as it was, with its own signature, which has"
            f" expired{refused}"
        ),
        urllib.parse.quote(ahead).encode(): (
            "URL-encoded JSON, so it goes as it was, with its own signature, which expires too"
            f" far ahead{refused}"
        ),
        b"payload=" + urllib.parse.quote(fresh).encode(): (
            "a URL-encoded form, so it goes as it was, with its own signature: an app that checks"
            " signatures takes it only if one of its keys made it, and only until it expires"
        ),
        b"[1, 2]": (
            "JSON that is an array, so it goes as it was; signing would not help: it is no"
            " notification, which an app refuses signed or not"
        ),
    }
    records = [
        make_dead_letter(kind="exhausted", reason="bug", body=body, now=START) for body in cases
    ]
    path = tmp_path / "dl.jsonl"
    write_records(path, records)
    async with receiver() as server:
        code, out, err = await run_in_thread(
            capsys, "replay", str(path), "--to", server.url, "--sign-key", SAMPLE_KEY
        )
    assert code == 0, out + err
    assert [body for body, _ in server.requests] == list(cases)  # each as it was
    done = {line[:8]: line for line in out.splitlines()}
    for record, note in zip(records, cases.values(), strict=True):
        assert done[record.id[:8]].endswith(f"ok (--sign-key cannot sign {note})")


async def test_a_refused_signature_says_to_replay_with_a_key(
    letters: Letters, capsys: pytest.CaptureFixture[str]
) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"code": 401, "error": "signature mismatch"}, status=401)

    server = web.Application()
    server.router.add_post("/mps/callback", refuse)
    async with serve(server) as base:
        code, out, _ = await run_in_thread(
            capsys, "replay", str(letters.path), letters.ids["a"], "--to", f"{base}/mps/callback"
        )
    assert code == 1
    assert "401 " in out
    assert "(the app checks signatures: replay with --sign-key KEY, one of its keys)" in out


@pytest.fixture
def keyed_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The fixed app of ``replay_app`` checking signatures (``notify_keys``: ``SAMPLE_KEY``);
    yields its ``MODULE:APP``."""
    name = f"keyed_app_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{name}.py").write_text(
        REPLAY_APP.replace("RETRIES", "1").replace(
            "retry=RetryPolicy", f"notify_keys=[{SAMPLE_KEY!r}], retry=RetryPolicy"
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield f"{name}:app"
    sys.modules.pop(name, None)


def test_a_signature_the_app_refuses_says_to_replay_with_a_key(
    letters: Letters, keyed_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--app``, as ``--to``: the record's own signature expired long ago, and the app checks
    signatures; the dry run, which loads the app, says so plainly before anything is tried."""
    argv = ["replay", str(letters.path), letters.ids["a"], "--app", keyed_app]
    code, out, _ = run(capsys, *argv, "--dry-run")
    assert code == 0
    assert (
        "(its signature has expired; the app checks signatures: it will refuse this; replay"
        " with --sign-key KEY, one of its keys)"
    ) in out
    before = letters.path.read_bytes()
    code, out, _ = run(capsys, *argv)
    assert code == 1
    assert "rejected (signature expired; the app checks signatures: replay with --sign-key" in out
    # The refusal is the replay's, not the notification's: the record keeps its failure.
    assert letters.path.read_bytes() == before
    code, out, _ = run(capsys, *argv, "--sign-key", SAMPLE_KEY)
    assert code == 0, out
    assert "-> ack  ok (re-signed)" in out


def test_a_record_without_a_signature_is_flagged_as_the_app_refuses_it(
    letters: Letters,
    keyed_app: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unsigned body (no Timestamp/Sign) fails an app's signature check as an expired one
    does, and the dry run says so and what to do: a JSON one is re-signed with ``--sign-key``;
    a URL-encoded one cannot be. A body that is no notification is refused as poison whatever
    it carries: it is flagged as poison, not for its signature."""
    form = make_dead_letter(
        kind="exhausted",
        reason="bug",
        body=urllib.parse.quote(_body("form-d").decode()).encode(),
        now=START,
    )
    with letters.path.open("ab") as file:
        file.write(msgspec.json.encode(form) + b"\n")
    c, poison = letters.ids["c"], letters.ids["poison"]
    argv = ["replay", str(letters.path), c, poison, form.id, "--app", keyed_app, "--keep-going"]

    def lines(out: str) -> dict[str, str]:
        return {line[:8]: line for line in out.splitlines() if not line.startswith(" ")}

    code, out, _ = run(capsys, *argv, "--dry-run")
    assert code == 0
    planned = lines(out)
    assert planned[c[:8]].endswith(
        "(it carries no signature; the app checks signatures: it will refuse this; replay with"
        " --sign-key KEY, one of its keys)"
    )
    assert planned[form.id[:8]].endswith(
        "(it carries no signature; the app checks signatures: it will refuse this; --sign-key"
        " cannot sign it (not a JSON object))"
    )
    assert f"would process with {keyed_app} (the app refused it as poison" in planned[poison[:8]]
    assert "signature" not in planned[poison[:8]]

    before = {r.id: r for r in read_dead_letters(letters.path)}
    caplog.set_level(logging.WARNING, logger="mpsflow.signing")
    code, out, _ = run(capsys, *argv)
    assert code == 1
    # The app's own log lines name the replayed records, not live-traffic advice.
    # (One line per reason a while: the second refusal is counted, not named, in the log.)
    refusal = next(r.getMessage() for r in caplog.records if r.name == "mpsflow.signing")
    assert refusal.startswith("signature missing: rejected ")
    assert refusal.endswith(f"; a replay of dead-letter record {c}: the replay says what to do")
    done = lines(out)
    refused = "-> rejected (signature missing; the app checks signatures: replay with --sign-key"
    assert refused in done[c[:8]]
    assert (
        "-> rejected (signature missing; the app checks signatures: --sign-key cannot sign it (not"
        " a JSON object))"
    ) in done[form.id[:8]]
    assert "-> dead_lettered" in done[poison[:8]]  # poison again, not a signature refusal
    after = {r.id: r for r in read_dead_letters(letters.path)}
    # The refusals are the replay's: those records stay as they were; the poison one is updated.
    assert (after[c], after[form.id]) == (before[c], before[form.id])
    assert after[poison].attempt == 2

    code, out, _ = run(capsys, *argv, "--sign-key", SAMPLE_KEY)
    assert code == 1
    done = lines(out)
    assert done[c[:8]].endswith("-> ack  ok (re-signed)")
    assert "-> rejected (signature missing" in done[form.id[:8]]
    assert done[form.id[:8]].endswith(
        "(--sign-key cannot sign URL-encoded JSON, so it goes as it was, unsigned: an app that"
        " checks signatures refuses it unless it allows unsigned notifications)"
    )


def test_a_dry_run_into_an_app_flags_only_what_that_app_refuses(
    letters: Letters, replay_app: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dry run loads the app (imports it, runs nothing): one without ``notify_keys`` checks
    no signature, so neither an expired one nor a missing one is flagged; one that allows
    unsigned notifications refuses only the expired one."""
    argv = ["replay", str(letters.path), "--kind", "exhausted", "--dry-run"]
    code, out, _ = run(capsys, *argv, "--app", replay_app)
    assert code == 0
    assert out.count(f"would process with {replay_app}\n") == 2, out
    assert "signature" not in out
    assert seen(replay_app) == []  # imported, nothing processed

    name = f"unsigned_ok_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{name}.py").write_text(
        REPLAY_APP.replace("RETRIES", "1").replace(
            "retry=RetryPolicy",
            f"notify_keys=[{SAMPLE_KEY!r}], allow_unsigned=True, retry=RetryPolicy",
        )
    )
    try:
        code, out, _ = run(capsys, *argv, "--app", f"{name}:app")
    finally:
        sys.modules.pop(name, None)
    assert code == 0
    plan = dry_run_plan(out)
    assert plan[letters.ids["a"][:8]].endswith(
        "(its signature has expired; the app checks signatures: it will refuse this; replay"
        " with --sign-key KEY, one of its keys)"
    )
    assert plan[letters.ids["b"][:8]].endswith(f"would process with {name}:app")


@pytest.mark.parametrize("nothing", ["empty file", "all replayed"])
def test_a_misspelt_app_fails_a_dry_run_and_a_replay_with_nothing_to_do(
    letters: Letters, replay_app: str, nothing: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The app is imported before anything else is decided: a wrong MODULE:APP is the same
    one-line error (exit 2) whether the replay is a dry run, has nothing to replay, or not."""
    if nothing == "empty file":
        letters.path.write_bytes(b"")
    else:
        code, _, _ = run(
            capsys, "replay", str(letters.path), "--kind", "rejected", "--app", replay_app
        )
        assert code == 0
    typo = replay_app.replace(":app", "_x:app")
    argv = ["replay", str(letters.path), "--kind", "rejected", "--app", typo]
    errors = []
    for extra in ([], ["--dry-run"]):
        code, out, err = run(capsys, *argv, *extra)
        assert (code, out) == (2, "")
        assert err.count("\n") == 1, err
        assert "cannot import module" in err
        errors.append(err)
    assert errors[0] == errors[1]


async def test_dry_run_sends_nothing(letters: Letters, capsys: pytest.CaptureFixture[str]) -> None:
    async with receiver() as server:
        code, out, _ = await run_in_thread(
            capsys,
            "replay",
            str(letters.path),
            "--kind",
            "exhausted",
            "--to",
            server.url,
            "--dry-run",
        )
    assert code == 0
    assert server.requests == []
    assert not letters.path.with_name("dl.jsonl.replayed").exists()
    assert f"would POST {len(BODIES[0][1])} bytes to {server.url}" in out
    assert out.count("(it carries no signature;") == 1  # task-b's body (task-a's has expired)
    assert '"S3SecretKey":"<redacted>"' in out
    for secret in (S3_ID, S3_KEY, OLD_SIGN):
        assert secret not in out
    assert out.splitlines()[-1] == "dry run: 2 would be replayed"


def test_a_dry_run_to_a_url_flags_as_expired_only_what_a_default_app_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--to`` cannot see the app: it judges expiry as an app with the default
    ``signature_skew`` does. A signature past its expiry by less than that skew is accepted
    there, so it is not flagged; one past it by more is, in the hedged wording."""
    now = int(time.time())
    skew = int(DEFAULT_SKEW)
    within = _body("task-within", sign_key=SAMPLE_KEY, expires_at=now - skew // 2)
    past = _body("task-past", sign_key=SAMPLE_KEY, expires_at=now - 2 * skew)
    default_app = App(notify_keys=[SAMPLE_KEY], dead_letters=MemorySink())
    check = default_app.signature_verifier()
    assert check is not None
    assert (check.verify_payload(within).ok, check.verify_payload(past).ok) == (True, False)
    records = [
        make_dead_letter(kind="exhausted", reason="bug", body=body, now=now)
        for body in (within, past)
    ]
    path = tmp_path / "dl.jsonl"
    write_records(path, records)
    url = "http://127.0.0.1:9/mps/callback"  # a dry run sends nothing
    code, out, _ = run(capsys, "replay", str(path), "--to", url, "--dry-run")
    assert code == 0
    plan = dry_run_plan(out)
    assert plan[records[0].id[:8]].endswith(f"would POST {len(within)} bytes to {url}")
    assert plan[records[1].id[:8]].endswith(
        "(its signature has expired; if the app checks signatures, replay with --sign-key KEY,"
        " one of its keys)"
    )


def test_a_dry_run_flags_a_signature_that_expires_too_far_ahead(
    tmp_path: Path, keyed_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A signature whose expiry lies further ahead than an app's ``max_signature_lifetime`` is
    refused as an expired one is: ``--to`` judges it by the default lifetime (and skew), as it
    judges expiry, ``--app`` by the app's check, each with the advice the body allows (a
    URL-encoded one cannot be re-signed). One within the lifetime is not flagged."""
    now = int(time.time())
    lifetime = int(DEFAULT_MAX_LIFETIME)
    within = _body("task-within", sign_key=SAMPLE_KEY, expires_at=now + lifetime)
    ahead = _body("task-ahead", sign_key=SAMPLE_KEY, expires_at=now + 2 * lifetime)
    form = b"payload=" + urllib.parse.quote(ahead.decode()).encode()
    default_app = App(notify_keys=[SAMPLE_KEY], dead_letters=MemorySink(), clock=FakeClock(now))
    check = default_app.signature_verifier()
    assert check is not None
    assert [check.verify_payload(body).reason for body in (within, ahead)] == [
        VerifyReason.OK,
        VerifyReason.TOO_FAR_AHEAD,
    ]
    records = [
        make_dead_letter(kind="exhausted", reason="bug", body=body, now=now)
        for body in (within, ahead, form)
    ]
    path = tmp_path / "dl.jsonl"
    write_records(path, records)
    url = "http://127.0.0.1:9/mps/callback"  # a dry run sends nothing
    code, out, _ = run(capsys, "replay", str(path), "--to", url, "--dry-run")
    assert code == 0
    plan = dry_run_plan(out)
    assert plan[records[0].id[:8]].endswith(f"would POST {len(within)} bytes to {url}")
    too_far = (
        "(its signature expires too far ahead (over 1h from now); if the app checks signatures,"
    )
    assert plan[records[1].id[:8]].endswith(
        f"{too_far} replay with --sign-key KEY, one of its keys)"
    )
    assert plan[records[2].id[:8]].endswith(
        f"{too_far} --sign-key cannot sign it (not a JSON object))"
    )

    code, out, _ = run(capsys, "replay", str(path), "--app", keyed_app, "--dry-run")
    assert code == 0
    plan = dry_run_plan(out)
    assert plan[records[0].id[:8]].endswith(f"would process with {keyed_app}")
    assert plan[records[1].id[:8]].endswith(
        "(its signature expires too far ahead (past the app's max_signature_lifetime); the app"
        " checks signatures: it will refuse this; replay with --sign-key KEY, one of its keys)"
    )


async def _write_too_large(path: Path, body: bytes) -> str:
    """Dead-letter ``body`` as an app with a smaller ``max_body_size`` does: poison (too large),
    its whole body kept (it is under the excerpt limit); the record's id."""
    sink = MemorySink()
    app = App(dead_letters=sink, max_body_size=len(body) - 1)
    async with app:
        await app.process(Delivery(body, source="http", id="req-large"))
    [record] = sink.records
    assert isinstance(record, DeadLetter)
    assert (record.kind, record.body_truncated) == ("poison", False)
    with path.open("ab") as file:
        file.write(msgspec.json.encode(record) + b"\n")
    return record.id


@pytest.mark.parametrize("target", ["--app", "--to"])
def test_a_dry_run_marks_poison_records_the_app_refuses_again(
    letters: Letters, replay_app: str, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    """A poison record whose body still does not decode is marked: the app refused it and will
    again. One that decodes now (refused as too large by a smaller ``max_body_size``) is not,
    nor are the other kinds."""
    large = anyio.run(_write_too_large, letters.path, _body("task-large"))
    where = replay_app if target == "--app" else "http://127.0.0.1:9/mps/callback"
    code, out, _ = run(capsys, "replay", str(letters.path), "--dry-run", target, where)
    assert code == 0
    plan = dry_run_plan(out)
    marked = {
        name
        for name, record_id in {**letters.ids, "large": large}.items()
        if "refused it as poison" in plan[record_id[:8]]
    }
    assert marked == {"poison", "binary"}, out


async def test_replay_reports_an_unreachable_url(
    letters: Letters, capsys: pytest.CaptureFixture[str]
) -> None:
    async with receiver() as server:
        url = server.url  # closed when the block ends: nothing listens there any more
    code, out, _ = await run_in_thread(capsys, "replay", str(letters.path), "--to", url)
    assert code == 1
    where = url.split("//", 1)[1].split("/", 1)[0]
    assert f"-> error (cannot connect to {where} (connection refused))  FAILED" in out, out
    assert out.splitlines()[-1].startswith("replay: 0 succeeded, 1 failed, 4 not tried")


# -- the real entry point ---------------------------------------------------------------------


@pytest.mark.parametrize("args", [["list"], ["list", "--json"], ["show", "{a}"]])
def test_a_reader_that_goes_away_ends_the_command_quietly(
    letters: Letters, args: list[str]
) -> None:
    argv = [a.format(a=letters.ids["a"]) for a in args]
    result = closed_pipe("deadletters", argv[0], str(letters.path), *argv[1:])
    assert (result.returncode, result.stderr) == (0, "")


def test_a_replay_whose_reader_goes_away_has_noted_what_it_replayed(
    letters: Letters, replay_app: str, tmp_path: Path
) -> None:
    # `replay … | head`: the first line cannot be printed, but its record was replayed and is
    # noted before anything is printed, so the next replay does not send it again.
    result = closed_pipe(
        "deadletters", "replay", str(letters.path), "--app", replay_app, cwd=tmp_path
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert journal(letters) == [letters.ids["a"]]


def test_python_m_mpsflow_deadletters_list(letters: Letters) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    argv = [sys.executable, "-m", "mpsflow", "deadletters", "list", str(letters.path)]
    result = run_ok(argv, None, env, timeout=60)
    assert result.stdout.splitlines()[-1] == "5 dead letter(s): exhausted 2, rejected 1, poison 2"
