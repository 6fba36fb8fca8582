"""Whether this process is the only one writing a SQLite database file.

A process that writes a file alone may answer its callers from an open transaction and
commit later (see :meth:`mpsflow._sqlite.SQLiteWriter.run_now`): holding the write lock for a
turn of its event loop costs nobody anything. Once another process writes the same file
(``mpsflow run --workers N``, two apps given one path, a ``deadletters replay``), it must not:
the other one would wait on the lock most of the time.

The processes agree through POSIX record locks (``fcntl``) on a file beside the database,
``<database>-writers`` (named after the database's real path), which the kernel drops when a
process dies, even after ``kill -9``:

* byte 0, held exclusively by the one process that writes alone;
* byte 1, held shared by every process that writes in company (it says "I am here").

A process takes part before it opens its first connection to the file. It takes byte 0 when
it can and nobody holds byte 1; otherwise it holds byte 1 and writes in company. The process
holding byte 0 looks at byte 1 before each transaction it opens and gives byte 0 up for byte 1
as soon as someone holds it. One in company tries every :data:`RECHECK_EVERY` seconds to go
back: it takes byte 0 and turns its own lock on byte 1 exclusive, which works only when no
other process holds byte 1 any more.

Record locks belong to a process, not to a descriptor, and closing any descriptor of the file
drops all of the process's locks on it: so a process has one agreement per lock file, shared
by all its writers of that database (:meth:`WriterSharing.join`, :meth:`WriterSharing.leave`).
No call waits for a lock: one that cannot be had now is tried again at the next transaction,
and meanwhile the process does not write alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from typing import ClassVar, Final

from mpsflow._sqlite_connections import names_directory

__all__ = ["RECHECK_EVERY", "WriterSharing"]

_log = logging.getLogger("mpsflow.sqlite")

RECHECK_EVERY: Final = 10.0
"""Seconds between two tries of a process in company to write alone again."""
_UNKNOWN: Final = "unknown"
_ALONE: Final = "alone"
_JOINING: Final = "joining"
"""Wants company and has not got byte 1 yet (someone holds it exclusively for a moment)."""
_IN_COMPANY: Final = "in company"
_LEFT: Final = "left"
"""Its last user left: it takes part no more (a late flush must not open it again)."""
_SUFFIX: Final = "-writers"


class WriterSharing:
    """This process's side of the agreement on one database file (see the module).

    Get it with :meth:`join` and give it back with :meth:`leave`; its methods may be called
    from any thread.
    """

    _agreements: ClassVar[dict[str, WriterSharing]] = {}
    _registry: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, lock_path: str, *, database_is_directory: bool = False) -> None:
        self.path = lock_path
        self._database_is_directory = database_is_directory
        """The database's path names a directory: opening it fails, and no lock file is made."""
        self._state = _UNKNOWN
        self._fd: int | None = None
        self._has_byte_0 = False
        self._users = 0
        self._recheck_at = 0.0
        self._warned = False
        self._lock = threading.Lock()

    @classmethod
    def join(cls, database: str) -> WriterSharing:
        """The process's agreement on ``database`` (one per real path), for one more user."""
        lock_path = os.path.realpath(database) + _SUFFIX
        with cls._registry:
            sharing = cls._agreements.get(lock_path)
            if sharing is None:
                sharing = cls._agreements[lock_path] = cls(
                    lock_path, database_is_directory=names_directory(database)
                )
            sharing._users += 1
        return sharing

    def leave(self) -> None:
        """One user fewer; the last one lets the locks go."""
        with self._registry:  # held while letting go: a join meanwhile would share the locks
            self._users -= 1
            if self._users > 0:
                return
            if self._agreements.get(self.path) is self:
                del self._agreements[self.path]
            with self._lock:
                self._let_go()
                self._state = _LEFT

    def __repr__(self) -> str:
        return f"WriterSharing({self.path!r}, {self._state})"

    @property
    def state(self) -> str:
        """``alone``, ``in company``, ``joining``, ``unknown`` (before taking part, or while
        its lock file cannot be opened) or ``left``."""
        return self._state

    def alone(self) -> bool:
        """True while this process may write the file alone; called before each transaction
        that would stay open. Takes part first, if it has not yet."""
        with self._lock:
            state = self._state
            if state == _ALONE:
                if not self._company_announced():
                    return True
                self._join_company()
                return False
            if state == _UNKNOWN:
                return self._start()
            if state == _JOINING:
                self._join_company()
            elif state == _IN_COMPANY and time.monotonic() >= self._recheck_at:
                return self._go_back()
            return False

    def take_part(self) -> None:
        """Say this process writes the file, before it opens a connection to it (cheap once
        it has: a joining process tries again)."""
        if self._state in (_UNKNOWN, _JOINING):
            self.alone()

    @classmethod
    def forked(cls) -> None:
        """In a forked child: the parent's locks are not this process's (record locks are not
        inherited), so every agreement starts afresh. Closing the inherited descriptors drops
        no lock of the parent's."""
        cls._registry = threading.Lock()
        for sharing in list(cls._agreements.values()):
            sharing._lock = threading.Lock()
            sharing._let_go()

    # -- with self._lock held ---------------------------------------------------------------

    def _start(self) -> bool:
        """Open the lock file (its folder made, as the database's is) and take part; while it
        cannot be opened, stay unknown and try again at the next call.

        Nothing is made, and nothing said, while the database cannot be opened either
        because its path is a directory or its folder cannot be made: opening it fails with
        a line saying so, and a lock file would be left beside the directory.
        """
        if self._database_is_directory or os.path.isdir(self.path.removesuffix(_SUFFIX)):
            return False
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        except OSError:
            return False
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except PermissionError:
            # Byte 1 needs only a read lock: this process can still say it writes.
            with contextlib.suppress(OSError):
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            pass
        if self._fd is None:
            if not self._warned:
                self._warned = True
                _log.warning(
                    "cannot open %s: until it can, this process does not write the database"
                    " alone, and one that does will not know this one writes it too",
                    self.path,
                )
            return False
        if _try_lock(self._fd, fcntl.LOCK_EX, 0):
            self._has_byte_0 = True
            if not self._company_announced():
                self._state = _ALONE
                return True
        self._join_company()
        return False

    def _company_announced(self) -> bool:
        """Whether another process holds byte 1 (tried, and at once let go of, when free)."""
        fd = self._fd
        assert fd is not None
        if not _try_lock(fd, fcntl.LOCK_EX, 1):
            return True
        _unlock(fd, 1)
        return False

    def _join_company(self) -> None:
        """Hold byte 1, then let byte 0 go; joining until byte 1 can be had."""
        fd = self._fd
        assert fd is not None
        if not _try_lock(fd, fcntl.LOCK_SH, 1):
            self._state = _JOINING
            return
        if self._has_byte_0:
            _unlock(fd, 0)
            self._has_byte_0 = False
        self._state = _IN_COMPANY
        self._recheck_at = time.monotonic() + RECHECK_EVERY

    def _go_back(self) -> bool:
        """In company: write alone again if nobody else holds byte 1 any more."""
        fd = self._fd
        self._recheck_at = time.monotonic() + RECHECK_EVERY
        if fd is None or not _try_lock(fd, fcntl.LOCK_EX, 0):
            return False
        if _try_lock(fd, fcntl.LOCK_EX, 1):  # our own shared lock turned exclusive: nobody else
            _unlock(fd, 1)
            self._has_byte_0 = True
            self._state = _ALONE
            return True
        _unlock(fd, 0)  # a failed conversion leaves our shared lock on byte 1 as it was
        return False

    def _let_go(self) -> None:
        fd, self._fd = self._fd, None
        self._state = _UNKNOWN
        self._has_byte_0 = False
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _try_lock(fd: int, kind: int, byte: int) -> bool:
    """Take a ``kind`` lock on ``byte`` of ``fd`` without waiting; False when another process
    holds a conflicting one (or the descriptor or the file system does not allow it)."""
    try:
        fcntl.lockf(fd, kind | fcntl.LOCK_NB, 1, byte)
    except OSError:
        return False
    return True


def _unlock(fd: int, byte: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, byte)
