"""RedisStore specifics against a real redis-server: outages, timeouts, TTL backstop, secrets."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import anyio
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mpsflow.clock import FakeClock
from mpsflow.dedup.stores import RedisStore
from mpsflow.dedup.stores.base import ClaimState
from mpsflow.errors import ConfigurationError, StoreUnavailable
from tests.plugins.redis_server import RedisServer

LEASE = 30.0


async def test_server_down_is_unavailable_then_recovers(
    redis_spawn: Callable[[], RedisServer],
) -> None:
    server = redis_spawn()
    store = RedisStore(server.url, clock=FakeClock())
    try:
        claim = await store.claim("k", lease_seconds=LEASE, payload_hash="h")
        assert claim.state is ClaimState.CLAIMED

        server.stop()
        assert not await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.claim("other", lease_seconds=LEASE, payload_hash="h")
        with pytest.raises(StoreUnavailable):
            await store.complete("k", claim.token, ttl_seconds=100)
        with pytest.raises(StoreUnavailable):
            await store.release("k", claim.token)

        server.start()  # same port, empty (no persistence), scripts no longer cached
        assert await store.ping()
        again = await store.claim("k", lease_seconds=LEASE, payload_hash="h")
        assert again.state is ClaimState.CLAIMED
        assert await store.complete("k", again.token, ttl_seconds=100)
    finally:
        await store.close()


async def test_a_hung_server_times_out_as_unavailable(silent_server: int) -> None:
    store = RedisStore(
        f"redis://127.0.0.1:{silent_server}/0", socket_timeout=0.1, connect_timeout=0.1
    )
    try:
        address = re.escape(f"redis://127.0.0.1:{silent_server}/0")
        with pytest.raises(
            StoreUnavailable, match=rf"^idempotency store {address} unavailable \(.+\)$"
        ) as caught:
            await store.claim("k", lease_seconds=LEASE, payload_hash="h")
        assert isinstance(caught.value.__cause__, (RedisError, TimeoutError))
        assert not await store.ping()
    finally:
        await store.close()


async def test_a_busy_pool_queues_claims_instead_of_failing_them(redis_url: str) -> None:
    """More concurrent claims than connections wait their turn; none is called unavailable."""
    store = RedisStore(redis_url, max_connections=1, socket_timeout=5.0)
    try:
        async with anyio.create_task_group() as tg:
            claims: list[ClaimState] = []

            async def claim(index: int) -> None:
                result = await store.claim(f"busy-{index}", lease_seconds=LEASE, payload_hash="h")
                claims.append(result.state)

            for index in range(300):
                tg.start_soon(claim, index)
        assert claims == [ClaimState.CLAIMED] * 300
    finally:
        await store.close()


def test_pool_timeout_must_be_positive(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="pool_timeout"):
        RedisStore(redis_url, pool_timeout=0)


async def test_records_carry_a_redis_ttl_as_backstop(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix="test:", clock=FakeClock())
    client = Redis.from_url(redis_url)
    try:
        claim = await store.claim("k", lease_seconds=LEASE, payload_hash="h")
        assert 0 < await client.pttl("test:k") <= LEASE * 1000
        record = await client.hgetall("test:k")
        assert record[b"s"] == b"in_progress"
        assert record[b"h"] == b"h"
        assert await store.complete("k", claim.token, ttl_seconds=3600)
        assert LEASE * 1000 < await client.pttl("test:k") <= 3600 * 1000
        assert await client.hget("test:k", "s") == b"completed"
    finally:
        await client.aclose()
        await store.close()


async def test_a_corrupt_record_is_replaced_not_stuck(redis_url: str) -> None:
    store = RedisStore(redis_url, clock=FakeClock())
    client = Redis.from_url(redis_url)
    try:
        await client.hset("mpsflow:idem:k", mapping={"s": "in_progress", "t": "x"})
        assert not await store.complete("k", "x", ttl_seconds=100)
        claim = await store.claim("k", lease_seconds=LEASE, payload_hash="h")
        assert claim.state is ClaimState.CLAIMED
    finally:
        await client.aclose()
        await store.close()


async def test_prefixes_separate_namespaces(redis_url: str) -> None:
    clock = FakeClock()
    one = RedisStore(redis_url, prefix="one:", clock=clock)
    two = RedisStore(redis_url, prefix="two:", clock=clock)
    try:
        assert (await one.claim("k", lease_seconds=LEASE, payload_hash="h")).state is (
            ClaimState.CLAIMED
        )
        assert (await two.claim("k", lease_seconds=LEASE, payload_hash="h")).state is (
            ClaimState.CLAIMED
        )
    finally:
        await one.close()
        await two.close()


@pytest.mark.parametrize("decode_responses", [False, True])
async def test_a_given_client_is_used_and_left_open(redis_url: str, decode_responses: bool) -> None:
    client = Redis.from_url(redis_url, decode_responses=decode_responses)
    store = RedisStore(client, clock=FakeClock())
    try:
        claim = await store.claim("k", lease_seconds=LEASE, payload_hash="h")
        assert claim.state is ClaimState.CLAIMED
        busy = await store.claim("k", lease_seconds=LEASE, payload_hash="other")
        assert (busy.state, busy.payload_hash) == (ClaimState.IN_PROGRESS, "h")
        assert await store.complete("k", claim.token, ttl_seconds=100)
        await store.close()
        assert await client.ping()
        assert await client.exists("mpsflow:idem:k") == 1
    finally:
        await client.aclose()


async def test_a_password_in_the_url_never_shows(
    redis_spawn: Callable[[], RedisServer],
) -> None:
    server = redis_spawn()
    admin = Redis.from_url(server.url)
    await admin.config_set("requirepass", "the-real-password")
    await admin.aclose()
    secret = "hunter2-wrong-password"
    store = RedisStore(server.url.replace("redis://", f"redis://:{secret}@"))
    try:
        assert secret not in repr(store)
        with pytest.raises(StoreUnavailable) as caught:
            await store.claim("k", lease_seconds=LEASE, payload_hash="h")
        assert secret not in str(caught.value)
        assert secret not in repr(caught.value)
        assert secret not in str(caught.value.__cause__)
    finally:
        await store.close()


async def test_concurrent_calls_are_pipelined_and_conflicts_have_one_winner(
    redis_url: str,
) -> None:
    store = RedisStore(redis_url, prefix="pipelined:")
    keys = [f"task-{n % 20}:handler" for n in range(200)]  # 10 claims of each of 20 keys
    try:
        results: dict[int, ClaimState] = {}

        async def claim(index: int, key: str) -> None:
            results[index] = (await store.claim(key, lease_seconds=LEASE, payload_hash="h")).state

        async with anyio.create_task_group() as tg:
            for index, key in enumerate(keys):
                tg.start_soon(claim, index, key)
        won = Counter(keys[i] for i, state in results.items() if state is ClaimState.CLAIMED)
        assert won == Counter(dict.fromkeys(set(keys), 1))
        assert Counter(results.values())[ClaimState.IN_PROGRESS] == 180
        assert store.pipelines <= 3  # 200 calls made in one turn of the event loop
    finally:
        await store.close()


async def test_scripts_the_server_forgot_are_loaded_again_within_the_pipeline(
    redis_url: str,
) -> None:
    store = RedisStore(redis_url, prefix="forgot:")
    try:
        first = await store.claim("a", lease_seconds=LEASE, payload_hash="h")
        async with Redis.from_url(redis_url) as admin:
            await admin.script_flush()
        pipelines = store.pipelines
        async with anyio.create_task_group() as tg:  # one pipeline: NOSCRIPT twice, rerun
            tg.start_soon(lambda: store.complete("a", first.token, ttl_seconds=100.0))
            tg.start_soon(lambda: store.claim("b", lease_seconds=LEASE, payload_hash="h"))
        assert store.pipelines == pipelines + 1
        assert (await store.claim("a", lease_seconds=LEASE, payload_hash="h")).state is (
            ClaimState.COMPLETED
        )
        assert (await store.claim("b", lease_seconds=LEASE, payload_hash="h")).state is (
            ClaimState.IN_PROGRESS
        )
    finally:
        await store.close()
