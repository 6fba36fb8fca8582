"""The journal of a SQLite inbox: notifications handed over in memory to this process's
consumer, kept durable by one ``write`` each instead of a row.

Why: an item appended for a consumer in the same process is processed there at once, and
almost always settled within the second. As a row it costs an insert and a delete, each in a
transaction and each awaited by its caller: most of what the inbox costs per notification.
Here an append is one ``writev`` of a record (header and body) to the end of this process's
journal file, done before the receiver answers 200, and a settle is one short record saying
the item is done (the done records of one turn of the event loop go in one ``write`` per file).
``write`` leaves the bytes in the kernel's page cache: they survive the
process being killed, as a WAL commit with ``synchronous = NORMAL`` does. A thread syncs the
journal to disk at most :data:`SYNC_EVERY` seconds after each append (so a power cut loses at
most about that much of what was answered), and the inbox's writer before each checkpoint.

Every other fate goes through the table: an item to retry, one given back at shutdown, and
what a journal holds when its process is gone, which another process (or the next run)
moves into the table as visible rows (:meth:`SQLiteInbox.reclaim
<mpsflow.inbox.sqlite.SQLiteInbox.reclaim>`).

A journal is ``<database>-bodies/<token>-<n>.journal``. Its owner holds an exclusive
``flock`` on it from before the file has its name until the owner closes it or dies (the
kernel releases it then, even after ``kill -9``): a journal whose lock can be taken is a gone
owner's. Its records are ``_HEAD`` (kind, generation, item number, received at, body length,
CRC-32 of the body) then the body: ``H`` the file's header, ``A`` appended, ``D`` done
(settled, or moved to the table). Past :data:`JOURNAL_BYTES` the owner goes on in another
file. A file left with nothing pending is kept as a spare and written over from the start
under the next generation (its page cache is reused: deleting and growing files cost more
than the writes), so reading stops at the first record of another generation, and at the
first that is short or fails its CRC (a power cut's torn tail).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import secrets
import struct
import threading
import time
import weakref
import zlib
from typing import ClassVar, Final, NamedTuple

__all__ = [
    "JOURNAL_BYTES",
    "SYNC_EVERY",
    "Journal",
    "Orphan",
    "Pending",
    "orphan_names",
    "read_orphan",
]

_log = logging.getLogger("mpsflow.inbox")

JOURNAL_BYTES: Final = 8 * 1024 * 1024
"""A journal's size past which its owner starts a new one."""
SYNC_EVERY: Final = 1.0
"""Seconds between two syncs of the journal to disk while appends go on."""
_SUFFIX: Final = ".journal"
_HEAD: Final = struct.Struct("<cIQdII")
_HEADER: Final = b"H"
_APPENDED: Final = b"A"
_DONE: Final = b"D"
_SPARES: Final = 2
"""Files with nothing pending kept for reuse."""


class Pending(NamedTuple):
    """An item appended to a journal and not done."""

    number: int
    body: bytes
    received_at: float
    journal: str = ""
    """The name of the file it is in (this process's items)."""


class _File:
    """One journal file of this process: its descriptor, the generation written to it now,
    where that generation ends and the items it holds pending."""

    __slots__ = ("fd", "generation", "name", "pending", "size")

    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self.fd = fd
        self.generation = 0
        self.size = 0
        self.pending = 0

    def start(self) -> None:
        """Begin the next generation at the start of the file (its header first)."""
        self.generation += 1
        self.size = 0
        self.write(_HEAD.pack(_HEADER, self.generation, 0, 0.0, 0, 0))

    def write(self, head: bytes, body: bytes = b"") -> None:
        """Write a record where the generation ends."""
        _write_at(self.fd, self.size, head, body)
        self.size += len(head) + len(body)


class Journal:
    """This process's journal files in ``directory`` (made on the first append).

    Item numbers are unique in the process (across instances), so a number never names two
    items of one process's journals. Used from the event loop's thread; :meth:`sync` runs on
    the writer's, hence the lock around the descriptors.
    """

    _numbers: ClassVar[itertools.count[int]] = itertools.count(1)
    _every: ClassVar[weakref.WeakSet[Journal]] = weakref.WeakSet()
    """Every journal of this process (a forked child lets go of them at once)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._token = secrets.token_hex(8)
        self._pid = os.getpid()
        self._files: list[_File] = []
        """This process's files that hold items or are written to (the current one last)."""
        self._spares: list[_File] = []
        """Files with nothing pending, to write over next."""
        self._items: dict[int, tuple[_File, bytes, float]] = {}
        """Pending items by number: their file, body and time of append."""
        self._done: list[tuple[_File, int]] = []
        """Items done whose done records are not written yet (at the end of this turn of
        the event loop, before a file is started over, and at close)."""
        self._serial = 0
        self._lock = threading.Lock()
        self._broken = False
        """A write failed: appends go to the table from now on."""
        self._synced_at = time.monotonic()
        self._sync_due = False
        """A sync is scheduled or runs in a thread."""
        self._dirty = False
        """Written since the last sync started."""
        self._every.add(self)

    @property
    def pending(self) -> int:
        """Items appended and not done."""
        return len(self._items)

    def owns(self, name: str) -> bool:
        """Whether ``name`` (a file in the directory) is one of this instance's journals."""
        return name.startswith(f"{self._token}-")

    def append(self, body: bytes, received_at: float) -> int | None:
        """Write ``body`` as pending: its number, or None when the journal cannot take it
        (it failed once, or a write fails now: the caller puts the item in the table)."""
        self._check_fork()
        if self._broken:
            return None
        number = next(self._numbers)
        crc = zlib.crc32(body)
        files = self._files
        if self._done and files and files[-1].size + _HEAD.size + len(body) > JOURNAL_BYTES:
            self._write_done()  # the current file may have nothing pending left: reused
        with self._lock:
            try:
                current = self._current(_HEAD.size + len(body))
                head = _HEAD.pack(
                    _APPENDED, current.generation, number, received_at, len(body), crc
                )
                current.write(head, body)
            except OSError as exc:
                self._broken = True
                _log.warning("inbox journal %s: %s; appends go in the table", self.directory, exc)
                return None
            current.pending += 1
        self._items[number] = (current, body, received_at)
        self._dirty = True
        if not self._sync_due:
            self._schedule_sync()
        return number

    def __contains__(self, number: object) -> bool:
        """Whether item ``number`` is pending in this journal."""
        return number in self._items

    def get(self, number: int) -> Pending | None:
        """The pending item ``number``, None when it is done (or not this journal's)."""
        found = self._items.get(number)
        return None if found is None else Pending(number, found[1], found[2], found[0].name)

    def done(self, number: int, *, at_once: bool = False) -> bool:
        """Mark ``number`` done; False when it was not pending. Its done record is written
        with the others of this turn of the event loop (at once without a running loop, or
        with ``at_once``): a crash before then runs the item again, as a lost write would,
        and dedup skips it. ``at_once`` is for a caller whose next step relies on the record
        being written (an item moved to the table, whose record of the move is then dropped)."""
        found = self._items.pop(number, None)
        if found is None:
            return False
        self._done.append((found[0], number))
        if at_once:
            self._write_done()
        elif len(self._done) == 1:
            try:
                asyncio.get_running_loop().call_soon(self._write_done)
            except RuntimeError:
                self._write_done()
        return True

    def _write_done(self) -> None:
        """Write the done records waiting, one ``write`` per file. A file left with nothing
        pending, other than the current one, becomes a spare."""
        waiting, self._done = self._done, []
        if not waiting:
            return
        by_file: dict[_File, list[bytes]] = {}
        for file, number in waiting:
            record = _HEAD.pack(_DONE, file.generation, number, 0.0, 0, 0)
            by_file.setdefault(file, []).append(record)
        with self._lock:
            for file, records in by_file.items():
                with contextlib.suppress(OSError):  # lost: the items run again after a crash,
                    file.write(b"".join(records))  # deduplicated
                file.pending -= len(records)
                if file.pending == 0 and file is not self._files[-1]:
                    self._files.remove(file)
                    self._retire(file)

    def sync(self) -> None:
        """Flush the journal to disk (in a thread: the event loop never waits for it). The
        lock is not held meanwhile: a descriptor closed since is skipped."""
        with self._lock:
            fds = [file.fd for file in self._files]
        for fd in fds:
            with contextlib.suppress(OSError):
                os.fsync(fd)

    def _schedule_sync(self) -> None:
        """Sync :data:`SYNC_EVERY` seconds after the last sync started (at once if that is
        past), in the event loop's default executor; at once without a running loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.sync()
            self._dirty = False
            return
        self._sync_due = True
        delay = max(0.0, self._synced_at + SYNC_EVERY - time.monotonic())
        loop.call_later(delay, self._start_sync, loop)

    def _start_sync(self, loop: asyncio.AbstractEventLoop) -> None:
        self._dirty = False
        self._synced_at = time.monotonic()
        try:
            loop.run_in_executor(None, self._sync_then, loop)
        except RuntimeError:  # the loop is closing: its executor is gone
            self._sync_due = False

    def _sync_then(self, loop: asyncio.AbstractEventLoop) -> None:
        """In the executor's thread: sync, then tell the loop."""
        try:
            self.sync()
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(self._synced)

    def _synced(self) -> None:
        self._sync_due = False
        if self._dirty:  # written while it synced: again, in turn
            self._schedule_sync()

    def close(self) -> None:
        """Release the files: deleted when nothing is pending, else left (unlocked) for the
        next :func:`read_orphan` to move into the table."""
        self._write_done()
        with self._lock:
            files, self._files = self._files, []
            spares, self._spares = self._spares, []
            for file in files + spares:
                if file.pending == 0:
                    self._delete(file)
                else:
                    _close(file.fd)
        self._items.clear()
        self._broken = True

    def _current(self, adding: int) -> _File:
        files = self._files
        if files and (files[-1].size + adding <= JOURNAL_BYTES or files[-1].pending == 0):
            if files[-1].size + adding > JOURNAL_BYTES:
                files[-1].start()  # nothing pending in it: over again
            return files[-1]
        file = self._spares.pop() if self._spares else self._new_file()
        try:
            file.start()
        except OSError:
            self._delete(file)
            raise
        files.append(file)
        return file

    def _retire(self, file: _File) -> None:
        """``file`` holds nothing pending: a spare, or deleted when there are enough."""
        if len(self._spares) < _SPARES:
            self._spares.append(file)
        else:
            self._delete(file)

    def _new_file(self) -> _File:
        self._serial += 1
        name = f"{self._token}-{self._serial}{_SUFFIX}"
        os.makedirs(self.directory, exist_ok=True)
        # Locked under a temporary name, then renamed: a reader never finds it unlocked.
        temporary = os.path.join(self.directory, f".{name}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        fd = os.open(temporary, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(temporary, os.path.join(self.directory, name))
        except OSError:
            _close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        return _File(name, fd)

    def _delete(self, file: _File) -> None:
        """Unlink, then close (the lock ends only once the name is gone)."""
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.directory, file.name))
        _close(file.fd)

    def _check_fork(self) -> None:
        """In a forked child: the parent's files are the parent's (their locks too), so the
        child closes its copies and starts journals of its own. Run at the fork itself: a
        child that kept the copies would keep the lock after the parent died, and the
        parent's journal would not be taken over while the child lives."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._token = secrets.token_hex(8)
        self._lock = threading.Lock()  # held by another thread of the parent, maybe
        self._sync_due = self._dirty = False
        for file in self._files + self._spares:
            _close(file.fd)  # the parent's lock stays: it is the parent's descriptor's
        self._files = []
        self._spares = []
        self._items = {}
        self._done = []


class Orphan:
    """A gone owner's journal, locked by this process: :meth:`pending`, then :meth:`delete`
    once they are in the table (or :meth:`release` to leave it for later)."""

    def __init__(self, path: str, fd: int, pending: list[Pending], torn: int) -> None:
        self.path = path
        self.name = os.path.basename(path)
        self._fd = fd
        self.pending = pending
        self.torn = torn
        """Bytes past the last whole record (a power cut's torn tail), ignored."""

    def delete(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        _close(self._fd)

    def release(self) -> None:
        _close(self._fd)


def orphan_names(directory: str, journal: Journal | None) -> list[str]:
    """The journal files in ``directory`` that are not ``journal`` 's."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(
        name
        for name in names
        if name.endswith(_SUFFIX)
        and not name.startswith(".")
        and (journal is None or not journal.owns(name))
    )


def read_orphan(directory: str, name: str) -> Orphan | None:
    """Lock and read journal ``name`` when its owner is gone; None while the owner holds it
    (or when it was deleted meanwhile)."""
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # its owner runs
        _close(fd)
        return None
    try:
        if os.fstat(fd).st_nlink == 0:  # moved and deleted by another process meanwhile
            _close(fd)
            return None
        data = _read_all(fd)
    except OSError:
        _close(fd)
        raise
    pending, torn = _parse(data)
    return Orphan(path, fd, pending, torn)


def _parse(data: bytes) -> tuple[list[Pending], int]:
    """The items a journal holds pending, and how many bytes of its current generation are no
    whole record (a write a power cut tore); what follows the generation is left alone."""
    pending: dict[int, Pending] = {}
    view = memoryview(data)
    size = _HEAD.size
    if len(data) < size or data[:1] != _HEADER:
        return [], len(data)
    generation = _HEAD.unpack_from(view, 0)[1]
    at = size
    while at + size <= len(data):
        kind, written_in, number, received_at, length, crc = _HEAD.unpack_from(view, at)
        if written_in != generation or kind not in (_APPENDED, _DONE):
            return list(pending.values()), 0  # an earlier generation's rest
        end = at + size + length
        if kind == _DONE:
            pending.pop(number, None)
        elif end > len(data) or zlib.crc32(view[at + size : end]) != crc:
            break
        else:
            pending[number] = Pending(number, bytes(view[at + size : end]), received_at)
        at = end
    return list(pending.values()), len(data) - at


def _write_at(fd: int, offset: int, head: bytes, body: bytes) -> None:
    """One ``pwritev`` at ``offset`` (the whole record, almost always); what is left, after."""
    written = os.pwritev(fd, (head, body), offset)
    record = head + body if written < len(head) + len(body) else b""
    view = memoryview(record)[written:]
    while view:
        step = os.pwrite(fd, view, offset + written)
        view = view[step:]
        written += step


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _after_fork_in_child() -> None:
    for journal in list(Journal._every):
        journal._check_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
