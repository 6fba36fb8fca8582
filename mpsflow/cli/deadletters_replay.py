"""``mpsflow deadletters replay``: send dead letters' bodies again, to a URL or into an app.

Each success is noted in ``FILE.replayed`` (a JSON line per record,
:class:`~mpsflow.cli.deadletters.ReplayedEntry`) before it is printed, so a second replay skips
it, unless the record was dead-lettered again since (the journal is read, and that rule kept, by
:func:`~mpsflow.cli.deadletters.read_replayed` and :func:`~mpsflow.cli.deadletters.replayed_at`,
which ``list`` and ``show`` use to mark replayed records). Replaying into an app
(``--app``) uses the dedup store ``mpsflow run`` uses (``--dedup PATH``, ``--no-dedup``), so
handlers that have already succeeded do not run again; and a record that the app dead-letters
again (a handler's ``Reject``, its attempts used up) is appended to FILE anew under its own id
(the file is never rewritten, so an ``mpsflow run`` appending to it meanwhile loses nothing), which
:func:`~mpsflow.cli.deadletters.read_dead_letters` reads as the record's newer version: the
record is updated, not duplicated, and the app's own log line about it names that id.

With ``--to URL`` the app behind the URL dead-letters a body again in its own way (a new record
with a new id) and answers ``{"code": 0}``: the replay counts as done, and the new record is
the one a later replay sends.

A record that holds only an excerpt of its body (``body_truncated``: a refused request, such as
a forged signature or a malformed body, whose sender nobody vouches for) is never sent: named
by id it is an error, and among the records picked by ``--kind`` or by default it is listed as
not replayable and left out.

``--dry-run`` marks what the target will refuse: a signature (see :func:`_signature_note`,
:func:`_app_signature_note`), and a poison record whose body still does not decode.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec

from mpsflow.cli.common import (
    DEFAULT_DEDUP_PATH,
    EXIT_FAILED,
    EXIT_OK,
    json_kind,
    load_app,
    positive_float,
    signature_lifetime,
    use_dedup_option,
)
from mpsflow.cli.deadletters import (
    FILE_HELP,
    KINDS,
    SHORT_ID,
    ReplayedEntry,
    compact_body,
    excerpt_note,
    find_record,
    one_line,
    read_dead_letters,
    read_replayed,
    replay_journal,
    replayed_at,
    unique_records,
    utc_time,
)
from mpsflow.clock import format_duration
from mpsflow.codec import decode_any
from mpsflow.deadletter import REPLAYED_RECORD, DeadLetter
from mpsflow.errors import ConfigurationError, DecodeError, SinkError
from mpsflow.events.envelope import extract_timestamp_sign
from mpsflow.signing import sign_notification
from mpsflow.signing.verifier import DEFAULT_MAX_LIFETIME, DEFAULT_SKEW, VerifyReason
from mpsflow.sinks.jsonl import JsonlSink

if TYPE_CHECKING:
    import aiohttp

    from mpsflow.app import App

__all__ = ["configure_replay"]

_RESPONSE_SHOWN = 200


def configure_replay(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help=FILE_HELP)
    parser.add_argument(
        "ids", nargs="*", metavar="ID", help="records to replay (unique id prefixes; default all)"
    )
    parser.add_argument("--kind", choices=KINDS, help="only dead letters of this kind")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="URL", help="POST each body to this callback URL")
    target.add_argument(
        "--app",
        metavar="MODULE:APP",
        help="run each body through this App in-process; a record the app dead-letters again"
        " is updated in FILE (its reason, failures and attempts), not added to the app's dead"
        " letters",
    )
    dedup = parser.add_mutually_exclusive_group()
    dedup.add_argument(
        "--dedup",
        metavar="PATH",
        help="with --app: the SQLite dedup store used when the app configures none, as"
        " `mpsflow run` uses it, so handlers that succeeded do not run again"
        f" ({DEFAULT_DEDUP_PATH})",
    )
    dedup.add_argument(
        "--no-dedup",
        action="store_true",
        help="with --app: no default dedup store (handlers that succeeded before run again)",
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
        metavar="DURATION",
        type=signature_lifetime,
        default=600,
        help="signature lifetime (600, 10m, 1h): Timestamp = now + this (%(default)s seconds)",
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


_Deliver = Callable[[DeadLetter, bytes], Awaitable[_Result]]


def _resigned(body: bytes, key: str, expires_in: int) -> bytes | None:
    """``body`` signed afresh the way MPS signs; ``None`` when it is not a JSON object."""
    try:
        return sign_notification(body, key, expires_at=int(time.time()) + expires_in)
    except DecodeError:
        return None


def _select(args: argparse.Namespace, records: list[DeadLetter]) -> list[DeadLetter]:
    chosen = (
        unique_records(find_record(records, wanted) for wanted in args.ids) if args.ids else records
    )
    chosen = unique_records(r for r in chosen if args.kind is None or r.kind == args.kind)
    excerpts = [r for r in chosen if r.body_truncated]
    if args.ids and excerpts:
        record = excerpts[0]
        raise ConfigurationError(
            f"dead letter {record.id[:SHORT_ID]} ({record.kind}) cannot be replayed:"
            f" {excerpt_note(record)} (a refused request is recorded with an excerpt only)"
        )
    return chosen


def _replay(args: argparse.Namespace) -> int:
    import anyio

    if args.to and (args.dedup is not None or args.no_dedup):
        raise ConfigurationError(
            "--dedup and --no-dedup go with --app (the app behind --to uses its own store)"
        )
    chosen = _select(args, read_dead_letters(args.file))
    # Imported (not started) before anything is printed, a dry run and an empty replay too:
    # a misspelt MODULE:APP fails every replay alike.
    app = load_app(args.app) if args.app else None
    records = [r for r in chosen if not r.body_truncated]
    excerpts = len(chosen) - len(records)
    for record in chosen:
        if record.body_truncated:
            print(f"{_label(record)}  not replayable: {excerpt_note(record)}")
    journal = replay_journal(args.file)
    done = {} if args.force else read_replayed(args.file)
    # Replayed, and not dead-lettered again since (a newer version of the record is pending).
    skipped = {r.id: when for r in records if (when := replayed_at(r, done)) is not None}
    pending = [r for r in records if r.id not in skipped]
    for record in records:
        if record.id in skipped:
            print(f"{_label(record)}  skipped: replayed at {utc_time(skipped[record.id])}")
    if args.dry_run:
        for record in pending:
            _print_plan(args, record, app)
        print(_summary(would=len(pending), skipped=len(skipped), excerpts=excerpts))
        return EXIT_OK
    succeeded = failed = 0
    if pending:
        succeeded, failed = anyio.run(_replay_all, args, pending, journal, app)
    print(
        _summary(
            succeeded=succeeded,
            failed=failed,
            skipped=len(skipped),
            excerpts=excerpts,
            stopped=len(pending) - succeeded - failed,
        )
    )
    return EXIT_FAILED if failed else EXIT_OK


def _label(record: DeadLetter) -> str:
    event = one_line(record.event_type) or "-"
    task = one_line(record.task_id) or "-"
    return f"{record.id[:SHORT_ID]}  {one_line(record.kind)}  {event}  {task}"


def _print_plan(args: argparse.Namespace, record: DeadLetter, app: App | None) -> None:
    body, note = _body_to_send(args, record)
    where = f"POST {len(body)} bytes to {args.to}" if args.to else f"process with {args.app}"
    if not note:
        note = _signature_note(body) if app is None else _app_signature_note(body, app)
    poison = _poison_note(record, body, app)
    if poison:  # inside the same parentheses as a note already there
        note = f"{note[:-1]}; {poison})" if note else f" ({poison})"
    print(f"{_label(record)}  would {where}{note}")
    print(f"  {compact_body(body)}")


def _poison_note(record: DeadLetter, body: bytes, app: App | None) -> str:
    """A dry run's warning (no parentheses) that a poison record (a body the app refused as no
    notification) is refused again: its body still does not decode (with ``--app``, within that
    app's ``max_body_size``); ``""`` for another record, or one that decodes now."""
    if record.kind != "poison":
        return ""
    try:
        if app is None:
            decode_any(body)
        else:
            decode_any(body, max_size=app.max_body_size)
    except DecodeError:
        return (
            "the app refused it as poison: it does not decode, and will again unless the app"
            " changed"
        )
    return ""


_SIGN_KEY_HINT = "replay with --sign-key KEY, one of its keys"
"""What a refused (or, in a dry run, expired, too far ahead or missing) signature calls for: a
re-signed replay."""
_CANNOT_SIGN = "--sign-key cannot sign it (not a JSON object)"
"""What a refused signature of a body ``--sign-key`` cannot sign (a URL-encoded one) says."""


def _resign_advice(body: bytes) -> str:
    """What to do about ``body``'s refused signature: re-sign it, unless it is not JSON."""
    found = _timestamp_sign(body)
    return _CANNOT_SIGN if found is not None and found[2] == "other" else _SIGN_KEY_HINT


_OUT_OF_TIME = {
    VerifyReason.EXPIRED: "its signature has expired",
    VerifyReason.TOO_FAR_AHEAD: (
        f"its signature expires too far ahead (over {format_duration(DEFAULT_MAX_LIFETIME)}"
        " from now)"
    ),
}
"""Why an app with the default ``signature_skew`` and ``max_signature_lifetime`` refuses a
signature for its ``Timestamp`` (see :func:`_signature_out_of_time`)."""


def _signature_note(body: bytes) -> str:
    """A dry run's warning, with ``--to`` (an app it cannot see), that an app checking
    signatures with the default settings refuses ``body`` as it would be sent (its signature
    has expired, expires too far ahead, or it has none), and what to do; ``""`` otherwise."""
    out_of_time = _signature_out_of_time(body)
    if out_of_time is not None:
        why = _OUT_OF_TIME[out_of_time]
        return f" ({why}; if the app checks signatures, {_resign_advice(body)})"
    unsigned = _unsigned(body)
    if unsigned is None:
        return ""
    advice = (
        _SIGN_KEY_HINT
        if unsigned == "json"
        else f"{_CANNOT_SIGN}: only an app that allows unsigned notifications takes it"
    )
    return (
        " (it carries no signature; if the app checks signatures and refuses unsigned"
        f" notifications, {advice})"
    )


_REFUSED_BECAUSE = {
    VerifyReason.MISSING: "it carries no signature",
    VerifyReason.EXPIRED: "its signature has expired",
    VerifyReason.TOO_FAR_AHEAD: (
        "its signature expires too far ahead (past the app's max_signature_lifetime)"
    ),
    VerifyReason.MISMATCH: "its signature matches none of the app's keys",
}


def _app_signature_note(body: bytes, app: App) -> str:
    """A dry run's warning, with ``--app``, that ``app`` refuses ``body`` as it would be sent,
    by the check the app runs (its ``notify_keys``, ``allow_unsigned``, ``signature_skew``,
    ``max_signature_lifetime``), and what to do; ``""`` when it takes it or checks nothing."""
    found = _timestamp_sign(body)
    verifier = app.signature_verifier()
    if verifier is None or found is None:
        return ""
    timestamp, sign, carrier = found
    result = verifier.verify(timestamp, sign, payload=body)
    if result.ok:
        return ""
    why = _REFUSED_BECAUSE.get(result.reason, f"its signature is refused ({result.reason.value})")
    advice = _SIGN_KEY_HINT if carrier == "json" else _CANNOT_SIGN
    return f" ({why}; the app checks signatures: it will refuse this; {advice})"


def _timestamp_sign(body: bytes) -> tuple[object, object, Literal["json", "other"]] | None:
    """``Timestamp`` and ``Sign`` of the notification ``body``, read as the signature check
    reads them, and its carrier: ``"json"`` for a JSON object (``--sign-key`` signs it),
    ``"other"`` for another (a URL-encoded body); ``None`` when it is no notification at all
    (refused as poison, signature or not)."""
    try:
        timestamp, sign = extract_timestamp_sign(body)
    except DecodeError:
        try:
            notification = decode_any(body)
        except DecodeError:
            return None
        return notification.timestamp, notification.sign, "other"
    return timestamp, sign, "json"


def _unsigned(body: bytes) -> Literal["json", "other"] | None:
    """Whether ``body`` is a notification the signature check finds unsigned (no ``Sign``, or no
    ``Timestamp``): its carrier (see :func:`_timestamp_sign`), ``None`` when it is signed or no
    notification at all."""
    found = _timestamp_sign(body)
    if found is None:
        return None
    timestamp, sign, carrier = found
    return carrier if timestamp in (None, "") or sign in (None, "") else None


def _signature_out_of_time(body: bytes) -> VerifyReason | None:
    """Why an app with the default ``signature_skew`` and ``max_signature_lifetime`` refuses
    the signature ``body`` carries for its ``Timestamp`` (its expiry): ``EXPIRED`` when that
    passed more than the skew ago, ``TOO_FAR_AHEAD`` when it lies further ahead than the lifetime
    and the skew; ``None`` when neither, or when ``body`` carries no ``Timestamp`` and ``Sign``
    (read as the signature check reads them, from any carrier: see :func:`_timestamp_sign`)."""
    found = _timestamp_sign(body)
    if found is None or found[1] in (None, ""):
        return None
    expiry = found[0]
    if isinstance(expiry, str) and expiry.isdigit():
        expiry = int(expiry)
    if type(expiry) is not int:
        return None
    now = time.time()
    if now > expiry + DEFAULT_SKEW:
        return VerifyReason.EXPIRED
    if expiry > now + DEFAULT_MAX_LIFETIME + DEFAULT_SKEW:
        return VerifyReason.TOO_FAR_AHEAD
    return None


def _body_to_send(args: argparse.Namespace, record: DeadLetter) -> tuple[bytes, str]:
    """The bytes to replay and a note on how they differ from the record's."""
    raw = record.raw_body()
    if not args.sign_key:
        return raw, ""
    signed = _resigned(raw, args.sign_key, args.expires_in)
    if signed is None:
        return raw, _not_resigned_note(raw)
    return signed, " (re-signed)"


def _not_resigned_note(body: bytes) -> str:
    """Why ``--sign-key`` left ``body`` as it was (what it is instead of a JSON object), and what
    an app makes of it as it goes: by the signature it carries, unless it is no notification (an
    app refuses that whatever it carries)."""
    if _timestamp_sign(body) is None:
        then = "; signing would not help: it is no notification, which an app refuses signed or not"
    elif _unsigned(body) is not None:
        then = (
            ", unsigned: an app that checks signatures refuses it unless it allows unsigned"
            " notifications"
        )
    elif (out_of_time := _signature_out_of_time(body)) is not None:
        then = (
            f", with its own signature, which {_STALE[out_of_time]}: an app that checks"
            " signatures refuses it"
        )
    else:
        then = (
            ", with its own signature: an app that checks signatures takes it only if one of its"
            " keys made it, and only until it expires"
        )
    return f" (--sign-key cannot sign {_body_form(body)}, so it goes as it was{then})"


_STALE = {
    VerifyReason.EXPIRED: "has expired",
    VerifyReason.TOO_FAR_AHEAD: "expires too far ahead",
}


def _body_form(body: bytes) -> str:
    """What ``body``, not a JSON object, is: ``JSON that is an array``, ``a URL-encoded form``,
    ``URL-encoded JSON``, ``a body that is not JSON``, … (a JSON object behind a byte-order mark,
    which the app decodes, is not signed either)."""
    try:
        value = msgspec.json.decode(body.removeprefix(b"\xef\xbb\xbf"))
    except msgspec.DecodeError:
        if body.strip()[:3].upper() == b"%7B":
            return "URL-encoded JSON"
        if _timestamp_sign(body) is not None:  # a notification in a form field
            return "a URL-encoded form"
        return "a body that is not JSON"
    if isinstance(value, dict):
        return "JSON behind a byte-order mark"
    return f"JSON that is {json_kind(value)}"


_SUMMARY_WORDS = {
    "succeeded": "succeeded",
    "failed": "failed",
    "would": "would be replayed",
    "skipped": "skipped (replayed before; --force replays them again)",
    "excerpts": "not replayable (only an excerpt of the body was kept)",
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
    sink = JsonlSink(journal, fsync="always", dedup_window=0)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(sink.close)
        deliver = await _open_target(args, app, records, stack)
        for record in records:
            body, note = _body_to_send(args, record)
            result = await deliver(record, body)
            problem = await _note_replayed(sink, record, result, "app" if app else "http")
            verdict = "ok" if result.ok else "FAILED"
            print(f"{_label(record)}  -> {result.detail}  {verdict}{note}", flush=True)
            if problem:
                print(f"mpsflow deadletters: error: {problem}", file=sys.stderr)
                failed += 1
                break
            if result.ok:
                succeeded += 1
                continue
            failed += 1
            if not args.keep_going:
                break
    return succeeded, failed


async def _note_replayed(sink: JsonlSink, record: DeadLetter, result: _Result, via: str) -> str:
    """Journal a success (before anything is printed); what went wrong, or ``""``."""
    if not result.ok:
        return ""
    entry = ReplayedEntry(id=record.id, time=time.time(), via=via, result=result.detail)
    try:
        await sink.send([entry])
    except SinkError as exc:
        return f"{record.id} was replayed, but {exc}; a new replay would send it again"
    return ""


async def _open_target(
    args: argparse.Namespace, app: App | None, records: list[DeadLetter], stack: AsyncExitStack
) -> _Deliver:
    if app is not None:
        _use_replay_settings(args, app, records, stack)
        await stack.enter_async_context(app)
        return _app_target(app, signed=bool(args.sign_key))
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=args.timeout)
    session = await stack.enter_async_context(aiohttp.ClientSession(timeout=timeout))
    return _http_target(session, args.to, signed=bool(args.sign_key))


def _use_replay_settings(
    args: argparse.Namespace, app: App, records: list[DeadLetter], stack: AsyncExitStack
) -> None:
    """For the replay (undone when it ends): the dedup store ``run`` would use, and dead
    letters that update the records of FILE instead of adding new ones."""
    store, dead_letters = app.idempotency, app.dead_letter_sink
    stack.callback(setattr, app, "idempotency", store)
    stack.callback(setattr, app, "dead_letter_sink", dead_letters)
    use_dedup_option(app, args.dedup, none=args.no_dedup)
    app.dead_letter_sink = _Updates(args.file, records)


class _Updates:
    """The dead-letter sink of a replay into an app: a record that the app dead-letters again
    is appended to FILE anew under its own id (its newer version, see the module doc), never as
    a new record. The app writes (and logs) it under that id already: each replayed delivery
    names its record in ``meta`` (:data:`~mpsflow.deadletter.REPLAYED_RECORD`).

    A signature refusal is the replay's own (a record's signature expires; ``--sign-key``
    signs it afresh), not the notification's: the record stays as it was, with its first
    failure and traceback. Appending keeps the file whole while ``mpsflow run`` may be
    appending to it too.
    """

    def __init__(self, path: str, records: Iterable[DeadLetter]) -> None:
        self._file = JsonlSink(path, fsync="always", dedup_window=0)
        self._records = {record.id: record for record in records}

    async def start(self) -> None:
        await self._file.start()

    async def send(self, batch: Sequence[object]) -> None:
        updates = [item for item in batch if not self._refused_signature(item)]
        if updates:
            await self._file.send([self._updated(item) for item in updates])

    async def close(self) -> None:
        await self._file.close()

    def _refused_signature(self, item: object) -> bool:
        return (
            isinstance(item, DeadLetter) and item.id in self._records and item.kind == "signature"
        )

    def _updated(self, item: object) -> object:
        """The replayed record with what its new failure says (the app wrote it under its id)."""
        if not isinstance(item, DeadLetter) or item.id not in self._records:
            return item
        record = self._records[item.id]
        updated = msgspec.structs.replace(
            record,
            time=time.time(),
            kind=item.kind,
            reason=item.reason,
            attempt=record.attempt + item.attempt,
            failures=item.failures,
            event_type=item.event_type or record.event_type,
            task_id=item.task_id or record.task_id,
        )
        self._records[record.id] = updated
        return updated


def _app_target(app: App, *, signed: bool) -> _Deliver:
    from mpsflow.delivery import Cause, Delivery, Settlement

    async def deliver(record: DeadLetter, body: bytes) -> _Result:
        replaying = {REPLAYED_RECORD: record.id}  # a dead letter of it updates this record
        outcome = await app.process(Delivery(body, source="replay", id=record.id, meta=replaying))
        detail = outcome.settlement.value
        if outcome.cause is Cause.ALREADY_DONE:
            detail += " (already done: the dedup store remembers its handlers)"
        elif outcome.cause is Cause.UNAUTHENTICATED and not signed:
            advice = _resign_advice(body)
            detail += f" ({one_line(outcome.reason)}; the app checks signatures: {advice})"
        elif outcome.reason:
            detail += f" ({one_line(outcome.reason)})"
        return _Result(outcome.settlement is Settlement.ACK, detail)

    return deliver


def _http_target(session: aiohttp.ClientSession, url: str, *, signed: bool) -> _Deliver:
    import aiohttp

    from mpsflow._http import cannot_connect

    headers = {"Content-Type": "application/json"}

    async def deliver(record: DeadLetter, body: bytes) -> _Result:
        try:
            async with session.post(
                url, data=body, headers={**headers, "X-Request-Id": record.id}
            ) as response:
                status: int = response.status
                answer: bytes = await response.read()
        except aiohttp.ClientConnectorError as exc:
            return _Result(False, f"error ({cannot_connect(exc)})")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _Result(False, f"error ({type(exc).__name__})")
        text = one_line(answer.decode("utf-8", "replace"))[:_RESPONSE_SHOWN]
        if status == 401 and not signed:  # the record's own signature has long expired
            text += f" (the app checks signatures: {_resign_advice(body)})"
        return _Result(200 <= status < 300 and _code_zero(answer), f"{status} {text}".rstrip())

    return deliver


def _code_zero(answer: bytes) -> bool:
    """True for the answer of a callback that took the notification: ``{"code": 0}``."""
    try:
        document = json.loads(answer)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("code") == 0
