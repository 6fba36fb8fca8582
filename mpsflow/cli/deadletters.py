"""``mpsflow deadletters list|show|replay``: read the dead-letter file and re-drive it.

``list`` prints one line per record with filters and a count by kind; ``show`` prints one
record in full (tracebacks, the body pretty-printed with secrets masked); ``replay`` sends
the records' raw bodies again, to a callback URL or straight into an app, once the bug that
dead-lettered them is fixed. Replayed records are noted in ``FILE.replayed`` (a JSON line per
record, :class:`ReplayedEntry`), so a second replay skips them; ``list`` marks them (its
``REPLAYED`` column, ``replayed_at`` with ``--json``, only the others with ``--pending``) and
``show`` says when. :func:`read_replayed` is the one reader of that journal and
:func:`replayed_at` the one rule: a record counts as replayed until it is dead-lettered again
(a newer version written after its replay is pending again).

The dead-letter file is only ever appended to, never rewritten, so an ``mpsflow run`` writing to
it meanwhile loses nothing. A record that the app dead-letters again when replayed into it
(``--app``) is appended anew under its own id, with the new reason, failures and kind and the
attempts added up: the last line with an id is the record, and every command reads the file
that way, so the record is updated, not duplicated, and the next replay sends it once.
``replay --app`` uses the dedup store ``mpsflow run`` uses, so handlers that have already
succeeded do not run again.

Every command reads FILE together with its rotated files (``FILE.N`` … ``FILE.1``, oldest
first; the default dead-letter file rotates by size), as one file. A refusal (a bad signature,
poison) may hold only an excerpt of its body (``body_truncated``): ``show`` says so, and
``replay`` does not send it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec

from mpsflow.cli.common import EXIT_OK, Command, positive_int
from mpsflow.deadletter import DeadLetter
from mpsflow.errors import ConfigurationError, DecodeError
from mpsflow.sinks.jsonl import jsonl_files, read_jsonl

__all__ = [
    "COMMAND",
    "FILE_HELP",
    "KINDS",
    "SHORT_ID",
    "ReplayedEntry",
    "compact_body",
    "excerpt_note",
    "find_record",
    "one_line",
    "read_dead_letters",
    "read_replayed",
    "redact",
    "replay_journal",
    "replayed_at",
    "unique_records",
    "utc_time",
]

KINDS = ("exhausted", "rejected", "poison", "unmatched", "signature")
"""The kinds of dead letter the pipeline writes."""

_SECRET_FIELDS = frozenset({"S3SecretId", "S3SecretKey", "Sign", "NotifyKey"})
_REDACTED = "<redacted>"
_SECRET_TEXT = re.compile(
    r'("(?:' + "|".join(sorted(_SECRET_FIELDS)) + r')"\s*:\s*)"(?:[^"\\]|\\.)*"?'
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
SHORT_ID = 8
"""Characters of a record id shown in listings."""
FILE_HELP = "dead-letter file (JSON lines), read with its rotated files FILE.1, FILE.2, …"


# -- reading ----------------------------------------------------------------------------------


def read_dead_letters(path: str | os.PathLike[str]) -> list[DeadLetter]:
    """The records of a dead-letter file and its rotated files (``path.N`` … ``path.1``
    first), oldest first (a torn last line is skipped).

    A record written again under the same id (a replay that failed again) counts once: its
    last version, in the place of that line. Raises ``ConfigurationError`` when there is no
    such file, ``path`` is a folder, or a file holds something else.
    """
    _refuse_folder(path)
    files = jsonl_files(path)
    if not files or not all(file.is_file() for file in files):
        raise ConfigurationError(f"no dead-letter file at {os.fspath(path)}")
    latest: dict[str, DeadLetter] = {}
    try:
        for file in files:
            for number, value in enumerate(read_jsonl(file), start=1):
                try:
                    record = msgspec.convert(value, DeadLetter)
                except msgspec.ValidationError as exc:
                    raise ConfigurationError(
                        f"{file}: record {number} is not a dead letter ({exc})"
                    ) from None
                latest.pop(record.id, None)  # a newer version goes where it was written
                latest[record.id] = record
    except DecodeError as exc:
        raise ConfigurationError(str(exc)) from None
    return list(latest.values())


def _refuse_folder(path: str | os.PathLike[str]) -> None:
    """Raise ``ConfigurationError`` when ``path`` is a folder (``.``, ``/``, a named one),
    saying which file to give instead: the app's default dead-letter file when it is there."""
    folder = Path(path)
    if folder.name and not folder.is_dir():
        return
    from mpsflow.app import DEFAULT_DEAD_LETTER_PATH

    shown = os.fspath(folder)  # `.` for an empty path
    candidate = os.path.join(shown, DEFAULT_DEAD_LETTER_PATH)
    if os.path.isfile(candidate):
        what = f"give the dead-letter file in it ({candidate})"
    else:
        what = (
            "give the file the app writes dead letters to (App(dead_letters=…), by default"
            f" {DEFAULT_DEAD_LETTER_PATH} in the folder it runs in)"
        )
    raise ConfigurationError(f"{shown} is a folder: {what}")


class ReplayedEntry(msgspec.Struct, kw_only=True):
    """One line of ``FILE.replayed``, written by ``replay`` for each record it replayed."""

    id: str
    """The record's id."""
    time: float
    """When it was replayed (Unix time)."""
    via: str
    """``"http"`` (``--to``) or ``"app"`` (``--app``)."""
    result: str
    """What the target answered."""


def replay_journal(path: str | os.PathLike[str]) -> Path:
    """``FILE.replayed`` beside the dead-letter file ``path``: the journal of ``replay``."""
    file = Path(path)
    return file.with_name(file.name + ".replayed")


def read_replayed(path: str | os.PathLike[str]) -> dict[str, float]:
    """Record id → when it was last replayed, from the journal of the dead-letter file ``path``
    (empty when there is none).

    A torn last line (a write cut short) is skipped, and so is a line that is not an entry;
    an entry without a numeric time reads as replayed at 0 (before any record was written).
    Raises ``ConfigurationError`` when another line is not JSON.
    """
    journal = replay_journal(path)
    if not journal.is_file():
        return {}
    done: dict[str, float] = {}
    try:
        for entry in read_jsonl(journal):
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                stamp = entry.get("time")
                done[entry["id"]] = float(stamp) if isinstance(stamp, int | float) else 0.0
    except DecodeError as exc:
        raise ConfigurationError(str(exc)) from None
    return done


def replayed_at(record: DeadLetter, replayed: Mapping[str, float]) -> float | None:
    """When ``record`` was replayed, by :func:`read_replayed`'s ``replayed``; ``None`` when it
    was not, or has been dead-lettered again since (its newer version is pending)."""
    when = replayed.get(record.id)
    return when if when is not None and when >= record.time else None


def excerpt_note(record: DeadLetter) -> str:
    """``"only the first 2048 of 8388608 bytes of its body were kept"`` for a record that
    holds an excerpt (a refusal), else ``""``."""
    if not record.body_truncated:
        return ""
    kept = len(record.raw_body())
    return f"only the first {kept} of {record.body_size} bytes of its body were kept"


def find_record(records: Sequence[DeadLetter], wanted: str) -> DeadLetter:
    """The one record whose id starts with ``wanted``."""
    prefix = wanted.strip().lower()
    matches = {r.id: r for r in records if prefix and r.id.lower().startswith(prefix)}
    if not matches:
        raise ConfigurationError(f"no dead letter with id {wanted!r}")
    if len(matches) > 1:
        shown = ", ".join(sorted(i[: len(prefix) + 4] for i in matches))
        raise ConfigurationError(
            f"id {wanted!r} matches {len(matches)} dead letters ({shown}); give more of it"
        )
    return next(iter(matches.values()))


def unique_records(records: Iterable[DeadLetter]) -> list[DeadLetter]:
    """``records`` without repeated ids (the first of each is kept)."""
    seen: dict[str, DeadLetter] = {}
    for record in records:
        seen.setdefault(record.id, record)
    return list(seen.values())


# -- display helpers --------------------------------------------------------------------------


def redact(value: Any) -> Any:
    """A copy of a parsed JSON body with secret values (S3 keys, ``Sign``) masked."""
    if isinstance(value, dict):
        return {
            key: _REDACTED if key in _SECRET_FIELDS and item not in (None, "") else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def _safe(text: str) -> str:
    """``text`` with control characters (terminal escapes) shown as ``\\xNN``; keeps \\n, \\t."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def one_line(text: str) -> str:
    """``text`` on one line, terminal escapes shown as ``\\xNN``."""
    return _safe(" ".join(text.split()))


def utc_time(timestamp: float) -> str:
    try:
        moment = datetime.fromtimestamp(timestamp, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return str(timestamp)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _since(text: str) -> float:
    """An ISO 8601 time as a Unix timestamp; without an offset it is UTC (as ``list`` shows)."""
    raw = text.strip()
    if raw[-1:] in ("Z", "z"):
        raw = raw[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2024-05-01T12:00:00Z, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _body_lines(record: DeadLetter) -> tuple[str, list[str]]:
    """A title for the body and its lines: pretty JSON when it is JSON, secrets masked."""
    raw = record.raw_body()
    size = f"{len(raw)} bytes"
    if record.body_truncated:
        size = f"first {len(raw)} of {record.body_size} bytes (an excerpt: not replayable)"
    digest = f", sha256 {record.body_sha256}" if record.body_sha256 else ""
    if record.body_encoding == "base64":
        return f"{size}, not UTF-8 (base64){digest}", [record.body]
    try:
        document = json.loads(record.body)
    except ValueError:
        text = _SECRET_TEXT.sub(rf'\1"{_REDACTED}"', record.body)
        return f"{size}, not JSON{digest}", _safe(text).splitlines()
    pretty = json.dumps(redact(document), indent=2, ensure_ascii=False)
    return f"{size}, JSON, secrets redacted{digest}", _safe(pretty).splitlines()


def compact_body(body: bytes) -> str:
    """One displayable line of a body, secrets masked (for ``--dry-run``)."""
    try:
        document = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace")
        return one_line(_SECRET_TEXT.sub(rf'\1"{_REDACTED}"', text))
    return _safe(json.dumps(redact(document), ensure_ascii=False, separators=(",", ":")))


def _first_failure(record: DeadLetter) -> str:
    if not record.failures:
        return "-"
    first = record.failures[0]
    what = first.error_type or first.kind
    return f"{first.handler}:{what}" if first.handler else what


def _table(rows: list[list[str]]) -> Iterator[str]:
    """Rows as aligned columns (the last column is left as long as it is)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        yield "  ".join([*cells, row[-1]]).rstrip()


def _kinds_summary(records: Sequence[DeadLetter]) -> str:
    counts = Counter(r.kind for r in records)
    order = [k for k in KINDS if k in counts] + sorted(set(counts) - set(KINDS))
    return ", ".join(f"{kind} {counts[kind]}" for kind in order)


# -- list -------------------------------------------------------------------------------------


def _configure_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help=FILE_HELP)
    parser.add_argument("--kind", choices=KINDS, help="only dead letters of this kind")
    parser.add_argument("--task", metavar="TASK_ID", help="only dead letters of this task")
    parser.add_argument(
        "--pending",
        action="store_true",
        help="only those not replayed (FILE.replayed does not list them, or they were"
        " dead-lettered again since)",
    )
    window = parser.add_mutually_exclusive_group()
    window.add_argument(
        "--since", type=_since, metavar="ISO", help="only those written at or after this time"
    )
    window.add_argument("--last", type=positive_int, metavar="N", help="only the last N")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the records as JSON lines, each with replayed_at (Unix time, or null)",
    )
    parser.set_defaults(run=_list)


def _list(args: argparse.Namespace) -> int:
    records = read_dead_letters(args.file)
    journal = read_replayed(args.file)
    replayed = {r.id: replayed_at(r, journal) for r in records}
    shown = [
        r
        for r in records
        if (args.kind is None or r.kind == args.kind)
        and (args.task is None or r.task_id == args.task)
        and (args.since is None or r.time >= args.since)
        and (not args.pending or replayed[r.id] is None)
    ]
    if args.last is not None:
        shown = shown[-args.last :]
    if args.json:
        encoder = msgspec.json.Encoder()
        for record in shown:
            document = msgspec.to_builtins(record)
            document["replayed_at"] = replayed[record.id]
            sys.stdout.write(encoder.encode(document).decode() + "\n")
        return EXIT_OK
    if shown:
        rows = [["TIME", "ID", "KIND", "EVENT", "TASK", "ATTEMPT", "FAILURE", "REPLAYED", "REASON"]]
        rows += [
            [
                utc_time(r.time),
                r.id[:SHORT_ID],
                one_line(r.kind),
                one_line(r.event_type) or "-",
                one_line(r.task_id) or "-",
                str(r.attempt),
                one_line(_first_failure(r)),
                _when(replayed[r.id]),
                one_line(r.reason) or "-",
            ]
            for r in shown
        ]
        for line in _table(rows):
            print(line)
    of_total = f" (of {len(records)})" if len(shown) != len(records) else ""
    counts = f": {_kinds_summary(shown)}" if shown else ""
    done = sum(replayed[r.id] is not None for r in shown)
    done_note = f"; {done} replayed (replay skips them)" if done else ""
    rotated = len(jsonl_files(args.file)) - Path(args.file).exists()
    files = f"; read with its {rotated} rotated file(s)" if rotated else ""
    print(f"{len(shown)} dead letter(s){of_total}{counts}{done_note}{files}")
    return EXIT_OK


def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else utc_time(timestamp)


# -- show -------------------------------------------------------------------------------------


def _configure_show(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help=FILE_HELP)
    parser.add_argument("id", metavar="ID", help="the record's id (a unique prefix will do)")
    parser.set_defaults(run=_show)


def _show(args: argparse.Namespace) -> int:
    record = find_record(read_dead_letters(args.file), args.id)
    for line in _describe(record, read_replayed(args.file)):
        print(line)
    return EXIT_OK


def _replay_state(record: DeadLetter, journal: Mapping[str, float]) -> str:
    """``show``'s ``replayed:`` line: when, or ``no`` (and why, when it was replayed once)."""
    when = replayed_at(record, journal)
    if when is not None:
        return f"{utc_time(when)} (replay skips it unless --force)"
    if record.id in journal:
        return f"no: dead-lettered again since its replay at {utc_time(journal[record.id])}"
    return "no"


def _describe(record: DeadLetter, journal: Mapping[str, float]) -> Iterator[str]:
    fields = [
        ("id", record.id),
        ("time", f"{utc_time(record.time)} ({record.time})"),
        ("kind", record.kind),
        ("reason", record.reason),
        ("source", record.source),
        ("delivery", record.delivery_id),
        ("attempt", str(record.attempt)),
        ("event", record.event_type),
        ("task", record.task_id),
        ("replayed", _replay_state(record, journal)),
    ]
    for name, value in fields:
        yield f"{name + ':':<10}{one_line(value) or '-'}"
    yield f"failures: {len(record.failures)}"
    for number, failure in enumerate(record.failures, start=1):
        where = f"handler {failure.handler}" if failure.handler else "the delivery"
        key = f" (key {failure.key})" if failure.key else ""
        yield "  " + one_line(f"{number}. {where}{key}: {failure.kind} {failure.error_type}")
        if failure.message:
            yield f"     message: {one_line(failure.message)}"
        if failure.traceback:
            yield "     traceback:"
            for line in _safe(failure.traceback).rstrip().splitlines():
                yield f"       {line}"
    title, lines = _body_lines(record)
    yield f"body:     {title}"
    for line in lines:
        yield f"  {line}"


# -- the command ------------------------------------------------------------------------------


def _configure(parser: argparse.ArgumentParser) -> None:
    from mpsflow.cli.deadletters_replay import configure_replay  # it imports this module

    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text, configure in (
        ("list", "one line per dead letter, with filters and a count by kind", _configure_list),
        ("show", "one dead letter in full: failures, tracebacks and body", _configure_show),
        ("replay", "send dead letters' bodies again, to a URL or an app", configure_replay),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text)
        configure(action)
        action.set_defaults(command_parser=action)  # its usage and "did you mean" on a typo


COMMAND = Command("list, inspect and replay dead letters", _configure)
"""``mpsflow deadletters``: plugged into ``mpsflow.cli.COMMANDS``."""
