"""SQLiteStore's group commit: concurrent calls share transactions, conflicting claims within
one batch still have one winner, and a batch that fails half-way writes nothing.

The batches are made deterministic by holding the database's write lock from another
connection while the calls queue up: the writer's first transaction waits for the lock, so
everything else arrives in the next one.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from mpsflow._sqlite import SQLiteWriter
from mpsflow.dedup.idempotency import Idempotency
from mpsflow.dedup.stores import SQLiteStore
from mpsflow.dedup.stores.base import Claim, ClaimState
from mpsflow.errors import StoreUnavailable

LEASE = 60.0


@asynccontextmanager
async def store_at(path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(path, busy_timeout=30.0)
    assert await store.ping()  # connected, schema made: the lock below blocks only batches
    try:
        yield store
    finally:
        await store.close()


async def test_concurrent_claims_share_transactions_and_conflicts_have_one_winner(
    tmp_path: Path,
) -> None:
    keys = [f"task-{n % 20}:handler" for n in range(200)]  # 10 claims of each of 20 keys
    async with store_at(tmp_path / "dedup.sqlite3") as store:
        before = store.writer.batches
        results = await claims_behind_a_lock(store, keys)
        batches = store.writer.batches - before
    states = Counter(
        (key, r.state) for key, r in zip(keys, results, strict=True) if isinstance(r, Claim)
    )
    assert all(isinstance(r, Claim) for r in results)
    for key in set(keys):
        assert states[(key, ClaimState.CLAIMED)] == 1  # one winner, also within one batch
        assert states[(key, ClaimState.IN_PROGRESS)] == 9
    assert batches <= 3  # 200 calls: the one that waited for the lock, then the rest together


async def claims_behind_a_lock(store: SQLiteStore, keys: list[str]) -> list[Claim | BaseException]:
    path = Path(store.describe().removeprefix("sqlite:"))
    results: list[Claim | BaseException] = [StoreUnavailable("not answered")] * len(keys)

    async def claim(index: int, key: str) -> None:
        try:
            results[index] = await store.claim(key, lease_seconds=LEASE, payload_hash="h")
        except StoreUnavailable as exc:
            results[index] = exc

    lock = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    lock.execute("BEGIN IMMEDIATE")
    try:
        async with anyio.create_task_group() as tg:
            for index, key in enumerate(keys):
                tg.start_soon(claim, index, key)
            await anyio.wait_all_tasks_blocked()  # every call is queued behind the lock
            lock.execute("COMMIT")
    finally:
        if lock.in_transaction:
            lock.execute("COMMIT")
        lock.close()
    return results


def rows(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {key for (key,) in conn.execute("SELECT key FROM mpsflow_idempotency")}


async def test_a_batch_that_fails_half_way_writes_nothing_and_nothing_is_claimed_twice(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dedup.sqlite3"
    async with store_at(path) as store:
        # The disk "dies" at the 6th insert of the batch: a real SQLite error mid-transaction.
        with sqlite3.connect(path) as conn:
            conn.execute(
                "CREATE TRIGGER dies BEFORE INSERT ON mpsflow_idempotency"
                " WHEN NEW.key = 'k5:h' BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
            )
        keys = [f"k{n}:h" for n in range(10)]
        results = await claims_behind_a_lock(store, keys)
        failed = [k for k, r in zip(keys, results, strict=True) if isinstance(r, StoreUnavailable)]
        assert {"k4:h", "k5:h"} <= set(failed)  # k4 ran before k5 in the batch k5 failed
        assert rows(path) == set(keys) - set(failed)  # nothing of the failed batch was written
        with sqlite3.connect(path) as conn:
            conn.execute("DROP TRIGGER dies")
        # Every caller retries (as a redelivery would): each key is claimed exactly once.
        again = await claims_behind_a_lock(store, keys)
        won = [
            r for r in [*results, *again] if isinstance(r, Claim) and r.state is ClaimState.CLAIMED
        ]
        assert len(won) == len(keys)
        assert rows(path) == set(keys)


async def test_idempotency_over_a_failing_batch_runs_each_handler_once(tmp_path: Path) -> None:
    path = tmp_path / "dedup.sqlite3"
    async with store_at(path) as store:
        idem = Idempotency(store)
        with sqlite3.connect(path) as conn:
            conn.execute(
                "CREATE TRIGGER dies BEFORE INSERT ON mpsflow_idempotency"
                " WHEN NEW.key = 'n3:h' BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
            )
        runs: Counter[str] = Counter()

        async def deliver(key: str) -> bool:
            try:
                decision = await idem.begin(key, "h", "p")
            except StoreUnavailable:
                return False  # retried later, as the source would
            if decision.state is ClaimState.CLAIMED:
                runs[key] += 1
                await idem.succeeded(decision)
            return True

        keys = [f"n{n}" for n in range(8)] * 3  # each notification delivered three times at once
        done: dict[int, bool] = {}

        async def attempt(index: int, key: str) -> None:
            done[index] = await deliver(key)

        async with anyio.create_task_group() as tg:
            for index, key in enumerate(keys):
                tg.start_soon(attempt, index, key)
        with sqlite3.connect(path) as conn:
            conn.execute("DROP TRIGGER dies")
        for index, key in enumerate(keys):
            while not done[index]:
                done[index] = await deliver(key)
        assert runs == Counter({f"n{n}": 1 for n in range(8)})


@pytest.mark.parametrize("users", [1, 2])
async def test_stores_of_one_file_share_its_writer(tmp_path: Path, users: int) -> None:
    path = tmp_path / "dedup.sqlite3"
    stores = [SQLiteStore(path) for _ in range(users)]
    writers = {id(store.writer) for store in stores}
    assert len(writers) == 1
    for store in stores:
        assert (await store.claim(f"k{id(store)}", lease_seconds=LEASE, payload_hash="")).state is (
            ClaimState.CLAIMED
        )
    for store in stores[:-1]:
        await store.close()
    last = stores[-1]
    assert (await last.claim("still-open", lease_seconds=LEASE, payload_hash="")).state is (
        ClaimState.CLAIMED
    )
    await last.close()
    with pytest.raises(StoreUnavailable):
        await last.claim("closed", lease_seconds=LEASE, payload_hash="")
    reopened = SQLiteStore(path)
    assert (await reopened.claim("still-open", lease_seconds=LEASE, payload_hash="")).state is (
        ClaimState.IN_PROGRESS
    )
    await reopened.close()


async def test_the_wal_starts_over_under_a_steady_stream_of_commits(tmp_path: Path) -> None:
    """Checkpoints hold inline batches back for their last pass, so they complete and the WAL
    is reused from its start; racing the commits, they would never catch up."""
    path = str(tmp_path / "stream.sqlite3")
    writer = SQLiteWriter.open(path, busy_timeout=5.0, setup=_bodies_table)
    body = b"x" * 8000  # two overflow pages a row, as an inbox body

    def insert_and_delete(conn: sqlite3.Connection) -> None:
        row = conn.execute("INSERT INTO bodies (body) VALUES (?)", (body,)).lastrowid
        assert row is not None
        conn.execute("DELETE FROM bodies WHERE id = ?", (row - 64,))  # 64 rows stay

    async def one() -> None:
        await writer.run(insert_and_delete)

    commits = 1200
    try:
        for _ in range(commits):  # 8 operations a commit: several checkpoints' worth
            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(one)
        frames = _frames_in_wal(path)  # while open: closing checkpoints and removes the file
    finally:
        await writer.close()
    written = commits * 8 * 2  # at least two new overflow pages per operation
    assert frames < written, (frames, written)


def _bodies_table(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS bodies (id INTEGER PRIMARY KEY, body BLOB)")


def _frames_in_wal(path: str) -> int:
    """The most frames the WAL file ever held: it grows to its longest run between two
    restarts and is reused from its start after each."""
    conn = sqlite3.connect(path)
    try:
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()
    return (os.path.getsize(f"{path}-wal") - 32) // (page_size + 24)  # header, frame headers


async def test_hooks_run_on_the_writers_thread_before_each_checkpoint(tmp_path: Path) -> None:
    """What rows refer to outside the database (the inbox's segment files) is synced there,
    before the checkpoint syncs the WAL; a forgotten hook runs no more."""
    path = str(tmp_path / "hooks.sqlite3")
    ran: list[str] = []

    def hook() -> None:
        ran.append(threading.current_thread().name)

    writer = SQLiteWriter.open(path, busy_timeout=5.0, setup=_bodies_table, before_checkpoint=hook)

    def insert(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO bodies (body) VALUES (x'00')")

    try:
        while not ran:  # a checkpoint is due every few hundred commits
            await writer.run(insert)
        assert ran[0].startswith("mpsflow-sqlite-writer:")
        writer.forget_before_checkpoint(hook)
        before = len(ran)
        for _ in range(1000):  # several checkpoints more
            await writer.run(insert)
    finally:
        await writer.close()  # the thread is done
    assert len(ran) == before
