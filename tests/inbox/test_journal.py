"""SQLiteInbox's journal: items appended for a consumer in this process get no row, are done
with no transaction, and reach the table only to be retried, given back, or taken over from a
process that is gone (after ``kill -9`` too, a torn tail and a half-done move included)."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from mpsflow.errors import InboxUnavailable
from mpsflow.inbox import SQLiteInbox
from mpsflow.inbox import _journal as journal_module
from mpsflow.inbox import sqlite as sqlite_module

LEASE = 30.0


def rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (count,) = conn.execute("SELECT count(*) FROM mpsflow_inbox").fetchone()
    return int(count)


async def opened(path: Path, max_items: int = 100) -> SQLiteInbox:
    """An inbox that counted its items: its first append need not go to the table to count."""
    inbox = SQLiteInbox(path, max_items=max_items)
    await inbox.size()
    return inbox


def journals(path: Path) -> list[Path]:
    folder = Path(f"{path}-bodies")
    return sorted(folder.glob("*.journal")) if folder.exists() else []


async def test_a_handed_over_item_is_journaled_and_done_without_a_row(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    inbox = await opened(path)
    try:
        assert await inbox.append(b"table")  # a row (and the table made)
        item = await inbox.append_leased(b"journal", LEASE)
        assert item is not None
        assert (item.id < 0, item.body, item.attempt) == (True, b"journal", 1)
        assert rows(path) == 1
        assert await inbox.size() == 2
        assert len(journals(path)) == 1
        assert await inbox.settle(item.id, item.attempt)
        assert not await inbox.settle(item.id, item.attempt)  # done once
        assert await inbox.size() == 1
        assert [i.body for i in await inbox.lease(5, LEASE)] == [b"table"]  # never leased
    finally:
        await inbox.close()
    assert journals(path) == []  # nothing pending: deleted at close


async def test_the_done_records_of_one_turn_are_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items settled in one turn of the event loop cost one write together, not one each;
    until it is written, a crash runs them again (deduplicated), as a lost write would."""
    path = tmp_path / "inbox.sqlite3"
    inbox = await opened(path)
    writes: list[bytes] = []
    write_at = journal_module._write_at

    def counted(fd: int, offset: int, head: bytes, body: bytes) -> None:
        writes.append(head[:1])
        write_at(fd, offset, head, body)

    monkeypatch.setattr(journal_module, "_write_at", counted)
    try:
        items = [await inbox.append_leased(f"item {n}".encode(), LEASE) for n in range(5)]
        assert writes == [b"H"] + [b"A"] * 5  # the file's header, then one write each
        for item in items:
            assert item is not None
            assert await inbox.settle(item.id, item.attempt)
        assert writes == [b"H"] + [b"A"] * 5  # not yet: at the end of this turn
        await anyio.lowlevel.checkpoint()
        assert writes == [b"H"] + [b"A"] * 5 + [b"D"]
        assert await inbox.size() == 0
    finally:
        await inbox.close()
    assert journals(path) == []  # nothing pending: deleted at close


@pytest.mark.parametrize(("counted", "attempt"), [(True, 2), (False, 1)])
async def test_a_journaled_item_to_retry_moves_into_the_table(
    tmp_path: Path, counted: bool, attempt: int
) -> None:
    path = tmp_path / "inbox.sqlite3"
    inbox = await opened(path)
    try:
        item = await inbox.append_leased(b"again", LEASE)
        assert item is not None
        assert not await inbox.retry(item.id, 2, 0.0)  # not its lease
        assert await inbox.retry(item.id, item.attempt, 0.0, counted=counted)
        assert not await inbox.settle(item.id, item.attempt)  # it is the table's now
        [leased] = await inbox.lease(5, LEASE)
        assert (leased.id > 0, leased.body, leased.attempt) == (True, b"again", attempt)
        assert await inbox.size() == 1
    finally:
        await inbox.close()


async def test_a_done_record_asked_for_at_once_is_written_before_done_returns(
    tmp_path: Path,
) -> None:
    """What an item moved to the table uses (``SQLiteInbox._move_item``): the record of the
    move is dropped right after, so a crash then must not find the item pending in its
    journal and move it twice. Other done records wait for the end of the turn."""
    journal = journal_module.Journal(str(tmp_path / "bodies"))
    try:
        first, second = journal.append(b"first", 0.0), journal.append(b"second", 0.0)
        assert first is not None
        assert second is not None
        [path] = (tmp_path / "bodies").glob("*.journal")

        def pending() -> list[int]:
            items, _ = journal_module._parse(path.read_bytes())
            return sorted(item.number for item in items)

        assert journal.done(first)
        assert pending() == [first, second]  # at the end of this turn
        assert journal.done(second, at_once=True)
        assert pending() == []  # written now, with the one that waited
    finally:
        journal.close()


async def test_the_bound_counts_journaled_items(tmp_path: Path) -> None:
    inbox = await opened(tmp_path / "inbox.sqlite3", max_items=2)
    try:
        first = await inbox.append_leased(b"1", LEASE)
        assert first is not None
        assert await inbox.append_leased(b"2", LEASE) is not None
        assert await inbox.append_leased(b"3", LEASE) is None
        assert not await inbox.append(b"3")
        assert await inbox.settle(first.id, first.attempt)
        assert await inbox.append_leased(b"3", LEASE) is not None
    finally:
        await inbox.close()


async def test_a_live_owners_journal_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    owner, other = await opened(path), SQLiteInbox(path)
    try:
        item = await owner.append_leased(b"mine", LEASE)
        assert item is not None
        assert await other.reclaim() == 0
        assert await other.lease(5, LEASE) == []
        assert await owner.settle(item.id, item.attempt)
    finally:
        await owner.close()
        await other.close()


HANDED = """
import anyio, os, signal, sys
from mpsflow.inbox import SQLiteInbox, _journal
_journal.JOURNAL_BYTES = 4000
async def main():
    box = SQLiteInbox(sys.argv[1])
    await box.size()  # counted: the first append need not go to the table
    items = []
    for i in range(int(sys.argv[2])):
        items.append(await box.append_leased(f"{i}-".encode() + b"x" * 1000, 60))
        print(i, flush=True)  # answered: it must be processed after a kill -9
    for item in items[::2]:  # the even ones were processed
        assert await box.settle(item.id, item.attempt)
    await anyio.sleep(0)  # their done records are written at the end of the loop's turn
    os.kill(os.getpid(), signal.SIGKILL)
anyio.run(main)
"""


async def test_what_a_killed_process_journaled_is_moved_into_the_table_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "inbox.sqlite3"
    done = await anyio.run_process([sys.executable, "-c", HANDED, str(path), "20"], check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert len(done.stdout.split()) == 20
    assert len(journals(path)) > 1  # a new file every few appends
    inbox, other = SQLiteInbox(path), SQLiteInbox(path)
    try:
        async with anyio.create_task_group() as tg:  # two processes' worth, racing
            moved: list[int] = []

            async def reclaim(box: SQLiteInbox) -> None:
                moved.append(await box.reclaim())

            tg.start_soon(reclaim, inbox)
            tg.start_soon(reclaim, other)
        assert sum(moved) == 10
        items = await inbox.lease(50, LEASE)
        odd = [f"{i}-".encode() + b"x" * 1000 for i in range(1, 20, 2)]
        assert sorted(item.body for item in items) == sorted(odd)
        assert {item.attempt for item in items} == {2}  # the killed process had the first
        assert journals(path) == []
    finally:
        await inbox.close()
        await other.close()


async def test_a_torn_tail_is_ignored_and_the_whole_records_are_moved(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    left = await opened(path)
    for body in (b"one", b"two"):
        assert await left.append_leased(body, LEASE) is not None
    await left.close()  # pending: left behind, unlocked
    [journal] = journals(path)
    generation = journal_module._HEAD.unpack_from(journal.read_bytes())[1]
    with journal.open("ab") as file:  # a record a power cut tore
        file.write(journal_module._HEAD.pack(b"A", generation, 99, 0.0, 50, 0) + b"part")
    inbox = SQLiteInbox(path)
    try:
        assert await inbox.reclaim() == 2
        assert sorted(item.body for item in await inbox.lease(5, LEASE)) == [b"one", b"two"]
    finally:
        await inbox.close()


async def test_a_journal_moved_but_not_deleted_is_not_moved_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "inbox.sqlite3"
    left = await opened(path)
    assert await left.append_leased(b"once", LEASE) is not None
    await left.close()
    inbox = SQLiteInbox(path)
    try:
        with monkeypatch.context() as crash:  # the mover died after its commit
            crash.setattr(journal_module.Orphan, "delete", journal_module.Orphan.release)
            crash.setattr(sqlite_module, "_forget", lambda conn, name: None)
            assert await inbox.reclaim() == 1
        assert len(journals(path)) == 1
        assert await inbox.reclaim() == 0  # recorded as moved: deleted, not moved again
        assert journals(path) == []
        assert [item.body for item in await inbox.lease(5, LEASE)] == [b"once"]
    finally:
        await inbox.close()


async def test_a_forked_child_journals_apart_from_its_parent(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    inbox = await opened(path)
    try:
        parent = await inbox.append_leased(b"parent", LEASE)
        assert parent is not None
        pid = os.fork()
        if pid == 0:  # the child: a journal of its own, the parent's lock untouched
            code = 0
            try:
                child = anyio.run(inbox.append_leased, b"child", LEASE)
                code = 0 if child is not None and len(journals(path)) == 2 else 1
            finally:
                os._exit(code)
        _, status = await anyio.to_thread.run_sync(os.waitpid, pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert await inbox.reclaim() == 1  # the child's (it is gone), not the parent's
        assert [item.body for item in await inbox.lease(5, LEASE)] == [b"child"]
        assert await inbox.settle(parent.id, parent.attempt)
    finally:
        await inbox.close()


async def test_emptied_files_are_written_over_and_their_old_records_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file whose items are all done is a spare, started over under the next generation:
    the files stay few, and what an earlier generation left in one is not taken for items."""
    monkeypatch.setattr(journal_module, "JOURNAL_BYTES", 3000)
    path = tmp_path / "inbox.sqlite3"
    left = await opened(path)
    names: set[str] = set()
    for n in range(60):  # a thousand bytes each: a file every two or three
        item = await left.append_leased(f"{n:04}".encode() * 250, LEASE)
        assert item is not None
        assert await left.settle(item.id, item.attempt)
        names.update(journal.name for journal in journals(path))
    assert len(names) <= 3  # the same files over and over
    kept = [await left.append_leased(f"kept {n}".encode() * 100, LEASE) for n in range(2)]
    assert all(item is not None for item in kept)
    await left.close()  # pending: left behind, unlocked
    inbox = SQLiteInbox(path)
    try:
        assert await inbox.reclaim() == 2
        bodies = sorted(item.body for item in await inbox.lease(50, LEASE))
        assert bodies == [f"kept {n}".encode() * 100 for n in range(2)]
        assert journals(path) == []
    finally:
        await inbox.close()


async def test_appends_are_synced_to_disk_in_a_thread_soon_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a power cut could lose is bounded by ``SYNC_EVERY``, and the loop never waits."""
    synced = threading.Event()
    threads: list[bool] = []

    def fsync(fd: int) -> None:
        threads.append(threading.current_thread() is threading.main_thread())
        synced.set()

    monkeypatch.setattr(journal_module, "SYNC_EVERY", 0.0)
    monkeypatch.setattr(os, "fsync", fsync)
    inbox = await opened(tmp_path / "inbox.sqlite3")
    try:
        assert await inbox.append_leased(b"durable", LEASE) is not None
        assert await anyio.to_thread.run_sync(synced.wait, 10)
        assert threads
        assert not any(threads)  # never on the event loop's thread
    finally:
        await inbox.close()


async def test_an_item_moved_for_a_retry_is_not_moved_again_with_its_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed (or cancelled) after the row committed and before the journal said done: the
    move of the journal skips it, so the next run has it once."""
    path = tmp_path / "inbox.sqlite3"
    left = await opened(path)
    item = await left.append_leased(b"once", LEASE)
    assert item is not None

    class Killed(Exception):
        pass

    def killed(journal: journal_module.Journal, number: int, *, at_once: bool = False) -> bool:
        raise Killed

    with monkeypatch.context() as crash:
        crash.setattr(journal_module.Journal, "done", killed)
        with pytest.raises(Killed):
            await left.retry(item.id, item.attempt, 0.0)
    await left.close()  # still pending in its journal: left behind
    assert len(journals(path)) == 1
    inbox = SQLiteInbox(path)
    try:
        assert await inbox.reclaim() == 0
        assert [leased.body for leased in await inbox.lease(5, LEASE)] == [b"once"]
        assert journals(path) == []
    finally:
        await inbox.close()


async def test_an_item_whose_move_failed_is_moved_by_the_next_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database failed as a journaled item was to be retried: it is not left in the
    journal of a process that goes on running."""
    path = tmp_path / "inbox.sqlite3"
    inbox = await opened(path)
    try:
        item = await inbox.append_leased(b"stranded", LEASE)
        assert item is not None
        columns = sqlite_module._body_columns

        def failing(body: bytes, segments: object) -> tuple[object, ...]:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(sqlite_module, "_body_columns", failing)
        with pytest.raises(InboxUnavailable):
            await inbox.retry(item.id, item.attempt, 0.0)
        monkeypatch.setattr(sqlite_module, "_body_columns", columns)
        [leased] = await inbox.lease(5, LEASE)
        assert (leased.body, leased.attempt) == (b"stranded", 2)
        assert await inbox.settle(leased.id, leased.attempt)
        assert await inbox.size() == 0
    finally:
        await inbox.close()
    assert journals(path) == []


async def test_the_last_appends_of_a_burst_are_synced_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync is due ``SYNC_EVERY`` after the last one, whatever comes after the burst."""
    monkeypatch.setattr(journal_module, "SYNC_EVERY", 0.05)
    synced_after = threading.Event()
    last = [float("inf")]

    def fsync(fd: int) -> None:
        if time.monotonic() > last[0]:
            synced_after.set()

    monkeypatch.setattr(os, "fsync", fsync)
    inbox = await opened(tmp_path / "inbox.sqlite3")
    try:
        for n in range(5):
            assert await inbox.append_leased(f"{n}".encode(), LEASE) is not None
        last[0] = time.monotonic()  # nothing is appended after this
        assert await anyio.to_thread.run_sync(synced_after.wait, 10)
    finally:
        await inbox.close()
