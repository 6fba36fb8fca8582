"""Counters of several worker processes added up, through files per worker in a directory.

``mpsflow run --workers N`` forks N processes that share one port, so a scrape of ``/metrics``
reaches one of them at random. The worker that answers a scrape adds up its own live counters,
the other workers' counters read from their files, and those of workers that have exited:
their counts stay, so a combined counter never goes down when a worker is replaced, and none
of their deliveries counts as in flight.

Each worker keeps two files:

* ``<pid>.json``, a snapshot of all its counters (and HTTP status counts), written whole and
  renamed into place every second or so and when it stops (:meth:`WorkerMetrics.publish`);
* ``<pid>.log``, a journal: before the answer to a callback is sent, the worker appends all
  its counters to it as one record, with one ``write`` on an ``O_APPEND`` descriptor
  (:meth:`WorkerMetrics.record`). No ``fsync``: a killed process's writes are in the page
  cache already and the others read them from there (only a crash of the whole machine could
  lose them, and with it every worker's counts). So a worker SIGKILLed right after it answered
  a callback leaves that callback's counts behind.

A record is a header (lengths, CRC-32) and ``marshal`` data: the cheapest whole copy of dicts
(about half the cost of a JSON line of only the counters that changed, which takes a diff in
Python). A reader uses the last complete record whose checksum matches: a torn one at the end
(its writer was killed in the ``write``, or is still in it) is left out, and that callback
was not answered. Journals of another user are not read (``marshal`` data must be trusted).
A worker whose pid an earlier, exited one had replaces that one's files (its counts go).

Every counter of one process only grows, so a reader takes, per counter, the higher value of
the snapshot and the journal: the same result whatever it read first. Publishing a snapshot
empties the journal (it holds nothing the snapshot lacks), so the journal stays small: at
most one record per callback of one interval, and never more than ``max_journal_bytes``
(past that, :meth:`~WorkerMetrics.record` publishes at once). A reader reads the journal
before the snapshot, so it never pairs an emptied journal with the snapshot from before it.
"""

from __future__ import annotations

import json
import logging
import marshal
import operator
import os
import struct
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mpsflow.observability.metrics import InMemoryMetrics

__all__ = ["WorkerMetrics"]

_log = logging.getLogger("mpsflow.observability.metrics")

_TEMPLATE = InMemoryMetrics().state()
# The counters as InMemoryMetrics keeps them: dicts (keyed by a label or a pair of labels)
# and single numbers (float sums, and the last full reconcile pass: None in a process that
# does not reconcile, and then left out of what is written); the state names are the
# attribute names.
_TABLES = tuple(name for name, value in _TEMPLATE.items() if isinstance(value, list | dict))
_PAIR_TABLES = frozenset(name for name, value in _TEMPLATE.items() if isinstance(value, list))
_SUMS = tuple(name for name, value in _TEMPLATE.items() if name not in _TABLES)
_RESPONSES = "responses"
# A journal record: payload length, CRC-32 of the payload, length of its first part. The
# payload is two marshal dumps: the names of the counters, then their values in that order.
_HEADER = struct.Struct("<III")
_sums_of = operator.attrgetter(*_SUMS)  # a tuple, as there are several
# Only journals of this user are read (marshal data must come from a trusted writer).
_OWNER: int | None = os.geteuid() if hasattr(os, "geteuid") else None

_Key = tuple[Any, ...]
"""A counter in flat form: ``(name, *labels)``, e.g. ``("deliveries", "http", "ack")``."""


class WorkerMetrics:
    """One worker's view of the shared metrics directory (``pid`` defaults to this process).

    ``max_journal_bytes`` bounds this worker's journal: :meth:`record` publishes a snapshot
    (which empties it) once it is that long.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        pid: int | None = None,
        max_journal_bytes: int = 1 << 20,
    ) -> None:
        self.directory = Path(directory)
        self.pid = os.getpid() if pid is None else pid
        self.max_journal_bytes = max_journal_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        self._journal_size = 0  # up to the end of the last whole record
        self._failing = False
        self._bound: tuple[InMemoryMetrics, Mapping[int, int]] | None = None
        self._dicts: list[Mapping[Any, Any]] = []  # plain dicts: marshal takes them as they are
        self._counters: list[Mapping[Any, Any]] = []  # Counters: marshal wants them as dicts
        self._names = b""  # marshal dump of the names of _dicts, _counters and _SUMS

    def __repr__(self) -> str:
        return f"WorkerMetrics({str(self.directory)!r}, pid={self.pid})"

    @property
    def path(self) -> Path:
        """This worker's snapshot file."""
        return self.directory / f"{self.pid}.json"

    @property
    def journal_path(self) -> Path:
        """This worker's journal: its counters as of each callback answered since the snapshot."""
        return self.directory / f"{self.pid}.log"

    def record(self, metrics: InMemoryMetrics, responses: Mapping[int, int]) -> None:
        """Append all of this worker's counters to its journal, as one record.

        Call it before the answer to a callback is sent. One ``write``, no ``fsync``. Never
        raises: a failed write is logged (once until one succeeds again), and its torn
        record cut off before the next one is written.
        """
        bound = self._bound
        if bound is None or bound[0] is not metrics or bound[1] is not responses:
            self._bind(metrics, responses)
        names = self._names
        payload = names + marshal.dumps(
            [*self._dicts, *map(dict, self._counters), *_sums_of(metrics)]
        )
        frame = _HEADER.pack(len(payload), zlib.crc32(payload), len(names)) + payload
        try:
            fd = self._fd
            if fd is None:
                fd = self._open_journal()
            if self._failing:  # a torn record may be at the end: cut it off
                os.ftruncate(fd, self._journal_size)
            written = os.write(fd, frame)
            if written != len(frame):  # the disk is full
                raise OSError(f"short write to {self.journal_path}")
        except OSError:
            if not self._failing:
                _log.warning("could not append to this worker's metrics journal", exc_info=True)
            self._failing = True
            return
        self._failing = False
        self._journal_size += written
        if self._journal_size >= self.max_journal_bytes:
            try:
                self.publish(metrics, responses)
            except OSError:
                _log.warning("could not publish this worker's metrics", exc_info=True)

    def publish(self, metrics: InMemoryMetrics, responses: Mapping[int, int]) -> None:
        """Write this worker's counters (and HTTP status counts) whole; empty the journal."""
        document = {
            "metrics": metrics.state(),
            "responses": {str(code): n for code, n in responses.items()},
        }
        scratch = self.directory / f".{self.pid}.json.tmp"
        scratch.write_bytes(json.dumps(document).encode())
        os.replace(scratch, self.path)
        # Everything in the journal is in the snapshot now (a reader that still sees both
        # takes the higher values: the same ones).
        if self._fd is None:  # not opened by this writer: what is there is a stale one's
            self.journal_path.unlink(missing_ok=True)
        else:
            os.ftruncate(self._fd, 0)
            self._journal_size = 0
            self._failing = False

    def close(self) -> None:
        """Close the journal (removed when empty: everything it had is in the snapshot)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if os.fstat(fd).st_size == 0:
                self.journal_path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    def combined(
        self, metrics: InMemoryMetrics, responses: Mapping[int, int]
    ) -> tuple[InMemoryMetrics, Counter[int]]:
        """This worker's live counters plus every other worker's files, as new objects."""
        total = InMemoryMetrics()
        total.add_state(metrics.state())
        codes: Counter[int] = Counter(responses)
        pids: set[int] = set()
        for path in self.directory.iterdir():
            if path.suffix in (".json", ".log"):
                try:
                    pids.add(int(path.stem))
                except ValueError:
                    continue
        pids.discard(self.pid)
        for pid in sorted(pids):
            flat = self._read_worker(pid)
            if not flat:
                continue
            state, worker_codes = _unflatten(flat)
            total.add_state(state, finished=not _alive(pid))
            codes.update(worker_codes)
        return total, codes

    def _read_worker(self, pid: int) -> dict[_Key, float]:
        """A worker's counters in flat form: the higher of its journal's and snapshot's."""
        flat: dict[_Key, float] = {}
        # The journal first: it is emptied only after a newer snapshot is in place.
        _merge(flat, _read_journal(self.directory / f"{pid}.log"))
        path = self.directory / f"{pid}.json"
        document = _read(path)
        if document is not None:
            try:
                _merge(flat, _flatten(document))
            except (ValueError, TypeError, IndexError):
                _log.warning("unreadable worker metrics file %s; left out", path)
        return flat

    def _bind(self, metrics: InMemoryMetrics, responses: Mapping[int, int]) -> None:
        """Journal these counters from now on."""
        self._bound = (metrics, responses)
        tables = {name: getattr(metrics, name) for name in _TABLES}
        tables[_RESPONSES] = responses
        plain = [name for name, table in tables.items() if type(table) is dict]
        copied = [name for name in tables if name not in plain]
        self._dicts = [tables[name] for name in plain]
        self._counters = [tables[name] for name in copied]
        self._names = marshal.dumps((*plain, *copied, *_SUMS))

    def _open_journal(self) -> int:
        """Open the journal, emptied: what an earlier writer left is not this one's to keep."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.journal_path, flags, 0o600)
        self._fd = fd
        self._journal_size = 0
        self._failing = False
        return fd


def _merge(flat: dict[_Key, float], entries: Iterable[tuple[_Key, float]]) -> None:
    for key, value in entries:
        current = flat.get(key)
        if current is None or value > current:  # a 0 counts too: a reconcile with no full pass
            flat[key] = value


def _read_journal(path: Path) -> list[tuple[_Key, float]]:
    """The counters of the last whole, intact record of a journal."""
    try:
        with path.open("rb") as file:
            if _OWNER is not None and os.fstat(file.fileno()).st_uid != _OWNER:
                _log.warning("worker metrics journal %s has another owner; left out", path)
                return []
            data = file.read()
    except FileNotFoundError:
        return []
    except OSError:
        _log.warning("unreadable worker metrics journal %s; left out", path)
        return []
    records: list[tuple[int, int, int, int]] = []
    position = 0
    while position + _HEADER.size <= len(data):
        length, checksum, names_length = _HEADER.unpack_from(data, position)
        start = position + _HEADER.size
        position = start + length
        if position > len(data):
            break  # torn: its writer was killed in the write, or is still in it
        records.append((start, position, checksum, names_length))
    for start, end, checksum, names_length in reversed(records):
        payload = data[start:end]
        if zlib.crc32(payload) != checksum:
            continue
        try:
            names = marshal.loads(payload[:names_length])
            return _record_entries(names, marshal.loads(payload[names_length:]))
        except (ValueError, TypeError, EOFError):
            continue
    return []


def _record_entries(names: Sequence[Any], values: Sequence[Any]) -> list[tuple[_Key, float]]:
    entries: list[tuple[_Key, float]] = []
    for name, value in zip(names, values, strict=True):
        if isinstance(value, dict):
            for key, count in value.items():
                entries.append(((name, *key) if type(key) is tuple else (name, key), count))
        elif value is not None:  # None: a number this worker does not keep (see _TEMPLATE)
            entries.append(((name,), value))
    if not all(_valid(key, (value,)) for key, value in entries):
        raise ValueError("not a journal record")
    return entries


def _valid(key: Sequence[Any], value: Sequence[Any]) -> bool:
    """A key of a name and labels as :func:`_unflatten` takes it, and one count."""
    if len(value) != 1 or not key or type(value[0]) not in (int, float):
        return False
    name = key[0]
    if name in _SUMS:
        size = 1
    elif name in _PAIR_TABLES:
        size = 3
    elif name in _TABLES or name == _RESPONSES:
        size = 2
    else:
        return False
    return len(key) == size and all(type(label) in (str, int) for label in key[1:])


def _flatten(document: Mapping[str, Any]) -> list[tuple[_Key, float]]:
    """A published document's counters as ``(key, value)`` pairs."""
    entries: list[tuple[_Key, float]] = []
    state = document.get("metrics", {})
    if isinstance(state, Mapping):
        for name, value in state.items():
            if isinstance(value, list):
                entries.extend(((name, *row[:-1]), row[-1]) for row in value)
            elif isinstance(value, Mapping):
                entries.extend(((name, label), count) for label, count in value.items())
            elif isinstance(value, int | float):
                entries.append(((name,), value))
    responses = document.get(_RESPONSES, {})
    if isinstance(responses, Mapping):
        entries.extend(((_RESPONSES, int(code)), n) for code, n in responses.items())
    return [(key, value) for key, value in entries if _valid(key, (value,))]


def _unflatten(flat: Mapping[_Key, float]) -> tuple[dict[str, Any], Counter[int]]:
    """Flat counters back into an :meth:`InMemoryMetrics.state` and status counts."""
    state: dict[str, Any] = {name: [] if name in _PAIR_TABLES else {} for name in _TABLES}
    codes: Counter[int] = Counter()
    for key, value in flat.items():
        name = key[0]
        if name == _RESPONSES:
            codes[int(key[1])] += int(value)
        elif name in _PAIR_TABLES:
            state[name].append([*key[1:], value])
        elif name in _SUMS:
            state[name] = value
        else:
            state[name][key[1]] = value
    return state, codes


def _read(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        _log.warning("unreadable worker metrics file %s; left out", path)
        return None
    return document if isinstance(document, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
