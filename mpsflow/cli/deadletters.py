"""``mpsflow deadletters list|show|replay``: read the dead-letter file and re-drive it.

``list`` prints one line per record with filters and a count by kind; ``show`` prints one
record in full (tracebacks, the body pretty-printed with secrets masked); ``replay`` sends
the records' raw bodies again, to a callback URL or straight into an app, once the bug that
dead-lettered them is fixed. The dead-letter file is only ever read: replayed records are
noted in ``FILE.replayed`` (a JSON line per record), so a second replay skips them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from mpsflow.cli.common import EXIT_FAILED, EXIT_OK, Command, load_app, positive_float, positive_int
from mpsflow.deadletter import DeadLetter
from mpsflow.errors import ConfigurationError, DecodeError, SinkError
from mpsflow.signing import sign_notification
from mpsflow.sinks.jsonl import JsonlSink, read_jsonl

if TYPE_CHECKING:
    import aiohttp

    from mpsflow.app import App

__all__ = ["COMMAND", "KINDS", "read_dead_letters", "redact"]

KINDS = ("exhausted", "rejected", "poison", "unmatched", "signature")
"""The kinds of dead letter the pipeline writes."""

_SECRET_FIELDS = frozenset({"S3SecretId", "S3SecretKey", "Sign", "NotifyKey"})
_REDACTED = "<redacted>"
_SECRET_TEXT = re.compile(
    r'("(?:' + "|".join(sorted(_SECRET_FIELDS)) + r')"\s*:\s*)"(?:[^"\\]|\\.)*"?'
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SHORT_ID = 8
_RESPONSE_SHOWN = 200


# -- reading ----------------------------------------------------------------------------------


def read_dead_letters(path: str | os.PathLike[str]) -> list[DeadLetter]:
    """Every record of a dead-letter file, oldest first (a torn last line is skipped).

    Raises ``ConfigurationError`` when the file is missing or holds something else.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigurationError(f"no dead-letter file at {os.fspath(path)}")
    records: list[DeadLetter] = []
    try:
        for number, value in enumerate(read_jsonl(file), start=1):
            try:
                records.append(msgspec.convert(value, DeadLetter))
            except msgspec.ValidationError as exc:
                raise ConfigurationError(
                    f"{file}: record {number} is not a dead letter ({exc})"
                ) from None
    except DecodeError as exc:
        raise ConfigurationError(str(exc)) from None
    return records


def _find(records: Sequence[DeadLetter], wanted: str) -> DeadLetter:
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


def _unique(records: Iterable[DeadLetter]) -> list[DeadLetter]:
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


def _one_line(text: str) -> str:
    return _safe(" ".join(text.split()))


def _when(timestamp: float) -> str:
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
    if record.body_encoding == "base64":
        return f"{len(raw)} bytes, not UTF-8 (base64)", [record.body]
    try:
        document = json.loads(record.body)
    except ValueError:
        text = _SECRET_TEXT.sub(rf'\1"{_REDACTED}"', record.body)
        return f"{len(raw)} bytes, not JSON", _safe(text).splitlines()
    pretty = json.dumps(redact(document), indent=2, ensure_ascii=False)
    return f"{len(raw)} bytes, JSON, secrets redacted", _safe(pretty).splitlines()


def _compact(body: bytes) -> str:
    """One displayable line of a body, secrets masked (for ``--dry-run``)."""
    try:
        document = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace")
        return _one_line(_SECRET_TEXT.sub(rf'\1"{_REDACTED}"', text))
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
    parser.add_argument("file", metavar="FILE", help="dead-letter file (JSON lines)")
    parser.add_argument("--kind", choices=KINDS, help="only dead letters of this kind")
    parser.add_argument("--task", metavar="TASK_ID", help="only dead letters of this task")
    window = parser.add_mutually_exclusive_group()
    window.add_argument(
        "--since", type=_since, metavar="ISO", help="only those written at or after this time"
    )
    window.add_argument("--last", type=positive_int, metavar="N", help="only the last N")
    parser.add_argument("--json", action="store_true", help="print the records as JSON lines")
    parser.set_defaults(run=_list)


def _list(args: argparse.Namespace) -> int:
    records = read_dead_letters(args.file)
    shown = [
        r
        for r in records
        if (args.kind is None or r.kind == args.kind)
        and (args.task is None or r.task_id == args.task)
        and (args.since is None or r.time >= args.since)
    ]
    if args.last is not None:
        shown = shown[-args.last :]
    if args.json:
        for record in shown:
            sys.stdout.write(msgspec.json.encode(record).decode() + "\n")
        return EXIT_OK
    if shown:
        rows = [["TIME", "ID", "KIND", "EVENT", "TASK", "ATTEMPT", "FAILURE", "REASON"]]
        rows += [
            [
                _when(r.time),
                r.id[:_SHORT_ID],
                _one_line(r.kind),
                _one_line(r.event_type) or "-",
                _one_line(r.task_id) or "-",
                str(r.attempt),
                _one_line(_first_failure(r)),
                _one_line(r.reason) or "-",
            ]
            for r in shown
        ]
        for line in _table(rows):
            print(line)
    of_total = f" (of {len(records)})" if len(shown) != len(records) else ""
    counts = f": {_kinds_summary(shown)}" if shown else ""
    print(f"{len(shown)} dead letter(s){of_total}{counts}")
    return EXIT_OK


# -- show -------------------------------------------------------------------------------------


def _configure_show(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="dead-letter file (JSON lines)")
    parser.add_argument("id", metavar="ID", help="the record's id (a unique prefix will do)")
    parser.set_defaults(run=_show)


def _show(args: argparse.Namespace) -> int:
    record = _find(read_dead_letters(args.file), args.id)
    for line in _describe(record):
        print(line)
    return EXIT_OK


def _describe(record: DeadLetter) -> Iterator[str]:
    fields = [
        ("id", record.id),
        ("time", f"{_when(record.time)} ({record.time})"),
        ("kind", record.kind),
        ("reason", record.reason),
        ("source", record.source),
        ("delivery", record.delivery_id),
        ("attempt", str(record.attempt)),
        ("event", record.event_type),
        ("task", record.task_id),
    ]
    for name, value in fields:
        yield f"{name + ':':<10}{_one_line(value) or '-'}"
    yield f"failures: {len(record.failures)}"
    for number, failure in enumerate(record.failures, start=1):
        where = f"handler {failure.handler}" if failure.handler else "the delivery"
        key = f" (key {failure.key})" if failure.key else ""
        yield "  " + _one_line(f"{number}. {where}{key}: {failure.kind} {failure.error_type}")
        if failure.message:
            yield f"     message: {_one_line(failure.message)}"
        if failure.traceback:
            yield "     traceback:"
            for line in _safe(failure.traceback).rstrip().splitlines():
                yield f"       {line}"
    title, lines = _body_lines(record)
    yield f"body:     {title}"
    for line in lines:
        yield f"  {line}"


# -- replay -----------------------------------------------------------------------------------


def _configure_replay(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="dead-letter file (JSON lines)")
    parser.add_argument(
        "ids", nargs="*", metavar="ID", help="records to replay (unique id prefixes; default all)"
    )
    parser.add_argument("--kind", choices=KINDS, help="only dead letters of this kind")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="URL", help="POST each body to this callback URL")
    target.add_argument(
        "--app", metavar="MODULE:APP", help="run each body through this App in-process"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would be sent; send nothing"
    )
    parser.add_argument(
        "--sign-key",
        metavar="KEY",
        default=os.environ.get("MPSFLOW_SIGN_KEY"),
        help="re-sign bodies with this NotifyKey (default: $MPSFLOW_SIGN_KEY; else sent as is)",
    )
    parser.add_argument(
        "--expires-in",
        metavar="SECONDS",
        type=int,
        default=600,
        help="signature lifetime in seconds: Timestamp = now + this (%(default)s)",
    )
    parser.add_argument(
        "--keep-going", action="store_true", help="go on after a failure (default: stop)"
    )
    parser.add_argument(
        "--force", action="store_true", help="replay records FILE.replayed lists as done, too"
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=positive_float,
        default=30.0,
        help="seconds per HTTP request (%(default)s)",
    )
    parser.set_defaults(run=_replay)


@dataclass(frozen=True, slots=True)
class _Result:
    ok: bool
    detail: str
    """HTTP status and response, or the settlement: what the operator reads."""


class _Replayed(msgspec.Struct, kw_only=True):
    """One line of ``FILE.replayed``."""

    id: str
    time: float
    via: str
    result: str


_Deliver = Callable[[DeadLetter, bytes], Awaitable[_Result]]


def _journal_path(file: str) -> Path:
    path = Path(file)
    return path.with_name(path.name + ".replayed")


def _replayed_before(journal: Path) -> dict[str, float]:
    """Record id → when it was replayed, from ``FILE.replayed``."""
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


def _resigned(body: bytes, key: str, expires_in: int) -> bytes | None:
    """``body`` signed afresh the way MPS signs; ``None`` when it is not a JSON object."""
    try:
        return sign_notification(body, key, expires_at=int(time.time()) + expires_in)
    except DecodeError:
        return None


def _select(args: argparse.Namespace, records: list[DeadLetter]) -> list[DeadLetter]:
    chosen = _unique(_find(records, wanted) for wanted in args.ids) if args.ids else records
    return _unique(r for r in chosen if args.kind is None or r.kind == args.kind)


def _replay(args: argparse.Namespace) -> int:
    import anyio

    records = _select(args, read_dead_letters(args.file))
    journal = _journal_path(args.file)
    done = {} if args.force else _replayed_before(journal)
    pending = [r for r in records if r.id not in done]
    for record in records:
        if record.id in done:
            print(f"{_label(record)}  skipped: replayed at {_when(done[record.id])}")
    if args.dry_run:
        for record in pending:
            _print_plan(args, record)
        print(_summary(would=len(pending), skipped=len(records) - len(pending)))
        return EXIT_OK
    succeeded = failed = 0
    if pending:
        app = load_app(args.app) if args.app else None
        succeeded, failed = anyio.run(_replay_all, args, pending, journal, app)
    print(
        _summary(
            succeeded=succeeded,
            failed=failed,
            skipped=len(records) - len(pending),
            stopped=len(pending) - succeeded - failed,
        )
    )
    return EXIT_FAILED if failed else EXIT_OK


def _label(record: DeadLetter) -> str:
    event = _one_line(record.event_type) or "-"
    task = _one_line(record.task_id) or "-"
    return f"{record.id[:_SHORT_ID]}  {_one_line(record.kind)}  {event}  {task}"


def _print_plan(args: argparse.Namespace, record: DeadLetter) -> None:
    body, note = _body_to_send(args, record)
    where = f"POST {len(body)} bytes to {args.to}" if args.to else f"process with {args.app}"
    print(f"{_label(record)}  would {where}{note}")
    print(f"  {_compact(body)}")


def _body_to_send(args: argparse.Namespace, record: DeadLetter) -> tuple[bytes, str]:
    """The bytes to replay and a note on how they differ from the record's."""
    raw = record.raw_body()
    if not args.sign_key:
        return raw, ""
    signed = _resigned(raw, args.sign_key, args.expires_in)
    if signed is None:
        return raw, " (not a JSON object: sent unsigned, as it was)"
    return signed, " (re-signed)"


_SUMMARY_WORDS = {
    "succeeded": "succeeded",
    "failed": "failed",
    "would": "would be replayed",
    "skipped": "skipped (replayed before; --force replays them again)",
    "stopped": "not tried (stopped at the first failure; --keep-going goes on)",
}


def _summary(**counts: int) -> str:
    """``replay: 2 succeeded, 1 failed, …``: the main counts always, others when not 0."""
    parts = [
        f"{n} {_SUMMARY_WORDS[name]}"
        for name, n in counts.items()
        if n or name in ("succeeded", "failed", "would")
    ]
    prefix = "dry run: " if "would" in counts else "replay: "
    return prefix + ", ".join(parts)


async def _replay_all(
    args: argparse.Namespace, records: list[DeadLetter], journal: Path, app: App | None
) -> tuple[int, int]:
    """Replay ``records`` in order; note each success in ``journal``; (succeeded, failed)."""
    succeeded = failed = 0
    sink = JsonlSink(journal, fsync="always")
    async with AsyncExitStack() as stack:
        stack.push_async_callback(sink.close)
        deliver = await _open_target(args, app, stack)
        for record in records:
            body, note = _body_to_send(args, record)
            result = await deliver(record, body)
            verdict = "ok" if result.ok else "FAILED"
            print(f"{_label(record)}  -> {result.detail}  {verdict}{note}", flush=True)
            if not result.ok:
                failed += 1
                if not args.keep_going:
                    break
                continue
            entry = _Replayed(
                id=record.id, time=time.time(), via="app" if app else "http", result=result.detail
            )
            try:
                await sink.send([entry])
            except SinkError as exc:
                print(
                    f"mpsflow deadletters: error: {record.id} was replayed, but {exc}; "
                    "a new replay would send it again",
                    file=sys.stderr,
                )
                failed += 1
                break
            succeeded += 1
    return succeeded, failed


async def _open_target(
    args: argparse.Namespace, app: App | None, stack: AsyncExitStack
) -> _Deliver:
    if app is not None:
        await stack.enter_async_context(app)
        return _app_target(app)
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=args.timeout)
    session = await stack.enter_async_context(aiohttp.ClientSession(timeout=timeout))
    return _http_target(session, args.to)


def _app_target(app: App) -> _Deliver:
    from mpsflow.delivery import Delivery, Settlement

    async def deliver(record: DeadLetter, body: bytes) -> _Result:
        outcome = await app.process(Delivery(body, source="replay", id=record.id))
        detail = outcome.settlement.value
        if outcome.reason:
            detail += f" ({_one_line(outcome.reason)})"
        return _Result(outcome.settlement is Settlement.ACK, detail)

    return deliver


def _http_target(session: aiohttp.ClientSession, url: str) -> _Deliver:
    import aiohttp

    headers = {"Content-Type": "application/json"}

    async def deliver(record: DeadLetter, body: bytes) -> _Result:
        try:
            async with session.post(
                url, data=body, headers={**headers, "X-Request-Id": record.id}
            ) as response:
                status: int = response.status
                answer: bytes = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _Result(False, f"error ({type(exc).__name__})")
        text = _one_line(answer.decode("utf-8", "replace"))[:_RESPONSE_SHOWN]
        return _Result(200 <= status < 300 and _code_zero(answer), f"{status} {text}".rstrip())

    return deliver


def _code_zero(answer: bytes) -> bool:
    """True for the answer of a callback that took the notification: ``{"code": 0}``."""
    try:
        document = json.loads(answer)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("code") == 0


# -- the command ------------------------------------------------------------------------------


def _configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text, configure in (
        ("list", "one line per dead letter, with filters and a count by kind", _configure_list),
        ("show", "one dead letter in full: failures, tracebacks and body", _configure_show),
        ("replay", "send dead letters' bodies again, to a URL or an app", _configure_replay),
    ):
        configure(actions.add_parser(name, help=help_text, description=help_text))


COMMAND = Command("list, inspect and replay dead letters", _configure)
"""``mpsflow deadletters``: plugged into ``mpsflow.cli.COMMANDS``."""
