"""JsonlSink's writability: clear start errors, ``ready()``, and a file removed or moved away
by someone else reopened at its path (never written where nobody reads it)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from mpsflow.errors import ConfigurationError, SinkError
from mpsflow.sinks.base import CheckedSink
from mpsflow.sinks.jsonl import JsonlSink, jsonl_files, read_jsonl


async def test_a_file_in_the_way_of_the_directory_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for path in (blocker / "out.jsonl", blocker / "deeper" / "out.jsonl"):
        with pytest.raises(SinkError) as caught:
            await JsonlSink(path).start()
        assert str(caught.value) == (
            f"cannot write {path}: a file is where a directory should be ({blocker})"
        )
        assert not caught.value.transient


async def test_a_rotating_sink_needs_a_directory_that_takes_new_files(tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    (directory / "out.jsonl").write_text("")
    directory.chmod(0o555)
    try:
        try:
            (directory / "probe").touch()
        except PermissionError:
            pass
        else:  # root: chmod stops nothing; /sys refuses even root
            (directory / "probe").unlink()
            directory.chmod(0o755)
            directory = Path("/sys")
        sink = JsonlSink(directory / "out.jsonl", rotate_bytes=1024)
        with pytest.raises(SinkError, match="Permission denied"):
            await sink.start()
        assert not await sink.ready()
    finally:
        if directory.is_relative_to(tmp_path):
            directory.chmod(0o755)


async def test_ready_probes_logs_changes_and_looks_again_after_a_failed_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "out"
    path = directory / "out.jsonl"
    sink = JsonlSink(path, rotate_bytes=1024 * 1024)
    assert isinstance(sink, CheckedSink)
    caplog.set_level(logging.WARNING, logger="mpsflow.sinks")
    await sink.start()
    try:
        assert await sink.ready()
        directory.rename(tmp_path / "moved")
        directory.write_text("a file now")
        assert await sink.ready()  # the answer is reused for ready_interval
        with pytest.raises(SinkError):
            await sink.send([{"n": 1}])  # a failed write: the next ready() looks again
        assert not await sink.ready()
        assert not await sink.ready()
        directory.unlink()
        sink.ready_interval = 0.0
        assert await sink.ready()
        await sink.send([{"n": 2}])
    finally:
        await sink.close()
    assert list(read_jsonl(path)) == [{"n": 2}]
    changes = [r.getMessage() for r in caplog.records if r.getMessage().startswith(str(path))]
    problems = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cannot")]
    assert changes == [
        f"{path} was removed or moved away; reopening it",
        f"{path} is writable again",
    ]
    # once by ready(), however often it is asked (the failed write is the channel's to log)
    assert problems == [f"cannot write {path}: a file is where a directory should be ({directory})"]


class _Full:
    """``os.statvfs`` of a disk with one free block."""

    def __init__(self, stats: Any) -> None:
        self.f_frsize = stats.f_frsize
        self.f_bavail = 1


def _fill_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.statvfs
    monkeypatch.setattr(os, "statvfs", lambda p: _Full(real(p)))


async def test_ready_needs_free_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = JsonlSink(tmp_path / "out.jsonl")
    sink.ready_interval = 0.0
    assert await sink.ready()
    _fill_the_disk(monkeypatch)
    assert not await sink.ready()
    monkeypatch.undo()
    assert await sink.ready()


def _open_descriptors(path: Path) -> int:
    """How many of this process's file descriptors are open on ``path`` (Linux)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{name}") == os.fspath(path)
        except OSError:  # the descriptor listdir itself used, closed since
            continue
    return count


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd (Linux)")
async def test_a_failed_start_leaves_nothing_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.jsonl"
    _fill_the_disk(monkeypatch)
    sink = JsonlSink(path, dedup_window=10)
    with pytest.raises(SinkError):
        await sink.start()  # the file opens, then the free-space probe fails
    assert path.exists()
    assert _open_descriptors(path) == 0
    monkeypatch.undo()
    await sink.start()  # and a later start still works
    assert _open_descriptors(path) == 1
    await sink.close()
    assert _open_descriptors(path) == 0


@pytest.mark.parametrize("how", ["removed", "moved"])
async def test_a_file_taken_away_is_reopened_at_its_path(tmp_path: Path, how: str) -> None:
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path)
    await sink.start()
    try:
        await sink.send([{"n": 1}])
        if how == "removed":
            path.unlink()
        else:
            path.rename(tmp_path / "out.jsonl.1")  # rotated by another writer
        await sink.send([{"n": 2}])
    finally:
        await sink.close()
    assert list(read_jsonl(path)) == [{"n": 2}]
    if how == "moved":
        assert list(read_jsonl(path, rotated=True)) == [{"n": 1}, {"n": 2}]


def test_jsonl_files_lists_rotated_files_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    assert jsonl_files(path) == []
    for name in ("dead.jsonl.2", "dead.jsonl.1"):
        (tmp_path / name).write_text("")
    assert [f.name for f in jsonl_files(path)] == ["dead.jsonl.2", "dead.jsonl.1"]
    path.write_text("")
    assert [f.name for f in jsonl_files(path)] == ["dead.jsonl.2", "dead.jsonl.1", "dead.jsonl"]


@pytest.mark.parametrize("path", ["", ".", "/", "..", "out/", "out/."])
def test_a_path_that_names_a_folder_is_refused_at_once(path: str) -> None:
    """Such a path never names a file, so the sink is refused where it is made, and not with
    pathlib's ValueError (``'.' has an empty name``) about the names it derives."""
    with pytest.raises(ConfigurationError) as caught:
        JsonlSink(path)
    assert repr(path) in str(caught.value)


@pytest.mark.parametrize("path", [".", "/", "..", "{tmp}"])
def test_the_files_of_a_folder_are_an_is_a_directory_error(tmp_path: Path, path: str) -> None:
    """As opening it would be: a folder holds no sink's files, whether or not it has a name."""
    folder = path.format(tmp=tmp_path)
    with pytest.raises(IsADirectoryError):
        jsonl_files(folder)
    with pytest.raises(IsADirectoryError):
        list(read_jsonl(folder, rotated=True))
