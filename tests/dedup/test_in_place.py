"""The in-place path of dedup on ``MemoryStore``: the store's synchronous twins, the
idempotency's ``begin_now``/``succeeded_now``/``failed_now``, the middleware that awaits no
store call, and the one-pass subtask keys (the strings the SQLite and Redis stores persist)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import anyio
import pytest

from mpsflow.clock import FakeClock
from mpsflow.codec import decode_any
from mpsflow.dedup.effects import (
    effect_key,
    record_key,
    subtask_keys,
    subtask_payload_hash,
    subtask_scope,
)
from mpsflow.dedup.idempotency import Decision, Idempotency
from mpsflow.dedup.middleware import DedupMiddleware
from mpsflow.dedup.stores import Claim, MemoryStore, SQLiteStore
from mpsflow.dedup.stores.base import ClaimState, in_place
from mpsflow.delivery import Cause, Delivery, Outcome, Settlement
from mpsflow.errors import StoreUnavailable
from mpsflow.events import Notification, collect_subtasks
from mpsflow.middleware.base import Call, HandlerInfo
from tests.guarantee.faults import FaultyStore
from tests.plugins.samples import SAMPLE_PATHS, SAMPLES_DIR

LEASE = 60.0
_ACK = Outcome(Settlement.ACK)


@pytest.fixture
def idem(store: MemoryStore, clock: FakeClock) -> Idempotency:
    return Idempotency(store, clock=clock, lease_seconds=LEASE)


# --- the subtask keys ------------------------------------------------------------------------


def _notifications() -> list[tuple[str, Notification]]:
    out = []
    for path in SAMPLE_PATHS:
        notification = decode_any(path.read_bytes())
        if isinstance(notification, Notification):
            out.append((path.name, notification))
    return out


def test_subtask_keys_are_the_scope_and_the_payload_hash_on_every_sample() -> None:
    seen = 0
    for name, notification in _notifications():
        for sub in collect_subtasks(notification):
            expected = (subtask_scope(notification, sub), subtask_payload_hash(sub))
            assert subtask_keys(notification, sub) == expected, (name, sub.identity)
            seen += 1
    assert seen > 50


def test_subtask_keys_keep_the_format_stores_persist() -> None:
    """The values the implementation before the in-place path gave (SQLite and Redis keep them
    as record keys and payload hashes, handlers pass the effect key downstream)."""
    path = SAMPLES_DIR / "01_workflow_task_seed_verbatim.json"
    notification = decode_any(path.read_bytes())
    assert isinstance(notification, Notification)
    [sub] = collect_subtasks(notification, {"Transcode"})
    scope, phash = subtask_keys(notification, sub)
    task = "WorkflowTask:245****654-WorkflowTask-f46dac7fe2436c47******d71946986t0"
    assert scope == f"{task}:sub:1fd7d107ea333ff13b52495269ee0e0a"
    assert phash == "c66ce00306d345bb6c8c1c6d72dd0dc3"
    assert effect_key(record_key(scope, "h")) == "b27439031377942740f0f3c8f3885517"


# --- which stores have twins -----------------------------------------------------------------


class _FailingRelease(MemoryStore):
    async def release(self, key: str, token: str) -> bool:
        raise StoreUnavailable("idempotency store memory unavailable (refused)")


class _BothReleases(MemoryStore):
    async def release(self, key: str, token: str) -> bool:
        return self.release_now(key, token)

    def release_now(self, key: str, token: str) -> bool:
        raise StoreUnavailable("idempotency store memory unavailable (refused)")


async def test_only_a_store_whose_twins_are_its_coroutines_is_called_in_place(
    tmp_path: Path,
) -> None:
    memory = MemoryStore()
    assert in_place(memory) is memory
    # A double that overrides a coroutine alone is called through it ...
    assert in_place(_FailingRelease()) is None
    # ... one that overrides the coroutine and its twin in one class is taken at its word.
    both = _BothReleases()
    assert in_place(both) is both
    patched = MemoryStore()
    patched.claim = memory.claim  # type: ignore[method-assign]
    assert in_place(patched) is None
    assert in_place(FaultyStore(MemoryStore())) is None
    # The SQLite store answers in place too; its twins may decline (tests/dedup/stores/
    # test_sqlite_in_place.py).
    sqlite = SQLiteStore(tmp_path / "idem.sqlite3")
    try:
        assert in_place(sqlite) is sqlite
    finally:
        await sqlite.close()


async def test_a_replaced_store_is_looked_at_again() -> None:
    idem = Idempotency(MemoryStore())
    assert idem.begin_now("n", "h", "") is not None
    proxy = FaultyStore(MemoryStore())  # no twins: every call is a coroutine
    idem.store = proxy  # as TestClient does
    assert idem.store is proxy
    assert idem.begin_now("n", "h", "") is None
    decision = await idem.begin("n", "h", "")
    assert decision.state is ClaimState.CLAIMED
    assert idem.succeeded_now(decision) is None
    assert idem.failed_now(decision) is None
    assert await idem.succeeded(decision)
    await proxy.close()
    idem.store = MemoryStore()
    assert idem.begin_now("n", "h", "") is not None


# --- MemoryStore's twins ---------------------------------------------------------------------


async def test_the_twins_answer_as_the_coroutines_do(store: MemoryStore, clock: FakeClock) -> None:
    assert store.claim_now("k", lease_seconds=LEASE, payload_hash="h1", token="t1") is None
    busy = store.claim_now("k", lease_seconds=LEASE, payload_hash="h2", token="t2")
    assert busy == Claim(ClaimState.IN_PROGRESS, payload_hash="h1", expires_at=clock.time() + LEASE)
    assert busy == await store.claim("k", lease_seconds=LEASE, payload_hash="h2")
    assert not store.complete_now("k", "t2", ttl_seconds=100)
    assert not store.release_now("k", "t2")
    assert store.complete_now("k", "t1", ttl_seconds=100)
    done = store.claim_now("k", lease_seconds=LEASE, payload_hash="h3", token="t3")
    assert done == Claim(ClaimState.COMPLETED, payload_hash="h1", expires_at=clock.time() + 100)
    assert not store.release_now("k", "t1")

    assert store.claim_now("r", lease_seconds=LEASE, payload_hash="h", token="t4") is None
    assert store.release_now("r", "t4")
    assert store.claim_now("r", lease_seconds=LEASE, payload_hash="h", token="t5") is None
    clock.advance(LEASE)
    assert not store.complete_now("r", "t5", ttl_seconds=100)  # the lease ended
    assert (await store.claim("r", lease_seconds=LEASE, payload_hash="h")).state is (
        ClaimState.CLAIMED
    )


def test_the_twins_check_their_arguments_and_the_store(store: MemoryStore) -> None:
    with pytest.raises(ValueError, match="token"):
        store.claim_now("k", lease_seconds=LEASE, payload_hash="h", token="")
    with pytest.raises(ValueError, match="lease_seconds"):
        store.claim_now("k", lease_seconds=0, payload_hash="h", token="t")
    with pytest.raises(ValueError, match="ttl_seconds"):
        store.complete_now("k", "t", ttl_seconds=-1)
    anyio.run(store.close)
    with pytest.raises(StoreUnavailable, match="closed"):
        store.claim_now("k", lease_seconds=LEASE, payload_hash="h", token="t")
    with pytest.raises(StoreUnavailable, match="closed"):
        store.complete_now("k", "t", ttl_seconds=1)
    with pytest.raises(StoreUnavailable, match="closed"):
        store.release_now("k", "t")


# --- Idempotency.begin_now -------------------------------------------------------------------


async def test_begin_now_decides_as_begin_does(
    idem: Idempotency, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    claimed = idem.begin_now("n1", "h", "hash-1", deadline=clock.monotonic() + 10)
    assert claimed is not None
    assert (claimed.state, claimed.record_key) == (ClaimState.CLAIMED, "n1:h")
    assert claimed.lease_until == clock.monotonic() + 10 + idem.lease_margin
    assert claimed.token

    busy = idem.begin_now("n1", "h", "hash-1")
    assert busy == await idem.begin("n1", "h", "hash-1")
    assert busy == Decision(
        ClaimState.IN_PROGRESS, "n1:h", retry_after=10 + idem.lease_margin, held_here=True
    )

    assert idem.succeeded_now(claimed) is True
    done = idem.begin_now("n1", "h", "hash-1")
    assert done == await idem.begin("n1", "h", "hash-1") == Decision(ClaimState.COMPLETED, "n1:h")
    with caplog.at_level(logging.WARNING, logger="mpsflow.dedup.idempotency"):
        other = idem.begin_now("n1", "h", "hash-2")
    assert other == Decision(ClaimState.COMPLETED, "n1:h", conflict=True)
    [line] = caplog.records
    assert "conflict" in line.getMessage()

    again = idem.begin_now("n1", "other", "hash-1")
    assert again is not None
    assert idem.failed_now(again) is True
    assert idem.failed_now(again) is False  # released already
    assert idem.succeeded_now(again) is False
    with pytest.raises(ValueError, match="CLAIMED"):
        idem.succeeded_now(done)


def test_a_claimed_decision_is_an_ordinary_frozen_decision(idem: Idempotency) -> None:
    fast = idem.begin_now("n1", "h", "")
    assert fast is not None
    slow = Decision(ClaimState.CLAIMED, "n1:h", token=fast.token, lease_until=fast.lease_until)
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert repr(fast) == repr(slow)
    assert (fast.retry_after, fast.conflict) == (0.0, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.token = "mine"  # type: ignore[misc]


async def test_begin_now_leaves_to_begin_what_needs_awaiting(
    store: MemoryStore, clock: FakeClock
) -> None:
    waiting = Idempotency(store, clock=clock, wait_for_in_progress=1.0)
    assert waiting.begin_now("n1", "h", "") is None

    full = Idempotency(MemoryStore(max_entries=1, clock=clock), clock=clock)
    assert full.begin_now("a", "h", "") is not None
    with pytest.raises(StoreUnavailable, match="full of live leases"):
        full.begin_now("b", "h", "")
    assert full.unsettled == 1  # the claim whose answer was lost, as ``begin`` keeps it
    assert full.begin_now("c", "h", "") is None  # ``begin`` repairs first
    with pytest.raises(StoreUnavailable):
        await full.begin("c", "h", "")


async def test_a_completion_the_closed_store_refused_is_kept(
    idem: Idempotency, store: MemoryStore
) -> None:
    decision = idem.begin_now("n1", "h", "")
    assert decision is not None
    await store.close()
    assert idem.succeeded_now(decision) is False
    assert idem.unsettled == 1
    assert idem.begin_now("n1", "h", "") is None


# --- the middleware --------------------------------------------------------------------------


class _Spy(MemoryStore):
    """A MemoryStore that counts its coroutine calls (its twins are its own, so it is in place)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.awaited: list[str] = []

    async def claim(
        self, key: str, *, lease_seconds: float, payload_hash: str, token: str = ""
    ) -> Claim:
        self.awaited.append("claim")
        return await super().claim(
            key, lease_seconds=lease_seconds, payload_hash=payload_hash, token=token
        )

    def claim_now(
        self, key: str, *, lease_seconds: float, payload_hash: str, token: str
    ) -> Claim | None:
        return super().claim_now(
            key, lease_seconds=lease_seconds, payload_hash=payload_hash, token=token
        )

    async def complete(self, key: str, token: str, *, ttl_seconds: float) -> bool:
        self.awaited.append("complete")
        return await super().complete(key, token, ttl_seconds=ttl_seconds)

    def complete_now(self, key: str, token: str, *, ttl_seconds: float) -> bool:
        return super().complete_now(key, token, ttl_seconds=ttl_seconds)

    async def release(self, key: str, token: str) -> bool:
        self.awaited.append("release")
        return await super().release(key, token)

    def release_now(self, key: str, token: str) -> bool:
        return super().release_now(key, token)


def _call(handler: str) -> Call:
    body = b'{"EventType": "WorkflowTask", "WorkflowTaskEvent": {"TaskId": "t1"}}'
    return Call(Delivery(body), scope="handler", handler=HandlerInfo(handler, "WorkflowTask"))


async def test_the_middleware_awaits_no_store_call_on_an_in_place_store(clock: FakeClock) -> None:
    store = _Spy(clock)
    idem = Idempotency(store, clock=clock)
    middleware = DedupMiddleware(idem)

    async def ok(_call: Call) -> Outcome:
        return _ACK

    async def retry(_call: Call) -> Outcome:
        return Outcome(Settlement.RETRY)

    async def bad(_call: Call) -> Outcome:
        raise RuntimeError("boom")

    entered = anyio.Event()

    async def slow(_call: Call) -> Outcome:
        entered.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    assert await middleware(_call("ok"), ok) is _ACK
    assert (await middleware(_call("ok"), ok)).cause is Cause.ALREADY_DONE
    assert (await middleware(_call("retry"), retry)).settlement is Settlement.RETRY
    with pytest.raises(RuntimeError, match="boom"):
        await middleware(_call("bad"), bad)
    async with anyio.create_task_group() as tg:
        tg.start_soon(middleware, _call("slow"), slow)
        await entered.wait()
        tg.cancel_scope.cancel()

    assert store.awaited == []
    # Completed once; released after the retry, the failure and the cancellation.
    for handler, state in [
        ("ok", ClaimState.COMPLETED),
        ("retry", ClaimState.CLAIMED),
        ("bad", ClaimState.CLAIMED),
        ("slow", ClaimState.CLAIMED),
    ]:
        key, phash = middleware._keys(_call(handler))
        assert (await idem.begin(key, handler, phash)).state is state, handler


async def test_an_idempotency_that_overrides_begin_alone_is_called_through_it(
    store: MemoryStore, clock: FakeClock
) -> None:
    begun: list[str] = []

    class Counting(Idempotency):
        async def begin(
            self, key: str, handler: str, payload_hash: str, *, deadline: float | None = None
        ) -> Decision:
            begun.append(handler)
            return await super().begin(key, handler, payload_hash, deadline=deadline)

    async def ok(_call: Call) -> Outcome:
        return _ACK

    middleware = DedupMiddleware(Counting(store, clock=clock))
    assert await middleware(_call("ok"), ok) is _ACK
    assert (await middleware(_call("ok"), ok)).cause is Cause.ALREADY_DONE
    assert begun == ["ok", "ok"]
