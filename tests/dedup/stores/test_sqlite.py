"""SQLiteStore specifics: durability, WAL, several processes on one file, purging, locking."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from mpsflow.clock import FakeClock
from mpsflow.dedup.stores import SQLiteStore
from mpsflow.dedup.stores.base import ClaimState
from mpsflow.errors import StoreUnavailable

REPO = Path(__file__).resolve().parents[3]
LEASE = 30.0

_WORKER = """
import json, sys
import anyio
from mpsflow.dedup.stores.sqlite import SQLiteStore

async def main(path, keys):
    store = SQLiteStore(path, busy_timeout=20.0)
    await store.ping()
    sys.stdin.readline()  # wait for "go", so both processes race
    won = []
    for key in keys:
        claim = await store.claim(key, lease_seconds=600, payload_hash="h")
        if claim.state.value == "claimed":
            won.append(key)
    await store.close()
    print(json.dumps(won))

keys = [f"key-{i}" for i in range(int(sys.argv[2]))]
anyio.run(main, sys.argv[1], keys[::-1] if sys.argv[3] == "down" else keys)
"""


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        count: int = conn.execute("SELECT count(*) FROM mpsflow_idempotency").fetchone()[0]
    conn.close()
    return count


async def test_records_survive_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "idem.db"
    first = SQLiteStore(path, clock=clock)
    done = await first.claim("done", lease_seconds=LEASE, payload_hash="h1")
    assert await first.complete("done", done.token, ttl_seconds=100)
    running = await first.claim("running", lease_seconds=LEASE, payload_hash="h2")
    await first.close()

    second = SQLiteStore(path, clock=clock)
    try:
        completed = await second.claim("done", lease_seconds=LEASE, payload_hash="x")
        assert (completed.state, completed.payload_hash) == (ClaimState.COMPLETED, "h1")
        busy = await second.claim("running", lease_seconds=LEASE, payload_hash="x")
        assert busy.state is ClaimState.IN_PROGRESS
        # The claim token lives in the file, so the owner can still settle after a reopen.
        assert await second.complete("running", running.token, ttl_seconds=100)
    finally:
        await second.close()


async def test_uses_wal_journal(tmp_path: Path) -> None:
    path = tmp_path / "idem.db"
    store = SQLiteStore(path)
    assert await store.ping()
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_two_processes_claim_each_key_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    count = 300
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), str(count), direction],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=tmp_path,
        )
        for direction in ("up", "down")  # they meet in the middle, racing for the same keys
    ]
    results = []
    try:
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(b"go\n")
            worker.stdin.flush()
        for worker in workers:
            out, err = worker.communicate(timeout=60)
            assert worker.returncode == 0, err.decode()
            results.append(set(json.loads(out)))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    assert results[0].isdisjoint(results[1])
    assert results[0] | results[1] == {f"key-{i}" for i in range(count)}


async def test_expired_rows_are_purged_opportunistically(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "idem.db"
    store = SQLiteStore(path, clock=clock, purge_interval=60)
    try:
        for index in range(5):
            claim = await store.claim(f"old-{index}", lease_seconds=LEASE, payload_hash="h")
            assert await store.complete(f"old-{index}", claim.token, ttl_seconds=10)
        live = await store.claim("live", lease_seconds=1000, payload_hash="h")
        assert live.state is ClaimState.CLAIMED
        assert _rows(path) == 6

        clock.advance(30)  # expired, but the purge interval has not passed yet
        await store.claim("new-1", lease_seconds=LEASE, payload_hash="h")
        assert _rows(path) == 7

        clock.advance(31)
        await store.claim("new-2", lease_seconds=LEASE, payload_hash="h")
        assert _rows(path) == 2  # "live" and "new-2"; "new-1"'s lease ended too
    finally:
        await store.close()


async def test_a_locked_database_is_unavailable_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "idem.db"
    store = SQLiteStore(path, busy_timeout=0.05)
    assert await store.ping()
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        address = re.escape(f"sqlite:{path}")
        with pytest.raises(
            StoreUnavailable, match=rf"^idempotency store {address} unavailable \(.+\)$"
        ) as caught:
            await store.claim("k", lease_seconds=LEASE, payload_hash="h")
        cause = caught.value.__cause__
        assert isinstance(cause, sqlite3.OperationalError)
        if sys.version_info >= (3, 11):  # the error code, not SQLite's wording
            assert cause.sqlite_errorname == "SQLITE_BUSY"
        blocker.execute("ROLLBACK")
        claim = await store.claim("k", lease_seconds=LEASE, payload_hash="h")
        assert claim.state is ClaimState.CLAIMED
    finally:
        blocker.close()
        await store.close()


async def test_an_unopenable_path_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "missing-dir").write_text("a file where the folder should be")
    store = SQLiteStore(tmp_path / "missing-dir" / "idem.db")
    assert not await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.claim("k", lease_seconds=LEASE, payload_hash="h")
    await store.close()
    assert "missing-dir" in repr(store)


async def test_opening_waits_for_a_writer_holding_a_fresh_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Switching to WAL skips SQLite's busy handler; the store retries instead of failing."""
    path = tmp_path / "idem.db"
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("CREATE TABLE other (x)")  # a real file, still in rollback-journal mode
    blocker.execute("BEGIN IMMEDIATE")
    retrying = threading.Event()
    real_sleep = time.sleep

    def observed_sleep(seconds: float) -> None:
        retrying.set()
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", observed_sleep)
    store = SQLiteStore(path, busy_timeout=10)
    states: list[ClaimState] = []

    async def claim() -> None:
        states.append((await store.claim("k", lease_seconds=LEASE, payload_hash="h")).state)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(claim)
            assert await anyio.to_thread.run_sync(retrying.wait, 10)
            blocker.execute("ROLLBACK")
        assert states == [ClaimState.CLAIMED]
    finally:
        blocker.close()
        await store.close()
