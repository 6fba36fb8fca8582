"""MemoryStore specifics: the bound, its eviction rules, and agreement with SQLiteStore."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpsflow.clock import FakeClock
from mpsflow.dedup.stores import IdempotencyStore, MemoryStore, SQLiteStore
from mpsflow.dedup.stores.base import ClaimState
from mpsflow.errors import StoreUnavailable

LEASE = 30.0


async def _claim(store: MemoryStore, key: str) -> ClaimState:
    return (await store.claim(key, lease_seconds=LEASE, payload_hash="h")).state


async def _claim_and_complete(store: MemoryStore, key: str, ttl: float = 100.0) -> None:
    claim = await store.claim(key, lease_seconds=LEASE, payload_hash="h")
    assert await store.complete(key, claim.token, ttl_seconds=ttl)


async def test_full_of_live_leases_refuses_instead_of_evicting_one() -> None:
    store = MemoryStore(max_entries=3, clock=FakeClock())
    for key in "abc":
        assert await _claim(store, key) is ClaimState.CLAIMED
    with pytest.raises(StoreUnavailable, match="full of live leases"):
        await _claim(store, "d")
    assert len(store) == 3
    assert all([await _claim(store, key) is ClaimState.IN_PROGRESS for key in "abc"])


async def test_oldest_completed_is_evicted_first_in_completion_order() -> None:
    clock = FakeClock()
    store = MemoryStore(max_entries=3, clock=clock)
    claims = {key: await store.claim(key, lease_seconds=LEASE, payload_hash="h") for key in "abc"}
    assert await store.complete("b", claims["b"].token, ttl_seconds=100)
    assert await store.complete("a", claims["a"].token, ttl_seconds=100)

    assert await _claim(store, "d") is ClaimState.CLAIMED
    assert len(store) == 3
    assert await _claim(store, "a") is ClaimState.COMPLETED
    assert await _claim(store, "c") is ClaimState.IN_PROGRESS
    assert await _claim(store, "d") is ClaimState.IN_PROGRESS
    # "b" completed first, so it went first; now "a" goes for "b" ...
    assert await _claim(store, "b") is ClaimState.CLAIMED
    # ... and with only live leases left (b, c, d), nothing more can go.
    with pytest.raises(StoreUnavailable):
        await _claim(store, "e")


async def test_expired_records_go_before_live_completed_ones() -> None:
    clock = FakeClock()
    store = MemoryStore(max_entries=3, clock=clock)
    await _claim_and_complete(store, "long", ttl=100)
    await _claim_and_complete(store, "short", ttl=10)
    assert await _claim(store, "live") is ClaimState.CLAIMED
    clock.advance(20)

    assert await _claim(store, "new") is ClaimState.CLAIMED
    assert await _claim(store, "long") is ClaimState.COMPLETED
    assert await _claim(store, "live") is ClaimState.IN_PROGRESS


async def test_expired_leases_are_evicted_too() -> None:
    clock = FakeClock()
    store = MemoryStore(max_entries=2, clock=clock)
    assert await _claim(store, "a") is ClaimState.CLAIMED
    assert await _claim(store, "b") is ClaimState.CLAIMED
    clock.advance(LEASE)
    assert await _claim(store, "c") is ClaimState.CLAIMED
    assert len(store) == 1


async def test_churn_on_few_keys_stays_within_the_bound() -> None:
    clock = FakeClock()
    store = MemoryStore(max_entries=10, clock=clock)
    for round_ in range(500):
        key = f"k{round_ % 7}"
        claim = await store.claim(key, lease_seconds=LEASE, payload_hash="h")
        if claim.state is ClaimState.CLAIMED:
            if round_ % 2:
                assert await store.release(key, claim.token)
            else:
                assert await store.complete(key, claim.token, ttl_seconds=5)
        clock.advance(1)
        assert len(store) <= 7


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryStore(max_entries=0)


async def test_repr_and_close() -> None:
    store = MemoryStore(max_entries=5)
    await _claim_and_complete(store, "a")
    assert repr(store) == "MemoryStore(entries=1, max_entries=5)"
    await store.close()
    assert len(store) == 0


_KEYS = st.sampled_from(["a", "b"])
_OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("claim"), _KEYS, st.sampled_from([5.0, 30.0])),
        st.tuples(st.just("complete"), _KEYS, st.booleans()),
        st.tuples(st.just("release"), _KEYS, st.booleans()),
        st.tuples(st.just("advance"), st.sampled_from([5.0, 10.0, 30.0])),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(operations=_OPERATIONS)
def test_memory_agrees_with_sqlite_on_any_sequence(operations: list[tuple[Any, ...]]) -> None:
    anyio.run(_compare, operations)


async def _compare(operations: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    stores: list[IdempotencyStore] = [
        MemoryStore(clock=clock),
        SQLiteStore(":memory:", clock=clock),
    ]
    tokens: list[dict[str, str]] = [{}, {}]
    try:
        for operation in operations:
            if operation[0] == "advance":
                clock.advance(operation[1])
                continue
            outcomes = []
            for store, owned in zip(stores, tokens, strict=True):
                outcomes.append(await _apply(store, owned, operation))
            assert outcomes[0] == outcomes[1], operation
    finally:
        for store in stores:
            await store.close()


async def _apply(store: IdempotencyStore, owned: dict[str, str], operation: tuple[Any, ...]) -> Any:
    name, key, arg = operation
    if name == "claim":
        claim = await store.claim(key, lease_seconds=arg, payload_hash=f"h-{key}")
        if claim.state is ClaimState.CLAIMED:
            owned[key] = claim.token
        return claim.state, claim.payload_hash, claim.expires_at, bool(claim.token)
    token = owned.get(key, "") if arg else "stranger"
    if name == "complete":
        return await store.complete(key, token, ttl_seconds=20)
    return await store.release(key, token)
