"""Test helpers: build (and sign) notifications, and run an app in-process with ``TestClient``."""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from mpsflow.app import App
from mpsflow.clock import FakeClock, SystemClock
from mpsflow.deadletter import DeadLetter
from mpsflow.dedup.idempotency import Idempotency
from mpsflow.dedup.stores.base import IdempotencyStore
from mpsflow.dedup.stores.memory import MemoryStore
from mpsflow.delivery import Delivery, Outcome, Settlement
from mpsflow.errors import Reject, Retry
from mpsflow.events.envelope import EVENT_FIELDS
from mpsflow.middleware.base import Call, CallNext, Middleware
from mpsflow.signing.verifier import sign_notification
from mpsflow.sinks.base import Sink
from mpsflow.sinks.memory import MemorySink
from mpsflow.sources.memory import MemorySource

__all__ = [
    "DEFAULT_EXPIRES_IN",
    "HandlerCall",
    "NotSettledError",
    "SendResult",
    "TestClient",
    "build_live_notification",
    "build_notification",
    "media_result",
    "sign_payload",
]

_task_numbers = itertools.count(1)
_PROCESS_TAG = secrets.token_hex(8)
"""Part of every generated TaskId: ids from two processes (two test runs against one persistent
dedup store, or ``mpsflow send`` of built notifications) never collide and so are never taken
for duplicates of each other."""

DEFAULT_EXPIRES_IN = 600
"""Seconds a notification signed without ``expires_at`` stays valid: MPS's own default (its
``Timestamp`` is the expiry, send time + 10 minutes)."""


# -- building notifications -------------------------------------------------------------------

_MEDIA_TASK_FIELDS = {
    "Transcode": "TranscodeTask",
    "AnimatedGraphics": "AnimatedGraphicTask",
    "SnapshotByTimeOffset": "SnapshotByTimeOffsetTask",
    "SampleSnapshot": "SampleSnapshotTask",
    "ImageSprites": "ImageSpriteTask",
    "AdaptiveDynamicStreaming": "AdaptiveDynamicStreamingTask",
}


def sign_payload(
    payload: dict[str, Any],
    key: str,
    *,
    expires_at: int | None = None,
    expires_in: float = DEFAULT_EXPIRES_IN,
) -> dict[str, Any]:
    """Sign ``payload`` in place the way MPS does (see :func:`~mpsflow.signing.sign_notification`:
    ``Sign = MD5(str(Timestamp) + NotifyKey)``, inside a wrapper when there is one).

    ``Timestamp`` is the expiry: ``expires_at`` (Unix seconds) when given, else now on the
    system clock plus ``expires_in`` (10 minutes, as MPS signs). That is valid on a
    ``TestClient``'s default ``FakeClock``, which starts at the real time; a test whose clock
    runs elsewhere passes ``expires_at`` (an expiry more than ``max_signature_lifetime``
    ahead of the app's clock is refused, as a replay risk).
    """
    return sign_notification(payload, key, expires_at=_expiry(expires_at, expires_in))


def _expiry(expires_at: int | None, expires_in: float) -> int:
    if expires_at is not None:
        return expires_at
    return int(SystemClock().time() + expires_in)


def media_result(
    type_: str,
    *,
    status: str = "SUCCESS",
    err_code_ext: str = "",
    err_code: int = 0,
    message: str = "SUCCESS",
    output: Mapping[str, Any] | None = None,
    input: Mapping[str, Any] | None = None,
    progress: int | None = None,
) -> dict[str, Any]:
    """One ``MediaProcessResultSet`` item (``Transcode``, ``ImageSprites``, …) in wire form."""
    if type_ == "CoverBySnapshot":
        return {"Type": type_}
    try:
        field_name = _MEDIA_TASK_FIELDS[type_]
    except KeyError:
        raise ValueError(f"not a media-process type: {type_!r}") from None
    task: dict[str, Any] = {
        "Status": status,
        "ErrCodeExt": err_code_ext,
        "ErrCode": err_code,
        "Message": message,
        "Input": dict(input or {"Definition": 100010}),
        "Output": dict(output) if output is not None and status == "SUCCESS" else None,
    }
    if progress is not None:
        task["Progress"] = progress
    return {"Type": type_, field_name: task}


def build_notification(
    event_type: str = "WorkflowTask",
    *,
    task_id: str | None = None,
    status: str = "FINISH",
    err_code: int = 0,
    message: str = "",
    media_results: Sequence[Mapping[str, Any]] = (),
    event: Mapping[str, Any] | None = None,
    bucket: str = "mps-test-1250000000",
    region: str = "ap-guangzhou",
    object_key: str = "/input/video.mp4",
    session_id: str = "",
    session_context: str = "",
    sign_key: str | None = None,
    expires_at: int | None = None,
    expires_in: float = DEFAULT_EXPIRES_IN,
) -> dict[str, Any]:
    """A notification dict in wire form (PascalCase), signed when ``sign_key`` is given.

    ``media_results`` are ``media_result(...)`` items for a WorkflowTask; ``event`` replaces
    or extends the generated ``…Event`` object for other shapes. A signed notification
    expires at ``expires_at``, or ``expires_in`` seconds from now (see :func:`sign_payload`).
    """
    try:
        event_field = EVENT_FIELDS[event_type]
    except KeyError:
        raise ValueError(f"unknown EventType {event_type!r}") from None
    task_id = task_id or f"1250000000-{event_type}-{_PROCESS_TAG}{next(_task_numbers):016x}t0"
    body: dict[str, Any] = {"TaskId": task_id, "Status": status, "ErrCode": err_code}
    body["Message"] = message
    cos_input = {
        "Type": "COS",
        "CosInputInfo": {"Bucket": bucket, "Region": region, "Object": object_key},
    }
    if event_type in ("WorkflowTask", "ScheduleTask"):
        body["InputInfo"] = cos_input
    if event_type == "WorkflowTask":
        body["MediaProcessResultSet"] = [dict(r) for r in media_results]
    if event_type == "EditMediaTask":
        body["Input"] = {"FileInfoSet": [{"InputInfo": cos_input}]}
    if event:
        body.update(event)
    payload: dict[str, Any] = {
        "EventType": event_type,
        event_field: body,
        "SessionId": session_id,
        "SessionContext": session_context,
    }
    if sign_key is not None:
        sign_payload(payload, sign_key, expires_at=expires_at, expires_in=expires_in)
    return payload


def build_live_notification(
    notification_type: str,
    info: Mapping[str, Any],
    *,
    task_id: str | None = None,
    sign_key: str | None = None,
    expires_at: int | None = None,
    expires_in: float = DEFAULT_EXPIRES_IN,
) -> dict[str, Any]:
    """A live-stream notification: ``NotificationType`` plus its ``…Info`` object.

    ``info`` goes under ``ProcessEofInfo`` for ``ProcessEof`` and ``<Type>Info`` otherwise;
    signing is as in :func:`build_notification`.
    """
    field_name = (
        "ProcessEofInfo" if notification_type == "ProcessEof" else f"{notification_type}Info"
    )
    payload: dict[str, Any] = {
        "NotificationType": notification_type,
        "TaskId": task_id or f"live-{_PROCESS_TAG}{next(_task_numbers):08x}",
        field_name: dict(info),
        "SessionId": "",
        "SessionContext": "",
    }
    if sign_key is not None:
        sign_payload(payload, sign_key, expires_at=expires_at, expires_in=expires_in)
    return payload


# -- the test client --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandlerCall:
    """One handler run seen by the test client: what it got and how it ended."""

    handler: str
    key: str
    payload: Any
    attempt: int
    result: str
    """ok, skipped, defer, retry, reject, or ``error:<ExceptionType>``."""


@dataclass(slots=True)
class SendResult:
    """Everything that happened to one sent notification, retries included."""

    outcomes: list[Outcome] = field(default_factory=list)
    calls: list[HandlerCall] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    @property
    def outcome(self) -> Outcome:
        """The final outcome (after in-process retries)."""
        return self.outcomes[-1]

    @property
    def acked(self) -> bool:
        return self.outcome.settlement is Settlement.ACK

    @property
    def dead_lettered(self) -> bool:
        return self.outcome.settlement in (Settlement.DEAD_LETTERED, Settlement.REJECTED)

    def handlers(self) -> list[str]:
        """Names of the handlers that ran, in the order they were called."""
        return [c.handler for c in self.calls]


class _Recorder:
    """Handler-scope middleware that records every run for the test client."""

    def __init__(self) -> None:
        self.calls: list[HandlerCall] = []

    async def __call__(self, call: Call, call_next: CallNext) -> Outcome:
        info = call.handler
        assert info is not None
        try:
            outcome = await call_next(call)
        except Retry:
            self._add(call, info.name, info.key, "retry")
            raise
        except Reject:
            self._add(call, info.name, info.key, "reject")
            raise
        except Exception as exc:
            self._add(call, info.name, info.key, f"error:{type(exc).__name__}")
            raise
        if outcome.settlement is Settlement.ACK:
            result = "skipped" if outcome.duplicates_skipped else "ok"
        else:
            result = "defer" if outcome.settlement is Settlement.RETRY else "reject"
        self._add(call, info.name, info.key, result)
        return outcome

    def _add(self, call: Call, handler: str, key: str, result: str) -> None:
        self.calls.append(HandlerCall(handler, key, call.payload, call.delivery.attempt, result))


class NotSettledError(AssertionError):
    """``TestClient.send`` ran the pipeline ``max_runs`` times and the delivery never settled."""


class TestClient:
    """Runs an app's identical pipeline over the in-memory source, and shows what happened.

    ``async with TestClient(app) as client: result = await client.send(payload)``. By
    default every sink and the dead-letter sink are swapped for ``MemorySink`` (see
    ``emitted`` and ``dead_letters``), the app runs on a ``FakeClock`` that starts at the
    real time (whole seconds; a signature made now is valid on it) and moves only when
    something sleeps or ``clock.advance`` is called, so retries with backoff finish at once,
    and its dedup store (if it has one) is swapped for a fresh
    ``MemoryStore`` on that clock, so every ``TestClient`` starts from clean dedup state and a
    test passes on every run, not only the first. ``dedup_store="app"`` keeps the app's own
    store (its records persist between runs); passing a store uses that one. The app's
    ``Idempotency`` options (TTLs, key functions) stay as configured. Everything is restored
    on exit.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        app: App,
        *,
        clock: FakeClock | None = None,
        capture_sinks: bool = True,
        middleware: Sequence[Middleware] = (),
        dedup_store: IdempotencyStore | Literal["memory", "app"] = "memory",
    ) -> None:
        if isinstance(dedup_store, str) and dedup_store not in ("memory", "app"):
            raise ValueError(
                f"dedup_store must be 'memory', 'app' or an IdempotencyStore, not {dedup_store!r}"
            )
        self.app = app
        self.clock: FakeClock = clock or FakeClock(float(int(SystemClock().time())))
        """The app's clock while the client runs (a FakeClock: ``client.clock.advance(s)``)."""
        self._capture = capture_sinks
        self._extra_middleware = tuple(middleware)
        self._dedup_choice = dedup_store
        self._recorder = _Recorder()
        self.sinks: dict[str, MemorySink] = {}
        self.dead_letter_sink = MemorySink()
        self._saved: dict[str, Any] = {}

    @property
    def dedup_store(self) -> IdempotencyStore | None:
        """The dedup store the app uses under this client (``None`` without dedup)."""
        configured = self.app.idempotency
        if isinstance(configured, Idempotency):
            return configured.store
        return configured

    def _swap_dedup_store(self) -> None:
        choice = self._dedup_choice
        configured = self.app.idempotency
        if choice == "app" or (choice == "memory" and configured is None):
            return
        store = MemoryStore(clock=self.clock) if choice == "memory" else choice
        if isinstance(configured, Idempotency):
            self._saved["idempotency_store"] = configured.store
            configured.store = store
        else:
            self._saved["idempotency"] = configured
            self.app.idempotency = store

    def _restore_dedup_store(self) -> None:
        configured = self.app.idempotency
        if "idempotency_store" in self._saved and isinstance(configured, Idempotency):
            configured.store = self._saved["idempotency_store"]
        elif "idempotency" in self._saved:
            self.app.idempotency = self._saved["idempotency"]

    async def __aenter__(self) -> TestClient:
        app = self.app
        self._saved = {"clock": app.clock, "dead": app.dead_letter_sink, "sinks": {}}
        app.clock = self.clock
        self._swap_dedup_store()
        if self._capture:
            app.dead_letter_sink = self.dead_letter_sink
            for name in app.sink_names:
                self.sinks[name] = MemorySink()
                self._saved["sinks"][name] = app.replace_sink(name, self.sinks[name])
        for middleware in reversed((self._recorder, *self._extra_middleware)):
            app.add_middleware(middleware, first=True)
        try:
            await app.__aenter__()
        except BaseException:
            self._restore()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.app.__aexit__(*exc_info)
        finally:
            self._restore()

    def _restore(self) -> None:
        app = self.app
        app.clock = self._saved["clock"]
        app.dead_letter_sink = self._saved["dead"]
        sinks: dict[str, Sink] = self._saved["sinks"]
        for name, sink in sinks.items():
            app.replace_sink(name, sink)
        for middleware in (self._recorder, *self._extra_middleware):
            app.remove_middleware(middleware)
        self._restore_dedup_store()

    @property
    def calls(self) -> list[HandlerCall]:
        """Every handler run so far."""
        return list(self._recorder.calls)

    @property
    def dead_letters(self) -> list[DeadLetter]:
        """Every dead-letter record written so far."""
        return [r for r in self.dead_letter_sink.records if isinstance(r, DeadLetter)]

    def emitted(self, sink: str) -> list[object]:
        """Records delivered to the sink named ``sink``."""
        return list(self.sinks[sink].records)

    async def send(
        self,
        body: bytes | str | Mapping[str, Any],
        *,
        attempt: int = 1,
        source: str = "test",
        max_in_flight: int = 64,
        max_runs: int = 1000,
    ) -> SendResult:
        """Process one notification through the pipeline, retries included, until settled.

        A dict is sent as its JSON bytes, the way MPS posts it (HTTP, CMQ); to test the SCF
        path with a parsed event dict, use ``app.process(Delivery(event_dict))``.

        Deferred retries (a duplicate in progress, a store that is down) do not use up
        attempts, so a delivery deferred for good would retry forever on the fake clock:
        after ``max_runs`` pipeline runs this raises :class:`NotSettledError` instead.
        """
        if max_runs < 1:
            raise ValueError("max_runs must be at least 1")
        calls_before = len(self._recorder.calls)
        dead_before = len(self.dead_letters)
        src = MemorySource(name=source, clock=self.clock, max_in_flight=max_in_flight)
        if isinstance(body, str):
            body = body.encode()
        elif not isinstance(body, bytes):
            body = json.dumps(body, ensure_ascii=False).encode()
        src.add(Delivery(body, source=source, attempt=attempt, id="1"))
        stop = anyio.Event()
        runs = 0

        async def process(delivery: Delivery) -> Outcome:
            nonlocal runs
            runs += 1
            if runs > max_runs:
                stop.set()
                return Outcome(Settlement.RETRY, reason="TestClient gave up")
            return await self.app.process(delivery)

        await src.run(self.app.source_runtime(stop, consumer=process))
        if runs > max_runs:
            last = src.report[-2].outcome  # the one before "gave up" (max_runs is at least 1)
            raise NotSettledError(
                f"the delivery was not settled after {max_runs} pipeline runs; the last "
                f"outcome was {last.settlement.value} ({last.reason or 'no reason'})"
            )
        return SendResult(
            outcomes=[s.outcome for s in src.report],
            calls=self._recorder.calls[calls_before:],
            dead_letters=self.dead_letters[dead_before:],
        )
