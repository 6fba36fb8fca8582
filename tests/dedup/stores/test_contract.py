"""One contract suite for every idempotency store: memory, SQLite and a real redis-server.

Redis runs twice: ``redis`` on the store's own connection, ``redis-pool`` through a client's
connection pool (where a client's options are beyond the store's connection: here a client
name). The stores with synchronous twins run through them too (``memory-twins``,
``sqlite-twins``: each call tries the twin first, as ``Idempotency`` does), and SQLite once
more with another process writing the file (``sqlite-twins-in-company``: the twins decline).

Time is a FakeClock for all three (the Redis store compares stored expiries with the clock's
``now`` inside its Lua scripts), so lease and TTL expiry are tested without sleeping.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

from mpsflow.clock import FakeClock
from mpsflow.dedup.stores import IdempotencyStore, MemoryStore, RedisStore, SQLiteStore
from mpsflow.dedup.stores.base import DECLINED, Claim, ClaimState
from mpsflow.errors import StoreUnavailable

LEASE = 30.0
TTL = 100.0


@dataclass
class Backend:
    """Makes stores on one backend; ``new()`` gives another client of the same data."""

    name: str
    clock: FakeClock
    factory: Callable[[], IdempotencyStore]
    opened: list[IdempotencyStore] = field(default_factory=list)
    clients: list[Redis] = field(default_factory=list)
    """Redis clients given to stores (a store leaves a given client open)."""

    def new(self) -> IdempotencyStore:
        store = self.factory()
        self.opened.append(store)
        return store


def _factory(
    name: str,
    clock: FakeClock,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    clients: list[Redis],
) -> Callable[[], IdempotencyStore]:
    if name == "memory":
        shared = MemoryStore(clock=clock)
        return lambda: shared
    if name == "memory-twins":
        twins = TwinsFirst(MemoryStore(clock=clock), clock)
        return lambda: twins
    if name.startswith("sqlite"):
        path = tmp_path / "idem.sqlite3"
        if name == "sqlite":
            return lambda: SQLiteStore(path, clock=clock)
        if name == "sqlite-twins-in-company":
            request.getfixturevalue("company")(path)
        return lambda: TwinsFirst(SQLiteStore(path, clock=clock), clock)
    url: str = request.getfixturevalue("redis_url")
    if name == "redis-pool":

        def pooled() -> IdempotencyStore:
            clients.append(Redis.from_url(url, client_name="contract"))
            return RedisStore(clients[-1], clock=clock)

        return pooled
    return lambda: RedisStore(url, clock=clock)


class TwinsFirst:
    """A store with synchronous twins, called as :class:`~mpsflow.dedup.Idempotency` calls
    it: the twin first, the coroutine when the twin declines (counted: ``answered``,
    ``declined``)."""

    def __init__(self, inner: MemoryStore | SQLiteStore, clock: FakeClock) -> None:
        self.inner = inner
        self.clock = clock
        self.answered = 0
        self.declined = 0

    async def claim(
        self, key: str, *, lease_seconds: float, payload_hash: str, token: str = ""
    ) -> Claim:
        token = token or secrets.token_hex(16)
        found = self.inner.claim_now(
            key, lease_seconds=lease_seconds, payload_hash=payload_hash, token=token
        )
        if found is None:
            self.answered += 1
            return Claim(ClaimState.CLAIMED, token, expires_at=self.clock.time() + lease_seconds)
        if found is not DECLINED:
            self.answered += 1
            return found
        self.declined += 1
        return await self.inner.claim(
            key, lease_seconds=lease_seconds, payload_hash=payload_hash, token=token
        )

    async def complete(self, key: str, token: str, *, ttl_seconds: float) -> bool:
        done = self.inner.complete_now(key, token, ttl_seconds=ttl_seconds)
        if done is not None:
            self.answered += 1
            return done
        self.declined += 1
        return await self.inner.complete(key, token, ttl_seconds=ttl_seconds)

    async def release(self, key: str, token: str) -> bool:
        done = self.inner.release_now(key, token)
        if done is not None:
            self.answered += 1
            return done
        self.declined += 1
        return await self.inner.release(key, token)

    async def ping(self) -> bool:
        return await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()


async def _backend(
    request: pytest.FixtureRequest, tmp_path: Path, name: str
) -> AsyncIterator[Backend]:
    clock = FakeClock()
    clients: list[Redis] = []
    backend = Backend(
        name, clock, _factory(name, clock, tmp_path, request, clients), clients=clients
    )
    try:
        yield backend
        twins = [store for store in backend.opened if isinstance(store, TwinsFirst)]
        if name == "sqlite-twins-in-company":
            assert not any(store.answered for store in twins)
        else:  # alone: a checkpoint may hold a batch back now and then
            assert sum(s.answered for s in twins) >= sum(s.declined for s in twins)
    finally:
        for store in backend.opened:
            await store.close()
        for client in clients:
            await client.aclose()


_TWINS = ["memory-twins", "sqlite-twins", "sqlite-twins-in-company"]


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-pool", *_TWINS])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async for value in _backend(request, tmp_path, request.param):
        yield value


@pytest.fixture(params=["sqlite", "redis", "redis-pool", *_TWINS[1:]])
async def shared_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async for value in _backend(request, tmp_path, request.param):
        yield value


async def _claim(store: IdempotencyStore, key: str = "k", phash: str = "h1") -> Claim:
    return await store.claim(key, lease_seconds=LEASE, payload_hash=phash)


async def test_store_satisfies_the_protocol(backend: Backend) -> None:
    assert isinstance(backend.new(), IdempotencyStore)


async def test_first_claim_wins_and_later_ones_see_in_progress(backend: Backend) -> None:
    store, now = backend.new(), backend.clock.time()
    first = await _claim(store)
    assert first.state is ClaimState.CLAIMED
    assert len(first.token) >= 16
    assert first.expires_at == pytest.approx(now + LEASE)

    second = await _claim(store, phash="h2")
    assert (second.state, second.token, second.payload_hash) == (ClaimState.IN_PROGRESS, "", "h1")
    assert second.expires_at == pytest.approx(now + LEASE)


async def test_keys_are_independent(backend: Backend) -> None:
    store = backend.new()
    claims = [await _claim(store, key) for key in ("a", "b", "a:handler", "b:handler")]
    assert [c.state for c in claims] == [ClaimState.CLAIMED] * 4
    assert len({c.token for c in claims}) == 4


async def test_complete_keeps_the_record_for_its_ttl(backend: Backend) -> None:
    store, clock = backend.new(), backend.clock
    claim = await _claim(store)
    assert await store.complete("k", claim.token, ttl_seconds=TTL)
    done_at = clock.time()

    clock.advance(TTL - 0.5)
    again = await _claim(store, phash="other")
    assert again.state is ClaimState.COMPLETED
    assert again.payload_hash == "h1"
    assert again.expires_at == pytest.approx(done_at + TTL)
    assert again.token == ""

    clock.advance(0.5)
    assert (await _claim(store)).state is ClaimState.CLAIMED


async def test_release_lets_the_next_claim_run(backend: Backend) -> None:
    store = backend.new()
    claim = await _claim(store)
    assert await store.release("k", claim.token)
    retry = await _claim(store)
    assert retry.state is ClaimState.CLAIMED
    assert retry.token != claim.token


async def test_a_stranger_cannot_complete_or_release(backend: Backend) -> None:
    store = backend.new()
    claim = await _claim(store)
    assert not await store.complete("k", "not-the-token", ttl_seconds=TTL)
    assert not await store.release("k", "not-the-token")
    assert not await store.complete("k", "", ttl_seconds=TTL)
    assert (await _claim(store)).state is ClaimState.IN_PROGRESS
    assert await store.complete("k", claim.token, ttl_seconds=TTL)


async def test_unknown_keys_cannot_be_completed_or_released(backend: Backend) -> None:
    store = backend.new()
    assert not await store.complete("nothing", "token", ttl_seconds=TTL)
    assert not await store.release("nothing", "token")
    assert (await _claim(store, "nothing")).state is ClaimState.CLAIMED


async def test_a_completed_record_is_final(backend: Backend) -> None:
    store = backend.new()
    claim = await _claim(store)
    assert await store.complete("k", claim.token, ttl_seconds=TTL)
    assert not await store.complete("k", claim.token, ttl_seconds=TTL)
    assert not await store.release("k", claim.token)
    assert (await _claim(store)).state is ClaimState.COMPLETED


async def test_an_expired_lease_lets_a_later_claim_win(backend: Backend) -> None:
    store, clock = backend.new(), backend.clock
    crashed = await _claim(store)

    clock.advance(LEASE - 0.01)
    assert (await _claim(store)).state is ClaimState.IN_PROGRESS

    clock.advance(0.01)
    later = await _claim(store, phash="h2")
    assert later.state is ClaimState.CLAIMED
    assert later.token != crashed.token
    # The crashed owner has lost the record for good.
    assert not await store.complete("k", crashed.token, ttl_seconds=TTL)
    assert not await store.release("k", crashed.token)
    assert await store.complete("k", later.token, ttl_seconds=TTL)
    assert (await _claim(store)).payload_hash == "h2"


async def test_an_owner_whose_lease_ended_cannot_complete(backend: Backend) -> None:
    store, clock = backend.new(), backend.clock
    claim = await _claim(store)
    clock.advance(LEASE)
    assert not await store.complete("k", claim.token, ttl_seconds=TTL)
    assert not await store.release("k", claim.token)
    assert (await _claim(store)).state is ClaimState.CLAIMED


async def test_fifty_concurrent_claimers_one_winner(backend: Backend) -> None:
    store = backend.new()
    states: list[ClaimState] = []

    async def claimer() -> None:
        states.append((await _claim(store, "hot")).state)

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(claimer)
    assert states.count(ClaimState.CLAIMED) == 1
    assert states.count(ClaimState.IN_PROGRESS) == 49


async def test_non_positive_durations_are_rejected(backend: Backend) -> None:
    store = backend.new()
    with pytest.raises(ValueError, match="lease_seconds"):
        await store.claim("k", lease_seconds=0, payload_hash="h")
    claim = await _claim(store)
    with pytest.raises(ValueError, match="ttl_seconds"):
        await store.complete("k", claim.token, ttl_seconds=-1)


async def test_a_closed_store_is_unavailable(backend: Backend) -> None:
    store = backend.new()
    assert await store.ping()
    claim = await _claim(store)
    await store.close()
    assert not await store.ping()
    with pytest.raises(StoreUnavailable):
        await _claim(store)
    with pytest.raises(StoreUnavailable):
        await store.complete("k", claim.token, ttl_seconds=TTL)
    with pytest.raises(StoreUnavailable):
        await store.release("k", claim.token)
    await store.close()  # idempotent


async def test_two_clients_of_one_backend_see_each_other(shared_backend: Backend) -> None:
    one, two = shared_backend.new(), shared_backend.new()
    claim = await _claim(one)
    assert (await _claim(two)).state is ClaimState.IN_PROGRESS
    assert not await two.release("k", "stranger")
    assert await two.complete("k", claim.token, ttl_seconds=TTL)
    assert (await _claim(one)).state is ClaimState.COMPLETED


async def test_concurrent_claimers_on_two_clients_one_winner(shared_backend: Backend) -> None:
    stores = [shared_backend.new(), shared_backend.new()]
    states: list[ClaimState] = []

    async def claimer(store: IdempotencyStore) -> None:
        states.append((await _claim(store, "hot")).state)

    async with anyio.create_task_group() as tg:
        for index in range(50):
            tg.start_soon(claimer, stores[index % 2])
    assert states.count(ClaimState.CLAIMED) == 1
    assert states.count(ClaimState.IN_PROGRESS) == 49


def test_package_exports_everything_and_loads_redis_lazily() -> None:
    import mpsflow.dedup.stores as package

    for name in package.__all__:
        assert getattr(package, name) is not None
    with pytest.raises(AttributeError):
        _ = package.NoSuchStore
    probe = (
        "import sys, mpsflow.dedup.stores; "
        "assert 'redis' not in sys.modules, 'redis imported eagerly'; "
        "mpsflow.dedup.stores.RedisStore; assert 'redis' in sys.modules"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    subprocess.run([sys.executable, "-c", probe], check=True, env=env, timeout=60)
