"""The pipeline: one delivery in, one outcome out, nothing lost on the way.

bytes → delivery middleware (signature, …) → decode → route → handlers (each inside its own
middleware: dedup, …) → outcome → dead-letter when retries run out. Every path ends in a
handler success, a dead-letter record, or a retry; an exception never escapes to the source.
"""

from __future__ import annotations

import logging
import random
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal

import anyio

from mpsflow.clock import Clock
from mpsflow.codec import decode_any
from mpsflow.context import Context, _current
from mpsflow.deadletter import DeadLetter, DeadLetterKind, Failure, make_dead_letter
from mpsflow.delivery import Delivery, Outcome, Settlement
from mpsflow.errors import DecodeError, PayloadTooLarge, Reject, Retry
from mpsflow.middleware.base import Call, CallNext, chain
from mpsflow.observability.metrics import Metrics
from mpsflow.retry import RetryPolicy
from mpsflow.routing import HandlerSpec, PlannedSubtask, RouteTable, Work, plan

if TYPE_CHECKING:
    from mpsflow.context import AnyNotification
    from mpsflow.middleware.base import Middleware
    from mpsflow.sinks.channel import SinkChannel

__all__ = [
    "Pipeline",
    "ResultKind",
    "UnmatchedPolicy",
]

UnmatchedPolicy = Literal["ack", "dead_letter"]

_log = logging.getLogger("mpsflow.pipeline")

_HANDLER_OK = Outcome(Settlement.ACK, handlers_run=1)
"""Shared by every successful handler run and single-handler delivery (outcomes are never
mutated once made)."""
_SETTLEMENT_NAMES = {s: s.value for s in Settlement}  # enum ``.value`` is slow on the hot path

ResultKind = Literal["ok", "skipped", "defer", "retry", "reject", "error", "timeout"]
"""``defer``: middleware put the run off (duplicate in progress elsewhere, dedup store down);
it never uses up attempts, because the handler did not get to run."""


@dataclass(slots=True)
class _HandlerResult:
    spec: HandlerSpec
    kind: ResultKind
    reason: str = ""
    delay: float | None = None
    error_type: str = ""
    traceback: str = ""

    @property
    def failed(self) -> bool:
        return self.kind not in ("ok", "skipped")


class Pipeline:
    """Processes deliveries for one app; built once at startup, shared by every source."""

    def __init__(
        self,
        *,
        specs: Sequence[HandlerSpec],
        delivery_middleware: Sequence[Middleware],
        handler_middleware: Sequence[Middleware],
        sinks: Mapping[str, SinkChannel],
        dead_letters: SinkChannel,
        retry: RetryPolicy,
        unmatched: UnmatchedPolicy,
        metrics: Metrics,
        clock: Clock,
        max_body_size: int,
        rng: random.Random | None = None,
    ) -> None:
        self._sinks = sinks
        self._dead_letters = dead_letters
        self._retry = retry
        self._unmatched = unmatched
        self._metrics = metrics
        self._clock = clock
        self._max_body_size = max_body_size
        self._rng = rng or random.Random()
        self._ok_results: dict[HandlerSpec, _HandlerResult] = {}
        """One shared, never-mutated success result per handler (no allocation when it runs)."""
        self._direct: set[HandlerSpec] = set()
        """Handlers without middleware, limiter or timeout: called without a ``Call``."""
        for spec in specs:
            middleware = (*handler_middleware, *spec.middleware)
            spec.chain = chain(middleware, self._endpoint(spec))
            if not middleware and spec.max_concurrency is None and spec.timeout is None:
                self._direct.add(spec)
            self._ok_results[spec] = _HandlerResult(spec, "ok")
        self._routes = RouteTable(specs)
        self._process: CallNext | None = (
            chain(delivery_middleware, self._call_endpoint) if delivery_middleware else None
        )
        """Delivery middleware around decode-and-dispatch; None when there is none."""

    async def __call__(self, delivery: Delivery) -> Outcome:
        """Process one delivery; always returns an outcome, never raises (but cancellation)."""
        started = perf_counter()
        metrics = self._metrics
        source = delivery.source
        metrics.delivery_started(source)
        try:
            try:
                process = self._process
                if process is None:
                    outcome = await self._decode_and_dispatch(delivery, None)
                else:
                    outcome = await process(Call(delivery))
            except Exception as exc:
                _log.exception("internal error processing delivery %s", delivery.id or "?")
                outcome = await self._internal_error(delivery, exc)
            if outcome.settlement is Settlement.REJECTED and not delivery.state.get(
                "dead_lettered"
            ):
                outcome = await self._dead_letter_rejection(delivery, outcome)
        except BaseException:  # cancelled (shutdown): left for redelivery, no longer in flight
            metrics.delivery(source, "cancelled", perf_counter() - started)
            raise
        metrics.delivery(source, _SETTLEMENT_NAMES[outcome.settlement], perf_counter() - started)
        return outcome

    # -- decode and route -------------------------------------------------------------------

    def _call_endpoint(self, call: Call) -> Awaitable[Outcome]:
        """The end of the delivery-middleware chain."""
        return self._decode_and_dispatch(call.delivery, call)

    async def _decode_and_dispatch(self, delivery: Delivery, call: Call | None) -> Outcome:
        """Decode (unless delivery middleware already did), plan and run."""
        notification = call.notification if call is not None else None
        try:
            if notification is None:
                notification = decode_any(delivery.body, max_size=self._max_body_size)
        except DecodeError as exc:
            where = f" at {exc.path}" if exc.path not in ("", "$") else ""
            return await self._to_dead_letters(
                delivery,
                kind="poison",
                reason=f"{exc}{where}"[:500],
                status=413 if isinstance(exc, PayloadTooLarge) else 400,
                failures=[Failure(kind="poison", error_type="DecodeError", message=str(exc))],
            )
        if call is not None:
            call.notification = notification  # delivery middleware sees it after call_next
        work = plan(notification, self._routes)
        if not work:
            return await self._no_handler(delivery, notification)
        if len(work) == 1:
            spec, payload, subtask = work[0]
            result = await self._run(spec, payload, subtask, notification, delivery)
            if result.kind == "ok":
                return _HANDLER_OK
            results = [result]
        else:
            results = await self._run_all(work, notification, delivery)
        return await self._verdict(delivery, notification, results)

    async def _no_handler(self, delivery: Delivery, notification: AnyNotification) -> Outcome:
        event_type = _event_type(notification)
        self._metrics.unmatched(event_type)
        if self._unmatched == "dead_letter":
            return await self._to_dead_letters(
                delivery,
                kind="unmatched",
                reason=f"no handler for {event_type or 'this notification'}",
                notification=notification,
            )
        return Outcome(Settlement.ACK, reason="unmatched")

    # -- running handlers -------------------------------------------------------------------

    async def _run_all(
        self,
        work: list[Work],
        notification: AnyNotification,
        delivery: Delivery,
    ) -> list[_HandlerResult]:
        results: list[_HandlerResult | None] = [None] * len(work)

        async def one(index: int, item: Work) -> None:
            spec, payload, subtask = item
            results[index] = await self._run(spec, payload, subtask, notification, delivery)

        async with anyio.create_task_group() as tg:
            for index, item in enumerate(work):
                tg.start_soon(one, index, item)
        return [r for r in results if r is not None]

    async def _run(
        self,
        spec: HandlerSpec,
        payload: Any,
        subtask: PlannedSubtask,
        notification: AnyNotification,
        delivery: Delivery,
    ) -> _HandlerResult:
        ctx = Context(notification, delivery, spec.name, spec.key, self._sinks, subtask=subtask)
        started = perf_counter()
        try:
            if spec in self._direct:  # nothing around the handler: the common, hot case
                token = _current.set(ctx)
                try:
                    await spec.func(payload, ctx)
                    if ctx._receipts:
                        await ctx._flush()
                finally:
                    _current.reset(token)
                outcome = _HANDLER_OK
            else:
                assert spec.chain is not None
                outcome = await spec.chain(
                    Call(delivery, "handler", notification, spec.info, payload, ctx)
                )
        except Retry as exc:
            result = _HandlerResult(spec, "retry", exc.reason, delay=exc.delay)
        except Reject as exc:
            result = _HandlerResult(spec, "reject", exc.reason, error_type="Reject")
        except TimeoutError:
            result = _HandlerResult(
                spec, "timeout", f"handler timed out after {spec.timeout}s", error_type="Timeout"
            )
        except Exception as exc:
            result = _HandlerResult(
                spec,
                "error",
                _describe(exc),
                error_type=type(exc).__name__,
                traceback=traceback.format_exc(limit=20),
            )
        else:
            if outcome is _HANDLER_OK:
                self._metrics.handler_run(spec.key, "ok", perf_counter() - started)
                return self._ok_results[spec]
            result = _from_outcome(spec, outcome)
        if result.failed:
            ctx.log.warning("handler %s failed (%s): %s", spec.name, result.kind, result.reason)
        elif result.kind == "skipped":
            self._metrics.duplicate_skipped(spec.key)
        self._metrics.handler_run(spec.key, result.kind, perf_counter() - started)
        return result

    def _endpoint(self, spec: HandlerSpec) -> CallNext:
        func = spec.func

        async def run_handler(call: Call) -> Outcome:
            ctx = call.context
            assert ctx is not None
            token = _current.set(ctx)
            try:
                limiter = spec.limiter
                if limiter is None and spec.timeout is None:
                    await func(call.payload, ctx)
                elif limiter is None:
                    await _with_timeout(spec.timeout, func, call.payload, ctx)
                else:
                    async with limiter:
                        await _with_timeout(spec.timeout, func, call.payload, ctx)
                if ctx._receipts:
                    await ctx._flush()
            finally:
                _current.reset(token)
            return _HANDLER_OK

        return run_handler

    # -- verdicts ---------------------------------------------------------------------------

    async def _verdict(
        self, delivery: Delivery, notification: AnyNotification, results: list[_HandlerResult]
    ) -> Outcome:
        failures = [r for r in results if r.failed]
        ran = sum(1 for r in results if r.kind == "ok")
        skipped = sum(1 for r in results if r.kind == "skipped")
        if not failures:
            return Outcome(Settlement.ACK, handlers_run=ran, duplicates_skipped=skipped)
        records = [
            Failure(
                handler=r.spec.name,
                key=r.spec.key,
                kind=r.kind,
                error_type=r.error_type,
                message=r.reason,
                traceback=r.traceback,
            )
            for r in failures
        ]
        rejected = [r for r in failures if r.kind == "reject"]
        if rejected:
            return await self._to_dead_letters(
                delivery,
                kind="rejected",
                reason="; ".join(f"{r.spec.name}: {r.reason}" for r in rejected)[:500],
                notification=notification,
                failures=records,
                handlers_run=ran,
            )
        attempt = delivery.attempt
        policies = [r.spec.retry or self._retry for r in failures]
        deferred = any(r.kind == "defer" for r in failures)
        if not deferred and all(p.exhausted(attempt) for p in policies):
            return await self._to_dead_letters(
                delivery,
                kind="exhausted",
                reason=f"{len(failures)} handler(s) still failing after {attempt} attempt(s)",
                notification=notification,
                failures=records,
                handlers_run=ran,
            )
        delay = max(
            r.delay if r.delay is not None else p.delay(attempt, self._rng)
            for r, p in zip(failures, policies, strict=True)
        )
        busy = all(r.kind in ("retry", "defer") for r in failures)
        return Outcome(
            Settlement.RETRY,
            retry_after=delay,
            status=503 if busy else 500,
            reason="; ".join(f"{r.spec.name}: {r.kind}" for r in failures)[:500],
            handlers_run=ran,
            duplicates_skipped=skipped,
        )

    async def _to_dead_letters(
        self,
        delivery: Delivery,
        *,
        kind: DeadLetterKind,
        reason: str,
        status: int = 200,
        notification: AnyNotification | None = None,
        failures: list[Failure] | None = None,
        handlers_run: int = 0,
        settled: Outcome | None = None,
    ) -> Outcome:
        """Write a dead-letter record; the delivery is then settled (never retried).

        Returns ``settled`` (default: DEAD_LETTERED with ``status``), or RETRY when the record
        could not be written, so nothing is lost.
        """
        record = make_dead_letter(
            kind=kind,
            reason=reason,
            body=delivery.body,
            now=self._clock.time(),
            source=delivery.source,
            delivery_id=delivery.id,
            attempt=delivery.attempt,
            event_type=_event_type(notification) if notification is not None else "",
            task_id=(notification.task_id or "") if notification is not None else "",
            failures=failures,
        )
        if not await self._write_dead_letter(record):
            return Outcome(
                Settlement.RETRY, status=503, reason="dead-letter sink unavailable; retry later"
            )
        delivery.state["dead_lettered"] = True
        self._metrics.dead_letter(kind)
        if settled is not None:
            return settled
        return Outcome(
            Settlement.DEAD_LETTERED, status=status, reason=reason, handlers_run=handlers_run
        )

    async def _internal_error(self, delivery: Delivery, exc: Exception) -> Outcome:
        """A failure outside any handler (middleware, a bug): retried, then dead-lettered."""
        if not self._retry.exhausted(delivery.attempt):
            return Outcome(
                Settlement.RETRY,
                status=500,
                retry_after=self._retry.delay(delivery.attempt, self._rng),
                reason="internal error",
            )
        failure = Failure(
            kind="error",
            error_type=type(exc).__name__,
            message=_describe(exc),
            traceback="".join(traceback.format_exception(exc, limit=20)),
        )
        return await self._to_dead_letters(
            delivery,
            kind="exhausted",
            reason=f"internal error after {delivery.attempt} attempt(s): {_describe(exc)}"[:500],
            failures=[failure],
        )

    async def _dead_letter_rejection(self, delivery: Delivery, outcome: Outcome) -> Outcome:
        """Record a rejection decided by middleware (bad signature, …) before settling."""
        kind: DeadLetterKind = "signature" if outcome.status == 401 else "rejected"
        return await self._to_dead_letters(
            delivery,
            kind=kind,
            reason=outcome.reason,
            failures=[Failure(kind=kind, message=outcome.reason)],
            settled=outcome,
        )

    async def _write_dead_letter(self, record: DeadLetter) -> bool:
        try:
            receipt = await self._dead_letters.submit(record)
            await receipt.wait()
        except Exception:
            _log.exception(
                "could not write dead letter %s; the delivery will be retried", record.id
            )
            return False
        return True


def _from_outcome(spec: HandlerSpec, outcome: Outcome) -> _HandlerResult:
    """Map an outcome returned by handler-scope middleware (dedup) to a handler result."""
    if outcome.settlement is Settlement.ACK:
        return _HandlerResult(spec, "skipped" if outcome.duplicates_skipped else "ok")
    if outcome.settlement is Settlement.RETRY:
        return _HandlerResult(
            spec, "defer", outcome.reason or "deferred", delay=outcome.retry_after
        )
    return _HandlerResult(spec, "reject", outcome.reason or "rejected", error_type="Reject")


async def _with_timeout(
    limit: float | None, func: Callable[[Any, Context], Any], payload: Any, ctx: Context
) -> None:
    if limit is None:
        await func(payload, ctx)
        return
    with anyio.fail_after(limit):
        await func(payload, ctx)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}"[:1000] if text else type(exc).__name__


def _event_type(notification: AnyNotification) -> str:
    return (
        getattr(notification, "event_type", None)
        or getattr(notification, "notification_type", None)
        or ""
    )
