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
from mpsflow.context import Context, reset_current_context, set_current_context
from mpsflow.deadletter import (
    DeadLetterLimits,
    DeadLetterWriter,
    Failure,
    dead_letter_kind,
    event_type_of,
)
from mpsflow.delivery import Cause, Delivery, Outcome, Settlement
from mpsflow.errors import DecodeError, PayloadTooLarge, Reject, Retry
from mpsflow.middleware.base import Call, CallNext, chain, runs_at_admission
from mpsflow.observability.metrics import Metrics
from mpsflow.observability.summaries import DeferralCounter
from mpsflow.retry import RetryPolicy
from mpsflow.routing import HandlerSpec, PlannedSubtask, RouteTable, Work, plan

if TYPE_CHECKING:
    from mpsflow.context import AnyNotification
    from mpsflow.middleware.base import Middleware
    from mpsflow.sinks.channel import SinkChannel

__all__ = [
    "Pipeline",
    "UnmatchedPolicy",
]

UnmatchedPolicy = Literal["ack", "dead_letter"]

_HandlerCall = Callable[[Any, Context], Awaitable[Outcome]]
"""One handler, ready to call with its payload and context (see ``Pipeline``)."""

_log = logging.getLogger("mpsflow.pipeline")

_HANDLER_OK = Outcome(Settlement.ACK, handlers_run=1)
"""Shared by every successful handler run and single-handler delivery (outcomes are never
mutated once made)."""
_ADMITTED = Outcome(Settlement.ACK, reason="admitted")
"""``Pipeline.admit``'s answer for a body that may be queued."""
_SETTLEMENT_NAMES = {s: s.value for s in Settlement}  # enum ``.value`` is slow on the hot path
_REJECTED = Settlement.REJECTED
_OK = Cause.OK
"""Members read on every delivery (a module global is faster than an enum class attribute)."""
_DONE = frozenset({Cause.OK, Cause.ALREADY_DONE})
"""Handler-run causes that are not failures."""
_SEVERITY = (Cause.ERROR, Cause.TIMEOUT, Cause.RETRY)
"""Which failure speaks for a delivery whose handlers failed in several ways (else DEFERRED)."""
_DEADLINE_MARGIN = 1.0
"""Seconds before a delivery's deadline its handlers are cut off, so that its source settles
it (a retry) while its lease (an inbox's, a queue's visibility timeout) still holds."""
_MIN_CUT_OFF = 1.0
"""Less time than this left when a handler starts: it runs without a cut-off. Such a deadline
says more about clocks that disagree (a queue server's visibility timestamps against this
host's) than about a budget, and cutting a handler off at once would only retry it forever."""


class _PastDeadline(Exception):
    """A handler was still running at its delivery's deadline (the message)."""


@dataclass(slots=True)
class _HandlerResult:
    spec: HandlerSpec
    cause: Cause
    reason: str = ""
    delay: float | None = None
    error_type: str = ""
    traceback: str = ""


class Pipeline:
    """Processes deliveries for one app; built once at startup, shared by every source.

    Every handler is called the one way ``_handler_call`` builds (its context current, its
    limit and timeout applied, its emits awaited); handler-scope middleware, when a handler
    has some, wraps that same call, and without middleware ``_run`` calls it directly.

    A failed handler run is logged at WARNING; a deferred one (routine: a duplicate in
    progress elsewhere, a store briefly unavailable) at INFO, and counted in ``deferrals``
    for the app's periodic summary line. ``in_flight`` says how many deliveries each source
    has in the pipeline now (what a drain waits for). Refusals (bad signature, poison, a
    rejection before any handler ran) are recorded as ``refusals`` allows
    (:class:`~mpsflow.deadletter.DeadLetterLimits`): an excerpt of the body, so many a minute.
    """

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
        dead_letter_limits: DeadLetterLimits | None = None,
    ) -> None:
        self._sinks = sinks
        self._retry = retry
        self._unmatched = unmatched
        self._metrics = metrics
        self._clock = clock
        self._max_body_size = max_body_size
        self._rng = rng or random.Random()
        self._in_flight: dict[str, int] = {}
        self.deferrals = DeferralCounter()
        """Deferred handler runs since the last summary (see ``DeferralCounter``)."""
        self._dead_letters = DeadLetterWriter(
            dead_letters, metrics=metrics, clock=clock, limits=dead_letter_limits
        )
        self.refusals = self._dead_letters.refusals
        self._ok_results: dict[HandlerSpec, _HandlerResult] = {}
        """One shared, never-mutated success result per handler (no allocation when it runs)."""
        self._calls: dict[HandlerSpec, tuple[_HandlerCall, CallNext | None]] = {}
        """Per handler: its call, and the middleware chain around it (None: none to run)."""
        for spec in specs:
            call = _handler_call(spec)
            middleware = (*handler_middleware, *spec.middleware)
            self._calls[spec] = (call, chain(middleware, _endpoint(call)) if middleware else None)
            self._ok_results[spec] = _HandlerResult(spec, Cause.OK)
        self._routes = RouteTable(specs)
        self._process: CallNext | None = (
            chain(delivery_middleware, self._call_endpoint) if delivery_middleware else None
        )
        """Delivery middleware around decode-and-dispatch; None when there is none."""
        door = [mw for mw in delivery_middleware if runs_at_admission(mw)]
        inside = [mw for mw in delivery_middleware if not runs_at_admission(mw)]
        self._process_admitted: CallNext | None = (
            chain(inside, self._call_endpoint) if inside else None
        )
        """The same for an admitted delivery: without the checks it passed at admission."""
        self._admission: CallNext = chain(door, self._admitted)
        """The admission checks (``at_admission`` middleware), then the decode."""

    async def __call__(self, delivery: Delivery) -> Outcome:
        """Process one delivery; always returns an outcome, never raises (but cancellation)."""
        started = perf_counter()
        metrics = self._metrics
        source = delivery.source
        metrics.delivery_started(source)
        in_flight = self._in_flight
        in_flight[source] = in_flight.get(source, 0) + 1
        try:
            try:
                process = self._process_admitted if delivery.admitted else self._process
                if process is None:
                    outcome = await self._decode_and_dispatch(delivery, None)
                else:
                    outcome = await process(Call(delivery))
            except Exception as exc:
                _log.exception("internal error processing delivery %s", delivery.id or "?")
                outcome = await self._internal_error(delivery, exc)
            if outcome.settlement is _REJECTED and not delivery.dead_lettered:
                outcome = await self._dead_letter_rejection(delivery, outcome)
        except BaseException:  # cancelled (shutdown): left for redelivery, no longer in flight
            in_flight[source] -= 1
            metrics.delivery(source, "cancelled", perf_counter() - started)
            raise
        in_flight[source] -= 1
        metrics.delivery(source, _SETTLEMENT_NAMES[outcome.settlement], perf_counter() - started)
        return outcome

    @property
    def in_flight(self) -> dict[str, int]:
        """Deliveries in the pipeline now, by source name (sources with none left out)."""
        return {source: count for source, count in self._in_flight.items() if count}

    async def dead_letter(
        self, delivery: Delivery, reason: str, *, cause: Cause = Cause.REJECTED, path: str = ""
    ) -> Outcome:
        """Record ``delivery`` as a dead letter without processing it (a source's refusal).

        ``cause`` picks the record's kind. Returns DEAD_LETTERED, or RETRY when the record
        could not be written; a delivery already recorded is not recorded twice. A refusal:
        an excerpt of the body is kept, within its sender's limit (``refusals``), unless the
        delivery passed admission (its signature and decode: ``delivery.notification`` is
        set, or it is ``admitted``), whose whole body is kept, as for a processed one.
        """
        if delivery.dead_lettered:
            return Outcome(Settlement.DEAD_LETTERED, reason=reason, cause=cause, path=path)
        failure = Failure(kind=dead_letter_kind(cause), message=reason)
        refused = delivery.notification is None and not delivery.admitted
        return await self._dead_letters.write(
            delivery, cause=cause, reason=reason, path=path, failures=[failure], refused=refused
        )

    async def admit(self, delivery: Delivery) -> Outcome:
        """Check ``delivery`` at the door of an inbox, without processing it.

        Runs the delivery middleware marked ``at_admission`` (the signature check), then the
        decode. ACK (``Cause.OK``) means it may be queued, to be processed later as an
        admitted delivery (``delivery.admitted``). A refusal is recorded as a dead letter
        (DEAD_LETTERED for a body that does not decode, REJECTED for a bad signature), as
        when processing: the source answers with it and queues nothing.
        """
        try:
            outcome = await self._admission(Call(delivery))
        except Exception:  # a bug in admission middleware: the sender tries again
            _log.exception("internal error admitting delivery %s", delivery.id or "?")
            return Outcome(Settlement.RETRY, cause=Cause.ERROR, reason="internal error")
        if outcome.settlement is Settlement.REJECTED and not delivery.dead_lettered:
            outcome = await self._dead_letter_rejection(delivery, outcome)
        return outcome

    async def _admitted(self, call: Call) -> Outcome:
        """The end of the admission chain: the body must decode into a notification."""
        notification = call.notification
        if notification is None:
            try:
                notification = decode_any(call.delivery.body, max_size=self._max_body_size)
            except DecodeError as exc:
                return await self._poison(call.delivery, exc)
        call.delivery.notification = notification  # for a consumer in this process
        return _ADMITTED

    # -- decode and route -------------------------------------------------------------------

    def _call_endpoint(self, call: Call) -> Awaitable[Outcome]:
        """The end of the delivery-middleware chain."""
        return self._decode_and_dispatch(call.delivery, call)

    async def _decode_and_dispatch(self, delivery: Delivery, call: Call | None) -> Outcome:
        """Decode (unless delivery middleware already did), plan and run."""
        notification = call.notification if call is not None else None
        if notification is None:
            notification = delivery.notification  # decoded at admission
        try:
            if notification is None:
                notification = decode_any(delivery.body, max_size=self._max_body_size)
        except DecodeError as exc:
            return await self._poison(delivery, exc)
        if call is not None:
            call.notification = notification  # delivery middleware sees it after call_next
        work = plan(notification, self._routes)
        if not work:
            return await self._no_handler(delivery, notification)
        if len(work) == 1:
            spec, payload, subtask = work[0]
            result = await self._run(spec, payload, subtask, notification, delivery)
            if result.cause is _OK:
                return _HANDLER_OK
            results = [result]
        else:
            results = await self._run_all(work, notification, delivery)
        return await self._verdict(delivery, notification, results)

    async def _poison(self, delivery: Delivery, exc: DecodeError) -> Outcome:
        """A body that does not decode: a poison dead letter (never retried)."""
        return await self._dead_letters.write(
            delivery,
            cause=Cause.TOO_LARGE if isinstance(exc, PayloadTooLarge) else Cause.MALFORMED,
            reason=str(exc)[:500],
            path=exc.path,
            failures=[Failure(kind="poison", error_type="DecodeError", message=str(exc))],
            refused=True,
        )

    async def _no_handler(self, delivery: Delivery, notification: AnyNotification) -> Outcome:
        event_type = event_type_of(notification)
        self._metrics.unmatched(event_type)
        if self._unmatched == "dead_letter":
            return await self._dead_letters.write(
                delivery,
                cause=Cause.UNMATCHED,
                reason=f"no handler for {event_type or 'this notification'}",
                notification=notification,
            )
        return Outcome(Settlement.ACK, reason="unmatched", cause=Cause.UNMATCHED)

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
        """Run one handler and say how it ended; with ``max_concurrency``, once it has a slot.

        The slot comes first: middleware (dedup's claim) runs only for a handler about to
        run, so a crash leaves no claims of handlers that were only waiting, and the deadline
        cut-off does not count the wait. A wait that ran into the delivery's deadline defers
        the run (no attempt used): it is retried like a duplicate in progress.
        """
        limiter = spec.limiter  # made in the running event loop, on first use
        if limiter is None:
            return await self._run_now(spec, payload, subtask, notification, delivery)
        deadline = delivery.deadline
        clock = self._clock
        before = clock.monotonic()
        async with limiter:
            if deadline is not None:
                had = deadline - before - _DEADLINE_MARGIN
                left = deadline - clock.monotonic() - _DEADLINE_MARGIN
                if had >= _MIN_CUT_OFF > left:  # the wait used up the time there was
                    result = _HandlerResult(
                        spec,
                        Cause.DEFERRED,
                        f"waited {clock.monotonic() - before:.3g}s for one of its"
                        f" {spec.max_concurrency} max_concurrency slots, until the delivery's"
                        " deadline",
                    )
                    ctx = Context(
                        notification, delivery, spec.name, spec.key, self._sinks, subtask=subtask
                    )
                    self._account(spec, ctx, result, 0.0)
                    return result
            return await self._run_now(spec, payload, subtask, notification, delivery)

    async def _run_now(
        self,
        spec: HandlerSpec,
        payload: Any,
        subtask: PlannedSubtask,
        notification: AnyNotification,
        delivery: Delivery,
    ) -> _HandlerResult:
        """Run one handler (through its middleware, if any) and say how it ended."""
        ctx = Context(notification, delivery, spec.name, spec.key, self._sinks, subtask=subtask)
        call, chained = self._calls[spec]
        started = perf_counter()
        deadline = delivery.deadline
        cut_off = (
            deadline - self._clock.monotonic() - _DEADLINE_MARGIN if deadline is not None else 0.0
        )
        try:
            if cut_off < _MIN_CUT_OFF:  # no deadline (or a meaningless one)
                if chained is None:  # nothing around the handler: the common, hot case
                    outcome = await call(payload, ctx)
                else:
                    outcome = await chained(
                        Call(delivery, "handler", notification, spec.info, payload, ctx)
                    )
            else:
                with anyio.move_on_after(cut_off) as scope:
                    if chained is None:
                        outcome = await call(payload, ctx)
                    else:
                        outcome = await chained(
                            Call(delivery, "handler", notification, spec.info, payload, ctx)
                        )
                if scope.cancelled_caught:
                    raise _PastDeadline(
                        f"handler still running at the delivery's deadline: cut off after"
                        f" {cut_off:.3g}s (its lease ends then and it would run again; give it"
                        " a larger handler budget, --handler-budget, or make it faster)"
                    )
        except _PastDeadline as exc:
            result = _HandlerResult(spec, Cause.TIMEOUT, str(exc), error_type="Timeout")
        except Retry as exc:
            result = _HandlerResult(spec, Cause.RETRY, exc.reason, delay=exc.delay)
        except Reject as exc:
            result = _HandlerResult(spec, Cause.REJECTED, exc.reason, error_type="Reject")
        except TimeoutError:
            result = _HandlerResult(
                spec,
                Cause.TIMEOUT,
                f"handler timed out after {spec.timeout}s",
                error_type="Timeout",
            )
        except Exception as exc:
            result = _HandlerResult(
                spec,
                Cause.ERROR,
                _describe(exc),
                error_type=type(exc).__name__,
                traceback=traceback.format_exc(limit=20),
            )
        else:
            if outcome is _HANDLER_OK:
                self._metrics.handler_run(spec.key, "ok", perf_counter() - started)
                return self._ok_results[spec]
            result = _from_outcome(spec, outcome)
        self._account(spec, ctx, result, perf_counter() - started)
        return result

    def _account(
        self, spec: HandlerSpec, ctx: Context, result: _HandlerResult, took: float
    ) -> None:
        """Count a run that did not simply succeed, and log it unless it was skipped."""
        cause = result.cause
        if cause is Cause.ALREADY_DONE:
            self._metrics.duplicate_skipped(spec.key)
        elif cause is Cause.DEFERRED:  # routine: counted for the summary line, not a warning
            self.deferrals.add(result.reason)
            ctx.log.info("handler %s deferred: %s", spec.name, result.reason)
        elif cause is not Cause.OK:
            ctx.log.warning("handler %s failed (%s): %s", spec.name, cause.value, result.reason)
        self._metrics.handler_run(spec.key, cause.value, took)

    # -- verdicts ---------------------------------------------------------------------------

    async def _verdict(
        self, delivery: Delivery, notification: AnyNotification, results: list[_HandlerResult]
    ) -> Outcome:
        failures = [r for r in results if r.cause not in _DONE]
        ran = sum(1 for r in results if r.cause is Cause.OK)
        skipped = sum(1 for r in results if r.cause is Cause.ALREADY_DONE)
        if not failures:
            return Outcome(
                Settlement.ACK,
                cause=Cause.ALREADY_DONE if skipped and not ran else Cause.OK,
                handlers_run=ran,
                duplicates_skipped=skipped,
            )
        records = [
            Failure(
                handler=r.spec.name,
                key=r.spec.key,
                kind=r.cause.value,
                error_type=r.error_type,
                message=r.reason,
                traceback=r.traceback,
            )
            for r in failures
        ]
        rejected = [r for r in failures if r.cause is Cause.REJECTED]
        if rejected:
            return await self._dead_letters.write(
                delivery,
                cause=Cause.REJECTED,
                reason="; ".join(f"{r.spec.name}: {r.reason}" for r in rejected)[:500],
                notification=notification,
                failures=records,
                handlers_run=ran,
            )
        causes = {r.cause for r in failures}
        cause = next((c for c in _SEVERITY if c in causes), Cause.DEFERRED)
        attempt = delivery.attempt
        policies = [r.spec.retry or self._retry for r in failures]
        if Cause.DEFERRED not in causes and all(p.exhausted(attempt) for p in policies):
            return await self._dead_letters.write(
                delivery,
                cause=cause,
                reason=f"{len(failures)} handler(s) still failing after {attempt} attempt(s)",
                notification=notification,
                failures=records,
                handlers_run=ran,
            )
        delay = max(
            r.delay if r.delay is not None else p.delay(attempt, self._rng)
            for r, p in zip(failures, policies, strict=True)
        )
        return Outcome(
            Settlement.RETRY,
            retry_after=delay,
            cause=cause,
            reason="; ".join(f"{r.spec.name}: {r.cause.value}" for r in failures)[:500],
            handlers_run=ran,
            duplicates_skipped=skipped,
        )

    async def _internal_error(self, delivery: Delivery, exc: Exception) -> Outcome:
        """A failure outside any handler (middleware, a bug): retried, then dead-lettered."""
        if not self._retry.exhausted(delivery.attempt):
            return Outcome(
                Settlement.RETRY,
                cause=Cause.ERROR,
                retry_after=self._retry.delay(delivery.attempt, self._rng),
                reason="internal error",
            )
        failure = Failure(
            kind="error",
            error_type=type(exc).__name__,
            message=_describe(exc),
            traceback="".join(traceback.format_exception(exc, limit=20)),
        )
        return await self._dead_letters.write(
            delivery,
            cause=Cause.ERROR,
            reason=f"internal error after {delivery.attempt} attempt(s): {_describe(exc)}"[:500],
            failures=[failure],
        )

    async def _dead_letter_rejection(self, delivery: Delivery, outcome: Outcome) -> Outcome:
        """Record a rejection decided by middleware (bad signature, …) before settling."""
        cause = Cause.UNAUTHENTICATED if outcome.cause is Cause.UNAUTHENTICATED else Cause.REJECTED
        return await self._dead_letters.write(
            delivery,
            cause=cause,
            reason=outcome.reason,
            path=outcome.path,
            failures=[Failure(kind=dead_letter_kind(cause), message=outcome.reason)],
            settled=outcome,
            refused=True,
        )


def _handler_call(spec: HandlerSpec) -> _HandlerCall:
    """The one way a handler is called: its ``Context`` made current, its timeout applied, and
    its emits awaited (it succeeds only once they are delivered). Its concurrency limit is
    taken before its middleware (``Pipeline._run``)."""
    func = spec.func
    timeout = spec.timeout

    async def call(payload: Any, ctx: Context) -> Outcome:
        token = set_current_context(ctx)
        try:
            if timeout is None:
                await func(payload, ctx)
            else:
                await _with_timeout(timeout, func, payload, ctx)
            if ctx.emitting:
                await ctx.wait_emitted()
        finally:
            reset_current_context(token)
        return _HANDLER_OK

    return call


def _endpoint(call: _HandlerCall) -> CallNext:
    """The end of a handler's middleware chain: the handler call itself."""

    def run_handler(c: Call) -> Awaitable[Outcome]:
        ctx = c.context
        assert ctx is not None
        return call(c.payload, ctx)

    return run_handler


def _from_outcome(spec: HandlerSpec, outcome: Outcome) -> _HandlerResult:
    """How a run ended whose handler-scope middleware answered for it (dedup)."""
    settlement = outcome.settlement
    if settlement is Settlement.ACK:
        done = outcome.cause is Cause.ALREADY_DONE or outcome.duplicates_skipped > 0
        return _HandlerResult(spec, Cause.ALREADY_DONE if done else Cause.OK)
    if settlement is Settlement.RETRY:
        return _HandlerResult(
            spec, Cause.DEFERRED, outcome.reason or "deferred", delay=outcome.retry_after
        )
    return _HandlerResult(spec, Cause.REJECTED, outcome.reason or "rejected", error_type="Reject")


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
