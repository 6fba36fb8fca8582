"""The embedded inbox: one SQLite table, shared by the workers of one host.

Every operation goes through the database's group-commit writer (:mod:`mpsflow._sqlite`), so
the appends of concurrent requests, the leases and the settlements share transactions with
each other and with the SQLite dedup store's claims when both use one file. An append is
answered only after its transaction committed (WAL, ``synchronous = NORMAL``: it survives the
process being killed, as the 200 promises).

A row keeps the item's state; its body is in a segment file beside the database
(``<database>-bodies/``, :mod:`mpsflow.inbox._segments`), written in the row's transaction, so
that bodies never fill SQLite pages (what most of an operation cost). A body is in the row
instead for ``:memory:``, for rows of earlier versions, and whenever no segment can be written.

An item appended for a consumer in this process (:meth:`SQLiteInbox.append_leased`) gets no
row: it is written to this process's journal (:mod:`mpsflow.inbox._journal`, beside the
segments) and marked done there when settled, with no transaction at all. Its id is negative.
It goes into the table when it is to be retried or given back, and when its process is gone
(:meth:`SQLiteInbox.reclaim`, also run every few seconds by leases).

A lease records the owner (``host:pid``) and bumps the attempt number; a lease is the pair
(id, attempt), so a consumer whose lease ended cannot settle an item another one holds.
Leases of a process that is gone (same host, pid no longer alive) are taken back when an
:class:`~mpsflow.inbox.source.InboxSource` starts (:meth:`SQLiteInbox.reclaim`), so a
restart after ``kill -9`` processes them at once instead of after the lease.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import socket
import sqlite3
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio

from mpsflow._sqlite import Operation, SQLiteWriter
from mpsflow._sqlite_commits import after_commit, committed
from mpsflow.clock import Clock, SystemClock
from mpsflow.errors import ConfigurationError, InboxUnavailable
from mpsflow.inbox._journal import Journal, Orphan, Pending, orphan_names, read_orphan
from mpsflow.inbox._segments import SEGMENTS_TABLE, Segments, process_alive
from mpsflow.inbox.base import InboxItem

if TYPE_CHECKING:
    from mpsflow.inbox.source import InboxSource

__all__ = ["DEFAULT_MAX_ITEMS", "SQLiteInbox"]

_T = TypeVar("_T")

_log = logging.getLogger("mpsflow.inbox")

DEFAULT_MAX_ITEMS: Final = 100_000
"""How many notifications an inbox holds before the receiver answers 503."""

_TABLE = "mpsflow_inbox"
_JOURNALS = "mpsflow_inbox_journals"
"""Names of the journals moved into the table and not deleted yet (a crash in between)."""
_MOVED_ITEMS = "mpsflow_inbox_moved_items"
"""Journal items moved into the table one by one (retried) and perhaps not marked done in
their journal yet (a crash or a cancel in between): a journal's move skips them."""
_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {_TABLE} ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"  # never reused: a stale lease names no new item
    " body BLOB NOT NULL,"  # empty when the body is in a segment
    " received_at REAL NOT NULL,"
    " visible_at REAL NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " owner TEXT NOT NULL DEFAULT '',"
    " segment INTEGER,"
    " segment_offset INTEGER,"
    " segment_length INTEGER"
    ")",
    f"CREATE INDEX IF NOT EXISTS {_TABLE}_visible ON {_TABLE} (visible_at, id)",
    f"CREATE INDEX IF NOT EXISTS {_TABLE}_segment ON {_TABLE} (segment) WHERE segment IS NOT NULL",
    f"CREATE TABLE IF NOT EXISTS {_JOURNALS} (name TEXT PRIMARY KEY)",
    f"CREATE TABLE IF NOT EXISTS {_MOVED_ITEMS} (journal TEXT NOT NULL, number INTEGER NOT NULL,"
    " PRIMARY KEY (journal, number)) WITHOUT ROWID",
    f"CREATE TABLE IF NOT EXISTS {SEGMENTS_TABLE} ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"  # never reused: a file name stays one segment's
    " owner TEXT NOT NULL,"
    " sealed INTEGER NOT NULL DEFAULT 0"
    ")",
)
_SEGMENT_COLUMNS = ("segment", "segment_offset", "segment_length")
"""Added to the table of an earlier version (its rows keep their bodies)."""
_COUNT = f"SELECT count(*) FROM {_TABLE}"
_RECOUNT_EVERY: Final = 1024
"""Appends between two exact counts of the inbox (see ``SQLiteInbox.max_items``)."""
_SWEEP_EVERY: Final = 256
"""Settles between two sweeps of the segment files."""
_IDLE_SWEEP_EVERY: Final = 5.0
"""Seconds between two sweeps by leases that find nothing (an idle inbox after settles)."""
_ORPHANS_EVERY: Final = 5.0
"""Seconds between two looks by leases for journals of processes that are gone."""
_INSERT = (
    f"INSERT INTO {_TABLE} (body, segment, segment_offset, segment_length, received_at,"
    " visible_at, attempts, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_VISIBLE = (
    f"SELECT id, body, attempts, received_at, segment, segment_offset, segment_length"
    f" FROM {_TABLE} WHERE visible_at <= ? ORDER BY visible_at, id LIMIT ?"
)
_TAKE = f"UPDATE {_TABLE} SET visible_at = ?, attempts = attempts + 1, owner = ? WHERE id = ?"
_DELETE = f"DELETE FROM {_TABLE} WHERE id = ? AND attempts = ?"
_AGAIN = (
    f"UPDATE {_TABLE} SET visible_at = ?, owner = '', attempts = attempts - ?"
    " WHERE id = ? AND attempts = ?"
)
_OWNERS = f"SELECT DISTINCT owner FROM {_TABLE} WHERE visible_at > ? AND owner LIKE ?"
_RECLAIM = f"UPDATE {_TABLE} SET visible_at = 0, owner = '' WHERE owner = ? AND visible_at > ?"
_MOVED = f"SELECT 1 FROM {_JOURNALS} WHERE name = ?"
_FORGET = f"DELETE FROM {_JOURNALS} WHERE name = ?"
_MOVED_ITEM = f"INSERT OR IGNORE INTO {_MOVED_ITEMS} (journal, number) VALUES (?, ?)"
_MOVED_NUMBERS = f"SELECT number FROM {_MOVED_ITEMS} WHERE journal = ?"
_FORGET_ITEMS = f"DELETE FROM {_MOVED_ITEMS} WHERE journal = ?"
_FORGET_ITEM = f"DELETE FROM {_MOVED_ITEMS} WHERE journal = ? AND number = ?"


class SQLiteInbox:
    """A :class:`~mpsflow.inbox.base.LeasedInbox` in a SQLite database file.

    ``max_items`` bounds it (``append`` answers False past it). The bound is checked against a
    count taken every 1024 appends (and whenever the bound seems reached), plus this
    process's appends since, plus its journal's pending items (not those of other processes'
    journals): processes sharing the file may together pass it by up to 1024 each and by what
    their journals hold, and an append is never refused while there is room. ``path`` may be
    shared by the processes of one host (``mpsflow run --workers N``), not over a network file
    system.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_items: int = DEFAULT_MAX_ITEMS,
        clock: Clock | None = None,
        busy_timeout: float = 5.0,
    ) -> None:
        if max_items < 1:
            raise ConfigurationError("max_items must be at least 1")
        self._path = os.fspath(path)
        self.max_items = max_items
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._busy_timeout = busy_timeout
        self._writer: SQLiteWriter | None = None
        self._opened = False
        """An operation on the database succeeded (else there is nothing to sweep at close)."""
        self._closed = False
        self._appended: anyio.Event | None = None
        """Set by an append of this process; made by the first waiter (in its event loop)."""
        self._host = socket.gethostname()
        self._estimate = 0
        """Items at the last count, plus this process's appends since (never below the truth
        by more than other processes' appends since: settles are not subtracted)."""
        self._since_count = _RECOUNT_EVERY  # count before the first append
        self._segments: Segments | None = None
        """The segment files (None for ``:memory:``)."""
        self._journal: Journal | None = None
        """This process's journal of items appended for its consumer (None for ``:memory:``)."""
        if self._path != ":memory:":
            directory = f"{os.path.abspath(self._path)}-bodies"
            self._segments = Segments(directory, _TABLE, self._host)
            self._journal = Journal(directory)
        self._write_segments = self._segments is not None
        """Appends write bodies to segments (until a segment file cannot be made)."""
        self._rotating = False
        """A new segment is being registered."""
        self._since_sweep = 0
        """Settles since the last sweep of the segments."""
        self._idle_swept_at = -math.inf
        """When a lease that found nothing last swept (the inbox's clock)."""
        self._orphans_at = -math.inf
        """When a lease last looked for journals of processes that are gone."""
        self._stranded: dict[int, tuple[float, int]] = {}
        """Journal items whose move to the table failed: (visible at, attempts), moved by
        the next lease."""

    def __repr__(self) -> str:
        return f"SQLiteInbox(path={self._path!r}, max_items={self.max_items})"

    def describe(self) -> str:
        """``sqlite:`` and the database file's absolute path."""
        path = self._path
        return f"sqlite:{path if path == ':memory:' else os.path.abspath(path)}"

    @property
    def owner(self) -> str:
        """This process's name on its leases: ``host:pid``."""
        return f"{self._host}:{os.getpid()}"

    async def append(self, body: bytes) -> bool:
        """Add ``body`` once the inbox has room; True when it is committed."""
        added = await self._append(body, 0.0, 0, "")
        if added is not None and self._appended is not None:
            self._appended.set()
        return added is not None

    async def append_leased(self, body: bytes, lease_seconds: float) -> InboxItem | None:
        """Add ``body`` already leased to this process (attempt 1), for a consumer here that
        takes it at once; None when the inbox is full. It saves the lease's round trip, and
        if this process dies the item comes back like any lease of a process that is gone."""
        now = self._clock.time()
        journal = self._journal
        if journal is not None and self._room_in_journal(journal):
            if self._closed:
                raise InboxUnavailable(f"inbox {self.describe()} is closed")
            number = journal.append(body, now)
            if number is not None:
                self._since_count += 1
                return InboxItem(-number, body, 1, now)
        item_id = await self._append(body, now + lease_seconds, 1, self.owner, now)
        if item_id is None:
            return None
        return InboxItem(item_id, body, 1, now)

    def wake(self) -> None:
        """Wake a consumer of this process waiting in ``wait_for_items``."""
        if self._appended is not None:
            self._appended.set()

    def _room_in_journal(self, journal: Journal) -> bool:
        """Whether an append may go to the journal: the inbox has room by the estimate, and
        no count is due (every ``_RECOUNT_EVERY`` appends, one goes to the table to count)."""
        count_due = self._since_count >= _RECOUNT_EVERY
        return not count_due and self._estimate + journal.pending < self.max_items

    async def _append(
        self,
        body: bytes,
        visible_at: float,
        attempts: int,
        owner: str,
        now: float | None = None,
        *,
        bounded: bool = True,
    ) -> int | None:
        """Insert ``body`` once the inbox has room (``bounded``: else at once): the new id,
        or None."""
        limit = self.max_items - (self._journal.pending if self._journal is not None else 0)
        received_at = self._clock.time() if now is None else now
        segments = self._segments if self._write_segments else None
        if segments is not None and not self._rotating and segments.needs_new():
            await self._new_segment(segments)

        def append(conn: sqlite3.Connection) -> int | None:
            if self._estimate >= limit or self._since_count >= _RECOUNT_EVERY:
                (self._estimate,) = conn.execute(_COUNT).fetchone()
                self._since_count = 0
                if self._estimate >= limit and bounded:
                    return None
            args = (*_body_columns(body, segments), received_at, visible_at, attempts, owner)
            item_id = conn.execute(_INSERT, args).lastrowid
            self._estimate += 1
            self._since_count += 1
            return item_id

        return await self._run(append)

    async def _new_segment(self, segments: Segments) -> None:
        """Register a segment for this process's appends, then sweep (sealing the last)."""
        self._rotating = True
        try:
            segment = await self._run(segments.register)
            try:
                segments.adopt(segment)
            except OSError as exc:
                self._write_segments = False
                segments.retire_unadopted(segment)
                _log.warning("%s; bodies go in the database instead", exc)
            await self._sweep(segments)
        finally:
            self._rotating = False

    async def _sweep(self, segments: Segments) -> None:
        """Seal the segments that take no more writes, delete those no item refers to."""
        self._since_sweep = 0
        retired = segments.retired()

        def sweep(conn: sqlite3.Connection) -> int:
            return segments.sweep(conn, retired)

        try:
            await self._run(sweep)
        except InboxUnavailable as exc:
            _log.warning("%s; the segments are swept later", exc)
        else:
            segments.sealed(retired)

    async def lease(self, max_count: int, lease_seconds: float) -> list[InboxItem]:
        """Up to ``max_count`` visible items, oldest first, hidden for ``lease_seconds``."""
        if self._appended is None:  # from now on, appends of this process wake the consumer
            self._appended = anyio.Event()
        if self._stranded and self._journal is not None:
            await self._move_stranded(self._journal)
        now = self._clock.time()
        until = now + lease_seconds
        owner = self.owner

        def lease(conn: sqlite3.Connection) -> list[InboxItem]:
            rows = conn.execute(_VISIBLE, (now, max_count)).fetchall()
            conn.executemany(_TAKE, [(until, owner, row[0]) for row in rows])
            return [self._item(row) for row in rows]

        items = await self._run(lease)
        if self._journal is not None and now - self._orphans_at >= _ORPHANS_EVERY:
            self._orphans_at = now  # a process that died without a restart to reclaim
            await self._move_orphans()
        segments = self._segments
        idle = not items and self._since_sweep > 0
        if idle and segments is not None and now - self._idle_swept_at >= _IDLE_SWEEP_EVERY:
            # Nothing to lease after settles: retire this process's segment too, so that the
            # sweep deletes every body file whose notifications were all processed.
            self._idle_swept_at = now
            segments.retire()
            await self._sweep(segments)
        return items

    def _item(self, row: tuple[Any, ...]) -> InboxItem:
        """The leased item of a ``_VISIBLE`` row; its body is in the row or in its segment."""
        item_id, body, attempts, received_at, segment, offset, length = row
        if segment is None:
            return InboxItem(item_id, bytes(body), attempts + 1, received_at)
        found = self._segments.read(segment, offset, length) if self._segments else None
        if found is None:  # a power cut before it was synced, or a removed folder
            _log.error("inbox %s: the body of item %s is gone", self.describe(), item_id)
            return InboxItem(item_id, b"", attempts + 1, received_at, lost=True)
        return InboxItem(item_id, found, attempts + 1, received_at)

    async def settle(self, item_id: int, attempt: int) -> bool:
        """Remove a processed item while the caller's lease is its current one."""
        if item_id < 0:
            journal = self._journal
            if journal is None or attempt != 1 or -item_id not in journal:
                return False
            # Done only once what its handlers' dedup answered in place is committed: a crash
            # in between must leave the item to run again, deduplicated.
            after_commit(lambda: journal.done(-item_id))
            return True

        def settle(conn: sqlite3.Connection) -> bool:
            return conn.execute(_DELETE, (item_id, attempt)).rowcount == 1

        await committed()  # as for a journal item, above
        settled = await self._run(settle)
        self._since_sweep += 1
        if self._since_sweep >= _SWEEP_EVERY and self._segments is not None:
            await self._sweep(self._segments)
        return settled

    async def retry(
        self, item_id: int, attempt: int, delay: float, *, counted: bool = True
    ) -> bool:
        """Make the item visible again ``delay`` seconds from now (``counted=False``: with
        the attempt given back)."""
        visible_at = self._clock.time() + max(delay, 0.0)
        give_back = 0 if counted else 1
        if item_id < 0:
            journal = self._journal
            pending = journal.get(-item_id) if journal is not None else None
            if journal is None or pending is None or attempt != 1:
                return False
            try:
                await self._move_item(journal, pending, visible_at, 1 - give_back)
            except InboxUnavailable:
                self._stranded[pending.number] = (visible_at, 1 - give_back)
                raise
            return True

        def retry(conn: sqlite3.Connection) -> bool:
            args = (visible_at, give_back, item_id, attempt)
            return conn.execute(_AGAIN, args).rowcount == 1

        return await self._run(retry)

    async def _move_item(
        self, journal: Journal, pending: Pending, visible_at: float, attempts: int
    ) -> None:
        """A journal item into the table, recorded as moved in the same transaction (a journal
        moved after a crash skips it), then done in its journal and the record dropped."""
        segments = self._segments if self._write_segments else None

        def move(conn: sqlite3.Connection) -> None:
            columns = _body_columns(pending.body, segments)
            conn.execute(_INSERT, (*columns, pending.received_at, visible_at, attempts, ""))
            conn.execute(_MOVED_ITEM, (pending.journal, pending.number))
            self._estimate += 1

        await self._run(move)
        self._stranded.pop(pending.number, None)
        journal.done(pending.number, at_once=True)  # written before the move's record goes
        with contextlib.suppress(InboxUnavailable):  # else dropped with its journal's move
            await self._run(functools.partial(_forget_item, pending=pending))

    async def _move_stranded(self, journal: Journal) -> None:
        """Move the journal items whose move to the table failed earlier (the database was
        unavailable): nothing else would bring them back while this process runs."""
        for number, (visible_at, attempts) in list(self._stranded.items()):
            pending = journal.get(number)
            if pending is None:
                del self._stranded[number]
                continue
            try:
                await self._move_item(journal, pending, visible_at, attempts)
            except InboxUnavailable:
                return

    async def reclaim(self) -> int:
        """Make the leases of this host's processes that are gone visible again, and move
        what their journals held into the table, visible; how many items in all."""
        moved = await self._move_orphans() if self._journal is not None else 0
        now = self._clock.time()
        host = self._host

        def owners(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(_OWNERS, (now, f"{host}:%")).fetchall()
            return [owner for (owner,) in rows]

        gone = [owner for owner in await self._run(owners) if not _alive(owner, host)]

        def reclaim(conn: sqlite3.Connection) -> int:
            return sum(conn.execute(_RECLAIM, (owner, now)).rowcount for owner in gone)

        taken_back = await self._run(reclaim) if gone else 0
        if self._segments is not None:  # and the segments such processes left
            await self._sweep(self._segments)
        return moved + taken_back

    async def _move_orphans(self) -> int:
        """Move the items of journals whose process is gone into the table (visible, on
        their second attempt, as a lease taken back), then delete the journals; how many."""
        assert self._segments is not None
        directory = self._segments.directory
        moved = 0
        for name in orphan_names(directory, self._journal):
            try:
                orphan = read_orphan(directory, name)
            except OSError as exc:
                _log.warning("inbox %s: journal %s unreadable: %s", self.describe(), name, exc)
                continue
            if orphan is None:
                continue
            try:
                moved += await self._run(functools.partial(self._move, orphan=orphan))
            except InboxUnavailable as exc:
                orphan.release()
                _log.warning("%s; journal %s is moved later", exc, name)
                return moved
            orphan.delete()
            with contextlib.suppress(InboxUnavailable):  # else the name stays, a few bytes
                await self._run(functools.partial(_forget, name=name))
        return moved

    def _move(self, conn: sqlite3.Connection, *, orphan: Orphan) -> int:
        if orphan.torn:
            _log.warning(
                "inbox %s: journal %s ends with %d bytes that are no whole record (a write a"
                " power cut tore), ignored",
                self.describe(),
                orphan.name,
                orphan.torn,
            )
        if conn.execute(_MOVED, (orphan.name,)).fetchone() is not None:
            return 0  # moved by a process that died before deleting it
        moved = {number for (number,) in conn.execute(_MOVED_NUMBERS, (orphan.name,))}
        items = [item for item in orphan.pending if item.number not in moved]
        segments = self._segments if self._write_segments else None
        conn.executemany(
            _INSERT,
            [(*_body_columns(item.body, segments), item.received_at, 0.0, 1, "") for item in items],
        )
        conn.execute(f"INSERT INTO {_JOURNALS} (name) VALUES (?)", (orphan.name,))
        conn.execute(_FORGET_ITEMS, (orphan.name,))
        return len(items)

    async def wait_for_items(self, at_most: float) -> None:
        """Return at once when this process appended since the last call, else after an
        append or ``at_most`` seconds."""
        appended = self._appended
        if appended is None:
            appended = self._appended = anyio.Event()
        with anyio.move_on_after(at_most):
            await appended.wait()
        if appended.is_set():
            self._appended = anyio.Event()

    async def size(self) -> int:
        """How many items the inbox holds (other processes' journals left out)."""

        def size(conn: sqlite3.Connection) -> int:
            (count,) = conn.execute(_COUNT).fetchone()
            self._estimate, self._since_count = count, 0  # a count the bound uses too
            return int(count)

        in_journal = self._journal.pending if self._journal is not None else 0
        return await self._run(size) + in_journal

    def consumer(
        self, *, name: str = "inbox", max_in_flight: int = 64, lease_seconds: float = 60.0
    ) -> InboxSource:
        """An :class:`~mpsflow.inbox.source.InboxSource` leasing from this inbox."""
        from mpsflow.inbox.source import InboxSource

        return InboxSource(
            self, name=name, max_in_flight=max_in_flight, lease_seconds=lease_seconds
        )

    async def close(self) -> None:
        """Stop using the database; later calls raise InboxUnavailable."""
        if self._closed:
            return
        self._closed = True
        if self._appended is not None:
            self._appended.set()  # a consumer waiting for items returns
        writer, segments = self._writer, self._segments
        if self._journal is not None:
            self._journal.close()
        if writer is None:
            return
        if segments is not None:
            if self._opened:  # else no segment is this process's, and the database fails
                segments.retire()
                try:  # seal this process's segments, delete those with nothing left
                    await writer.run(lambda conn: segments.sweep(conn, segments.retired()))
                except (sqlite3.Error, OSError) as exc:
                    _log.warning(
                        "inbox %s: segments left for the next sweep: %s", self.describe(), exc
                    )
            writer.forget_before_checkpoint(self._sync_files)
            segments.close()
        await writer.close()

    def _sync_files(self) -> None:
        """Sync the segments and the journal (on the writer's thread, before a checkpoint)."""
        if self._segments is not None:
            self._segments.sync()
        if self._journal is not None:
            self._journal.sync()

    async def _run(self, operation: Operation[_T]) -> _T:
        if self._closed:
            raise InboxUnavailable(f"inbox {self.describe()} is closed")
        if self._writer is None:
            self._writer = SQLiteWriter.open(
                self._path,
                busy_timeout=self._busy_timeout,
                setup=_create_schema,
                before_checkpoint=self._sync_files if self._segments is not None else None,
            )
        try:
            result = await self._writer.run(operation)
        except (sqlite3.Error, OSError) as exc:
            raise InboxUnavailable(f"inbox {self.describe()} failed: {exc}") from exc
        self._opened = True
        return result


def _forget(conn: sqlite3.Connection, *, name: str) -> None:
    conn.execute(_FORGET, (name,))


def _forget_item(conn: sqlite3.Connection, *, pending: Pending) -> None:
    conn.execute(_FORGET_ITEM, (pending.journal, pending.number))


def _body_columns(body: bytes, segments: Segments | None) -> tuple[object, ...]:
    """The row's (body, segment, offset, length): the body in a segment when one takes it."""
    where = segments.write(body) if segments is not None else None
    if where is None:
        return (body, None, None, None)
    return (b"", where[0], where[1], len(body))


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.execute(_SCHEMA[0])
    columns = {row[1] for row in conn.execute(f"PRAGMA table_info({_TABLE})")}
    for column in _SEGMENT_COLUMNS:
        if column not in columns:
            conn.execute(f"ALTER TABLE {_TABLE} ADD COLUMN {column} INTEGER")
    for statement in _SCHEMA[1:]:
        conn.execute(statement)


def _alive(owner: str, host: str) -> bool:
    """Whether the process named ``owner`` (``host:pid``, this host) still runs."""
    pid_text = owner.removeprefix(f"{host}:")
    if not pid_text.isdigit():
        return True  # not ours to judge: leave it to its lease
    return process_alive(int(pid_text))
