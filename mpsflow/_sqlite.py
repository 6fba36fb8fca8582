"""Group commit for SQLite: the operations of every concurrent caller, many to a transaction,
with no thread hop per call.

A claim, a completion or an inbox append is a few microseconds of SQLite work; handing each
to a worker thread and committing it alone costs far more than the work (and under load a
thread hop waits for the GIL). Here a caller adds its operation to the writer's pending list
and awaits a future; once per turn of the event loop the writer runs everything pending in
one ``BEGIN IMMEDIATE`` … ``COMMIT``, on the event loop's thread, and answers each caller.
In WAL mode with ``synchronous = NORMAL`` a commit is a write to the WAL file, no fsync, so
this takes microseconds. Under load batches grow by themselves (what arrives while the loop
is busy goes in the next one).

The event loop never waits for a lock or a disk sync: the inline connection does not wait
for locks (``timeout=0``) and never checkpoints. A batch that finds the database locked (by
another process: ``mpsflow run --workers N`` shares the file) goes to the writer's thread,
which waits up to ``busy_timeout`` and answers with one wake-up of the loop. That thread also
checkpoints the WAL every ``_CHECKPOINT_EVERY`` inline commits (or ``_CHECKPOINT_OPERATIONS``
operations), in two passes: the first while commits go on (it syncs and copies most of the
WAL), the second with the inline batches held back (it copies the rest). A checkpoint that
only races a stream of commits never catches up, and a WAL that never starts over grows
without bound (hundreds of MB in seconds of inbox traffic) and slows every statement down,
since each page read searches the whole WAL index. After the second pass the next commit
starts the WAL over, and what arrived meanwhile goes in one bigger batch. Before the first
pass it runs the hooks given to :meth:`SQLiteWriter.open` (the inbox syncs its body files
there, so that what rows refer to is on disk before they are).

A batch commits or rolls back as a whole: when any operation raises, nothing of the batch is
written, and every caller in it gets that exception (a ``sqlite3.Error`` its store turns into
``StoreUnavailable``), so nothing is done for a caller that was told it failed.

Writers are shared by every store of one file in a process (:meth:`SQLiteWriter.open`), and a
forked child makes its own: a connection must not cross ``fork()``. A commit survives the
process being killed (not a power cut, which may lose the last transactions; the queue
redelivers and dedup catches up). Futures are asyncio's: the SQLite stores need the asyncio
backend of anyio.
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
_CHECKPOINT_EVERY: Final = 200
"""Inline commits between two WAL checkpoints (run by the writer's thread)."""
_CHECKPOINT_OPERATIONS: Final = 2000
"""Inline operations between two WAL checkpoints, whichever comes first."""
_WAL_SIZE_LIMIT: Final = 64 * 1024 * 1024
"""Bytes the WAL file is cut back to when it starts over (``journal_size_limit``)."""

_Item = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]
_Outcome = list[object] | BaseException
_STOP: Final = object()
_CHECKPOINT: Final = object()
_BUSY_CODES: Final = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (extended codes masked)


class _Busy(Exception):
    """The inline connection found the database locked: the batch goes to the thread."""


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
        self.contended = 0
        """Batches that found the database locked and went to the writer's thread."""
        self._setup: list[Callable[[sqlite3.Connection], object]] = []
        self._before_checkpoint: list[Callable[[], object]] = []
        self._users = 0
        self._pending: list[_Item] = []
        self._flush_scheduled = False
        self._inline: sqlite3.Connection | None = None
        self._inline_ready = 0
        """How many of ``_setup`` ran on ``_inline``."""
        self._commits = 0
        """Inline commits since the last checkpoint."""
        self._since_checkpoint = 0
        """Inline operations since the last checkpoint."""
        self._checkpointing = False
        """The thread is checkpointing (its first pass)."""
        self._held_back: asyncio.Future[None] | None = None
        """Set during the checkpoint's second pass: inline batches wait for it."""
        self._queue: queue.SimpleQueue[list[_Item] | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._ready = 0
        """How many of ``_setup`` ran on ``_conn`` (the thread's connection)."""
        self._every.add(self)

    @classmethod
    def open(
        cls,
        path: str,
        *,
        busy_timeout: float,
        setup: Callable[[sqlite3.Connection], object] | None = None,
        before_checkpoint: Callable[[], object] | None = None,
    ) -> SQLiteWriter:
        """The writer of ``path`` in this process (made on first use); pair with :meth:`close`.

        ``before_checkpoint`` runs on the writer's thread before each checkpoint (files that
        rows of the database refer to are synced there, as the checkpoint syncs the WAL).

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
            if before_checkpoint is not None:
                writer._before_checkpoint.append(before_checkpoint)
        return writer

    async def run(self, operation: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``operation`` in the next batch; its result, or what it (or the batch) raised.

        Cancelling the caller does not take the operation back once it is pending: it runs,
        and its answer is dropped.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._pending.append((operation, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush, loop)
        return await future

    def forget_before_checkpoint(self, hook: Callable[[], object]) -> None:
        """Stop running ``hook`` (given to :meth:`open`) before checkpoints."""
        with contextlib.suppress(ValueError):
            self._before_checkpoint.remove(hook)

    async def close(self) -> None:
        """Stop using the writer; the last user closes the connections and stops the thread."""
        with self._registry_lock:
            self._users -= 1
            last = self._users <= 0
            if last:
                for key, writer in list(self._open.items()):
                    if writer is self:
                        del self._open[key]
        if not last:
            return
        if self._held_back is not None:
            await asyncio.shield(self._held_back)
        while self._pending:  # answer what is pending before closing
            self._flush(asyncio.get_running_loop())
        _close(self._inline)
        self._inline = None
        thread = self._thread
        if thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.get_running_loop().run_in_executor(None, thread.join)

    # -- inline: on the event loop's thread --------------------------------------------------

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit what is pending (a batch of it; the rest in the next turn of the loop)."""
        self._flush_scheduled = False
        if self._held_back is not None:
            return  # flushed again when the checkpoint is done
        batch = self._pending[:_MAX_BATCH]
        del self._pending[:_MAX_BATCH]
        if self._pending:
            self._flush_scheduled = True
            loop.call_soon(self._flush, loop)
        if not batch:
            return
        try:
            outcome = self._commit_inline(batch)
        except _Busy:
            self.contended += 1
            self._to_thread(batch)
            return
        _settle(_answers(batch, outcome), isinstance(outcome, BaseException))
        self._commits += 1
        self._since_checkpoint += len(batch)
        due = self._commits >= _CHECKPOINT_EVERY or self._since_checkpoint >= _CHECKPOINT_OPERATIONS
        if due and not self._checkpointing:
            self._commits = self._since_checkpoint = 0
            self._checkpointing = True
            self._to_thread((_CHECKPOINT, loop, self._hold_back, True))

    def _hold_back(self, loop: asyncio.AbstractEventLoop) -> None:
        """The first pass is done: hold batches back for the second."""
        self._held_back = loop.create_future()
        self._to_thread((_CHECKPOINT, loop, self._checkpointed, False))

    def _checkpointed(self, loop: asyncio.AbstractEventLoop) -> None:
        """The second pass is done: commit what waited for it."""
        held_back, self._held_back = self._held_back, None
        self._checkpointing = False
        if held_back is not None and not held_back.done():
            held_back.set_result(None)
        if self._pending and not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush, loop)

    def _commit_inline(self, batch: list[_Item]) -> _Outcome:
        """Run ``batch`` in one transaction without waiting for a lock; raises ``_Busy``."""
        conn: sqlite3.Connection | None = None
        try:
            conn = self._inline_connection()
            return self._transaction(conn, batch)
        except BaseException as exc:
            if isinstance(exc, sqlite3.OperationalError) and _busy(exc):
                raise _Busy from exc
            if isinstance(exc, sqlite3.Error) and (conn is None or conn.in_transaction):
                _close(self._inline)  # it could not be opened or rolled back: start afresh
                self._inline = None
            return exc

    def _inline_connection(self) -> sqlite3.Connection:
        conn = self._inline
        if conn is None:
            conn = _connect(self.path, timeout=0)
            try:
                conn.execute("PRAGMA journal_mode = WAL")  # busy: the thread's connection will
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA wal_autocheckpoint = 0")  # the thread checkpoints
                conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
            except BaseException:
                conn.close()
                raise
            self._inline = conn
            self._inline_ready = 0
        self._inline_ready = _run_setup(conn, self._setup, self._inline_ready)
        return conn

    # -- the thread: contended batches, checkpoints ------------------------------------------

    def _to_thread(self, work: list[_Item] | object) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, name=f"mpsflow-sqlite-writer:{self.path}", daemon=True
            )
            self._thread.start()
        self._queue.put(work)

    def _forked(self) -> None:
        """In a forked child: the parent's thread and connections are not this process's."""
        self._thread = None
        self._conn = None  # never closed here: closing would drop this process's locks
        self._inline = None
        self._pending = []
        self._flush_scheduled = False
        self._checkpointing = False
        self._held_back = None
        self._queue = queue.SimpleQueue()

    def _serve(self) -> None:
        while True:
            work = self._queue.get()
            if work is _STOP:
                _close(self._conn)
                self._conn = None
                return
            if isinstance(work, tuple):  # (_CHECKPOINT, loop, what it runs when done, first)
                _, loop, then, first = work
                try:
                    for hook in list(self._before_checkpoint) if first else ():
                        with contextlib.suppress(OSError):
                            hook()
                    with contextlib.suppress(sqlite3.Error):
                        self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)")
                finally:
                    with contextlib.suppress(RuntimeError):  # the loop is closed
                        loop.call_soon_threadsafe(then, loop)
                continue
            assert isinstance(work, list)
            outcome = self._commit(work)
            _answer_from_thread(work, outcome)

    def _commit(self, batch: list[_Item]) -> _Outcome:
        """Run ``batch`` in one transaction, waiting up to ``busy_timeout`` for the lock."""
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connection()
            return self._transaction(conn, batch)
        except BaseException as exc:
            if isinstance(exc, sqlite3.Error) and (conn is None or conn.in_transaction):
                _close(self._conn)  # it could not be opened or rolled back: start afresh
                self._conn = None
            return exc

    def _transaction(self, conn: sqlite3.Connection, batch: list[_Item]) -> list[object]:
        """Every operation of ``batch`` in one transaction on ``conn``; rolled back if any
        raises (``conn.in_transaction`` stays true only when the rollback failed)."""
        conn.execute("BEGIN IMMEDIATE")
        self.batches += 1
        self.operations += len(batch)
        try:
            results = [operation(conn) for operation, _ in batch]
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return results

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            conn = _connect(self.path, timeout=self.busy_timeout)
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                _enable_wal(conn, self.busy_timeout)
                conn.execute("PRAGMA synchronous = NORMAL")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            self._ready = 0
        self._ready = _run_setup(conn, self._setup, self._ready)
        return conn


def _connect(path: str, *, timeout: float) -> sqlite3.Connection:
    """A connection to ``path`` in autocommit mode, usable from any thread; the file's folder
    is made first if it is missing (as the file sinks make theirs)."""
    if path != ":memory:":
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:  # reported as SQLite's own failure to open the file would be
            raise sqlite3.OperationalError(
                f"cannot make the folder {folder}: {exc.strerror or exc}"
            ) from exc
    return sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)


def _run_setup(
    conn: sqlite3.Connection, setup: list[Callable[[sqlite3.Connection], object]], done: int
) -> int:
    """Run the ``setup`` operations ``conn`` has not run yet (each in its own transaction)."""
    while done < len(setup):
        conn.execute("BEGIN IMMEDIATE")
        try:
            setup[done](conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        done += 1
    return done


def _busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _BUSY_CODES
    return "locked" in str(exc) or "busy" in str(exc)  # Python before 3.11


def _close(conn: sqlite3.Connection | None) -> None:
    """Close ``conn`` if there is one, whatever state it is in; the caller drops it."""
    if conn is not None:
        with contextlib.suppress(sqlite3.Error):
            conn.close()


def _answers(batch: list[_Item], outcome: _Outcome) -> list[tuple[asyncio.Future[Any], object]]:
    if isinstance(outcome, BaseException):
        return [(future, outcome) for _, future in batch]
    return [(future, result) for (_, future), result in zip(batch, outcome, strict=True)]


def _answer_from_thread(batch: list[_Item], outcome: _Outcome) -> None:
    """Settle a batch the thread ran: one wake-up per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], object]]] = {}
    for answer in _answers(batch, outcome):
        by_loop.setdefault(answer[0].get_loop(), []).append(answer)
    for loop, answers in by_loop.items():
        # A closed loop (RuntimeError) has nobody waiting for these answers.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, answers, isinstance(outcome, BaseException))


def _settle(answers: list[tuple[asyncio.Future[Any], object]], failed: bool) -> None:
    for future, answer in answers:
        if future.done():  # its caller was cancelled
            continue
        if failed:
            assert isinstance(answer, BaseException)
            future.set_exception(answer)
        else:
            future.set_result(answer)


def _after_fork_in_child() -> None:
    SQLiteWriter._registry_lock = threading.Lock()
    for writer in list(SQLiteWriter._every):
        writer._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
