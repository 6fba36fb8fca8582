"""The SQLite store answering in place while its process writes the file alone: what is
answered is committed at the next turn of the loop, another process makes it write in company,
a failed commit writes what was answered again, and what waits for a commit runs after it."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from mpsflow import _sqlite_sharing as sqlite_sharing
from mpsflow._sqlite_commits import after_commit
from mpsflow._sqlite_sharing import WriterSharing
from mpsflow.dedup.stores import SQLiteStore
from mpsflow.dedup.stores.base import DECLINED, ClaimState

LEASE = 60.0


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[tuple[Path, SQLiteStore]]:
    """A SQLite store on a file of its own (and the file's path), closed at the end."""
    path = tmp_path / "idem.sqlite3"
    store = SQLiteStore(path)
    yield path, store
    await store.close()


def _claim_now(store: SQLiteStore, key: str, token: str = "t") -> object:
    return store.claim_now(key, lease_seconds=LEASE, payload_hash="h", token=token)


def _committed(path: Path, key: str) -> str | None:
    """The state another connection reads for ``key`` (committed rows only)."""
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT state FROM mpsflow_idempotency WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


async def test_alone_a_claim_is_answered_at_once_and_committed_at_the_next_turn(
    sqlite: tuple[Path, SQLiteStore],
) -> None:
    path, store = sqlite
    assert _claim_now(store, "a", "t1") is None
    assert _claim_now(store, "b", "t2") is None
    assert store.complete_now("a", "t1", ttl_seconds=100) is True
    busy = _claim_now(store, "a", "t3")  # the open transaction sees its own rows
    assert busy is not None
    assert busy is not DECLINED
    assert busy.state is ClaimState.COMPLETED  # type: ignore[attr-defined]
    assert _committed(path, "a") is None
    await anyio.lowlevel.checkpoint()
    assert (_committed(path, "a"), _committed(path, "b")) == ("completed", "in_progress")
    assert store.writer.batches == 1


async def test_a_coroutine_call_comes_after_what_was_answered_in_place(
    sqlite: tuple[Path, SQLiteStore],
) -> None:
    _, store = sqlite
    assert _claim_now(store, "k", "mine") is None
    claim = await store.claim("k", lease_seconds=LEASE, payload_hash="h")
    assert claim.state is ClaimState.IN_PROGRESS
    assert await store.complete("k", "mine", ttl_seconds=100)


_OTHER_PROCESS = """
import asyncio, sys
from mpsflow.dedup.stores import SQLiteStore

async def main():
    store = SQLiteStore(sys.argv[1])
    for key in ("mine", "theirs"):
        claim = await store.claim(key, lease_seconds=60, payload_hash="h")
        print(claim.state.value, flush=True)
    sys.stdin.readline()
    await store.close()

asyncio.run(main())
"""


def _start_other(path: Path) -> subprocess.Popen[str]:
    """The other process: claims ``mine`` and ``theirs``, then waits for a line."""
    return subprocess.Popen(
        [sys.executable, "-c", _OTHER_PROCESS, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


async def test_another_process_makes_it_write_in_company(tmp_path: Path) -> None:
    path = tmp_path / "idem.sqlite3"
    store = SQLiteStore(path)
    other: subprocess.Popen[str] | None = None
    try:
        assert _claim_now(store, "mine") is None
        await anyio.lowlevel.checkpoint()
        other = await anyio.to_thread.run_sync(_start_other, path)
        assert other.stdout is not None
        seen = [await anyio.to_thread.run_sync(other.stdout.readline) for _ in range(2)]
        assert seen == ["in_progress\n", "claimed\n"]
        # The next transaction finds company: the twins decline, the coroutines see its rows.
        assert _claim_now(store, "new") is DECLINED
        assert store.complete_now("mine", "t", ttl_seconds=100) is None
        theirs = await store.claim("theirs", lease_seconds=LEASE, payload_hash="h")
        assert theirs.state is ClaimState.IN_PROGRESS
        assert await store.complete("mine", "t", ttl_seconds=100)
    finally:
        if other is not None:
            assert other.stdin is not None
            assert other.stdout is not None
            other.stdin.close()
            await anyio.to_thread.run_sync(other.wait)
            other.stdout.close()
        await store.close()
    assert other.returncode == 0


def test_a_writer_is_alone_until_another_process_comes_and_again_once_it_left(
    tmp_path: Path,
    company: Callable[[Path], Callable[[], None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqlite_sharing, "RECHECK_EVERY", 0.0)  # try to go back at every call
    path = tmp_path / "db"
    sharing = WriterSharing.join(str(path))
    try:
        assert sharing.state == "unknown"
        assert sharing.alone()
        assert sharing.alone()
        leave = company(path)
        assert not sharing.alone()
        assert sharing.state == "in company"
        assert not sharing.alone()  # the other one is still there
        leave()
        assert sharing.alone()
        company(path)
        assert not sharing.alone()
    finally:
        sharing.leave()


def test_a_writer_coming_after_a_lone_one_is_in_company(
    tmp_path: Path, company: Callable[[Path], Callable[[], None]]
) -> None:
    path = tmp_path / "db"
    company(path)
    sharing = WriterSharing.join(str(path))
    try:
        sharing.take_part()
        assert sharing.state == "in company"
        assert not sharing.alone()
    finally:
        sharing.leave()


_PROBE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, int(sys.argv[2]))
except OSError:
    print("held")
else:
    print("free")
"""


def _byte(sharing: WriterSharing, byte: int) -> str:
    """Whether another process finds ``byte`` of the lock file held."""
    probe = [sys.executable, "-c", _PROBE, sharing.path, str(byte)]
    return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


def test_one_agreement_per_file_in_a_process(tmp_path: Path) -> None:
    """Record locks belong to the process: two agreements on one file would both be alone,
    and closing either would drop the other's locks."""
    path = tmp_path / "db"
    path.touch()
    (tmp_path / "link").symlink_to(path)
    first = WriterSharing.join(str(path))
    second = WriterSharing.join(str(tmp_path / "link"))
    try:
        assert first is second
        assert first.alone()
    finally:
        first.leave()
    assert _byte(second, 0) == "held"  # one user is left
    second.leave()
    assert second.state == "left"
    assert _byte(second, 0) == "free"
    second.take_part()  # a late flush of a closed writer: it takes part no more
    assert not second.alone()
    assert _byte(second, 0) == "free"


def test_going_back_fails_while_another_process_is_in_company_and_keeps_ours(
    tmp_path: Path,
    company: Callable[[Path], Callable[[], None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqlite_sharing, "RECHECK_EVERY", 0.0)
    path = tmp_path / "db"
    company(path)
    sharing = WriterSharing.join(str(path))
    try:
        assert not sharing.alone()  # joins
        assert not sharing.alone()  # tries to go back, and cannot
        assert sharing.state == "in company"
        assert _byte(sharing, 0) == "free"
        assert _byte(sharing, 1) == "held"
    finally:
        sharing.leave()


def test_a_lock_file_that_cannot_be_opened_means_not_alone_until_it_can(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "db"
    blocker = tmp_path / "db-writers"
    blocker.mkdir()  # a folder where the lock file would be
    sharing = WriterSharing.join(str(path))
    try:
        with caplog.at_level(logging.WARNING, logger="mpsflow.sqlite"):
            assert not sharing.alone()
            assert not sharing.alone()
        [line] = caplog.records  # said once
        assert "cannot open" in line.getMessage()
        assert sharing.state == "unknown"
        blocker.rmdir()
        assert sharing.alone()
    finally:
        sharing.leave()


def test_the_lock_file_goes_in_a_folder_that_is_made_for_the_database(tmp_path: Path) -> None:
    sharing = WriterSharing.join(str(tmp_path / "new" / "db"))
    try:
        assert sharing.alone()
    finally:
        sharing.leave()


class _FailingConnection:
    """The writer's connection, failing as a full disk would (no real disk fills here):
    the next COMMIT; then, once, the BEGIN after it as a lock another process holds would;
    ``meanwhile`` runs at the rollback, as another process writing in between."""

    def __init__(
        self, conn: sqlite3.Connection, *, busy: bool = False, meanwhile: Any = None
    ) -> None:
        self.conn = conn
        self.fail_commit = True
        self.busy = busy
        self.meanwhile = meanwhile

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and self.fail_commit:
            self.fail_commit = False
            raise sqlite3.OperationalError("database or disk is full")
        if sql == "BEGIN IMMEDIATE" and self.busy and not self.fail_commit:
            self.busy = False
            raise sqlite3.OperationalError("database is locked")
        result = self.conn.execute(sql, *args)
        if sql == "ROLLBACK" and self.meanwhile is not None:
            self.meanwhile()
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def _fail_the_commit(store: SQLiteStore, **options: Any) -> None:
    writer = store.writer
    failing = _FailingConnection(writer._inline, **options)  # type: ignore[arg-type]
    writer._inline = writer._in_txn = failing  # type: ignore[assignment]


async def test_what_a_failed_commit_changed_is_written_again_at_once(
    sqlite: tuple[Path, SQLiteStore], caplog: pytest.LogCaptureFixture
) -> None:
    path, store = sqlite
    ran: list[str] = []
    assert _claim_now(store, "a", "t1") is None
    assert store.complete_now("a", "t1", ttl_seconds=100) is True
    assert _claim_now(store, "b", "t2") is None
    assert _claim_now(store, "b", "t3") is not None  # found b: wrote nothing
    after_commit(lambda: ran.append(str(_committed(path, "a"))))
    _fail_the_commit(store)
    with caplog.at_level(logging.WARNING, logger="mpsflow.sqlite"):
        await anyio.lowlevel.checkpoint()
    assert ran == ["completed"]
    assert _committed(path, "b") == "in_progress"
    [line] = caplog.records
    assert "3 changes answered in place were not committed" in line.getMessage()
    assert _claim_now(store, "c") is None


async def test_when_the_lock_is_taken_the_changes_are_written_first_in_a_batch_of_their_own(
    sqlite: tuple[Path, SQLiteStore],
) -> None:
    path, store = sqlite
    ran: list[str] = []
    assert _claim_now(store, "a", "t1") is None
    after_commit(lambda: ran.append(str(_committed(path, "a"))))
    _fail_the_commit(store, busy=True)
    await anyio.lowlevel.checkpoint()  # the commit fails, and the lock is taken
    assert _claim_now(store, "c") is DECLINED  # until the changes are written
    after_commit(lambda: ran.append("later"))
    assert ran == []
    assert await store.complete("a", "t1", ttl_seconds=100)  # comes after them
    assert ran == ["in_progress", "later"]  # their batch, then the completion's
    assert _claim_now(store, "c") is None


async def test_a_change_that_comes_out_differently_when_written_again_is_an_error(
    sqlite: tuple[Path, SQLiteStore], caplog: pytest.LogCaptureFixture
) -> None:
    path, store = sqlite

    def another_process_claims_a() -> None:
        with sqlite3.connect(path) as other:
            other.execute(
                "INSERT INTO mpsflow_idempotency VALUES ('a', 'in_progress', 'theirs', 'h', ?)",
                (time.time() + LEASE,),
            )

    assert _claim_now(store, "a", "mine") is None
    _fail_the_commit(store, meanwhile=another_process_claims_a)
    with caplog.at_level(logging.WARNING, logger="mpsflow.sqlite"):
        await anyio.lowlevel.checkpoint()
    assert "1 changes answered in place came out differently" in caplog.text
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.ERROR]


async def test_a_checkpoint_holding_batches_back_commits_what_was_answered_first(
    sqlite: tuple[Path, SQLiteStore],
) -> None:
    """The second pass of a checkpoint holds batches back so that it can catch up with the
    WAL; a transaction left open into it would commit during the pass, and the WAL would never
    start over (it reached 300 MB in a short load test)."""
    path, store = sqlite
    writer = store.writer
    assert _claim_now(store, "a") is None
    writer._hold_back(asyncio.get_running_loop())  # as the first pass's end calls it
    assert _committed(path, "a") == "in_progress"
    held_back = writer._held_back
    assert held_back is not None
    assert _claim_now(store, "b") is DECLINED
    await held_back  # the second pass
    assert _claim_now(store, "b") is None


async def test_after_commit_runs_at_once_when_nothing_waits(
    sqlite: tuple[Path, SQLiteStore],
) -> None:
    _, store = sqlite
    ran: list[int] = []
    after_commit(lambda: ran.append(1))
    assert ran == [1]
    assert _claim_now(store, "a") is None
    after_commit(lambda: ran.append(2))
    assert ran == [1]
    await anyio.lowlevel.checkpoint()
    assert ran == [1, 2]


async def test_closing_commits_what_was_answered(tmp_path: Path) -> None:
    path = tmp_path / "idem.sqlite3"
    store = SQLiteStore(path)
    assert _claim_now(store, "a") is None
    await store.close()
    assert _committed(path, "a") == "in_progress"


def test_a_transaction_left_by_a_loop_that_stopped_is_committed_by_the_next_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "idem.sqlite3"
    store = SQLiteStore(path)
    answers: list[object] = []
    stopped = asyncio.new_event_loop()

    def claim_and_stop() -> None:  # the commit turn never comes on this loop
        answers.append(_claim_now(store, "a"))
        stopped.stop()

    async def claim(key: str) -> None:
        answers.append(_claim_now(store, key))

    stopped.call_soon(claim_and_stop)
    stopped.run_forever()
    stopped.close()
    assert store.writer._in_txn is not None
    assert _committed(path, "a") is None
    anyio.run(claim, "b")
    assert answers == [None, None]
    assert _committed(path, "a") == "in_progress"
    anyio.run(store.close)
    assert _committed(path, "b") == "in_progress"


async def test_a_child_forked_while_a_transaction_is_open_can_write(tmp_path: Path) -> None:
    """SQLite keeps its lock records per process: a child inheriting a connection inside a
    write transaction would find the database locked for good."""
    path = tmp_path / "idem.sqlite3"
    store = SQLiteStore(path, busy_timeout=2.0)
    try:
        assert _claim_now(store, "parent") is None
        assert store.writer._in_txn is not None
        reader, writer = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            try:
                claim = asyncio.run(
                    store.claim("child", lease_seconds=LEASE, payload_hash="h", token="c")
                )
                os.write(writer, claim.state.value.encode())
            except BaseException as exc:
                os.write(writer, type(exc).__name__.encode())
            os._exit(0)
        os.close(writer)
        try:
            answer = (await anyio.to_thread.run_sync(os.read, reader, 200)).decode()
        finally:
            os.close(reader)
            await anyio.to_thread.run_sync(os.waitpid, child, 0)
        assert answer == "claimed"
        assert _committed(path, "parent") == "in_progress"
        assert _committed(path, "child") == "in_progress"
        assert _claim_now(store, "after") is None
    finally:
        await store.close()
