"""The embedded default idempotency store: one SQLite file, durable across restarts.

Stdlib ``sqlite3`` in WAL mode, so readers never block the writer and several processes on
one host can share the file. Every claim is a ``BEGIN IMMEDIATE`` transaction (the write lock
is taken before the read, so two claimers can never both see "no record"), and lock waits are
bounded by ``busy_timeout``. Blocking calls run in a worker thread through
``anyio.to_thread.run_sync``; one connection per store is used by one thread at a time (a
capacity limiter of one), so the event loop never blocks on the disk.
"""

from __future__ import annotations

import math
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from mpsflow.clock import Clock, SystemClock
from mpsflow.dedup.stores.base import Claim, ClaimState, store_unavailable
from mpsflow.errors import StoreUnavailable

__all__ = ["SQLiteStore"]

_T = TypeVar("_T")

_TABLE = "mpsflow_idempotency"
_PURGE_BATCH = 1000

_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {_TABLE} ("
    " key TEXT PRIMARY KEY,"
    " state TEXT NOT NULL,"
    " token TEXT NOT NULL,"
    " payload_hash TEXT NOT NULL,"
    " expires_at REAL NOT NULL"
    ") WITHOUT ROWID",
    f"CREATE INDEX IF NOT EXISTS {_TABLE}_expires_at ON {_TABLE} (expires_at)",
)
_SELECT = f"SELECT state, payload_hash, expires_at FROM {_TABLE} WHERE key = ?"
_UPSERT = (
    f"INSERT INTO {_TABLE} (key, state, token, payload_hash, expires_at) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET state = excluded.state, token = excluded.token,"
    " payload_hash = excluded.payload_hash, expires_at = excluded.expires_at"
)
_COMPLETE = (
    f"UPDATE {_TABLE} SET state = ?, expires_at = ?"
    " WHERE key = ? AND token = ? AND state = ? AND expires_at > ?"
)
_RELEASE = f"DELETE FROM {_TABLE} WHERE key = ? AND token = ? AND state = ? AND expires_at > ?"
_PURGE = (
    f"DELETE FROM {_TABLE} WHERE key IN"
    f" (SELECT key FROM {_TABLE} WHERE expires_at <= ? LIMIT {_PURGE_BATCH})"
)


class SQLiteStore:
    """Idempotency records in a SQLite database file.

    ``path`` may be shared by several stores and processes on one host (not over a network
    file system: SQLite's locking is not reliable there). ``busy_timeout`` bounds how long a
    claim waits for another writer before raising StoreUnavailable. Expired rows are purged
    in batches inside a claim at most once per ``purge_interval`` seconds.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock | None = None,
        busy_timeout: float = 5.0,
        purge_interval: float = 60.0,
    ) -> None:
        self._path = os.fspath(path)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._busy_timeout = busy_timeout
        self._purge_interval = purge_interval
        self._next_purge = -math.inf
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._limiter = anyio.CapacityLimiter(1)

    def __repr__(self) -> str:
        return f"SQLiteStore(path={self._path!r})"

    def describe(self) -> str:
        """``sqlite:`` and the database file's absolute path."""
        path = self._path
        return f"sqlite:{path if path == ':memory:' else os.path.abspath(path)}"

    async def claim(
        self, key: str, *, lease_seconds: float, payload_hash: str, token: str = ""
    ) -> Claim:
        """Take ``key`` as IN_PROGRESS unless a live record exists."""
        _check_positive("lease_seconds", lease_seconds)
        now = self._clock.time()
        token = token or secrets.token_hex(16)
        return await self._run(self._claim, key, lease_seconds, payload_hash, now, token)

    async def complete(self, key: str, token: str, *, ttl_seconds: float) -> bool:
        """Turn the caller's live lease into a COMPLETED row kept for ``ttl_seconds``."""
        _check_positive("ttl_seconds", ttl_seconds)
        now = self._clock.time()
        args = (ClaimState.COMPLETED.value, now + ttl_seconds, key, token)
        return await self._run(self._change, _COMPLETE, (*args, ClaimState.IN_PROGRESS.value, now))

    async def release(self, key: str, token: str) -> bool:
        """Delete the caller's live lease so a redelivery can run the handler again."""
        now = self._clock.time()
        args = (key, token, ClaimState.IN_PROGRESS.value, now)
        return await self._run(self._change, _RELEASE, args)

    async def ping(self) -> bool:
        """True when the database file can be opened and queried."""
        try:
            await self._run(self._ping)
        except StoreUnavailable:
            return False
        return True

    async def close(self) -> None:
        """Close the connection; later calls raise StoreUnavailable."""
        if self._closed:
            return
        self._closed = True
        await anyio.to_thread.run_sync(self._close, limiter=self._limiter)

    async def _run(self, func: Callable[..., _T], *args: object) -> _T:
        if self._closed:
            raise store_unavailable(self.describe(), "closed")
        try:
            return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise store_unavailable(self.describe(), exc) from exc

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise sqlite3.ProgrammingError("store is closed")
        if self._conn is None:
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
                self._enable_wal(conn)
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL, retrying within ``busy_timeout``.

        SQLite does not run the busy handler for this switch, so a connection opening while
        another one writes would otherwise fail at once with "database is locked".
        """
        give_up_at = time.monotonic() + self._busy_timeout
        delay = 0.001
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")  # no-op once the file is in WAL
            except sqlite3.OperationalError:
                if time.monotonic() >= give_up_at:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
            else:
                return

    def _claim(
        self, key: str, lease_seconds: float, payload_hash: str, now: float, token: str
    ) -> Claim:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(_SELECT, (key,)).fetchone()
            if row is not None and row[2] > now:
                conn.execute("COMMIT")
                return Claim(ClaimState(row[0]), payload_hash=row[1], expires_at=row[2])
            expires_at = now + lease_seconds
            state = ClaimState.IN_PROGRESS.value
            conn.execute(_UPSERT, (key, state, token, payload_hash, expires_at))
            if now >= self._next_purge:
                conn.execute(_PURGE, (now,))
                self._next_purge = now + self._purge_interval
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return Claim(ClaimState.CLAIMED, token=token, expires_at=expires_at)

    def _change(self, statement: str, args: tuple[object, ...]) -> bool:
        cursor = self._connection().execute(statement, args)
        return cursor.rowcount == 1

    def _ping(self) -> None:
        self._connection().execute("SELECT 1").fetchone()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive")
