"""``mpsflow send``: POST sample notifications to a callback URL, or put them on a CMQ queue.

Bodies come from .json/.jsonl files or folders; with a key each is re-signed the way MPS signs,
so a real app's signature check accepts them. ``--rate``, ``--concurrency`` and ``--repeat``
shape a load test. The summary counts answers: by HTTP status, where a 2xx answer whose JSON
body carries a non-zero ``code`` (a CMQ error, a callback's refusal) is a failure; or, with
``--cmq ENDPOINT --queue NAME``, messages queued with ``BatchSendMessage``, the CMQ errors and,
once CMQ could not be reached or did not answer, those not sent. A callback URL that answers
nothing, its first requests getting no answer within ``--timeout``, is given up on the same way:
the notifications left are counted as not sent, not each left to wait out its own timeout.

Exit codes: 0 when every notification was taken, 1 when anything failed, 2 for a wrong command
line; stopped by Ctrl-C (SIGINT) or SIGTERM, it prints the summary of what was answered and a
line counting what was answered, what failed with no answer, what was not sent and what was
cut off waiting for an answer, and exits 130 (SIGINT) or 143 (SIGTERM); stopped before the first
request (while the files are read), it says nothing was sent, with the same exit codes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, Literal, TextIO
from urllib.parse import urlsplit

from mpsflow.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    Command,
    bounded_int,
    cmq_endpoint,
    cmq_queue,
    json_kind,
    plain_http_address,
    positive_float,
    positive_int,
    require_cmq_keys,
    require_paths,
    signature_lifetime,
)
from mpsflow.clock import Clock, SystemClock
from mpsflow.errors import ConfigurationError
from mpsflow.signing import sign_notification

if TYPE_CHECKING:
    from mpsflow.tencentcloud.cmq.client import CmqClient

__all__ = [
    "COMMAND",
    "Pacer",
    "SendItem",
    "Tally",
    "signed_body",
]

_log = logging.getLogger("mpsflow.cli")

_CMQ_BATCH: Final = 16
"""The most messages one BatchSendMessage takes."""
_CMQ_BATCH_BYTES: Final = 65536
"""The most bytes of bodies one BatchSendMessage takes."""
_SIGNATURE_ROOM: Final = 128
"""Bytes a fresh ``Timestamp`` and ``Sign`` may add to a body."""
_CALLBACK_TIMEOUT: Final = 30.0
"""Default ``--timeout`` of a POST to a callback URL (a handler may take a while)."""
_CMQ_TIMEOUT: Final = 10.0
"""Default ``--timeout`` of a BatchSendMessage, which CMQ answers at once (the client's)."""
_DETAIL: Final = 160
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _configure_send(parser: argparse.ArgumentParser) -> None:
    parser.usage = (
        "%(prog)s URL FILE|DIR... [options]\n"
        "       %(prog)s --cmq ENDPOINT --queue NAME FILE|DIR... [options]"
    )
    parser.add_argument(
        "targets",
        nargs="+",
        metavar="[URL] FILE|DIR",
        help="the callback URL, e.g. http://127.0.0.1:8080/mps/callback (not with --cmq), then"
        " .json/.jsonl files or folders; options may come before, between or after them",
    )
    parser.add_argument(
        "--sign-key",
        default=os.environ.get("MPSFLOW_SIGN_KEY"),
        help="NotifyKey to sign with (default: $MPSFLOW_SIGN_KEY; unsigned bodies go as they are)",
    )
    parser.add_argument(
        "--expires-in",
        metavar="DURATION",
        type=signature_lifetime,
        default=600,
        help="signature lifetime (600, 10m, 1h; --expires-in=-1m signs already expired):"
        " Timestamp = now + this (%(default)s seconds, as MPS)",
    )
    parser.add_argument(
        "--rate",
        type=positive_float,
        help="at most N requests per second (with --cmq a request is one batch)",
    )
    parser.add_argument(
        "--concurrency", type=positive_int, default=8, help="requests at once (%(default)s)"
    )
    parser.add_argument(
        "--repeat", type=positive_int, default=1, help="send the whole set N times (%(default)s)"
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        help=f"seconds per request ({_CALLBACK_TIMEOUT:g}; {_CMQ_TIMEOUT:g} with --cmq, where a"
        " request that gets no answer in time is not tried again); once a request gets no answer"
        " in time and none was answered yet, the rest are not sent",
    )
    group = parser.add_argument_group(
        "TDMQ-CMQ queue (instead of a URL)",
        "Put the notifications on a queue, as MPS does, for `mpsflow run --cmq` to consume. "
        "API keys come from TENCENTCLOUD_SECRETID and TENCENTCLOUD_SECRETKEY (with "
        "TENCENTCLOUD_SESSIONTOKEN for temporary keys); a local `mpsflow cmq-server` accepts "
        "the pair it was started with.",
    )
    group.add_argument(
        "--cmq",
        metavar="ENDPOINT",
        type=cmq_endpoint,
        help="the queue's API address, e.g. http://127.0.0.1:9800 (mpsflow cmq-server)"
        " or https://cmq-gz.public.tencenttdmq.com",
    )
    group.add_argument("--queue", metavar="NAME", type=cmq_queue, help="the queue (with --cmq)")
    group.add_argument(
        "--batch",
        metavar="N",
        type=bounded_int(1, 16),
        help=f"messages per BatchSendMessage, 1-16 ({_CMQ_BATCH})",
    )
    parser.set_defaults(run=_send, intermixed="targets")


@dataclass(slots=True)
class SendItem:
    """One notification to send: where it came from, its bytes as read, and its parsed form."""

    name: str
    raw: bytes
    doc: dict[str, Any] | None
    """Parsed JSON object when it can be re-signed."""


def _load_items(paths: Sequence[str], signing: bool) -> list[SendItem]:
    from mpsflow.sources.file import iter_notification_files

    items: list[SendItem] = []
    for path in iter_notification_files(paths):
        if path.suffix in (".jsonl", ".ndjson"):
            bodies = [
                (f"{path}:{n}", line.strip())
                for n, line in enumerate(path.read_bytes().splitlines(), 1)
                if line.strip()
            ]
        else:
            bodies = [(str(path), path.read_bytes())]
        for name, raw in bodies:
            items.append(SendItem(name, raw, _signable(name, raw) if signing else None))
    return items


def _signable(name: str, raw: bytes) -> dict[str, Any] | None:
    """``raw`` decoded when it is a JSON object, which can be re-signed; otherwise None and a
    warning saying what it is instead (empty, not JSON at all, or JSON but not an object), so
    the user knows which file to fix and that it goes unsigned."""
    import msgspec

    try:
        parsed = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        reason = _one_line(str(exc).removeprefix("JSON is malformed: "))
        what = f"is not valid JSON ({reason})" if raw.strip() else "is empty"
    else:
        if isinstance(parsed, dict):
            return parsed
        what = f"is JSON but not an object ({json_kind(parsed)})"
    _log.warning("%s %s; sending it unsigned, as it is", name, what)
    return None


def signed_body(item: SendItem, key: str | None, expires_in: int) -> bytes:
    """The body to send: re-signed the way MPS signs (see :func:`mpsflow.signing.sign`)."""
    if key is None or item.doc is None:
        return item.raw
    return sign_notification(item.raw, key, expires_at=int(time.time()) + expires_in)


class Pacer:
    """Spaces requests ``1/rate`` seconds apart across every sender (no limit without a rate)."""

    def __init__(self, rate: float | None, clock: Clock | None = None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.clock: Clock = clock or SystemClock()
        self._next: float | None = None

    async def wait(self) -> None:
        """Return when the next request may go."""
        if not self.interval:
            return
        now = self.clock.monotonic()
        slot = now if self._next is None else max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await self.clock.sleep(slot - now)


class _Progress:
    """How far the send is: what was sent and what failed, read from the :class:`Tally` the
    summary prints. A bar on a terminal; a few plain lines otherwise."""

    def __init__(self, total: int, out: TextIO) -> None:
        self.total = total
        self.out = out
        self.tty = out.isatty()
        self._step = max(1, total // 10)
        self._shown = 0

    def show(self, tally: Tally) -> None:
        """Report ``tally``: on a terminal always, otherwise at each tenth of the total."""
        done = sum(tally.counts.values())
        failed = tally.failures
        line = f"{done}/{self.total} done: {done - failed} sent, {failed} failed"
        if self.tty:
            width = 30
            filled = width * done // self.total
            bar = "#" * filled + "." * (width - filled)
            self.out.write(f"\r[{bar}] {line}" + ("\n" if done == self.total else ""))
        elif done // self._step > self._shown // self._step or done == self.total > self._shown:
            self.out.write(f"{line}\n")
        self._shown = done
        self.out.flush()


_Outcome = Literal["answered", "no answer", "not sent"]
"""What a count of :class:`Tally` stands for: answers; requests that failed before any answer
came (a refused connection, a timeout); notifications counted without being sent."""


@dataclass(slots=True)
class Tally:
    """What came of the notifications sent: a count per answer, and which answers are failures.

    ``hints`` are lines that say what to do about a failure, each printed once. ``outcomes``
    says which counts are not answers (see :data:`_Outcome`); ``sent`` counts the notifications
    handed to a request, whether or not anything came of it yet.
    """

    counts: Counter[str] = field(default_factory=Counter)
    failed: set[str] = field(default_factory=set)
    hints: dict[str, None] = field(default_factory=dict)
    outcomes: dict[str, _Outcome] = field(default_factory=dict)
    sent: int = 0

    def add(
        self, answer: str, n: int = 1, *, ok: bool = True, outcome: _Outcome = "answered"
    ) -> None:
        self.counts[answer] += n
        self.outcomes.setdefault(answer, outcome)
        if not ok:
            self.failed.add(answer)

    def count(self, outcome: _Outcome) -> int:
        """How many notifications came to ``outcome``."""
        return sum(n for answer, n in self.counts.items() if self.outcomes[answer] == outcome)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def failures(self) -> int:
        """How many notifications failed: the counts of the answers that are failures."""
        return sum(n for answer, n in self.counts.items() if answer in self.failed)


def _one_line(text: str) -> str:
    """``text`` on one line, control characters dropped, cut to a readable length."""
    flat = _CONTROL.sub("", " ".join(text.split()))
    return flat if len(flat) <= _DETAIL else flat[: _DETAIL - 1] + "…"


def _refusal(answer: bytes) -> tuple[int, str, bool] | None:
    """``(code, message, from CMQ)`` when a JSON answer carries a non-zero ``code``.

    CMQ answers every error with HTTP 200 and ``{"code": 4100, "message": …, "requestId": …}``;
    a callback's ``{"code": 0}`` means it took the notification.
    """
    try:
        document = json.loads(answer)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    code = document.get("code")
    if not isinstance(code, int) or isinstance(code, bool) or code == 0:
        return None
    message = next(
        (v for k in ("message", "error", "msg") if isinstance(v := document.get(k), str) and v),
        "",
    )
    return code, _located(_one_line(message), document), "requestId" in document


def _http_answer(
    tally: Tally, url: str, status: int, answer: bytes, *, signed: bool = False
) -> None:
    """Count one HTTP answer: a 2xx is a success unless its JSON says otherwise.

    A refusal's reason (an mpsflow app's ``error`` and ``path``) is counted with its status,
    answers that say the same counted together. ``signed``: this command signed the bodies,
    so a Timestamp refused is the clocks' or ``--expires-in``'s doing, not old signatures sent
    as they were."""
    if not 200 <= status < 300:
        reason = _error_reason(answer)
        said = reason and reason.lower() != _phrase(status)  # more than "404 (not found)"
        tally.add(f"{status} ({reason})" if said else str(status), ok=False)
        hint = _STATUS_HINTS.get(status)
        if status == 401 and (reason == _TOO_FAR_AHEAD or (signed and reason == _EXPIRED)):
            hint = _CLOCK_HINT
        if hint is not None:
            tally.hints[hint.format(url=url, path=urlsplit(url).path or "/")] = None
        return
    refusal = _refusal(answer)
    if refusal is None:
        tally.add(str(status))
        return
    code, message, from_cmq = refusal
    tally.add(f"{status} code {code}" + (f" ({message})" if message else ""), ok=False)
    if from_cmq:
        tally.hints[
            "the answers come from a CMQ API, not a callback: to put notifications on a queue,"
            " use mpsflow send --cmq ENDPOINT --queue NAME FILE|DIR…"
        ] = None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return ""


def _error_reason(answer: bytes) -> str:
    """The ``error`` of an mpsflow app's JSON refusal (``{"code": 400, "error": …}``), on one
    line, with the ``path`` of the field it is about when the answer has one; empty for any
    other answer."""
    try:
        document = json.loads(answer)
    except ValueError:
        return ""
    error = document.get("error") if isinstance(document, dict) else None
    return _located(_one_line(error), document) if isinstance(error, str) else ""


def _located(message: str, document: dict[str, Any]) -> str:
    """``message`` with where the answer says it applies (``… at $.WorkflowTaskEvent.X``, as
    an mpsflow app answers and logs a body it cannot decode): which field to fix, not only what
    is wrong with it. Answers with the same message about different fields count apart."""
    path = document.get("path")
    if not message or not isinstance(path, str) or not (where := _one_line(path)):
        return message
    return f"{message} at {where}"


_EXPIRED: Final = "signature expired"
_TOO_FAR_AHEAD: Final = "signature too_far_ahead"
"""401 reasons about a signature's Timestamp, not its key."""
_CLOCK_HINT: Final = (
    "{url} refused the signatures' Timestamp: keep --expires-in above 0 and within an hour"
    " (600 s, as MPS, by default) and this machine's clock in step with the app's"
)

_STATUS_HINTS: Final = {
    401: "{url} refused the signatures: send with --sign-key set to one of the app's"
    " notify_keys (or $MPSFLOW_SIGN_KEY)",
    404: "{url} has nothing at {path}: an mpsflow app takes notifications at /mps/callback"
    " unless it was run with another --path",
    405: "{url} does not take POST: is it the app's callback path (/mps/callback)?",
}
"""What to do about an HTTP status, by status (``{url}``, ``{path}`` filled in)."""


def _connection_hint(url: str, exc: BaseException) -> str:
    """What to check when a request to ``url`` failed before any answer came."""
    import aiohttp

    parts = urlsplit(url)
    where = parts.netloc
    if isinstance(exc, aiohttp.ClientSSLError) and parts.scheme == "https":
        plain = parts._replace(scheme="http").geturl()
        return (
            f"cannot connect to {where} over TLS ({_one_line(str(exc.os_error))}): an app run"
            f" with --http {where} and no --certfile serves plain HTTP; send to {plain}"
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
        if isinstance(cause, socket.gaierror):
            return f"cannot connect to {where}: no such host ({parts.hostname}); is the URL right?"
        from mpsflow._http import connect_failure

        return (
            f"cannot connect to {where} ({connect_failure(exc)}): is `mpsflow run APP --http"
            f" {where}` running there, and is the URL right?"
        )
    if isinstance(exc, TimeoutError):
        return f"{where} did not answer in time: is the app stuck or overloaded? (see --timeout)"
    return f"the requests to {where} failed ({_one_line(str(exc)) or type(exc).__name__})"


_NOT_ANSWERING: Final = "not sent (the URL did not answer)"
"""How the notifications left are counted once a URL that answered none timed out."""


def _silence_hint(url: str, seconds: float) -> str:
    """Why a send to ``url`` stopped early (a request got no answer within ``seconds`` and
    none was ever answered) and what to do."""
    where = urlsplit(url).netloc
    return (
        f"{where} did not answer within {seconds:g}s and has answered no request: the rest were"
        " not sent; check that the app there is running and not stuck, or raise --timeout"
    )


def _target(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """Check where the notifications go: the callback URL (``None`` with ``--cmq``) and the
    paths to read them from."""
    first, *rest = args.targets
    looks_like_url = urlsplit(first).scheme in ("http", "https")
    if args.cmq is None:
        for flag, value in (("--queue", args.queue), ("--batch", args.batch)):
            if value is not None:
                raise ConfigurationError(f"{flag} goes with --cmq ENDPOINT")
        if not looks_like_url:
            raise ConfigurationError(
                f"expected the callback URL first (http(s)://HOST:PORT/PATH, e.g. "
                f"http://127.0.0.1:8080/mps/callback), got {first!r}; or --cmq ENDPOINT "
                "--queue NAME to put the notifications on a queue"
            )
        if not rest:
            raise ConfigurationError(f"give the files or folders to send after {first}")
        return first, rest
    if args.queue is None:
        raise ConfigurationError("--cmq needs --queue NAME")
    if looks_like_url:
        raise ConfigurationError(
            f"--cmq puts the notifications on a queue: give no callback URL ({first})"
        )
    require_cmq_keys()
    return None, list(args.targets)


class _Terminated(BaseException):
    """SIGTERM before the sending began, raised where ``send`` is, as Ctrl-C raises
    ``KeyboardInterrupt``."""


class _Stops:
    """SIGTERM to ``send``, from the moment it starts until it returns.

    While the files are read it raises :class:`_Terminated` there; from the moment the event
    loop runs it is only noted, and stops the sending when it comes while notifications are
    sent (the requests in flight cancelled, as Ctrl-C does) or before the first one (none is
    sent). Handled in Python throughout, so that no moment is left with the default action.
    """

    def __init__(self) -> None:
        self.terminated = False
        self.began = False
        """The sending began: the summary has something to say."""
        self._deferred = False
        self._stop: Callable[[], object] | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.terminated = True
        if self._stop is not None:
            self._stop()
        elif not self._deferred:
            raise _Terminated

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGTERM inside the block (in the main thread only, where signals are)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGTERM, self)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    def defer(self) -> None:
        """From now on note SIGTERM instead of raising it (the event loop is about to run)."""
        self._deferred = True

    def begin(self, stop: Callable[[], object]) -> bool:
        """Sending begins, ``stop`` cancelling it on SIGTERM; False when SIGTERM came first."""
        if self.terminated:
            return False
        self._stop = stop
        self.began = True
        return True

    def end(self) -> None:
        self._stop = None


def _send(args: argparse.Namespace) -> int:
    stops = _Stops()
    try:
        with stops.installed():
            return _send_items(args, stops)
    except (KeyboardInterrupt, _Terminated) as exc:
        if stops.began:  # Ctrl-C while the summary was printed
            raise
        return _nothing_sent(EXIT_TERMINATED if isinstance(exc, _Terminated) else EXIT_INTERRUPTED)


def _nothing_sent(code: int) -> int:
    print("mpsflow send: interrupted before sending: nothing was sent", file=sys.stderr)
    return code


def _send_items(args: argparse.Namespace, stops: _Stops) -> int:
    import anyio

    args.url, paths = _target(args)
    require_paths(paths)
    items = _load_items(paths, signing=args.sign_key is not None)
    if not items:
        raise ConfigurationError("no notifications found in the given paths")
    started = time.monotonic()
    tally = Tally()
    send = _send_all if args.cmq is None else _queue_all
    stops.defer()
    interrupted = False
    try:
        anyio.run(_until_stopped, send, args, items, tally, stops)
    except KeyboardInterrupt:
        interrupted = True
    if not stops.began:
        return _nothing_sent(EXIT_INTERRUPTED if interrupted else EXIT_TERMINATED)
    _summary(args, tally, time.monotonic() - started)
    if not interrupted and not stops.terminated:
        return EXIT_OK if tally.ok else EXIT_FAILED
    # What was answered so far still counts: the user must know what reached the app.
    print(_interrupted_line(tally, len(items) * args.repeat), file=sys.stderr)
    return EXIT_INTERRUPTED if interrupted else EXIT_TERMINATED


def _interrupted_line(tally: Tally, planned: int) -> str:
    """What became of the ``planned`` notifications when the send was stopped: answered,
    failed before any answer came, not sent, or sent and cut off waiting for their answer."""
    answered = tally.count("answered")
    unanswered = tally.count("no answer")
    waiting = tally.sent - answered - unanswered
    return (
        f"mpsflow send: interrupted: {answered} of {planned} answered, {unanswered} failed with"
        f" no answer, {planned - tally.sent} not sent, {waiting} cut off waiting for an answer;"
        " send again what was not answered (dedup makes a repeat harmless)"
    )


async def _until_stopped(
    send: Callable[[argparse.Namespace, list[SendItem], Tally], Awaitable[None]],
    args: argparse.Namespace,
    items: list[SendItem],
    tally: Tally,
    stops: _Stops,
) -> None:
    """``send(args, items, tally)`` until it ends or SIGTERM stops it, as Ctrl-C does (the
    requests in flight cancelled, their answers not counted); not at all after a SIGTERM."""
    import asyncio

    import anyio

    loop = asyncio.get_running_loop()
    with anyio.CancelScope() as scope:
        if not stops.begin(lambda: loop.call_soon_threadsafe(scope.cancel)):
            return
        try:
            await send(args, items, tally)
        finally:
            stops.end()


def _summary(args: argparse.Namespace, tally: Tally, elapsed: float) -> None:
    """The closing lines: how many were sent, at what rate, each answer's count, the hints."""
    total = sum(tally.counts.values())
    where = f" to queue {args.queue}" if args.cmq else ""
    print(
        f"{'sent' if tally.ok else 'tried to send'} {total} notification(s){where}"
        f" in {elapsed:.2f}s"
        f" ({total / max(elapsed, 1e-9):.1f}/s)"
    )
    for answer, n in sorted(tally.counts.items()):
        print(f"  {answer}: {n}")
    for hint in tally.hints:
        print(f"mpsflow send: {hint}", file=sys.stderr)


async def _send_all(args: argparse.Namespace, items: list[SendItem], tally: Tally) -> None:
    """POST every item ``--repeat`` times, ``--concurrency`` at once.

    Once a request got no answer within ``--timeout`` while the URL has answered none, the
    notifications not yet sent are counted as not sent: each would wait out the same silence
    (a hung app, a port that takes connections and never answers). A URL that answered once,
    however slowly or with whatever status, gets them all.
    """
    import aiohttp
    import anyio

    plan = iter([item for _ in range(args.repeat) for item in items])
    progress = _Progress(len(items) * args.repeat, sys.stderr)
    pacer = Pacer(args.rate)
    seconds = args.timeout or _CALLBACK_TIMEOUT
    answered = given_up = False

    async def post(session: aiohttp.ClientSession, item: SendItem) -> None:
        nonlocal answered, given_up
        body = signed_body(item, args.sign_key, args.expires_in)
        tally.sent += 1
        try:
            async with session.post(
                args.url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                answered = True  # the status line came: the URL is alive, however slow
                answer = await response.read()
                _http_answer(
                    tally, args.url, response.status, answer, signed=args.sign_key is not None
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            tally.add(f"error ({type(exc).__name__})", ok=False, outcome="no answer")
            if not isinstance(exc, TimeoutError) or answered:
                tally.hints[_connection_hint(args.url, exc)] = None
            elif not given_up:  # silence from the start: the rest would wait as long
                given_up = True
                tally.hints[_silence_hint(args.url, seconds)] = None

    async def worker(session: aiohttp.ClientSession) -> None:
        for item in plan:
            if not given_up:
                await pacer.wait()
            if given_up:  # this one and every one left: count them at once
                tally.add(_NOT_ANSWERING, 1 + sum(1 for _ in plan), ok=False, outcome="not sent")
            else:
                await post(session, item)
            progress.show(tally)

    timeout = aiohttp.ClientTimeout(total=seconds)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with (
        aiohttp.ClientSession(timeout=timeout, connector=connector) as session,
        anyio.create_task_group() as tg,
    ):
        for _ in range(args.concurrency):
            tg.start_soon(worker, session)


def _batches(items: Sequence[SendItem], size: int, tally: Tally) -> Iterator[list[SendItem]]:
    """``items`` in BatchSendMessage batches: at most ``size`` and 64 KB of bodies each.

    A body that is not UTF-8 cannot be a CMQ message: it is counted as a failure, not sent.
    """
    batch: list[SendItem] = []
    used = 0
    for item in items:
        try:
            item.raw.decode("utf-8")
        except UnicodeDecodeError:
            tally.add(
                "not sent (not UTF-8 text; a CMQ message is text)", ok=False, outcome="not sent"
            )
            continue
        room = len(item.raw) + _SIGNATURE_ROOM
        if batch and (len(batch) == size or used + room > _CMQ_BATCH_BYTES):
            yield batch
            batch, used = [], 0
        batch.append(item)
        used += room
    if batch:
        yield batch


async def _queue_all(args: argparse.Namespace, items: list[SendItem], tally: Tally) -> None:
    """Put every item on the queue ``--repeat`` times, in batches, ``--concurrency`` at once.

    Once CMQ could not be reached or did not answer a batch, the batches not yet sent are
    counted as not sent: each would wait out the same failure (a send is simply run again).
    """
    import anyio

    from mpsflow.tencentcloud.cmq.client import CmqClient
    from mpsflow.tencentcloud.cmq.credentials import EnvironmentCredentials

    every = [item for _ in range(args.repeat) for item in items]
    plan = iter(list(_batches(every, args.batch or _CMQ_BATCH, tally)))
    progress = _Progress(len(every), sys.stderr)
    pacer = Pacer(args.rate)
    client = CmqClient(
        args.cmq,
        EnvironmentCredentials(),
        request_timeout=args.timeout or _CMQ_TIMEOUT,
        retry_timeouts=False,  # a user waits; dedup makes the run they start again harmless
        plain_http_address=plain_http_address("--cmq", args.cmq),
    )
    given_up: list[str] = []  # how to count the batches left, once CMQ did not answer one

    async def worker() -> None:
        for batch in plan:
            if given_up:
                tally.add(given_up[0], len(batch), ok=False, outcome="not sent")
            else:
                await pacer.wait()
                if reason := await _queue_batch(client, args, batch, tally):
                    given_up.append(reason)
            progress.show(tally)

    async with client, anyio.create_task_group() as tg:
        for _ in range(args.concurrency):
            tg.start_soon(worker)


async def _queue_batch(
    client: CmqClient, args: argparse.Namespace, batch: list[SendItem], tally: Tally
) -> str:
    """One BatchSendMessage; its messages counted as queued, or as the error that refused them.

    Returns how to count the batches not yet sent when CMQ could not be reached or did not
    answer (after the client's retries), and ``""`` when it answered.
    """
    from mpsflow.tencentcloud.cmq.errors import (
        CODE_AUTH_FAILED,
        CODE_QUEUE_NOT_FOUND,
        CmqError,
        CmqNetworkError,
        CmqServerError,
    )

    bodies = [signed_body(item, args.sign_key, args.expires_in).decode() for item in batch]
    tally.sent += len(batch)
    try:
        await client.batch_send(args.queue, bodies)
    except CmqServerError as exc:
        detail = _one_line(exc.cmq_message)
        tally.add(f"code {exc.code}" + (f" ({detail})" if detail else ""), len(batch), ok=False)
        if exc.code == CODE_AUTH_FAILED:
            tally.hints[
                "the queue refused the API keys: check TENCENTCLOUD_SECRETID and "
                "TENCENTCLOUD_SECRETKEY (mpsflow cmq-server accepts the pair it was started with)"
            ] = None
        elif exc.code == CODE_QUEUE_NOT_FOUND:
            tally.hints[
                f"there is no queue {args.queue} at {args.cmq}: check its name (a local "
                "mpsflow cmq-server has the queues given with --queue)"
            ] = None
    except CmqError as exc:
        no_answer = isinstance(exc, CmqNetworkError) and exc.status is None
        outcome: _Outcome = "no answer" if no_answer else "answered"
        tally.add(f"error ({_one_line(str(exc))})", len(batch), ok=False, outcome=outcome)
        if isinstance(exc, CmqNetworkError) and (hint := exc.reach_hint(args.cmq)):
            tally.hints[hint] = None
            return (
                "not sent (CMQ did not answer)" if exc.timed_out else "not sent (CMQ unreachable)"
            )
    else:
        tally.add("queued", len(batch))
    return ""


COMMAND = Command(
    "POST notifications to a callback URL, or put them on a CMQ queue, freshly signed",
    _configure_send,
)
"""The ``send`` entry of :data:`mpsflow.cli.COMMANDS`."""
