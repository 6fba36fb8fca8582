"""Body files of a SQLite inbox: each body appended to its process's segment file, its row
keeping (segment, offset, length).

Why: a 10 KB body in a row fills overflow pages that are written to the WAL at commit, copied
again by a checkpoint, rewritten when a lease changes the row and churned through the freelist
when it is deleted: most of what an inbox operation costs. Here a body is written once, with
one ``write`` to the end of its process's current segment, inside the transaction that inserts
its row, so a committed row refers only to bytes written before it. ``write`` leaves the bytes
in the kernel's page cache: they survive the process being killed, as a WAL commit with
``synchronous = NORMAL`` does; and the writer's thread syncs the segments before each
checkpoint, as the checkpoint syncs the WAL.

A segment is a row of ``mpsflow_inbox_segments`` (id, owner ``host:pid/token``, sealed) and the file
``<database>-bodies/<id>``, made once the row committed. Only its owner writes to a segment,
and only while it is the owner's current one; past :data:`SEGMENT_BYTES` the owner registers
a new one, and the old one is sealed by the owner's next sweep. A sweep (every few hundred
settles, after a new segment, at close) also seals the segments of owners on this host that
are gone, and deletes each sealed segment no row refers to: its row, then its file, under the
database's write lock. Every segment method but :meth:`Segments.needs_new` runs inside a
transaction of the inbox's writer.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import threading
from collections import OrderedDict
from typing import ClassVar, Final

__all__ = ["SEGMENTS_TABLE", "SEGMENT_BYTES", "Segments", "process_alive"]

SEGMENT_BYTES: Final = 8 * 1024 * 1024
"""A segment's size past which its owner starts a new one (a settled body's space is freed
when every other body of its segment is settled too)."""
SEGMENTS_TABLE: Final = "mpsflow_inbox_segments"
_READERS: Final = 32
"""Read descriptors kept open (segments of every process are read when leasing)."""


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class _Current:
    """This process's segment: the one its appends write to."""

    __slots__ = ("fd", "id", "size")

    def __init__(self, segment_id: int, fd: int) -> None:
        self.id = segment_id
        self.fd = fd
        self.size = 0


class Segments:
    """The segment files of the inbox in ``directory``, as seen by this process.

    ``table`` is the inbox's table (its ``segment`` column says which rows refer to which
    segment). A lock guards the descriptors: operations run on the event loop's thread or on
    the writer's, and the writer's thread syncs them before a checkpoint.
    """

    _live: ClassVar[set[str]] = set()
    """Tokens of the instances open in this process (and, after a fork, in its parent)."""

    def __init__(self, directory: str, table: str, host: str) -> None:
        self.directory = directory
        self._token = secrets.token_hex(8)
        self._live.add(self._token)
        self._table = table
        self._host = host
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._current: _Current | None = None
        self._retired: list[int] = []
        """Segments this process wrote to before its current one, to seal."""
        self._unsynced: list[int] = []
        """Descriptors of retired segments, synced and closed before the next checkpoint."""
        self._readers: OrderedDict[int, int] = OrderedDict()

    @property
    def owner(self) -> str:
        """This instance's name on its segments: ``host:pid/token``."""
        return f"{self._host}:{os.getpid()}/{self._token}"

    def needs_new(self) -> bool:
        """Whether appends should wait for :meth:`register` (none yet, full, or forked)."""
        self._check_fork()
        current = self._current
        return current is None or current.size >= SEGMENT_BYTES

    # -- in the writer's transactions ---------------------------------------------------------

    def register(self, conn: sqlite3.Connection) -> int:
        """A new segment of this process; :meth:`adopt` it once this committed."""
        self._check_fork()
        cursor = conn.execute(f"INSERT INTO {SEGMENTS_TABLE} (owner) VALUES (?)", (self.owner,))
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def write(self, body: bytes) -> tuple[int, int] | None:
        """Append ``body`` to the current segment: (segment, offset), or None when there is
        none to write to (the body then goes in the row)."""
        with self._lock:
            current = self._current
            if current is None or self._pid != os.getpid():
                return None
            offset = current.size
            try:
                # Deleted by a sweep that took this process for gone (another PID namespace
                # with this host name): bodies go elsewhere. No sweep runs until this
                # transaction ends, so the check holds until the row is committed.
                if os.fstat(current.fd).st_nlink == 0:
                    raise FileNotFoundError(current.id)
                _write_all(current.fd, body)
            except OSError:  # or a full disk: the rest of the segment is unusable
                self._retire()
                return None
            current.size += len(body)
            return current.id, offset

    def read(self, segment: int, offset: int, length: int) -> bytes | None:
        """The body at ``offset`` of ``segment``; None when it is not there (the file is
        gone or short: a power cut before it was synced). Other ``OSError`` s raise."""
        self._check_fork()
        with self._lock:
            fd = self._readers.get(segment)
            if fd is None:
                try:
                    fd = os.open(self._path(segment), os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    return None
                self._readers[segment] = fd
                if len(self._readers) > _READERS:
                    _close(self._readers.popitem(last=False)[1])
            else:
                self._readers.move_to_end(segment)
            data = os.pread(fd, length, offset)
        return data if len(data) == length else None

    def sweep(self, conn: sqlite3.Connection, retired: list[int]) -> int:
        """Seal ``retired`` (this instance's) and the segments of owners on this host that are
        gone, then delete every sealed segment no row refers to; how many were deleted."""
        self._check_fork()
        owner = self.owner
        conn.executemany(
            f"UPDATE {SEGMENTS_TABLE} SET sealed = 1 WHERE id = ? AND owner = ?",
            [(segment, owner) for segment in retired],
        )
        unsealed = conn.execute(
            f"SELECT DISTINCT owner FROM {SEGMENTS_TABLE} WHERE sealed = 0 AND owner LIKE ?",
            (f"{self._host}:%",),
        ).fetchall()
        for (other,) in unsealed:
            if not self._alive(other):
                conn.execute(f"UPDATE {SEGMENTS_TABLE} SET sealed = 1 WHERE owner = ?", (other,))
        empty = conn.execute(
            f"SELECT id FROM {SEGMENTS_TABLE} AS s WHERE sealed = 1"
            f" AND NOT EXISTS (SELECT 1 FROM {self._table} WHERE segment = s.id)"
        ).fetchall()
        conn.executemany(f"DELETE FROM {SEGMENTS_TABLE} WHERE id = ?", empty)
        for (segment,) in empty:
            # Unlinked before the commit: should it roll back, no row refers to the segment
            # anyway, and the next sweep deletes its row.
            with self._lock:
                fd = self._readers.pop(segment, None)
            if fd is not None:
                _close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(segment))
        return len(empty)

    # -- on the event loop's thread -----------------------------------------------------------

    def adopt(self, segment: int) -> None:
        """Write to the registered ``segment`` from now on (its file is made here)."""
        os.makedirs(self.directory, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(self._path(segment), flags, 0o600)
        with self._lock:
            self._retire()
            self._current = _Current(segment, fd)

    def retire_unadopted(self, segment: int) -> None:
        """``segment`` was registered but its file could not be made: the sweep seals it."""
        self._retired.append(segment)

    def retire(self) -> None:
        """Stop writing to the current segment (at close); the next sweep seals it."""
        with self._lock:
            self._retire()

    def retired(self) -> list[int]:
        """The segments to seal at the next sweep."""
        return list(self._retired)

    def sealed(self, segments: list[int]) -> None:
        """A sweep that sealed ``segments`` committed."""
        self._retired = [s for s in self._retired if s not in segments]

    def sync(self) -> None:
        """Flush what was written to the disk (before a checkpoint, on the writer's thread)."""
        with self._lock:
            if self._pid != os.getpid():
                return
            unsynced, self._unsynced = self._unsynced, []
            current = self._current
            fds = [current.fd] if current is not None else []
        for fd in unsynced:
            with contextlib.suppress(OSError):
                os.fsync(fd)
            _close(fd)
        for fd in fds:
            with contextlib.suppress(OSError):  # closed meanwhile (the inbox closed)
                os.fsync(fd)

    def close(self) -> None:
        """Close every descriptor; from now on this instance's segments are a gone owner's."""
        self._live.discard(self._token)
        with self._lock:
            self._retire()
            unsynced, self._unsynced = self._unsynced, []
            readers = list(self._readers.values())
            self._readers.clear()
        for fd in unsynced + readers:
            _close(fd)

    def _retire(self) -> None:
        current, self._current = self._current, None
        if current is not None:
            self._retired.append(current.id)
            self._unsynced.append(current.fd)

    def _check_fork(self) -> None:
        """A forked child starts afresh: the parent's segments are the parent's."""
        pid = os.getpid()
        if self._pid != pid:
            with self._lock:
                self._pid = pid
                self._token = secrets.token_hex(8)  # the parent's token names its segments
                self._live.add(self._token)
                self._current = None
                self._retired = []
                self._unsynced = []  # the parent syncs them
                self._readers = OrderedDict()

    def _alive(self, owner: str) -> bool:
        """Whether the instance named ``owner`` (this host's) may still write."""
        pid_text, _, token = owner.removeprefix(f"{self._host}:").partition("/")
        if not pid_text.isdigit():
            return True  # not ours to judge
        pid = int(pid_text)
        if pid == os.getpid():  # this process, or one gone that had its pid
            return token in self._live
        return process_alive(pid)

    def _path(self, segment: int) -> str:
        return os.path.join(self.directory, str(segment))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _after_fork_in_child() -> None:
    Segments._live = set()  # the parent's instances are the parent's (its pid)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
