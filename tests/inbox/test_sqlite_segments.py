"""SQLiteInbox's segment files: bodies kept out of the database, read back whoever wrote them,
intact across ``kill -9``, shared by processes, and deleted once nothing refers to them."""

from __future__ import annotations

import signal
import sqlite3
import sys
from pathlib import Path

import anyio
import pytest

from mpsflow._sqlite import SQLiteWriter
from mpsflow.errors import InboxUnavailable
from mpsflow.inbox import SQLiteInbox
from mpsflow.inbox import _segments as segments_module

LEASE = 30.0


def bodies_of(path: Path) -> Path:
    return Path(f"{path}-bodies")


def stored(path: Path) -> list[tuple[bytes, int | None]]:
    """Each row's body column and segment, in id order."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT body, segment FROM mpsflow_inbox ORDER BY id").fetchall()
    return [(bytes(body), segment) for body, segment in rows]


def segment_rows(path: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT id, sealed FROM mpsflow_inbox_segments ORDER BY id").fetchall()


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments of 100 bytes: a new one every few appends."""
    monkeypatch.setattr(segments_module, "SEGMENT_BYTES", 100)


async def drain(inbox: SQLiteInbox) -> list[bytes]:
    """Lease and settle everything visible; the bodies, oldest first."""
    seen: list[bytes] = []
    while items := await inbox.lease(50, LEASE):
        for item in items:
            seen.append(item.body)
            assert await inbox.settle(item.id, item.attempt)
    return seen


async def test_bodies_are_in_segment_files_not_in_the_database(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    inbox = SQLiteInbox(path)
    try:
        assert await inbox.append(b"x" * 5000)
        assert await inbox.append(b"y" * 5000)
        assert [body for body, _ in stored(path)] == [b"", b""]
        assert all(segment is not None for _, segment in stored(path))
        first, second = await inbox.lease(5, LEASE)
        assert (first.body, second.body) == (b"x" * 5000, b"y" * 5000)
    finally:
        await inbox.close()


async def test_settled_segments_are_deleted_and_close_leaves_nothing_behind(
    tmp_path: Path, small_segments: None
) -> None:
    path = tmp_path / "inbox.sqlite3"
    inbox = SQLiteInbox(path)
    try:
        sent = [f"body {i}".encode() * 10 for i in range(30)]
        for body in sent:
            assert await inbox.append(body)
        assert len(list(bodies_of(path).iterdir())) > 3  # a new segment every two appends
        assert await drain(inbox) == sent
        # the lease that found nothing after settles swept: every file was processed
        assert list(bodies_of(path).iterdir()) == []
        assert await inbox.append(b"later")  # a new segment for new appends
        assert len(list(bodies_of(path).iterdir())) == 1
        [later] = await inbox.lease(5, LEASE)  # not idle: nothing swept
        assert len(list(bodies_of(path).iterdir())) == 1
        assert await inbox.settle(later.id, later.attempt)
    finally:
        await inbox.close()
    assert list(bodies_of(path).iterdir()) == []
    assert segment_rows(path) == []


async def test_a_segment_is_kept_while_an_item_refers_to_it(
    tmp_path: Path, small_segments: None
) -> None:
    path = tmp_path / "inbox.sqlite3"
    inbox = SQLiteInbox(path)
    try:
        for i in range(6):
            assert await inbox.append(f"{i}".encode() * 60)
        first, *rest = await inbox.lease(10, LEASE)
        for item in rest:
            assert await inbox.settle(item.id, item.attempt)
        assert await inbox.retry(first.id, first.attempt, 0.0, counted=False)
        await inbox.reclaim()
    finally:
        await inbox.close()
    [(segment, sealed)] = segment_rows(path)  # the first item's, sealed at close
    assert sealed == 1
    assert [p.name for p in bodies_of(path).iterdir()] == [str(segment)]
    again = SQLiteInbox(path)
    try:
        assert await drain(again) == [b"0" * 60]
        await again.reclaim()
        assert segment_rows(path) == []
    finally:
        await again.close()
    assert list(bodies_of(path).iterdir()) == []


async def test_a_batch_that_rolls_back_leaves_nothing_readable_behind(tmp_path: Path) -> None:
    """The body written before the rollback is garbage no row refers to."""
    path = tmp_path / "inbox.sqlite3"
    inbox = SQLiteInbox(path)
    writer = SQLiteWriter.open(str(path), busy_timeout=5.0)

    def fail(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("boom")

    try:
        assert await inbox.append(b"first")
        async with anyio.create_task_group() as tg:  # one batch: the append, then the failure
            failed: list[BaseException] = []

            async def append() -> None:
                try:
                    await inbox.append(b"rolled back")
                except InboxUnavailable as exc:
                    failed.append(exc)

            async def boom() -> None:
                with pytest.raises(sqlite3.OperationalError):
                    await writer.run(fail)

            tg.start_soon(append)
            tg.start_soon(boom)
        assert len(failed) == 1
        assert await inbox.append(b"after")
        assert await drain(inbox) == [b"first", b"after"]
    finally:
        await writer.close()
        await inbox.close()


async def test_a_body_that_is_gone_comes_back_empty_to_be_dead_lettered(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    inbox = SQLiteInbox(path)
    try:
        assert await inbox.append(b"lost")
        assert await inbox.append(b"kept")
        for segment in bodies_of(path).iterdir():
            segment.write_bytes(b"lo")  # cut short, as by a power cut before it was synced
        items = await inbox.lease(5, LEASE)
        assert [(i.body, i.lost) for i in items] == [(b"", True), (b"", True)]
    finally:
        await inbox.close()


async def test_rows_of_an_earlier_version_keep_their_bodies(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    with sqlite3.connect(path) as conn:  # the table before segments
        conn.execute(
            "CREATE TABLE mpsflow_inbox (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " body BLOB NOT NULL, received_at REAL NOT NULL, visible_at REAL NOT NULL,"
            " attempts INTEGER NOT NULL DEFAULT 0, owner TEXT NOT NULL DEFAULT '')"
        )
        conn.execute(
            "INSERT INTO mpsflow_inbox (body, received_at, visible_at) VALUES (x'6f6c64', 1, 0)"
        )
    inbox = SQLiteInbox(path)
    try:
        assert await inbox.append(b"new")
        assert stored(path)[0] == (b"old", None)
        assert await drain(inbox) == [b"old", b"new"]
    finally:
        await inbox.close()


async def test_an_in_memory_inbox_keeps_bodies_in_its_rows() -> None:
    inbox = SQLiteInbox(":memory:")
    try:
        assert await inbox.append(b"a")
        assert [i.body for i in await inbox.lease(5, LEASE)] == [b"a"]
    finally:
        await inbox.close()


APPENDER = """
import anyio, os, signal, sys
from mpsflow.inbox import SQLiteInbox, _segments
_segments.SEGMENT_BYTES = 4000
async def main():
    box = SQLiteInbox(sys.argv[1])
    for i in range(int(sys.argv[3])):
        assert await box.append(f"{sys.argv[2]}-{i}-".encode() + b"x" * 1000)
        print(i, flush=True)  # answered: it must be there after a kill -9
    if sys.argv[4] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    await box.close()
anyio.run(main)
"""


async def append_in_process(path: Path, name: str, count: int, end: str) -> list[str]:
    done = await anyio.run_process(
        [sys.executable, "-c", APPENDER, str(path), name, str(count), end], check=False
    )
    assert done.returncode == (-signal.SIGKILL if end == "kill" else 0), done.stderr
    return done.stdout.decode().split()


def expected(name: str, count: int) -> list[bytes]:
    return [f"{name}-{i}-".encode() + b"x" * 1000 for i in range(count)]


async def test_every_answered_append_is_readable_after_kill_9_and_its_segments_go(
    tmp_path: Path,
) -> None:
    path = tmp_path / "inbox.sqlite3"
    answered = await append_in_process(path, "killed", 20, "kill")
    assert len(answered) == 20
    assert any(sealed == 0 for _, sealed in segment_rows(path))  # the killed one's current
    inbox = SQLiteInbox(path)
    try:
        assert await drain(inbox) == expected("killed", 20)
        await inbox.reclaim()  # the owner is gone: its segments are sealed and deleted
        assert segment_rows(path) == []
        assert list(bodies_of(path).iterdir()) == []
    finally:
        await inbox.close()


async def test_processes_share_the_segments_of_one_inbox(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    async with anyio.create_task_group() as tg:
        for name in ("a", "b", "c"):
            tg.start_soon(append_in_process, path, name, 15, "close")
    inbox = SQLiteInbox(path)
    try:
        seen = await drain(inbox)
        assert sorted(seen) == sorted(expected("a", 15) + expected("b", 15) + expected("c", 15))
        await inbox.reclaim()
        assert segment_rows(path) == []
        assert list(bodies_of(path).iterdir()) == []
    finally:
        await inbox.close()


async def test_a_segment_deleted_under_its_writer_is_not_written_to_again(
    tmp_path: Path,
) -> None:
    """As by a sweep of a process that took this one for gone: later bodies go elsewhere."""
    path = tmp_path / "inbox.sqlite3"
    inbox = SQLiteInbox(path)
    try:
        assert await inbox.append(b"a")
        [item] = await inbox.lease(1, LEASE)
        assert await inbox.settle(item.id, item.attempt)
        for segment in bodies_of(path).iterdir():
            segment.unlink()
        assert await inbox.append(b"b")  # in the row
        assert await inbox.append(b"c")  # in a new segment
        assert [segment is None for _, segment in stored(path)] == [True, False]
        assert await drain(inbox) == [b"b", b"c"]
    finally:
        await inbox.close()
