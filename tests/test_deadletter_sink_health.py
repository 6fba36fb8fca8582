"""The dead-letter sink's health: the app does not start when it cannot write (one line, exit 3
from ``mpsflow run``), and ``/readyz`` answers 503 while it cannot."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from mpsflow import App
from mpsflow.delivery import Delivery, Settlement
from mpsflow.errors import StartupError
from mpsflow.sinks.jsonl import JsonlSink, read_jsonl
from tests.cli.test_run import run_mpsflow
from tests.sources.http_app import base_url, serve

MIB = 1024 * 1024


def read_only_directory(tmp_path: Path) -> Path:
    """A directory this process cannot create files in: ``chmod 555``, or, where that does
    not stop the process (root), a directory under ``/sys``, which refuses even root."""
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o555)
    try:
        (directory / "probe").touch()
    except PermissionError:
        return directory
    (directory / "probe").unlink()
    directory.chmod(0o755)
    return Path("/sys/mpsflow-dead-letters")


def break_directory(directory: Path) -> Path:
    """Make ``directory`` unusable (a regular file takes its place); returns where it went."""
    moved = directory.with_name(directory.name + ".moved")
    directory.rename(moved)
    directory.write_text("not a directory")
    return moved


def mend_directory(directory: Path) -> None:
    directory.unlink()
    directory.mkdir()


# -- startup ------------------------------------------------------------------------------------


async def test_a_dead_letter_path_under_a_regular_file_stops_the_start(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    app = App(dead_letters=blocker / "dead.jsonl")
    with pytest.raises(StartupError) as caught:
        async with app:
            pytest.fail("started")
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        f"the dead-letter sink cannot write {blocker}/dead.jsonl: a file is where a directory"
        f" should be ({blocker}): make {blocker} a writable directory (the app creates missing"
        " ones), or give App(dead_letters=…) a path that is"
    )
    assert not app.started


async def test_a_read_only_dead_letter_directory_stops_the_start(tmp_path: Path) -> None:
    directory = read_only_directory(tmp_path)
    try:
        with pytest.raises(StartupError, match=r"^the dead-letter sink cannot write ") as caught:
            async with App(dead_letters=directory / "dead.jsonl"):
                pytest.fail("started")
    finally:
        if directory.is_relative_to(tmp_path):
            directory.chmod(0o755)
    assert f"make {directory} a writable directory" in str(caught.value)


async def test_a_missing_parent_is_created(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "dead.jsonl"
    async with App(dead_letters=path) as app:
        assert (await app.readiness()).ready
    assert path.parent.is_dir()


EXIT_STARTUP = 3
CLI_APP = """
from mpsflow import App

app = App(dead_letters={path!r})
"""


@pytest.mark.parametrize("where", ["under-a-file", "read-only"])
async def test_mpsflow_run_exits_3_with_one_line(tmp_path: Path, where: str) -> None:
    if where == "under-a-file":
        (tmp_path / "a-file").write_text("")
        path = tmp_path / "a-file" / "dead.jsonl"
    else:
        path = read_only_directory(tmp_path) / "dead.jsonl"
    (tmp_path / "dlapp.py").write_text(CLI_APP.format(path=str(path)))
    try:
        for workers in ("1", "2"):
            code, out, err = await run_mpsflow(
                tmp_path, "run", "dlapp:app", "--http", "127.0.0.1:0", "--workers", workers
            )
            assert code == EXIT_STARTUP, err
            errors = [line for line in err.splitlines() if "error" in line.lower()]
            assert len(errors) == 1, err
            assert errors[0].startswith(
                f"mpsflow run: error: the dead-letter sink cannot write {path}: "
            )
            assert errors[0].endswith("or give App(dead_letters=…) a path that is")
            assert "Traceback" not in err
            assert out == ""
    finally:
        if path.parent.is_relative_to(tmp_path) and where == "read-only":
            path.parent.chmod(0o755)


# -- readiness ----------------------------------------------------------------------------------


def checked_sink(path: Path) -> JsonlSink:
    sink = JsonlSink(path, rotate_bytes=MIB)
    sink.ready_interval = 0.0  # probe on every ask
    return sink


async def test_readiness_follows_the_dead_letter_sink(tmp_path: Path) -> None:
    directory = tmp_path / "dead"
    path = directory / "dead.jsonl"
    app = App(dead_letters=checked_sink(path))
    before = list(app.readiness_checks)
    async with app:
        assert (await app.readiness()).ready
        moved = break_directory(directory)
        readiness = await app.readiness()
        assert not readiness.ready
        assert readiness.reason == (f"readiness check failed: dead-letter sink {path} writable")
        # a dead letter cannot be written meanwhile: the delivery is retried, not lost
        outcome = await app.process(Delivery(b"{bad", source="cmq"))
        assert outcome.settlement is Settlement.RETRY
        mend_directory(directory)
        assert (await app.readiness()).ready
        outcome = await app.process(Delivery(b"{bad", source="cmq"))
        assert outcome.settlement is Settlement.DEAD_LETTERED
    assert app.readiness_checks == before
    # the record went to the file at the path, not to the one moved away
    assert [r["kind"] for r in read_jsonl(path)] == ["poison"]
    assert list(read_jsonl(moved / "dead.jsonl")) == []


async def test_readyz_answers_503_while_the_dead_letter_sink_cannot_write(tmp_path: Path) -> None:
    directory = tmp_path / "dead"
    path = directory / "dead.jsonl"
    app = App(dead_letters=checked_sink(path), shutdown_timeout=5.0)
    async with serve(app) as source, aiohttp.ClientSession() as session:
        readyz = base_url(source) + "/readyz"
        async with session.get(readyz) as response:
            assert response.status == 200
        break_directory(directory)
        async with session.get(readyz) as response:
            assert response.status == 503
            answer = json.loads(await response.read())
        assert answer["ready"] is False
        assert "dead-letter sink" in answer["reason"]
        mend_directory(directory)
        async with session.get(readyz) as response:
            assert response.status == 200


async def test_a_sink_that_cannot_tell_adds_no_check(tmp_path: Path) -> None:
    from mpsflow.sinks.memory import MemorySink

    app = App(dead_letters=MemorySink())
    async with app:
        assert app.readiness_checks == []
        assert (await app.readiness()).ready
