"""Dedup (idempotency) middleware: each effect runs to success at most once.

Runs at handler scope, so records are per effect (:mod:`mpsflow.dedup.effects`): an event handler's
scope is the notification, a subtask handler's is one subtask result. A redelivery skips the
effects that already completed and reruns only the ones that failed; a Change-mode
notification runs only the subtask results that are new or changed. A concurrent duplicate
held by this process or another worker makes this delivery retry later (``Cause.DEFERRED``)
instead of running twice (the reason says when this process holds it); a store that is down
makes it retry later too, never run unclaimed.

The store's :class:`~mpsflow.dedup.stores.base.ClaimState` says what the claim found; this
middleware turns it into the pipeline's words: COMPLETED is ``Cause.ALREADY_DONE``,
IN_PROGRESS is ``Cause.DEFERRED``, CLAIMED runs the handler.

On a store that settles in place (``MemoryStore``) a handler run awaits nothing here: the claim
and the settlement are the idempotency's synchronous twins (``begin_now``, ``succeeded_now``,
``failed_now``).

A store that is down is logged at WARNING on ``mpsflow.dedup.idempotency`` with the store's
address and the cause: the first failure at once, then at most one line per ``log_interval``
seconds (on the idempotency's clock) saying how many handler runs were deferred meanwhile, and
an INFO line once the store answers again (at most one per ``log_interval`` too).
"""

from __future__ import annotations

import logging

import anyio

from mpsflow._throttle import LogThrottle, held_back
from mpsflow.clock import Clock
from mpsflow.dedup.effects import effect_key
from mpsflow.dedup.idempotency import Decision, Idempotency
from mpsflow.dedup.stores.base import (
    ClaimState,
    defined_together,
    describe_store,
    settles_in_place,
    unavailable_message,
)
from mpsflow.delivery import Cause, Outcome, Settlement
from mpsflow.errors import StoreUnavailable
from mpsflow.events import Notification
from mpsflow.middleware.base import Call, CallNext

__all__ = ["DedupMiddleware"]

_log = logging.getLogger("mpsflow.dedup.idempotency")

_ALREADY_DONE = Outcome(
    Settlement.ACK, reason="already completed", cause=Cause.ALREADY_DONE, duplicates_skipped=1
)
_HELD_HERE = "a duplicate is in progress in this process"
_HELD_ELSEWHERE = "a duplicate is in progress elsewhere or its worker stopped"
"""Why a run is deferred: this process holds the claim; or it cannot tell (another worker's
claim, or one whose worker stopped and whose lease has not ended)."""
_CLAIMED = ClaimState.CLAIMED
_COMPLETED = ClaimState.COMPLETED
_ACK = Settlement.ACK
_TWINS = (("begin", "begin_now"), ("succeeded", "succeeded_now"), ("failed", "failed_now"))


class DedupMiddleware:
    """Claims before a handler runs, completes on success, releases on failure."""

    def __init__(
        self,
        idempotency: Idempotency,
        *,
        store_retry_after: float = 5.0,
        busy_retry_after: float = 5.0,
        clock: Clock | None = None,
        log_interval: float = 10.0,
    ) -> None:
        self.idempotency = idempotency
        self.store_retry_after = store_retry_after
        self.busy_retry_after = busy_retry_after
        """Retry hint while a duplicate runs elsewhere: at most this, however long its lease
        (the duplicate usually finishes in milliseconds; its lease bounds only a crash)."""
        self._shield = not settles_in_place(idempotency.store)
        """Shield the settling store call from cancellation (not needed when it cannot wait)."""
        self._now = defined_together(idempotency, _TWINS)
        """Try the idempotency's synchronous twins first (unless a subclass overrides only the
        coroutines: then they are what runs)."""
        clock = clock or idempotency.clock
        self._throttle = LogThrottle(clock, log_interval)
        """Store-down lines: the first, then one per ``log_interval``."""
        self._back_throttle = LogThrottle(clock, log_interval)
        """Store-back lines, so a flapping store is not a line per flap either."""
        self._deferred = 0
        """Handler runs deferred since the store last answered (0 while it is healthy)."""

    def __repr__(self) -> str:
        return f"DedupMiddleware({self.idempotency!r})"

    def _keys(self, call: Call) -> tuple[str, str]:
        """(notification key, payload hash), computed once per delivery (``dedup_keys``)."""
        delivery = call.delivery
        keys = delivery.dedup_keys
        if keys is None:
            body = delivery.body
            notification = call.notification
            if notification is None:
                keys = (
                    self.idempotency.notification_key(body),
                    self.idempotency.payload_hash(body),
                )
            else:
                keys = self.idempotency.keys_for(notification, body)
            delivery.dedup_keys = keys
        return keys

    def _scope(self, call: Call) -> tuple[str, str]:
        """(scope, payload hash) of this handler's effect: its subtask result's for a subtask
        handler, else the notification's."""
        ctx = call.context
        notification = call.notification
        if ctx is not None and isinstance(notification, Notification):
            subtask = ctx.subtask
            if subtask is not None:
                return self.idempotency.subtask_keys_for(notification, subtask)
        return self._keys(call)

    async def __call__(self, call: Call, call_next: CallNext) -> Outcome:
        handler = call.handler
        if handler is None or call.scope != "handler":
            return await call_next(call)
        key, payload_hash = self._scope(call)
        name = handler.name
        idempotency = self.idempotency
        deadline = call.delivery.deadline
        now = self._now
        try:
            decision = (
                idempotency.begin_now(key, name, payload_hash, deadline=deadline) if now else None
            )
            if decision is None:
                decision = await idempotency.begin(key, name, payload_hash, deadline=deadline)
        except StoreUnavailable as exc:
            self._store_down(exc, name)
            return Outcome(
                Settlement.RETRY,
                retry_after=self.store_retry_after,
                reason="idempotency store unavailable",
                cause=Cause.DEFERRED,
            )
        if self._deferred:
            self._store_back()
        ctx = call.context
        if ctx is not None:
            ctx.effect_key = effect_key(decision.record_key)
        claim = decision.state
        if claim is not _CLAIMED:
            if claim is _COMPLETED:
                return _ALREADY_DONE
            return Outcome(
                Settlement.RETRY,
                retry_after=min(max(decision.retry_after, 1.0), self.busy_retry_after),
                reason=_HELD_HERE if decision.held_here else _HELD_ELSEWHERE,
                cause=Cause.DEFERRED,
            )
        try:
            outcome = await call_next(call)
        except BaseException:
            if not now or idempotency.failed_now(decision) is None:
                await self._settle(decision, succeeded=False)
            raise
        if outcome.settlement is _ACK:
            if not now or idempotency.succeeded_now(decision) is None:
                await self._settle(decision, succeeded=True)
        elif not now or idempotency.failed_now(decision) is None:
            await self._settle(decision, succeeded=False)
        return outcome

    def _store_down(self, exc: StoreUnavailable, handler: str) -> None:
        self._deferred += 1
        held = self._throttle.admit()
        if held is None:
            return
        more = held_back(held, "handler runs deferred", by_kind=False)
        _log.warning(
            "%s; handler %s will be retried in %gs%s",
            unavailable_message(exc, self.idempotency.store),
            handler,
            self.store_retry_after,
            more,
            extra={"handler": handler, "suppressed": held.total()},
        )

    def _store_back(self) -> None:
        if self._back_throttle.admit() is None:
            return
        deferred, self._deferred = self._deferred, 0
        _log.info(
            "idempotency store %s answers again; %d handler runs were deferred while it was "
            "unavailable",
            describe_store(self.idempotency.store),
            deferred,
        )

    async def _settle(self, decision: Decision, *, succeeded: bool) -> None:
        settle = self.idempotency.succeeded if succeeded else self.idempotency.failed
        if not self._shield:
            await settle(decision)
            return
        with anyio.CancelScope(shield=True):
            await settle(decision)
