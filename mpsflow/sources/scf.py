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

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from mpsflow.delivery import Delivery, Outcome, Settlement
from mpsflow.errors import DecodeError, InvocationFailed
from mpsflow.events.envelope import identify
from mpsflow.sources.redelivery import RedeliveryCounter

if TYPE_CHECKING:
    from mpsflow.app import App

__all__ = ["ScfHandler", "make_scf_handler"]

_log = logging.getLogger("mpsflow.sources.scf")

ScfHandler = Callable[[Any, Any], dict[str, Any]]
"""``main_handler(event, context) -> summary``, as the SCF Python runtime calls it."""

_SUMMARY_STATUS = {
    Settlement.ACK: "ok",
    Settlement.DEAD_LETTERED: "dead_lettered",
    Settlement.REJECTED: "rejected",
}


def make_scf_handler(app: App, *, remember: int = 1024) -> ScfHandler:
    """Return ``main_handler(event, context)`` running ``app``'s pipeline once per invocation.

    Each invocation starts and stops ``app`` (see the module docstring) and, while it runs,
    uses only the app's :class:`~mpsflow.sources.runtime.SourceRuntime`.

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
                    runtime = app.source_runtime(anyio.Event())
                    deadline = (
                        runtime.clock.monotonic() + time_limit if time_limit is not None else None
                    )
                    delivery = Delivery(
                        body, source="scf", attempt=attempt, id=request_id, deadline=deadline
                    )
                    return await runtime.consumer(delivery)

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
    summary: dict[str, Any] = {
        "status": _SUMMARY_STATUS[outcome.settlement],
        "taskId": _task_id(body),
        "handlers": outcome.handlers_run,
    }
    if outcome.settlement is not Settlement.ACK and outcome.reason:
        summary["reason"] = outcome.describe()
    return summary


def _task_id(body: bytes | Mapping[str, Any]) -> str | None:
    try:
        task_id = identify(body).task_id
    except DecodeError:
        return None
    return task_id if isinstance(task_id, str) and task_id else None
