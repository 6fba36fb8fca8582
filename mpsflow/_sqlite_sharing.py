"""Whether this process is the only one writing a SQLite database file.

A process that writes a file alone may answer its callers from an open transaction and
commit later (see :meth:`mpsflow._sqlite.SQLiteWriter.run_now`): holding the write lock for a
turn of its event loop costs nobody anything. Once another process writes the same file
(``mpsflow run --workers N``, or two apps given one path), it must not: the other one would
wait on the lock most of the time.

The processes agree through POSIX record locks (``fcntl``) on a file beside the database,
``<database>-writers``, which the kernel drops when a process dies, even after ``kill -9``:

* byte 0, held exclusively by the one process that writes alone;
* byte 1, held shared by every process that writes in company (it says "I am here").

A process starting takes byte 0 when it can and nobody holds byte 1; otherwise it holds byte
1 and writes in company from then on. The process holding byte 0 looks at byte 1 before each
transaction it opens, and gives byte 0 up for byte 1 as soon as someone holds it. Going back
is never needed: a process that was once in company stays so.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Final

__all__ = ["WriterSharing"]

_ALONE: Final = 0
_UNKNOWN: Final = 1
_IN_COMPANY: Final = 2
_SUFFIX: Final = "-writers"


class WriterSharing:
    """This process's side of the agreement on the database file ``path`` (see the module)."""

    def __init__(self, path: str) -> None:
        self.path = f"{path}{_SUFFIX}"
        self._state = _UNKNOWN
        self._fd: int | None = None

    def __repr__(self) -> str:
        state = {_ALONE: "alone", _UNKNOWN: "unknown", _IN_COMPANY: "in company"}[self._state]
        return f"WriterSharing({self.path!r}, {state})"

    def alone(self) -> bool:
        """True while this process is the file's only writer; called before each transaction.

        The first call takes part in the agreement. A lock file that cannot be opened means
        company: another process may be writing, and this one cannot tell it so.
        """
        state = self._state
        if state == _ALONE:
            if not self._company_announced():
                return True
            self._join_company()
            return False
        if state == _IN_COMPANY:
            return False
        return self._start()

    def forked(self) -> None:
        """In a forked child: the parent's locks are not this process's (``fcntl`` record
        locks are not inherited), so it takes part afresh."""
        fd, self._fd = self._fd, None
        self._state = _UNKNOWN
        if fd is not None:
            with contextlib.suppress(OSError):  # closing here drops none of the parent's locks
                os.close(fd)

    def close(self) -> None:
        """Leave the agreement (the locks go with the descriptor)."""
        fd, self._fd = self._fd, None
        self._state = _UNKNOWN
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _start(self) -> bool:
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            self._state = _IN_COMPANY
            return False
        if _try_lock(self._fd, fcntl.LOCK_EX, 0) and not self._company_announced():
            self._state = _ALONE
            return True
        self._join_company()
        return False

    def _company_announced(self) -> bool:
        """Whether any other process holds byte 1 (tried, and at once let go of, when free)."""
        fd = self._fd
        assert fd is not None
        if not _try_lock(fd, fcntl.LOCK_EX, 1):
            return True
        with contextlib.suppress(OSError):
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, 1)
        return False

    def _join_company(self) -> None:
        """Hold byte 1 (waiting only while a lone writer looks at it) and let byte 0 go."""
        self._state = _IN_COMPANY
        fd = self._fd
        if fd is None:
            return
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH, 1, 1)
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)
        except OSError:  # locks unsupported here: nobody can write alone through this file
            self.close()
            self._state = _IN_COMPANY


def _try_lock(fd: int, kind: int, byte: int) -> bool:
    """Take a ``kind`` lock on ``byte`` of ``fd`` without waiting; False when someone holds a
    conflicting one (or record locks do not work on this file system)."""
    try:
        fcntl.lockf(fd, kind | fcntl.LOCK_NB, 1, byte)
    except OSError:
        return False
    return True
