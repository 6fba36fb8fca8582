"""Group commit for SQLite: one writer thread per database file runs the operations of every
concurrent caller, many to a transaction.

A claim or a completion is a few microseconds of SQLite work; handing each to a worker thread
and committing it alone costs far more than the work. Here a caller puts its operation on the
writer's queue and awaits a future; the writer thread takes everything queued, runs it in one
``BEGIN IMMEDIATE`` … ``COMMIT`` and answers the whole batch with one wake-up of each event loop
involved. Under load batches grow by themselves (what arrives while one commits goes in the
next); a lone call still costs one round trip.

A batch commits or rolls back as a whole: when any operation raises, nothing of the batch is
written, and every caller in it gets that exception (a ``sqlite3.Error`` its store turns into
``StoreUnavailable``), so nothing is done for a caller that was told it failed.

Writers are shared by every store of one file in a process (:meth:`SQLiteWriter.open`), and a
forked child makes its own: a connection must not cross ``fork()``. The database is in WAL
mode with ``synchronous = NORMAL``: a commit survives the process being killed (not a power
cut, which may lose the last transactions; the queue redelivers and dedup catches up).
Futures are asyncio's: the SQLite stores need the asyncio backend of anyio.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, Final, TypeVar

__all__ = ["Operation", "SQLiteWriter"]

_T = TypeVar("_T")

Operation = Callable[[sqlite3.Connection], _T]
"""Work on the connection inside the batch's transaction (no BEGIN/COMMIT of its own)."""

_MAX_BATCH: Final = 512
"""The most operations in one transaction (a bound on how long one commit holds the lock)."""

_Item = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]
_STOP: Final = object()


class SQLiteWriter:
    """The writer of one database file in this process; get it with :meth:`open`.

    ``setup`` operations (schemas) run once on every new connection, before its first batch.
    """

    _open: ClassVar[dict[str, SQLiteWriter]] = {}
    _registry_lock: ClassVar = threading.Lock()
    _every: ClassVar[weakref.WeakSet[SQLiteWriter]] = weakref.WeakSet()

    def __init__(self, path: str, busy_timeout: float) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.batches = 0
        """Transactions committed or rolled back so far (for tests and benchmarks)."""
        self.operations = 0
        """Operations run so far."""
        self._setup: list[Callable[[sqlite3.Connection], object]] = []
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._users = 0
        self._conn: sqlite3.Connection | None = None
        self._ready = 0
        """How many of ``_setup`` ran on ``_conn``."""
        self._every.add(self)

    @classmethod
    def open(
        cls,
        path: str,
        *,
        busy_timeout: float,
        setup: Callable[[sqlite3.Connection], object] | None = None,
    ) -> SQLiteWriter:
        """The writer of ``path`` in this process (made on first use); pair with :meth:`close`.

        ``:memory:`` is a database of its own for every caller, so it gets a writer of its own.
        """
        key = os.path.abspath(path) if path != ":memory:" else f":memory:{id(object())}"
        with cls._registry_lock:
            writer = cls._open.get(key)
            if writer is None:
                writer = cls(path, busy_timeout)
                if path != ":memory:":
                    cls._open[key] = writer
            writer._users += 1
            if setup is not None and setup not in writer._setup:
                writer._setup.append(setup)
        return writer

    async def run(self, operation: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``operation`` in the next batch; its result, or what it (or the batch) raised.

        Cancelling the caller does not take the operation back once it is queued: it runs,
        and its answer is dropped (as for a call handed to a worker thread).
        """
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._start()
        self._queue.put((operation, future))
        return await future

    async def close(self) -> None:
        """Stop using the writer; the last user stops its thread and closes the connection."""
        with self._registry_lock:
            self._users -= 1
            last = self._users <= 0
            if last:
                for key, writer in list(self._open.items()):
                    if writer is self:
                        del self._open[key]
        if not last:
            return
        thread = self._thread
        if thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.get_running_loop().run_in_executor(None, thread.join)

    # -- the writer thread -------------------------------------------------------------------

    def _forked(self) -> None:
        """In a forked child: the parent's thread and connection are not this process's."""
        self._thread = None
        self._conn = None  # never closed here: closing would drop this process's locks
        self._queue = queue.SimpleQueue()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, name=f"mpsflow-sqlite-writer:{self.path}", daemon=True
            )
            self._thread.start()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                self._disconnect()
                return
            batch: list[_Item] = [first]  # type: ignore[list-item]
            stop = False
            while len(batch) < _MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            self._answer(batch, self._commit(batch))
            if stop:
                self._disconnect()
                return

    def _commit(self, batch: list[_Item]) -> list[object] | BaseException:
        """Run ``batch`` in one transaction: every result, or the exception that undid it."""
        self.batches += 1
        self.operations += len(batch)
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            results = [operation(conn) for operation, _ in batch]
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn is not None and conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    self._disconnect()
            return exc
        return results

    @staticmethod
    def _answer(batch: list[_Item], outcome: list[object] | BaseException) -> None:
        """Settle the batch's futures: one wake-up per event loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], object]]] = {}
        for index, (_, future) in enumerate(batch):
            answer = outcome if isinstance(outcome, BaseException) else outcome[index]
            by_loop.setdefault(future.get_loop(), []).append((future, answer))
        for loop, answers in by_loop.items():
            # A closed loop (RuntimeError) has nobody waiting for these answers.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, answers, isinstance(outcome, BaseException))

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                _enable_wal(conn, self.busy_timeout)
                conn.execute("PRAGMA synchronous = NORMAL")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            self._ready = 0
        setup = self._setup
        while self._ready < len(setup):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                setup[self._ready](self._conn)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._ready += 1
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None


def _after_fork_in_child() -> None:
    SQLiteWriter._registry_lock = threading.Lock()
    for writer in list(SQLiteWriter._every):
        writer._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _settle(answers: list[tuple[asyncio.Future[Any], object]], failed: bool) -> None:
    for future, answer in answers:
        if future.done():  # its caller was cancelled
            continue
        if failed:
            assert isinstance(answer, BaseException)
            future.set_exception(answer)
        else:
            future.set_result(answer)


def _enable_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL, retrying within ``busy_timeout``.

    SQLite does not run the busy handler for this switch, so a connection opening while
    another one writes would otherwise fail at once with "database is locked".
    """
    give_up_at = time.monotonic() + busy_timeout
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
