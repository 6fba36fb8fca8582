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

A process writing the file alone (:mod:`mpsflow._sqlite_sharing`) does better: ``run_now``
runs an operation at once in a transaction left open until the next turn of the loop and
answers before the commit, so a dedup claim and its completion await nothing. What must not be
durable before them waits (:mod:`mpsflow._sqlite_commits`); what a failed commit changed is
written again. In company (``--workers N``) others would wait on that transaction: it declines.

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
import logging
import os
import queue
import sqlite3
import threading
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, Final, TypeVar

from mpsflow._sqlite_commits import WAITING, BatchOutcome, answer, answer_from_thread, run_all
from mpsflow._sqlite_connections import close_quietly, connect, enable_wal, is_busy, run_setup
from mpsflow._sqlite_sharing import WriterSharing

__all__ = ["NOT_NOW", "Operation", "SQLiteWriter"]

_log = logging.getLogger("mpsflow.sqlite")

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

_Operation = Callable[[sqlite3.Connection], Any]
_Item = tuple[_Operation, "asyncio.Future[Any]"]
_STOP: Final = object()
NOT_NOW: Final = object()
"""What :meth:`SQLiteWriter.run_now` answers when only :meth:`SQLiteWriter.run` can run the
operation now."""
_CHECKPOINT: Final = object()


class _Busy(Exception):
    """The inline connection found the database locked: the batch goes to the thread."""


class SQLiteWriter:
    """The writer of one database file in this process; get it with :meth:`open`.

    ``setup`` operations (schemas) run once on every new connection, before its first batch.
    """

    _open: ClassVar[dict[str, SQLiteWriter]] = {}
    _registry_lock: ClassVar = threading.Lock()
    _every: ClassVar[weakref.WeakSet[SQLiteWriter]] = weakref.WeakSet()
    _inherited: ClassVar[list[sqlite3.Connection]] = []
    """Connections a forked child inherited (kept, never used)."""

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
        self._schema_ready = 0
        """How many of ``_setup`` ran on a connection of this writer: they make schemas, which
        are in the file for every connection from then on. (Running them again on the thread's
        connection would wait for the write lock, which a writer answering in place holds
        almost all the time: the first checkpoint would wait seconds.)"""
        self._commits = 0
        """Inline commits since the last checkpoint."""
        self._since_checkpoint = 0
        """Inline operations since the last checkpoint."""
        self._checkpointing = False
        """The thread is checkpointing (its first pass)."""
        self._held_back: asyncio.Future[None] | None = None
        """Set during the checkpoint's second pass: inline batches wait for it."""
        self._in_txn: sqlite3.Connection | None = None
        """The inline connection while a transaction of :meth:`run_now` is open."""
        self._txn_loop: asyncio.AbstractEventLoop | None = None
        """The event loop that commits it."""
        self._answered: list[tuple[_Operation, Any, bool]] = []
        """What :meth:`run_now` ran in the open transaction, in order: each operation, its
        answer, and whether it wrote anything."""
        self._after: list[Callable[[], object]] = []
        """Run once what was answered so far is committed (see ``_sqlite_commits``)."""
        self._replaying: asyncio.Future[None] | None = None
        """Set while answered changes are written again after their commit failed (done
        when they are over)."""
        self._sharing = WriterSharing.join(path) if path != ":memory:" else None
        self._queue: queue.SimpleQueue[list[_Item] | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
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

    def run_now(
        self,
        operation: Callable[[sqlite3.Connection], _T],
        changed: Callable[[_T], bool] | None = None,
    ) -> _T | object:
        """Run ``operation`` now in a transaction committed at the next turn of the loop (its
        result), or answer :data:`NOT_NOW`: in company (:mod:`mpsflow._sqlite_sharing`), while
        :meth:`run`'s operations wait (they keep their order), a checkpoint holds batches
        back, failed changes are written again, or the lock is taken. ``changed`` tells from a
        result whether the operation wrote (default: yes); those are written again when the
        commit fails (:meth:`_abandon`), as when an operation raises (its error is raised).
        """
        conn = self._in_txn
        loop = asyncio.get_running_loop()
        if conn is not None and loop is not self._txn_loop:  # opened on a loop that is gone
            self._commit_answered(loop)
            conn = self._in_txn
        if conn is None:
            sharing = self._sharing
            if (
                self._pending
                or self._held_back is not None
                or self._replaying is not None
                or sharing is None
                or not sharing.alone()
            ):
                return NOT_NOW
            try:
                conn = self._inline_connection()
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
                    self.contended += 1
                    return NOT_NOW
                close_quietly(self._inline)
                self._inline = None
                raise
            self._in_txn = conn
            self._txn_loop = loop
            WAITING.add(self)
            self.batches += 1
            loop.call_soon(self._commit_answered, loop)
        elif self._pending or self._held_back is not None:
            return NOT_NOW
        try:
            result = operation(conn)
        except BaseException as exc:
            self._abandon(loop, exc)
            raise
        self._answered.append((operation, result, changed is None or changed(result)))
        self.operations += 1
        return result

    def _commit_answered(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit the transaction of :meth:`run_now` (if still open) and run what waited."""
        conn = self._in_txn
        if conn is None:
            return
        try:
            if conn.in_transaction:  # not if committed before a fork (see _before_fork)
                conn.execute("COMMIT")
        except BaseException as exc:
            self._abandon(loop, exc)
            return
        self._in_txn = None
        WAITING.discard(self)
        answered, self._answered = self._answered, []
        after, self._after = self._after, []
        self._commits += 1
        self._since_checkpoint += len(answered)
        self._checkpoint_if_due(loop)
        run_all(after)

    def _abandon(self, loop: asyncio.AbstractEventLoop, exc: BaseException) -> None:
        """The open transaction failed: roll it back and write what it changed again.

        Its callers were told their operations were done (a claim taken, a completion
        written), and handlers may have run on that. What changed is written again at once, in
        a transaction of its own (when the lock is taken, first in the next batch), and each
        operation must answer as it did; one that does not (another process wrote in between)
        is logged as an error. :meth:`run_now` declines until that is over.
        """
        conn, self._in_txn = self._in_txn, None
        answered, self._answered = self._answered, []
        after, self._after = self._after, []
        if conn is not None and conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                close_quietly(self._inline)
                self._inline = None
        changes = [(operation, answer) for operation, answer, wrote in answered if wrote]
        if changes:
            _log.warning(
                "%s: %d changes answered in place were not committed (%s: %s); writing them again",
                self.path,
                len(changes),
                type(exc).__name__,
                exc,
            )
            try:
                outcome = self._commit_inline([operation for operation, _ in changes])
            except _Busy:
                self._write_again_later(loop, changes, after)
                return
            self._written_again(changes, outcome)
        WAITING.discard(self)
        run_all(after)

    def _write_again_later(
        self,
        loop: asyncio.AbstractEventLoop,
        changes: list[tuple[_Operation, Any]],
        after: list[Callable[[], object]],
    ) -> None:
        """Write ``changes`` in a batch of their own on the thread (which waits for the lock);
        batches and ``run_now`` wait for them, and ``after`` runs once they are over."""
        done: asyncio.Future[None] = loop.create_future()
        self._replaying = done
        futures: list[asyncio.Future[Any]] = [loop.create_future() for _ in changes]
        left = [len(futures)]

        def answered(_: asyncio.Future[Any]) -> None:
            left[0] -= 1
            if left[0]:
                return
            failures = [
                asyncio.CancelledError() if f.cancelled() else f.exception() for f in futures
            ]
            failed = next((exc for exc in failures if exc is not None), None)
            self._written_again(changes, failed or [f.result() for f in futures])
            self._replaying = None  # run_now declined meanwhile: no transaction is open
            done.set_result(None)
            WAITING.discard(self)
            waited, self._after = self._after, []  # attached meanwhile (see after_commit)
            run_all(after + waited)
            if self._pending and not self._flush_scheduled:
                self._flush_scheduled = True
                loop.call_soon(self._flush, loop)

        for future in futures:
            future.add_done_callback(answered)
        self._to_thread(
            [(operation, future) for (operation, _), future in zip(changes, futures, strict=True)]
        )

    def _written_again(self, changes: list[tuple[_Operation, Any]], outcome: BatchOutcome) -> None:
        """Log what writing ``changes`` again came to, unless each answered as it did."""
        if isinstance(outcome, BaseException):
            _log.error(
                "%s: %d changes answered in place could not be written again (%s: %s): records"
                " of handlers that ran are missing, and a redelivery may run them again",
                self.path,
                len(changes),
                type(outcome).__name__,
                outcome,
            )
            return
        differ = sum(
            1 for (_, answer), result in zip(changes, outcome, strict=True) if result != answer
        )
        if differ:
            _log.error(
                "%s: %d changes answered in place came out differently when written again"
                " (another process wrote in between): their handlers may run again",
                self.path,
                differ,
            )

    def when_committed(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` once what this writer answered in place so far is committed."""
        self._after.append(callback)

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
        loop = asyncio.get_running_loop()
        self._commit_answered(loop)
        if self._replaying is not None:
            await asyncio.shield(self._replaying)
        if self._held_back is not None:
            await asyncio.shield(self._held_back)
        while self._pending:  # answer what is pending before closing
            self._flush(loop)
            if self._held_back is not None:
                await asyncio.shield(self._held_back)
        close_quietly(self._inline)
        self._inline = None
        thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
        if self._sharing is not None:
            self._sharing.leave()  # after the thread's last write

    # -- inline: on the event loop's thread --------------------------------------------------

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit what is pending (a batch of it; the rest in the next turn of the loop)."""
        self._flush_scheduled = False
        if self._sharing is not None:
            self._sharing.take_part()  # a process that could not yet say it writes tries again
        if self._in_txn is not None:  # what run_now answered goes first
            self._commit_answered(loop)
        if self._held_back is not None or self._replaying is not None:
            return  # flushed again when the checkpoint, or the writing again, is over
        batch = self._pending[:_MAX_BATCH]
        del self._pending[:_MAX_BATCH]
        if self._pending:
            self._flush_scheduled = True
            loop.call_soon(self._flush, loop)
        if not batch:
            return
        try:
            outcome = self._commit_inline([operation for operation, _ in batch])
        except _Busy:
            self.contended += 1
            self._to_thread(batch)
            return
        answer(batch, outcome)
        self._commits += 1
        self._since_checkpoint += len(batch)
        self._checkpoint_if_due(loop)

    def _checkpoint_if_due(self, loop: asyncio.AbstractEventLoop) -> None:
        due = self._commits >= _CHECKPOINT_EVERY or self._since_checkpoint >= _CHECKPOINT_OPERATIONS
        if due and not self._checkpointing:
            self._commits = self._since_checkpoint = 0
            self._checkpointing = True
            self._to_thread((_CHECKPOINT, loop, self._hold_back, True))

    def _hold_back(self, loop: asyncio.AbstractEventLoop) -> None:
        """The first pass is done: hold batches back for the second (and commit what is open
        now, or the second pass would never catch up)."""
        self._commit_answered(loop)
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

    def _commit_inline(self, batch: list[_Operation]) -> BatchOutcome:
        """Run ``batch`` in one transaction without waiting for a lock; raises ``_Busy``."""
        conn: sqlite3.Connection | None = None
        try:
            conn = self._inline_connection()
            return self._transaction(conn, batch)
        except BaseException as exc:
            if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
                raise _Busy from exc
            if isinstance(exc, sqlite3.Error) and (conn is None or conn.in_transaction):
                close_quietly(self._inline)  # it could not be opened or rolled back: start afresh
                self._inline = None
            return exc

    def _inline_connection(self) -> sqlite3.Connection:
        conn = self._inline
        if conn is None:
            if self._sharing is not None:
                self._sharing.take_part()
            conn = connect(self.path, timeout=0)
            try:
                conn.execute("PRAGMA journal_mode = WAL")  # busy: the thread's connection will
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA wal_autocheckpoint = 0")  # the thread checkpoints
                conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
            except BaseException:
                conn.close()
                raise
            self._inline = conn
            if self.path == ":memory:":  # a database of its own: empty
                self._schema_ready = 0
        self._schema_ready = run_setup(conn, self._setup, self._schema_ready)
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
        # Never closed here, not even by dropping the last reference: closing would roll back
        # or unlock what belongs to the parent.
        self._inherited.extend(conn for conn in (self._conn, self._inline) if conn is not None)
        self._conn = None
        self._inline = None
        self._in_txn = None
        self._answered = []
        self._after = []
        self._replaying = None
        self._pending = []
        self._flush_scheduled = False
        self._checkpointing = False
        self._held_back = None
        self._queue = queue.SimpleQueue()

    def _serve(self) -> None:
        while True:
            work = self._queue.get()
            if work is _STOP:
                close_quietly(self._conn)
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
            outcome = self._commit([operation for operation, _ in work])
            answer_from_thread(work, outcome)

    def _commit(self, batch: list[_Operation]) -> BatchOutcome:
        """Run ``batch`` in one transaction, waiting up to ``busy_timeout`` for the lock."""
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connection()
            return self._transaction(conn, batch)
        except BaseException as exc:
            if isinstance(exc, sqlite3.Error) and (conn is None or conn.in_transaction):
                close_quietly(self._conn)  # it could not be opened or rolled back: start afresh
                self._conn = None
            return exc

    def _transaction(self, conn: sqlite3.Connection, batch: list[_Operation]) -> list[object]:
        """Every operation of ``batch`` in one transaction on ``conn``; rolled back if any
        raises (``conn.in_transaction`` stays true only when the rollback failed)."""
        conn.execute("BEGIN IMMEDIATE")
        self.batches += 1
        self.operations += len(batch)
        try:
            results = [operation(conn) for operation in batch]
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return results

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            if self._sharing is not None:
                self._sharing.take_part()
            conn = connect(self.path, timeout=self.busy_timeout)
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                enable_wal(conn, self.busy_timeout)
                conn.execute("PRAGMA synchronous = NORMAL")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        self._schema_ready = run_setup(conn, self._setup, self._schema_ready)
        return conn


def _before_fork() -> None:
    """Commit what is answered in place before a fork: a child inheriting a connection in a
    write transaction would find the database locked for good (SQLite keeps its lock records
    per process). What waits for the commit runs at its turn, as usual."""
    for writer in list(SQLiteWriter._every):
        conn = writer._in_txn
        if conn is not None and conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # then its turn fails and writes again
                conn.execute("COMMIT")


def _after_fork_in_child() -> None:
    SQLiteWriter._registry_lock = threading.Lock()
    WAITING.clear()
    WriterSharing.forked()
    for writer in list(SQLiteWriter._every):
        writer._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
