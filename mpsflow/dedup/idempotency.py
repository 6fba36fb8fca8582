"""Store-agnostic deduplication: which effect is this, and may this handler run it?

Modelled on AWS Lambda Powertools' idempotency, made async. A record per effect (scope +
handler; :mod:`mpsflow.dedup.effects` says what a scope is: one notification for event handlers, one
subtask result for subtask handlers) is claimed atomically with a lease tied to the processing
deadline; success turns it into COMPLETED for ``completed_ttl``; failure deletes it so a
redelivery runs the handler again. Because records are per effect, a redelivery reruns only
the handlers that did not complete, and a Change-mode notification runs only the subtask
results that are new or changed.

The engine's middleware stays a thin adapter::

    decision = await idem.begin(key, handler_name, phash, deadline=delivery.deadline)
    if decision.state is ClaimState.CLAIMED:
        try:
            await handler(...)
        except Exception:
            await idem.failed(decision)
            raise
        await idem.succeeded(decision)

When the store is down, :meth:`Idempotency.begin` raises
:class:`~mpsflow.errors.StoreUnavailable`: the delivery must be retried later, never processed
without a claim.

On a store with synchronous twins (``MemoryStore``; ``SQLiteStore`` while its process writes
the file alone) the same protocol runs without a coroutine: :meth:`Idempotency.begin_now`,
:meth:`~Idempotency.succeeded_now` and :meth:`~Idempotency.failed_now` give the same answers
synchronously, or None when only the coroutine can (another store, a twin that declined,
store faults to repair, ``wait_for_in_progress``).

Which notifications are the same one (the default notification key and the payload hash)
is :mod:`mpsflow.dedup.keys`'s job; its functions are importable from here too.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import secrets
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mpsflow.clock import Clock, SystemClock
from mpsflow.dedup.effects import record_key, subtask_keys, subtask_payload_hash
from mpsflow.dedup.keys import (
    default_notification_key,
    payload_hash,
    typed_notification_key,
    typed_payload_hash,
)
from mpsflow.dedup.stores.base import (
    DECLINED,
    Claim,
    ClaimState,
    IdempotencyStore,
    InPlaceStore,
    in_place,
    unavailable_message,
)
from mpsflow.errors import ConfigurationError, StoreUnavailable
from mpsflow.events import LiveStreamNotification, Notification
from mpsflow.events.envelope import document

if TYPE_CHECKING:
    from mpsflow.events import Subtask

__all__ = [
    "Decision",
    "Idempotency",
    "KeyFunction",
    "SubtaskKeyFunction",
    "default_notification_key",
    "payload_hash",
    "typed_notification_key",
    "typed_payload_hash",
]

_log = logging.getLogger("mpsflow.dedup.idempotency")

KeyFunction = Callable[[Mapping[str, Any]], str]
"""A user key function: the decoded notification (unwrapped) in, a non-empty key out."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :meth:`Idempotency.begin` for one (scope, handler) pair."""

    state: ClaimState
    """What the store says: CLAIMED (run it, then settle), COMPLETED (skip it), IN_PROGRESS
    (a live lease is held, by this process or another worker: retry the delivery later)."""
    record_key: str
    """The store key: scope + ``":"`` + handler name (see :mod:`mpsflow.dedup.effects`)."""
    token: str = ""
    """Owner token of the claim (CLAIMED only)."""
    retry_after: float = 0.0
    """IN_PROGRESS: seconds until the other lease ends (a hint for the redelivery delay)."""
    conflict: bool = False
    """The stored record was made from a different payload (same key, different content)."""
    lease_until: float = 0.0
    """CLAIMED: the monotonic time (``clock.monotonic()``) the claim's lease ends."""
    held_here: bool = False
    """IN_PROGRESS: the live claim is this process's own (a concurrent duplicate here, not
    one on another worker); False also when that cannot be told (another ``Idempotency``)."""


_CLAIMED = ClaimState.CLAIMED
_COMPLETED = ClaimState.COMPLETED
_new = object.__new__
# The slots of a Decision, set directly: a frozen dataclass's __init__ goes through
# object.__setattr__ once per field, and a CLAIMED decision is made for every handler run.
_set_state, _set_record, _set_token, _set_retry, _set_conflict, _set_lease, _set_here = (
    vars(Decision)[name].__set__
    for name in (
        "state",
        "record_key",
        "token",
        "retry_after",
        "conflict",
        "lease_until",
        "held_here",
    )
)


def _claimed(record: str, token: str, lease_until: float) -> Decision:
    """``Decision(CLAIMED, record, token=token, lease_until=lease_until)``, made cheaply."""
    decision: Decision = _new(Decision)
    _set_state(decision, _CLAIMED)
    _set_record(decision, record)
    _set_token(decision, token)
    _set_retry(decision, 0.0)
    _set_conflict(decision, False)
    _set_lease(decision, lease_until)
    _set_here(decision, False)
    return decision


SubtaskKeyFunction = Callable[["Notification", "Subtask"], str]
"""A user scope function for subtask handlers: the notification and one of its subtask
results in, a non-empty key naming that result (and the state that makes it a new effect)."""


class Idempotency:
    """Per-effect deduplication over an :class:`IdempotencyStore`.

    An effect is one handler run on one notification (event handlers) or on one subtask
    result (subtask handlers); :mod:`mpsflow.dedup.effects` defines both scopes. ``key_function``
    replaces the notification scope, ``subtask_key_function`` the subtask scope.

    ``completed_ttl`` is how long a completed record suppresses duplicates (7 days: MPS's
    SessionId dedup window is up to 7 days). A claim's lease is ``deadline - now +
    lease_margin`` when the delivery has a (monotonic) deadline, else ``lease_seconds``; once it
    ends, a crashed worker's claim lets a later delivery run. ``wait_for_in_progress`` > 0 makes
    :meth:`begin` poll a busy record for that long (sleeping on ``clock``) before answering BUSY.

    Store faults lose nothing and run nothing twice in this process:

    * a completion the store did not take is retried (by :meth:`begin` at most every
      ``retry_interval`` on the clock, and by :meth:`settle_pending`, which ``App.run`` calls
      every ``retry_interval``) until it is written or the claim's lease ends; until then the
      effect counts as done here, so a redelivery or a concurrent duplicate skips it;
    * a claim whose answer was lost (the store failed mid-call, so it may have written it) is
      released with its token as soon as the store answers again, instead of blocking
      redeliveries for its whole lease.
    """

    def __init__(
        self,
        store: IdempotencyStore,
        *,
        completed_ttl: float = 7 * 24 * 3600,
        lease_seconds: float = 300.0,
        lease_margin: float = 5.0,
        key_function: KeyFunction | None = None,
        subtask_key_function: SubtaskKeyFunction | None = None,
        clock: Clock | None = None,
        wait_for_in_progress: float = 0.0,
        poll_interval: float = 0.1,
        retry_interval: float = 1.0,
    ) -> None:
        if (
            completed_ttl <= 0
            or lease_seconds <= 0
            or lease_margin <= 0
            or poll_interval <= 0
            or retry_interval <= 0
        ):
            raise ConfigurationError(
                "completed_ttl, lease_seconds, lease_margin, poll_interval and retry_interval "
                "must be positive"
            )
        if wait_for_in_progress < 0:
            raise ConfigurationError("wait_for_in_progress must not be negative")
        self.store = store  # also finds its in-place twins (see the ``store`` property)
        self.completed_ttl = completed_ttl
        self.lease_seconds = lease_seconds
        self.lease_margin = lease_margin
        self.wait_for_in_progress = wait_for_in_progress
        self.poll_interval = poll_interval
        self.retry_interval = retry_interval
        self._key_function = key_function
        self._subtask_key_function = subtask_key_function
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._monotonic: Callable[[], float] = (
            time.monotonic if type(self._clock) is SystemClock else self._clock.monotonic
        )
        """The clock's monotonic time (``time.monotonic`` itself for the system clock)."""
        self._new_tokens()
        _EVERY.add(self)
        self._unwritten: dict[str, Decision] = {}
        """Completions the store did not take yet, by record key (done in this process)."""
        self._orphans: dict[tuple[str, str], None] = {}
        """(record key, token) of claims whose answer was lost: released once the store is back."""
        self._held: dict[str, Decision] = {}
        """This process's claims not settled yet, by record key: a duplicate that finds one
        of them in progress is told it is held here."""
        self._next_repair = -math.inf

    def __repr__(self) -> str:
        return f"Idempotency(store={self.store!r}, completed_ttl={self.completed_ttl})"

    def _new_tokens(self) -> None:
        """Owner tokens from here on: a random prefix and a counter (new in a forked child,
        whose tokens would otherwise be its siblings')."""
        self._tokens = f"{secrets.token_hex(8)}-"
        self._token_count = itertools.count(1)

    @property
    def store(self) -> IdempotencyStore:
        """The store records are kept in (may be replaced, e.g. by a test client)."""
        return self._store

    @store.setter
    def store(self, store: IdempotencyStore) -> None:
        self._store = store
        self._in_place: InPlaceStore | None = in_place(store)
        """The store's synchronous twins, when it has them (see ``begin_now``)."""

    @property
    def clock(self) -> Clock:
        """The clock leases, deadlines and retries are measured on."""
        return self._clock

    @property
    def unsettled(self) -> int:
        """Completions not yet written plus lost claims not yet released (0 when healthy)."""
        return len(self._unwritten) + len(self._orphans)

    def notification_key(self, raw: bytes | Mapping[str, Any]) -> str:
        """The dedup key of a notification: the user key function's, else the default one."""
        if self._key_function is None:
            return default_notification_key(raw)
        key = self._key_function(document(raw))
        if not isinstance(key, str) or not key:
            raise ConfigurationError("key_function must return a non-empty string")
        return key

    def payload_hash(self, raw: bytes | Mapping[str, Any]) -> str:
        """See :func:`payload_hash`."""
        return payload_hash(raw)

    def keys_for(
        self, notification: Notification | LiveStreamNotification, raw: bytes | Mapping[str, Any]
    ) -> tuple[str, str]:
        """``(notification key, payload hash)`` of an already decoded notification.

        Uses the typed notification instead of parsing ``raw`` again (the hot path of the
        dedup middleware); a user key function still gets the plain document.
        """
        if self._key_function is not None:
            return self.notification_key(raw), typed_payload_hash(notification)
        return typed_notification_key(notification), typed_payload_hash(notification)

    def subtask_keys_for(self, notification: Notification, subtask: Subtask) -> tuple[str, str]:
        """``(subtask scope, payload hash of the subtask result)``.

        See :mod:`mpsflow.dedup.effects`.
        """
        if self._subtask_key_function is None:
            return subtask_keys(notification, subtask)
        key = self._subtask_key_function(notification, subtask)
        if not isinstance(key, str) or not key:
            raise ConfigurationError("subtask_key_function must return a non-empty string")
        return key, subtask_payload_hash(subtask)

    async def begin(
        self,
        key: str,
        handler: str,
        payload_hash: str,
        *,
        deadline: float | None = None,
    ) -> Decision:
        """Claim ``key`` for ``handler`` and say whether to run, skip or retry later.

        ``deadline`` is the monotonic time (``clock.monotonic()``) by which processing must
        end. Raises StoreUnavailable when the store is down.
        """
        record = record_key(key, handler)
        if (self._unwritten or self._orphans) and await self._repair(record):
            return Decision(ClaimState.COMPLETED, record)
        monotonic = self._monotonic
        give_up_at = monotonic() + self.wait_for_in_progress
        while True:
            token = f"{self._tokens}{next(self._token_count):x}"
            lease = self._lease(deadline)
            lease_until = monotonic() + lease
            try:
                claim = await self._store.claim(
                    record, lease_seconds=lease, payload_hash=payload_hash, token=token
                )
            except StoreUnavailable:
                # The store may have written the claim before failing: release it once the
                # store answers again, so a redelivery does not wait out the whole lease.
                self._orphans[(record, token)] = None
                raise
            state = claim.state
            if state is _CLAIMED:
                decision = self._held[record] = _claimed(record, claim.token, lease_until)
                return decision
            if state is not _COMPLETED:
                remaining = give_up_at - monotonic()
                if remaining > 0:
                    await self._clock.sleep(min(self.poll_interval, remaining))
                    continue
            return self._found(claim, key, handler, record, payload_hash)

    def begin_now(
        self,
        key: str,
        handler: str,
        payload_hash: str,
        *,
        deadline: float | None = None,
    ) -> Decision | None:
        """:meth:`begin` without a coroutine, on a store with synchronous twins.

        The decision ``begin`` would make, or None when only ``begin`` can make it: the store
        has no synchronous twins (see :func:`~mpsflow.dedup.stores.base.in_place`) or its
        twin declined, store faults are waiting to be repaired, or ``wait_for_in_progress``
        may make it sleep.
        Raises StoreUnavailable as ``begin`` does.
        """
        store = self._in_place
        if store is None or self._unwritten or self._orphans or self.wait_for_in_progress:
            return None
        record = record_key(key, handler)
        token = f"{self._tokens}{next(self._token_count):x}"
        now = self._monotonic()
        if deadline is None:
            lease = self.lease_seconds
        else:
            lease = max(deadline - now, 0.0) + self.lease_margin
        try:
            found = store.claim_now(
                record, lease_seconds=lease, payload_hash=payload_hash, token=token
            )
        except StoreUnavailable:
            self._orphans[(record, token)] = None  # as in ``begin``
            raise
        if found is None:
            decision = self._held[record] = _claimed(record, token, now + lease)
            return decision
        if found is DECLINED:
            return None
        return self._found(found, key, handler, record, payload_hash)

    def _found(
        self, claim: Claim, key: str, handler: str, record: str, payload_hash: str
    ) -> Decision:
        """The decision on a record someone else holds (``claim`` is not CLAIMED)."""
        conflict = bool(payload_hash and claim.payload_hash and payload_hash != claim.payload_hash)
        if claim.state is ClaimState.COMPLETED:
            if conflict:
                _log.warning(
                    "idempotency conflict: %s already completed for handler %s from a "
                    "different payload; skipping this one",
                    key,
                    handler,
                    extra={"idempotency_key": key, "handler": handler},
                )
            return Decision(ClaimState.COMPLETED, record, conflict=conflict)
        retry_after = max(claim.expires_at - self._clock.time(), 0.0)
        mine = self._held.get(record)
        here = mine is not None and self._monotonic() < mine.lease_until
        if mine is not None and not here:  # its lease ended: whoever holds it now, not this
            self._let_go(mine)
        return Decision(
            ClaimState.IN_PROGRESS,
            record,
            retry_after=retry_after,
            conflict=conflict,
            held_here=here,
        )

    async def succeeded(self, decision: Decision) -> bool:
        """Record the handler as COMPLETED; False (and a log line) when that was not possible.

        When the store is down the completion is kept in this process (the effect counts as
        done here) and retried until written or the lease ends (see the class docstring).
        False means the lease ended before completion (another delivery may run the handler
        again) or the completion is not written yet. The handler did succeed: never raises.
        """
        _require_run(decision)
        try:
            done = await self._store.complete(
                decision.record_key, decision.token, ttl_seconds=self.completed_ttl
            )
        except StoreUnavailable as exc:
            return self._not_completed(decision, exc)
        finally:
            self._let_go(decision)
        if not done:
            self._lease_lost(decision)
        return done

    def succeeded_now(self, decision: Decision) -> bool | None:
        """:meth:`succeeded` without a coroutine; None when only ``succeeded`` can do it (the
        store has no synchronous twins)."""
        store = self._in_place
        if store is None:
            return None
        if decision.state is not _CLAIMED:
            _require_run(decision)
        try:
            done = store.complete_now(
                decision.record_key, decision.token, ttl_seconds=self.completed_ttl
            )
        except StoreUnavailable as exc:
            self._let_go(decision)
            return self._not_completed(decision, exc)
        if done is None:
            return None
        held = self._held  # self._let_go(decision), inline: once per handler run
        if held.get(decision.record_key) is decision:
            del held[decision.record_key]
        if not done:
            self._lease_lost(decision)
        return done

    def _let_go(self, decision: Decision) -> None:
        """``decision``'s claim is settled (or left to the store-fault repairs): no longer
        held here."""
        held = self._held
        if held.get(decision.record_key) is decision:
            del held[decision.record_key]

    def _not_completed(self, decision: Decision, exc: StoreUnavailable) -> bool:
        self._unwritten[decision.record_key] = decision
        _log.warning(
            "could not record %s as completed (%s); retrying until its lease ends",
            decision.record_key,
            unavailable_message(exc, self._store),
        )
        return False

    @staticmethod
    def _lease_lost(decision: Decision) -> None:
        _log.warning(
            "lease on %s ended before the handler completed; it may run again",
            decision.record_key,
        )

    async def failed(self, decision: Decision) -> bool:
        """Delete the claim so a redelivery runs the handler again; False if it was gone.

        When the store is down the claim is released as soon as it answers again (or ends
        with its lease).
        """
        _require_run(decision)
        try:
            return await self._store.release(decision.record_key, decision.token)
        except StoreUnavailable as exc:
            return self._not_released(decision, exc)
        finally:
            self._let_go(decision)

    def failed_now(self, decision: Decision) -> bool | None:
        """:meth:`failed` without a coroutine; None when only ``failed`` can do it (the store
        has no synchronous twins)."""
        store = self._in_place
        if store is None:
            return None
        _require_run(decision)
        try:
            released = store.release_now(decision.record_key, decision.token)
        except StoreUnavailable as exc:
            self._let_go(decision)
            return self._not_released(decision, exc)
        if released is not None:
            self._let_go(decision)
        return released

    def _not_released(self, decision: Decision, exc: StoreUnavailable) -> bool:
        _log.warning(
            "could not release %s (%s); releasing it once the store is back",
            decision.record_key,
            unavailable_message(exc, self._store),
        )
        self._orphans[(decision.record_key, decision.token)] = None
        return False

    async def settle_pending(self) -> int:
        """Write what store faults left unsettled now; returns how many are still left.

        :meth:`begin` does this by itself (at most every ``retry_interval``); call it from a
        timer, or at shutdown, to settle without waiting for the next delivery.
        """
        self._next_repair = -math.inf
        await self._repair("")
        return self.unsettled

    async def _repair(self, record: str) -> bool:
        """Retry unwritten completions and lost claims; True when ``record`` is done here.

        The record being begun is always retried; the others at most every
        ``retry_interval``, so a store that stays down costs one extra call per interval.
        """
        pending = self._unwritten.get(record)
        done_here = False
        if pending is not None and not self._expired(pending):
            done_here = True
            await self._write_completion(pending)
        # This key's own lost claim would make its redelivery wait out the whole lease.
        await self._release_orphans(record)
        now = self._clock.monotonic()
        if now < self._next_repair:
            return done_here
        self._next_repair = now + self.retry_interval
        for key, decision in list(self._unwritten.items()):
            if key != record and not await self._write_completion(decision):
                return done_here
        await self._release_orphans(None)
        return done_here

    async def _release_orphans(self, record: str | None) -> None:
        """Release the lost claims of ``record`` (every one with None) until the store fails."""
        for orphan in [o for o in self._orphans if record is None or o[0] == record]:
            try:
                await self._store.release(*orphan)
            except StoreUnavailable:
                return
            self._orphans.pop(orphan, None)

    def _expired(self, decision: Decision) -> bool:
        """Forget an unwritten completion whose lease ended (another worker may run it now)."""
        if self._clock.monotonic() < decision.lease_until:
            return False
        self._unwritten.pop(decision.record_key, None)
        _log.error(
            "completion of %s was never written before its lease ended; "
            "a redelivery may run the handler again",
            decision.record_key,
        )
        return True

    async def _write_completion(self, decision: Decision) -> bool:
        """One more try at an unwritten completion; False while the store is still down."""
        if self._expired(decision):
            return True
        try:
            done = await self._store.complete(
                decision.record_key, decision.token, ttl_seconds=self.completed_ttl
            )
        except StoreUnavailable:
            return False
        self._unwritten.pop(decision.record_key, None)
        if done:
            _log.info("recorded %s as completed after a store fault", decision.record_key)
        else:
            _log.warning(
                "lease on %s ended before its completion could be written; it may run again",
                decision.record_key,
            )
        return True

    def _lease(self, deadline: float | None) -> float:
        if deadline is None:
            return self.lease_seconds
        return max(deadline - self._monotonic(), 0.0) + self.lease_margin


_EVERY: weakref.WeakSet[Idempotency] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for idempotency in list(_EVERY):
        idempotency._new_tokens()
        idempotency._held.clear()  # the parent's claims, not this process's


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _require_run(decision: Decision) -> None:
    if decision.state is not ClaimState.CLAIMED:
        raise ValueError(f"only a CLAIMED decision holds a claim, not {decision.state.value}")
