"""The SCF source: a synchronous ``main_handler(event, context)`` for Tencent SCF's Python runtime.

The MPS trigger invokes the function asynchronously with the notification itself as
``event`` (a ``dict``), which goes straight into the pipeline, without a JSON round trip.

Event loops: the runtime calls the handler from plain synchronous code, and freezes the
instance between invocations, so nothing may run in the background after ``main_handler``
returns. Each invocation therefore runs in a **new event loop** (``anyio.run``) and starts
and stops the app inside it: sinks flush and stores release their connections before the
function returns, and no loop-bound connection is ever reused on a different loop. Module
state (the app, its handlers and configuration, the attempt counter below) is built once at
cold start and reused by every warm invocation. Starting an app is cheap (no I/O unless its
sinks, stores or lifespan hooks do some).

Retries: a retryable failure raises ``InvocationFailed``, so the platform retries the async
invocation (twice by default, a minute apart). SCF does not say which attempt an invocation
is, so the handler counts failed invocations of the same event per warm instance: set the
app's ``RetryPolicy(max_attempts=…)`` to the function's retry count + 1, and the last
attempt is dead-lettered and returned instead of raised (a retry that lands on a fresh
instance starts counting again; the platform's own dead-letter queue catches those).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from mpsflow._json import UNKNOWN, identify
from mpsflow.dedup.idempotency import payload_hash
from mpsflow.delivery import Delivery, Outcome, Settlement
from mpsflow.errors import DecodeError, InvocationFailed

if TYPE_CHECKING:
    from mpsflow.app import App

__all__ = ["RedeliveryCounter", "ScfHandler", "make_scf_handler"]

_log = logging.getLogger("mpsflow.sources.scf")

ScfHandler = Callable[[Any, Any], dict[str, Any]]
"""``main_handler(event, context) -> summary``, as the SCF Python runtime calls it."""

_SUMMARY_STATUS = {
    Settlement.ACK: "ok",
    Settlement.DEAD_LETTERED: "dead_lettered",
    Settlement.REJECTED: "rejected",
}


class RedeliveryCounter:
    """Counts failed deliveries of the same notification, for transports that do not (HTTP, SCF).

    A notification is known by :func:`mpsflow.dedup.idempotency.payload_hash` (its content without
    ``Timestamp``/``Sign``, so a redelivery signed afresh still matches), or by a digest of
    the raw bytes when it is not a JSON object. Counts live in this process only, bounded to
    ``capacity`` notifications (the oldest forgotten first), and are dropped once settled.
    While nothing is failing, ``attempt`` costs nothing: no hashing at all.
    """

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._failures: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    @staticmethod
    def key(body: bytes | Mapping[str, Any]) -> str:
        """The identity under which redeliveries of ``body`` are counted."""
        try:
            return payload_hash(body)
        except DecodeError:
            raw = body if isinstance(body, bytes) else repr(body).encode()
            return hashlib.blake2b(raw, digest_size=16).hexdigest()

    def attempt(self, body: bytes | Mapping[str, Any]) -> tuple[int, str | None]:
        """This delivery's attempt number, and its key when one had to be computed."""
        if not self._failures:
            return 1, None
        key = self.key(body)
        return self._failures.get(key, 0) + 1, key

    def record(self, body: bytes | Mapping[str, Any], key: str | None, *, failed: bool) -> None:
        """Count a retryable failure, or forget a settled notification."""
        if failed:
            key = key or self.key(body)
            self._failures[key] = self._failures.get(key, 0) + 1
            self._failures.move_to_end(key)
            while len(self._failures) > self._capacity:
                self._failures.popitem(last=False)
        elif key is not None:
            self._failures.pop(key, None)


def make_scf_handler(app: App, *, remember: int = 1024) -> ScfHandler:
    """Return ``main_handler(event, context)`` running ``app``'s pipeline once per invocation.

    The return value is a small JSON-able summary: ``{"status": "ok" | "dead_lettered" |
    "rejected", "taskId": …, "handlers": n}`` (plus ``"reason"`` when not ok). A retryable
    failure raises ``InvocationFailed``. ``remember`` bounds how many failing events the
    attempt counter keeps. Invocations are serialised (an app runs one lifecycle at a time).
    """
    attempts = RedeliveryCounter(remember)
    lock = threading.Lock()

    def main_handler(event: Any, context: Any) -> dict[str, Any]:
        body = _body(event)
        time_limit = _time_limit(context)
        request_id = str(context.get("request_id", "")) if isinstance(context, Mapping) else ""
        with lock:
            attempt, key = attempts.attempt(body)

            async def invoke() -> Outcome:
                async with app:
                    deadline = (
                        app.clock.monotonic() + time_limit if time_limit is not None else None
                    )
                    delivery = Delivery(
                        body, source="scf", attempt=attempt, id=request_id, deadline=deadline
                    )
                    return await app.process(delivery)

            outcome = anyio.run(invoke)
            attempts.record(body, key, failed=outcome.settlement is Settlement.RETRY)
        if outcome.settlement is Settlement.RETRY:
            _log.warning(
                "attempt %d failed, raising for a platform retry: %s", attempt, outcome.reason
            )
            raise InvocationFailed(outcome)
        return _summary(body, outcome)

    main_handler.__qualname__ = main_handler.__name__ = "main_handler"
    return main_handler


def _body(event: Any) -> bytes | Mapping[str, Any]:
    if isinstance(event, Mapping):
        return event
    if isinstance(event, str):
        return event.encode()
    if isinstance(event, bytes | bytearray):
        return bytes(event)
    # Anything else is handed on as is: the codec rejects it as poison (dead-lettered).
    return {"event": event}


def _time_limit(context: Any) -> float | None:
    """Seconds the platform allows this invocation (``context["time_limit_in_ms"]``)."""
    if not isinstance(context, Mapping):
        return None
    try:
        millis = float(context["time_limit_in_ms"])
    except (KeyError, TypeError, ValueError):
        return None
    return millis / 1000.0 if millis > 0 else None


def _summary(body: bytes | Mapping[str, Any], outcome: Outcome) -> dict[str, Any]:
    task_id = identify(body).task_id
    summary: dict[str, Any] = {
        "status": _SUMMARY_STATUS[outcome.settlement],
        "taskId": None if task_id == UNKNOWN else task_id,
        "handlers": outcome.handlers_run,
    }
    if outcome.settlement is not Settlement.ACK and outcome.reason:
        summary["reason"] = outcome.reason
    return summary
