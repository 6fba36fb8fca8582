"""Opening SQLite connections the way the writers of :mod:`mpsflow._sqlite` use them, and
reading their failures."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Final

__all__ = [
    "close_quietly",
    "connect",
    "directory_given",
    "directory_problem",
    "enable_wal",
    "is_busy",
    "names_directory",
    "run_setup",
]

_SEPARATORS: Final = tuple({os.sep, os.altsep or os.sep})
"""What a path written as a directory ends with."""
_BUSY_CODES: Final = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (extended codes masked)


def connect(path: str, *, timeout: float) -> sqlite3.Connection:
    """A connection to ``path`` in autocommit mode, usable from any thread; the file's folder
    is made first if it is missing (as the file sinks make theirs).

    A ``path`` that is a directory, or is written as one (``inbox/``, missing or not: SQLite
    would make a file of that name), fails saying so (SQLite says only "unable to open database
    file"), its cause an ``IsADirectoryError`` that :func:`directory_given` finds.
    """
    if path != ":memory:":
        if names_directory(path):
            where = os.path.abspath(path)
            cause = IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), where)
            raise sqlite3.OperationalError(f"{where} is a directory, not a file") from cause
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:  # reported as SQLite's own failure to open the file would be
            raise sqlite3.OperationalError(
                f"cannot make the folder {folder}: {exc.strerror or exc}"
            ) from exc
    return sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)


def names_directory(path: str) -> bool:
    """Whether ``path`` is a directory, or is written as one (``inbox/``), missing or not."""
    return path.endswith(_SEPARATORS) or os.path.isdir(path)


def directory_given(exc: BaseException) -> str | None:
    """The directory named where a database file was wanted, when that is what ``exc`` (or
    an exception it was raised from) says; else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, IsADirectoryError) and seen.filename is not None:
            return os.fsdecode(seen.filename)
        seen = seen.__cause__
    return None


def directory_problem(exc: BaseException, what: str, give: str, file_name: str) -> str | None:
    """The one line saying that ``what`` (``the inbox``) was given a directory (``--inbox .``)
    where its database file goes, and what to do (``give``: ``give --inbox a file path``),
    with ``file_name`` in that directory for an example, when ``exc`` says so
    (:func:`directory_given`); else None."""
    folder = directory_given(exc)
    if folder is None:
        return None
    example = os.path.join(folder, file_name)
    return f"{what} cannot open {folder}: it is a directory, not a file: {give}, e.g. {example}"


def run_setup(
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


def is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _BUSY_CODES
    return "locked" in str(exc) or "busy" in str(exc)  # Python before 3.11


def close_quietly(conn: sqlite3.Connection | None) -> None:
    """Close ``conn`` if there is one, whatever state it is in; the caller drops it."""
    if conn is not None:
        with contextlib.suppress(sqlite3.Error):
            conn.close()


def enable_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
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
