"""JsonlSink: append records as JSON lines, with fsync policies and size-based rotation.

It is the default dead-letter sink, so it is careful: file work runs in a worker thread
(the event loop never blocks on disk), a failed write is rolled back to the last complete
line, and a torn last line left by a crash is repaired when the file is opened again.
``read_jsonl`` reads such files back, tolerating a torn last line.

Idempotency: a record emitted by a handler carries a key derived from ``ctx.effect_key``, the
same when a re-run of the same effect (after a crash) emits it again. The sink skips a record
whose key it wrote among the last ``dedup_window`` keyed records. Each line stays exactly the
record's JSON (readers, the dead-letter tools and ``read_jsonl`` see no extra field), so the
keys go to a sidecar file, ``<path>.keys``, one JSON string per line, appended after the
records of each batch and read back (its last ``dedup_window`` keys) when the sink starts, so
the window survives a restart; it is compacted once it holds twice the window. Records
without a key (dead letters, records submitted outside a handler) are always written and
need no sidecar. A crash between writing a batch and its keys (a few system calls apart)
still lets a re-run repeat that batch.

Writability: ``start`` fails (``SinkError``, saying which path and why) when the file cannot
be written, or, with rotation, when its directory takes no new file; ``ready()`` answers the
same question later (the app's readiness check for its dead-letter sink), and a file that was
removed or moved away by someone else is reopened at its path before the next write instead
of being written to where nobody reads it.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal

import anyio
import anyio.to_thread
import msgspec

from mpsflow._json import dumps_line
from mpsflow.errors import ConfigurationError, DecodeError, SinkError
from mpsflow.sinks.base import KeyedSinkBase, RecentKeys, check_keys

__all__ = ["FsyncPolicy", "JsonlSink", "jsonl_files", "read_jsonl"]

FsyncPolicy = Literal["batch", "always", "never"]
"""``always``: fsync every record; ``batch``: once per batch; ``never``: leave it to the OS."""

_log = logging.getLogger("mpsflow.sinks")

_PERMANENT_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG}
)
_TAIL_BLOCK = 64 * 1024
_MIN_FREE_BYTES = 1024 * 1024
"""Below this much free space in its directory, a sink is not ``ready()``."""


class JsonlSink(KeyedSinkBase):
    """Appends one JSON object per line to ``path``.

    Records may be dicts, msgspec Structs, dataclasses or raw JSON bytes (re-formatted onto
    one line). With ``rotate_bytes``, a write that would take the file past that size first
    renames ``path`` to ``path.1`` (``path.1`` to ``path.2``, … keeping ``keep`` old files).
    A batch is written, flushed and (per ``fsync``) synced before ``send`` returns.
    ``dedup_window``: how many of the latest records' idempotency keys are remembered to skip
    a repeat (see the module doc); 0 remembers none and writes no sidecar.

    ``await sink.ready()`` is True while the sink can write: the file opens for appending,
    its directory takes a new file (with rotation) and has at least 1 MiB free. The answer is
    reused for ``ready_interval`` seconds, unless a write failed meanwhile.

    A ``path`` that names a folder whatever is on disk (``.``, ``/``, ``..``, one ending in a
    separator) is refused at once, a ``ConfigurationError``; one that is a folder on disk is
    refused by ``start``.
    """

    ready_interval = 1.0
    """Seconds a ``ready()`` answer is reused (probes hit the disk)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy = "batch",
        rotate_bytes: int | None = None,
        keep: int = 5,
        dedup_window: int = 10_000,
    ) -> None:
        if fsync not in ("batch", "always", "never"):
            raise ValueError(f"fsync must be 'batch', 'always' or 'never', not {fsync!r}")
        if rotate_bytes is not None and rotate_bytes < 1:
            raise ValueError("rotate_bytes must be positive")
        if keep < 0:
            raise ValueError("keep must not be negative")
        if dedup_window < 0:
            raise ValueError("dedup_window must not be negative")
        text = os.fspath(path)
        if os.path.basename(text) in ("", ".", ".."):
            example = os.path.join(text, "records.jsonl")
            raise ConfigurationError(
                f"{text!r} names a folder, not a file: give a file path, such as {example!r}"
            )
        self.path = Path(path)
        self.fsync: FsyncPolicy = fsync
        self.rotate_bytes = rotate_bytes
        self.keep = keep
        self.dedup_window = dedup_window
        self.keys_path = self.path.with_name(self.path.name + ".keys")
        self._file: io.FileIO | None = None
        self._keys_file: io.FileIO | None = None
        self._keys_loaded = False
        self._keys_lines = 0
        self._recent = RecentKeys(dedup_window)
        self._size = 0
        self._lock = anyio.Lock()
        self._ready: tuple[float, str] | None = None
        """When ``ready()`` last probed, and what was wrong (``""``: nothing)."""

    async def start(self) -> None:
        """Open the file (creating its directory); ``SinkError`` when it cannot be written.

        A start that fails holds nothing open: nobody calls ``close`` after a failed start.
        """
        async with self._lock:
            try:
                await self._in_thread(self._open)
                await self._in_thread(self._probe)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._let_go)
                raise

    async def ready(self) -> bool:
        """True when the sink can write now (see the class doc); logs a change either way."""
        now = time.monotonic()
        last = self._ready
        if last is not None and now - last[0] < self.ready_interval:
            return not last[1]
        try:
            await anyio.to_thread.run_sync(self._probe)
        except OSError as exc:
            problem = f"cannot write {self.path}: {self._reason(exc)}"
        else:
            problem = ""
        if last is None or problem != last[1]:
            if problem:
                _log.warning("%s", problem)
            elif last is not None:
                _log.warning("%s is writable again", self.path)
        self._ready = (now, problem)
        return not problem

    async def send_keyed(self, batch: Sequence[object], keys: Sequence[str | None]) -> None:
        """Append the records, skipping any whose key is in the dedup window."""
        check_keys(batch, keys)
        lines: list[bytes] = []
        for index, record in enumerate(batch):
            try:
                lines.append(dumps_line(record) + b"\n")
            except (TypeError, ValueError, msgspec.MsgspecError) as exc:
                raise SinkError(
                    f"record {index} of the batch has no JSON form ({type(exc).__name__})",
                    transient=False,
                ) from None
        async with self._lock:
            await self._in_thread(self._write, lines, keys)

    async def close(self) -> None:
        async with self._lock:
            await self._in_thread(self._close)

    async def _in_thread(self, func: Any, *args: Any) -> None:
        try:
            await anyio.to_thread.run_sync(func, *args)
        except OSError as exc:
            if self._ready is not None:
                self._ready = None  # the next ready() looks again
            transient = exc.errno not in _PERMANENT_ERRNOS
            reason = self._reason(exc)
            raise SinkError(f"cannot write {self.path}: {reason}", transient=transient) from exc

    def _reason(self, exc: OSError) -> str:
        """Why ``exc`` happened, naming the path it concerns when that is not the file's."""
        reason = exc.strerror or type(exc).__name__
        where = exc.filename
        if where is not None and os.fspath(where) != os.fspath(self.path):
            reason += f" ({os.fsdecode(where)})"
        return reason

    # -- blocking file work (worker thread) --------------------------------------------------

    def _open(self) -> None:
        if self._file is not None:
            return
        _make_directory(self.path.parent)
        _repair_tail(self.path)
        file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open until close
        try:
            self._size = file.seek(0, os.SEEK_END)
        except BaseException:
            _close_logged(file, self.path)
            raise
        self._file = file
        if self.dedup_window:
            self._load_keys()

    @property
    def _fh(self) -> io.FileIO:
        assert self._file is not None, "file not open"
        return self._file

    def _probe(self) -> None:
        """Raise the ``OSError`` that would stop a write now (see ``ready``)."""
        directory = self.path.parent
        _make_directory(directory)
        with open(self.path, "ab"):
            pass
        if self.rotate_bytes is not None:  # rotating makes new files there
            try:
                fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
            except OSError as exc:
                raise type(exc)(exc.errno, exc.strerror, os.fspath(directory)) from None
            os.close(fd)
            os.unlink(name)
        stats = os.statvfs(directory)
        if stats.f_bavail * stats.f_frsize < _MIN_FREE_BYTES:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(directory))

    def _reopen_if_moved(self) -> None:
        """Reopen ``path`` when the open file is no longer there (removed, or rotated away by
        another writer): writing on would put records where nobody reads them."""
        if self._file is None:
            return
        opened = os.fstat(self._fh.fileno())
        try:
            current = os.stat(self.path)
        except OSError:  # gone, or its directory is: reopening says why it cannot be written
            current = None
        if current is None or (current.st_ino, current.st_dev) != (opened.st_ino, opened.st_dev):
            _log.warning("%s was removed or moved away; reopening it", self.path)
            self._close_quietly()
            self._open()

    def _write(self, lines: list[bytes], keys: Sequence[str | None] = ()) -> None:
        self._reopen_if_moved()
        self._open()
        if self.dedup_window and any(key is not None for key in keys):
            self._load_keys()
            kept: list[bytes] = []
            new_keys: dict[str, None] = {}  # ordered, and fast to look up
            for line, key in zip(lines, keys, strict=True):
                if key is not None:
                    if key in self._recent or key in new_keys:
                        _log.debug("%s: skipping a repeated record (key %s)", self.path, key)
                        continue
                    new_keys[key] = None
                kept.append(line)
            self._append_lines(kept)
            self._note_keys(list(new_keys))
        else:
            self._append_lines(lines)

    def _append_lines(self, lines: list[bytes]) -> None:
        if not lines:
            return
        mark = self._size
        try:
            chunk: list[bytes] = []
            chunk_size = 0
            for line in lines:
                if self._must_rotate(chunk_size, len(line)):
                    self._write_all(b"".join(chunk))
                    chunk, chunk_size = [], 0
                    self._rotate()
                    mark = 0
                chunk.append(line)
                chunk_size += len(line)
                if self.fsync == "always":
                    self._write_all(b"".join(chunk))
                    os.fsync(self._fh.fileno())
                    chunk, chunk_size = [], 0
            self._write_all(b"".join(chunk))
            if self.fsync == "batch":
                os.fsync(self._fh.fileno())
        except OSError:
            self._roll_back(mark)
            raise

    def _must_rotate(self, unwritten: int, line: int) -> bool:
        """True when appending a ``line``-byte record would pass ``rotate_bytes``.

        A record larger than ``rotate_bytes`` still gets a file of its own.
        """
        if self.rotate_bytes is None:
            return False
        used = self._size + unwritten
        return used > 0 and used + line > self.rotate_bytes

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._fh.write(view) or 0
            view = view[written:]
            self._size += written

    def _roll_back(self, mark: int) -> None:
        """Cut a failed batch off the file so no half line stays behind."""
        if self._file is None:  # failed between files while rotating: nothing half written
            return
        try:
            self._fh.truncate(mark)
            self._size = mark
        except OSError:
            # Cannot repair in place: reopen (and repair the tail) on the next write.
            self._close_quietly()

    def _rotate(self) -> None:
        if self.fsync != "never":
            os.fsync(self._fh.fileno())
        file, self._file = self._fh, None
        file.close()
        if self.keep == 0:
            self.path.unlink()
        else:
            for index in range(self.keep - 1, 0, -1):
                older = _rotated(self.path, index)
                if older.exists():
                    os.replace(older, _rotated(self.path, index + 1))
            os.replace(self.path, _rotated(self.path, 1))
        if self.fsync != "never":
            _fsync_dir(self.path.parent)
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open until close
        self._size = 0
        _log.info("rotated %s", self.path)

    # -- the key sidecar ---------------------------------------------------------------------

    def _load_keys(self) -> None:
        """Read the sidecar's last ``dedup_window`` keys (once), compacting a long sidecar."""
        if self._keys_loaded:
            return
        self._keys_loaded = True
        try:
            _repair_tail(self.keys_path)
            with open(self.keys_path, "rb") as file:
                for line in file:
                    self._keys_lines += 1
                    try:
                        key = msgspec.json.decode(line, type=str)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        continue
                    self._recent.add(key)
        except FileNotFoundError:
            return
        except OSError as exc:
            _log.warning("%s: cannot read keys (%s); dedup starts empty", self.keys_path, exc)
            return
        if self._keys_lines > self.dedup_window:
            self._compact_keys()

    def _note_keys(self, keys: list[str]) -> None:
        """Remember ``keys`` (their records are written) and append them to the sidecar.

        The records are already in the file: a sidecar failure is logged, not raised, so
        the channel does not write them again; only the restart memory of these keys is lost.
        """
        if not keys:
            return
        for key in keys:
            self._recent.add(key)
        data = b"".join(msgspec.json.encode(key) + b"\n" for key in keys)
        try:
            if self._keys_file is None:
                self._keys_file = open(self.keys_path, "ab", buffering=0)  # noqa: SIM115
            view = memoryview(data)
            while view:
                view = view[self._keys_file.write(view) or 0 :]
            if self.fsync != "never":
                os.fsync(self._keys_file.fileno())
            self._keys_lines += len(keys)
            if self._keys_lines > 2 * self.dedup_window:
                self._compact_keys()
        except OSError as exc:
            _log.warning("%s: cannot record keys (%s)", self.keys_path, exc)
            self._close_keys()

    def _compact_keys(self) -> None:
        """Rewrite the sidecar with only the keys in the window (atomically)."""
        self._close_keys()
        tmp = self.keys_path.with_name(self.keys_path.name + ".tmp")
        try:
            with open(tmp, "wb") as file:
                file.write(b"".join(msgspec.json.encode(key) + b"\n" for key in self._recent))
                if self.fsync != "never":
                    os.fsync(file.fileno())
            os.replace(tmp, self.keys_path)
            if self.fsync != "never":
                _fsync_dir(self.path.parent)
        except OSError as exc:
            _log.warning("%s: cannot compact keys (%s)", self.keys_path, exc)
            return
        self._keys_lines = len(self._recent)

    def _close_keys(self) -> None:
        file, self._keys_file = self._keys_file, None
        _close_logged(file, self.keys_path)

    def _close(self) -> None:
        self._close_keys()
        if self._file is None:
            return
        try:
            if self.fsync != "never":
                os.fsync(self._fh.fileno())
        finally:
            self._close_quietly()

    def _let_go(self) -> None:
        """Close whatever is open without syncing it: nothing was written through it."""
        self._close_keys()
        self._close_quietly()

    def _close_quietly(self) -> None:
        file, self._file = self._file, None
        _close_logged(file, self.path)

    def __repr__(self) -> str:
        return (
            f"JsonlSink({str(self.path)!r}, fsync={self.fsync!r}, rotate_bytes={self.rotate_bytes})"
        )


def _close_logged(file: io.FileIO | None, path: Path) -> None:
    """Close ``file`` (if any), logging a failure instead of raising it: the caller is giving
    the file up, and being unbuffered it holds nothing that was not written already."""
    if file is not None:
        try:
            file.close()
        except OSError:
            _log.warning("closing %s failed", path)


def _rotated(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


def _make_directory(directory: Path) -> None:
    """Create ``directory`` (and its parents) unless it exists; an error names the path that
    is in the way (a file where a directory should be) or that cannot be created."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a file where a directory should be
        blocker = next((p for p in (directory, *directory.parents) if p.exists()), directory)
        if blocker.is_dir():
            raise
        raise NotADirectoryError(
            errno.ENOTDIR, "a file is where a directory should be", os.fspath(blocker)
        ) from None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _repair_tail(path: Path) -> None:
    """Make ``path`` end with a newline: finish a complete last record, cut a torn one."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with open(path, "r+b") as file:
        file.seek(size - 1)
        if file.read(1) == b"\n":
            return
        start = _last_line_start(file, size)
        file.seek(start)
        tail = file.read()
        try:
            msgspec.json.decode(tail)
        except msgspec.DecodeError:
            file.truncate(start)
            _log.warning("%s: removed a torn last line of %d bytes", path, size - start)
        else:
            file.seek(0, os.SEEK_END)
            file.write(b"\n")


def _last_line_start(file: BinaryIO, size: int) -> int:
    """Offset just after the last newline in the file (0 when there is none)."""
    end = size
    while end > 0:
        begin = max(0, end - _TAIL_BLOCK)
        file.seek(begin)
        block = file.read(end - begin)
        newline = block.rfind(b"\n")
        if newline >= 0:
            return begin + newline + 1
        end = begin
    return 0


def read_jsonl(path: str | os.PathLike[str], *, rotated: bool = False) -> Iterator[Any]:
    """Yield the JSON value of every line of ``path``, oldest first.

    A last line without its newline that does not parse (a write cut short by a crash) is
    skipped; any other unparsable line raises ``DecodeError`` naming the file and line.
    With ``rotated=True`` the rotated files (``path.N`` … ``path.1``) are read first.
    """
    files = jsonl_files(path) if rotated else []
    for file in files or [Path(path)]:
        yield from _read_one(file)


def jsonl_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files a rotating ``JsonlSink`` at ``path`` has written, oldest first: ``path.N``
    … ``path.1``, then ``path`` (those that exist; empty when none does).

    Raises ``IsADirectoryError`` when ``path`` is a folder (as opening it would): no sink
    writes there.
    """
    base = Path(path)
    if not base.name or base.is_dir():  # `.` and `/` have no name to add `.1` to
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
    files: list[Path] = []
    index = 1
    while _rotated(base, index).exists():
        files.append(_rotated(base, index))
        index += 1
    files.reverse()
    if base.exists():
        files.append(base)
    return files


def _read_one(path: Path) -> Iterator[Any]:
    decoder = msgspec.json.Decoder()
    with open(path, "rb") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                value = decoder.decode(line)
            except msgspec.DecodeError:
                if not line.endswith(b"\n"):
                    _log.warning("%s: ignoring a torn last line (%d bytes)", path, len(line))
                    return
                raise DecodeError(
                    f"{path}:{number} is not valid JSON", path=f"$[{number - 1}]"
                ) from None
            yield value
