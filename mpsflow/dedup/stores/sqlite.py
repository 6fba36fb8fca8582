"""The embedded default idempotency store: one SQLite file, durable across restarts.

Stdlib ``sqlite3`` in WAL mode, so readers never block the writer and several processes on
one host can share the file. Calls are group-committed (:mod:`mpsflow._sqlite`): the claims,
completions and releases of all concurrent deliveries go to one writer per database, which
runs what is queued in one ``BEGIN IMMEDIATE`` transaction (the write lock is taken
before the reads, so two claimers, even in one batch, can never both see "no record"). Lock
waits on other processes are bounded by ``busy_timeout``; the event loop never blocks on the
disk. A process writing the file alone answers at once instead, from a transaction that
stays open until the next turn of its event loop (:meth:`mpsflow._sqlite.SQLiteWriter.run_now`).
"""

from __future__ import annotations

import math
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar, cast

from mpsflow._sqlite import NOT_NOW, Operation, SQLiteWriter
from mpsflow.clock import Clock, SystemClock
from mpsflow.dedup.stores.base import DECLINED, Claim, ClaimState, store_unavailable
from mpsflow.errors import ConfigurationError, StoreUnavailable

__all__ = ["SQLiteStore"]

_T = TypeVar("_T")

_CLAIMED = ClaimState.CLAIMED
_IN_PROGRESS = ClaimState.IN_PROGRESS.value
_COMPLETED = ClaimState.COMPLETED.value
"""The ``state`` column's values (an enum member's ``.value`` is slow to read per call)."""

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
"""A path that is a URL (``redis://…``): a store given to the wrong class."""
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
_CLAIM = (
    f"INSERT INTO {_TABLE} (key, state, token, payload_hash, expires_at) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET state = excluded.state, token = excluded.token,"
    " payload_hash = excluded.payload_hash, expires_at = excluded.expires_at"
    f" WHERE {_TABLE}.expires_at <= ?"
)
"""Take ``key`` unless its row is live (expires after the last parameter, now): one statement
for the common claim of a new key; a row left as it was is then read with ``_SELECT``."""
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

    While its process writes the file alone, the synchronous twins (``claim_now``,
    ``complete_now``, ``release_now``) answer at once and the dedup of a handler run awaits
    nothing (see :meth:`mpsflow._sqlite.SQLiteWriter.run_now`); in company they decline and
    the coroutines run as before.
    """

    answers_in_place = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock | None = None,
        busy_timeout: float = 5.0,
        purge_interval: float = 60.0,
    ) -> None:
        self._path = os.fspath(path)
        if _URL.match(self._path):
            raise ConfigurationError(
                f"the SQLite store takes a file path, not a URL ({self._path}): for Redis, give"
                " the app idempotency=RedisStore(url) (mpsflow run's --dedup is the SQLite file)"
            )
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._time: Callable[[], float] = (
            time.time if type(self._clock) is SystemClock else self._clock.time
        )
        """The clock's wall time (``time.time`` itself for the system clock: no extra frame)."""
        self._busy_timeout = busy_timeout
        self._purge_interval = purge_interval
        self._next_purge = -math.inf
        self._closed = False
        self._writer: SQLiteWriter | None = None

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
        token = token or secrets.token_hex(16)
        claim, expires_at = self._claim(key, lease_seconds, payload_hash, token)
        found = await self._run(claim)
        return Claim(_CLAIMED, token=token, expires_at=expires_at) if found is None else found

    async def complete(self, key: str, token: str, *, ttl_seconds: float) -> bool:
        """Turn the caller's live lease into a COMPLETED row kept for ``ttl_seconds``."""
        return await self._run(self._complete(key, token, ttl_seconds))

    async def release(self, key: str, token: str) -> bool:
        """Delete the caller's live lease so a redelivery can run the handler again."""
        return await self._run(self._release(key, token))

    def claim_now(
        self, key: str, *, lease_seconds: float, payload_hash: str, token: str
    ) -> Claim | None:
        """``claim`` at once while this process writes the file alone, else ``DECLINED``."""
        if not token:
            raise ValueError("token must not be empty")
        claim, _ = self._claim(key, lease_seconds, payload_hash, token)
        found = self._run_now(claim, _took)
        return DECLINED if found is NOT_NOW else cast(Claim | None, found)

    def complete_now(self, key: str, token: str, *, ttl_seconds: float) -> bool | None:
        """``complete`` at once while this process writes the file alone, else None."""
        done = self._run_now(self._complete(key, token, ttl_seconds), bool)
        return None if done is NOT_NOW else bool(done)

    def release_now(self, key: str, token: str) -> bool | None:
        """``release`` at once while this process writes the file alone, else None."""
        done = self._run_now(self._release(key, token), bool)
        return None if done is NOT_NOW else bool(done)

    def _claim(
        self, key: str, lease_seconds: float, payload_hash: str, token: str
    ) -> tuple[Operation[Claim | None], float]:
        """The claim's operation (None when it took ``key``) and when its lease would end."""
        if not lease_seconds > 0:
            _check_positive("lease_seconds", lease_seconds)
        now = self._time()
        expires_at = now + lease_seconds
        taken = (key, _IN_PROGRESS, token, payload_hash, expires_at, now)

        def claim(conn: sqlite3.Connection) -> Claim | None:
            if conn.execute(_CLAIM, taken).rowcount != 1:  # a live row: what does it say?
                row = conn.execute(_SELECT, (key,)).fetchone()
                return Claim(ClaimState(row[0]), payload_hash=row[1], expires_at=row[2])
            if now >= self._next_purge:
                conn.execute(_PURGE, (now,))
                self._next_purge = now + self._purge_interval
            return None

        return claim, expires_at

    def _complete(self, key: str, token: str, ttl_seconds: float) -> Operation[bool]:
        if not ttl_seconds > 0:
            _check_positive("ttl_seconds", ttl_seconds)
        now = self._time()
        return _changes(_COMPLETE, (_COMPLETED, now + ttl_seconds, key, token, _IN_PROGRESS, now))

    def _release(self, key: str, token: str) -> Operation[bool]:
        return _changes(_RELEASE, (key, token, _IN_PROGRESS, self._time()))

    async def ping(self) -> bool:
        """True when the database file can be opened and queried."""
        try:
            await self._run(_ping)
        except StoreUnavailable:
            return False
        return True

    @property
    def writer(self) -> SQLiteWriter:
        """The database's writer (shared with every store of the file in this process)."""
        if self._writer is None:
            self._writer = SQLiteWriter.open(
                self._path, busy_timeout=self._busy_timeout, setup=_create_schema
            )
        return self._writer

    async def close(self) -> None:
        """Stop using the database; later calls raise StoreUnavailable."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            await self._writer.close()

    def _run_now(self, operation: Operation[_T], changed: Callable[[_T], bool]) -> _T | object:
        if self._closed:
            raise store_unavailable(self.describe(), "closed")
        writer = self._writer or self.writer
        try:
            return writer.run_now(operation, changed)
        except sqlite3.Error as exc:
            raise store_unavailable(self.describe(), exc) from exc

    async def _run(self, operation: Operation[_T]) -> _T:
        if self._closed:
            raise store_unavailable(self.describe(), "closed")
        writer = self._writer or self.writer
        try:
            return await writer.run(operation)
        except sqlite3.Error as exc:
            raise store_unavailable(self.describe(), exc) from exc


def _took(found: Claim | None) -> bool:
    """Whether a claim's operation wrote (took the key): it found no live row."""
    return found is None


def _create_schema(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA:
        conn.execute(statement)


def _changes(statement: str, args: tuple[object, ...]) -> Operation[bool]:
    """An operation running ``statement``: True when it changed exactly one row."""

    def change(conn: sqlite3.Connection) -> bool:
        return conn.execute(statement, args).rowcount == 1

    return change


def _ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive")
