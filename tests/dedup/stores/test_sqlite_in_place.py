"""The SQLite store answering in place while its process writes the file alone: what is
answered is committed at the next turn of the loop, another process makes it write in company,
a failed commit writes what was answered again, and what waits for a commit runs after it."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from mpsflow._sqlite import after_commit
from mpsflow._sqlite_sharing import WriterSharing
from mpsflow.dedup.stores import SQLiteStore
from mpsflow.dedup.stores.base import DECLINED, ClaimState

LEASE = 60.0


def _claim_now(store: SQLiteStore, key: str, token: str = "t") -> object:
    return store.claim_now(key, lease_seconds=LEASE, payload_hash="h", token=token)


def _committed(path: Path, key: str) -> str | None:
    """The state another connection reads for ``key`` (committed rows only)."""
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT state FROM mpsflow_idempotency WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


async def test_alone_a_claim_is_answered_at_once_and_committed_at_the_next_turn(
    tmp_path: Path,
) -> None:
    path = tmp_path / "idem.sqlite3"
    store = SQLiteStore(path)
    try:
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
    finally:
        await store.close()


async def test_a_coroutine_call_comes_after_what_was_answered_in_place(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "idem.sqlite3")
    try:
        assert _claim_now(store, "k", "mine") is None
        claim = await store.claim("k", lease_seconds=LEASE, payload_hash="h")
        assert claim.state is ClaimState.IN_PROGRESS
        assert await store.complete("k", "mine", ttl_seconds=100)
    finally:
        await store.close()


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


def test_the_first_of_two_writers_is_alone_until_the_second_comes(
    tmp_path: Path, company: Callable[[Path], None]
) -> None:
    path = tmp_path / "db"
    first = WriterSharing(str(path))
    try:
        assert first.alone()
        assert first.alone()
        company(path)
        assert not first.alone()
        assert not first.alone()  # once in company, always
    finally:
        first.close()


def test_a_lock_file_that_cannot_be_opened_means_company(tmp_path: Path) -> None:
    nowhere = WriterSharing(str(tmp_path / "no such folder" / "db"))
    assert not nowhere.alone()
    nowhere.close()


class _FailingCommit:
    """A connection whose next COMMIT fails as a full disk would (no real disk fills here)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.fail = True

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and self.fail:
            self.fail = False
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


async def test_what_was_answered_is_written_again_when_its_commit_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "idem.sqlite3"
    store = SQLiteStore(path)
    ran: list[str] = []
    try:
        assert _claim_now(store, "a", "t1") is None
        assert store.complete_now("a", "t1", ttl_seconds=100) is True
        assert _claim_now(store, "b", "t2") is None
        after_commit(lambda: ran.append(str(_committed(path, "a"))))
        writer = store.writer
        failing = _FailingCommit(writer._inline)  # type: ignore[arg-type]
        writer._inline = writer._in_txn = failing  # type: ignore[assignment]
        with caplog.at_level(logging.WARNING, logger="mpsflow.sqlite"):
            await anyio.lowlevel.checkpoint()  # the commit fails: the three go to the next batch
            assert _claim_now(store, "c") is DECLINED  # until that batch is over
            assert ran == []
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
        assert ran == ["completed"]
        assert (_committed(path, "a"), _committed(path, "b")) == ("completed", "in_progress")
        assert "3 operations answered in place were not committed" in caplog.text
        assert _claim_now(store, "c") is None
    finally:
        await store.close()


async def test_after_commit_runs_at_once_when_nothing_waits(tmp_path: Path) -> None:
    ran: list[int] = []
    after_commit(lambda: ran.append(1))
    assert ran == [1]
    store = SQLiteStore(tmp_path / "idem.sqlite3")
    try:
        assert _claim_now(store, "a") is None
        after_commit(lambda: ran.append(2))
        assert ran == [1]
        await anyio.lowlevel.checkpoint()
        assert ran == [1, 2]
    finally:
        await store.close()


async def test_closing_commits_what_was_answered(tmp_path: Path) -> None:
    path = tmp_path / "idem.sqlite3"
    store = SQLiteStore(path)
    assert _claim_now(store, "a") is None
    await store.close()
    assert _committed(path, "a") == "in_progress"


def test_a_transaction_left_by_a_loop_that_ended_is_committed_by_the_next_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "idem.sqlite3"
    store = SQLiteStore(path)

    async def claim(key: str) -> object:
        return _claim_now(store, key)

    assert anyio.run(claim, "a") is None  # the loop ends before its commit turn
    assert anyio.run(claim, "b") is None
    assert _committed(path, "a") == "in_progress"
    anyio.run(store.close)
    assert _committed(path, "b") == "in_progress"
