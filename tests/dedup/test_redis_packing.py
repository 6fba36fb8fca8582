"""RedisStore's own pipeline: RESP packed by hand, replies read on the store's own connection
(a URL, a client decoding replies) or on a connection of the client's pool (a RESP3 client).

The packer must send exactly what redis-py would; the round trip must keep redis-py's pipeline
semantics: NOSCRIPT reruns only the calls that hit it, an error reply fails only its own call,
and a connection lost mid-batch fails the whole batch without leaving the pool out of step.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError, ResponseError

from mpsflow.clock import FakeClock
from mpsflow.dedup.stores import RedisStore
from mpsflow.dedup.stores.base import Claim, ClaimState
from mpsflow.dedup.stores.redis import _pack
from mpsflow.errors import StoreUnavailable
from tests.plugins.redis_server import RedisServer

LEASE = 30.0

_Command = Sequence[str | int]


def _redis_py(commands: Sequence[_Command], encoding: str = "utf-8") -> bytes:
    return b"".join(Connection(encoding=encoding).pack_commands(commands))


# -- the packer ------------------------------------------------------------------------------

SHA = "e0e1f9fabfc9d4800c877a703b823ac0578ff831"
LONG = "x" * 70_000  # past redis-py's 6000-byte chunking of large arguments


@pytest.mark.parametrize(
    "command",
    [
        ("EVALSHA", SHA, 1, "mpsflow:idem:task-1:handler", "1712345678.25", 30000, "ab" * 16),
        ("EVALSHA", SHA, 1, "", "", 0, ""),  # empty strings
        ("EVALSHA", SHA, 1, "ключ:任务:🎬", "é", -1, 2**63, -(2**70)),  # unicode, big ints
        ("EVALSHA", SHA, 1, LONG, "ü" * 5000, "中" * 2500, LONG + "é"),  # long, multibyte
        ("SCRIPT", "LOAD", "return redis.call('PING')\r\n-- a line break in an argument"),
        ("PING",),
    ],
    ids=["claim", "empty", "unicode", "long", "script-load", "one-word"],
)
def test_each_command_is_packed_as_redis_py_packs_it(command: _Command) -> None:
    assert _pack([command]) == b"".join(Connection().pack_command(*command))


def test_a_pipeline_is_packed_as_redis_py_packs_it() -> None:
    commands: list[_Command] = [
        ("EVALSHA", SHA, 1, "a", "1.5", 100, "t"),
        ("SCRIPT", "LOAD", "return 1"),
        ("EVALSHA", SHA, 1, LONG, "", 0),
        ("EVALSHA", SHA, 1, "ключ", "🎬" * 3000),
    ]
    assert _pack(commands) == _redis_py(commands)


def test_the_clients_encoding_is_used_for_text() -> None:
    commands: list[_Command] = [("EVALSHA", SHA, 1, "clé", "naïve", 7)]
    assert _pack(commands, "latin-1") == _redis_py(commands, encoding="latin-1")
    assert _pack(commands, "latin-1") != _pack(commands)


_arguments = st.lists(
    st.one_of(st.text(), st.integers(min_value=-(2**80), max_value=2**80)), max_size=8
)


@settings(max_examples=300, deadline=None)
@given(
    commands=st.lists(
        st.tuples(st.sampled_from(["EVALSHA", "HSET", "SCRIPT"]), _arguments).map(
            lambda named: (named[0], *named[1])
        ),
        min_size=1,
        max_size=6,
    )
)
def test_any_pipeline_of_text_and_ints_is_packed_as_redis_py_packs_it(
    commands: list[_Command],
) -> None:
    assert _pack(commands) == _redis_py(commands)


# -- the round trip ----------------------------------------------------------------------------


@pytest.fixture(params=["url", "decode_responses", "resp3"])
async def redis_store(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[RedisStore]:
    """A store made from the URL, or given a client that decodes replies (both on the store's
    own connection) or speaks RESP3 (through the client's pool)."""
    client: Redis | None = None
    if request.param == "url":
        made = RedisStore(redis_url, clock=FakeClock())
    else:
        options: dict[str, Any] = (
            {"decode_responses": True} if request.param == "decode_responses" else {"protocol": 3}
        )
        client = Redis.from_url(redis_url, **options)
        made = RedisStore(client, clock=FakeClock())
    try:
        yield made
    finally:
        await made.close()
        if client is not None:
            await client.aclose()


async def _claim(store: RedisStore, key: str) -> Claim:
    return await store.claim(key, lease_seconds=LEASE, payload_hash="h")


async def _one_batch(store: RedisStore, *calls: Any) -> list[Any]:
    """The outcomes of calls made in one turn of the event loop: one pipeline."""
    pipelines = store.pipelines
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert store.pipelines == pipelines + 1
    return outcomes


async def _stats(admin: Redis) -> dict[str, int]:
    info = await admin.info("commandstats")
    return {name: int(info[f"cmdstat_{name}"]["calls"]) for name in ("evalsha", "script|load")}


async def test_noscript_mid_batch_loads_the_script_and_reruns_only_those_calls(
    redis_store: RedisStore, redis_url: str
) -> None:
    store = redis_store
    first = await _claim(store, "done")
    async with Redis.from_url(redis_url) as admin:
        await admin.script_flush()
        assert (await _claim(store, "a")).state is ClaimState.CLAIMED  # claim's script again
        await admin.config_resetstat()

        outcomes = await _one_batch(
            store,
            _claim(store, "b"),
            store.complete("done", first.token, ttl_seconds=100.0),  # NOSCRIPT: not loaded
            _claim(store, "a"),
            _claim(store, "c"),
        )

        assert [o.state for o in (outcomes[0], outcomes[2], outcomes[3])] == [
            ClaimState.CLAIMED,
            ClaimState.IN_PROGRESS,
            ClaimState.CLAIMED,
        ]
        assert outcomes[1] is True
        assert await _stats(admin) == {"evalsha": 5, "script|load": 1}  # 4, and 1 rerun
    assert (await _claim(store, "done")).state is ClaimState.COMPLETED


async def test_an_error_reply_fails_only_its_own_call(
    redis_store: RedisStore, redis_url: str
) -> None:
    store = redis_store
    async with Redis.from_url(redis_url) as admin:
        await admin.set("mpsflow:idem:not-a-hash", "x")  # the script's HMGET: WRONGTYPE

    outcomes = await _one_batch(
        store, _claim(store, "a"), _claim(store, "not-a-hash"), _claim(store, "b")
    )

    assert [outcomes[0].state, outcomes[2].state] == [ClaimState.CLAIMED, ClaimState.CLAIMED]
    failed = outcomes[1]
    assert isinstance(failed, StoreUnavailable)
    assert isinstance(failed.__cause__, ResponseError)
    assert "WRONGTYPE" in str(failed)
    # The connection is still in step: the next answers are the right ones.
    assert (await _claim(store, "a")).state is ClaimState.IN_PROGRESS
    assert (await _claim(store, "c")).state is ClaimState.CLAIMED


class Relay:
    """A TCP relay in front of a redis-server that can lose its connections on demand.

    While ``broken``, a reply is cut after its first bytes and the connection closed, and new
    connections are closed as they come: a server lost in the middle of a pipeline. With
    ``once``, only the first reply is cut, and later connections go through.
    """

    def __init__(self, upstream: int, *, once: bool = False) -> None:
        self.upstream = upstream
        self.once = once
        self.broken = False
        self.cut = asyncio.Event()
        """Set once a reply was cut short."""
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port: int = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        self._server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.broken:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer, (writer, up_writer), replies=False),
            self._pipe(up_reader, writer, (writer, up_writer), replies=True),
        )

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        both: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
        *,
        replies: bool,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if replies and self.broken:
                    writer.write(data[:3])
                    await writer.drain()
                    self.cut.set()
                    self.broken = not self.once
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            for each in both:
                each.close()


async def test_a_connection_lost_mid_batch_fails_the_batch_then_the_store_recovers(
    redis_url: str, redis_process: RedisServer
) -> None:
    async with Relay(redis_process.port) as relay:
        store = RedisStore(relay.url, clock=FakeClock())
        try:
            assert (await _claim(store, "before")).state is ClaimState.CLAIMED
            relay.broken = True

            outcomes = await _one_batch(
                store, _claim(store, "a"), store.release("before", "not-the-token")
            )

            assert relay.cut.is_set()  # the batch ran on the server; its replies were lost
            for outcome in outcomes:
                assert isinstance(outcome, StoreUnavailable)
                assert isinstance(outcome.__cause__, ConnectionError)
            assert not await store.ping()

            relay.broken = False
            # The next answers are theirs: nothing half-read came back from the pool.
            assert (await _claim(store, "before")).state is ClaimState.IN_PROGRESS
            assert (await _claim(store, "b")).state is ClaimState.CLAIMED
            assert (await _claim(store, "a")).state is ClaimState.IN_PROGRESS
        finally:
            await store.close()


async def test_a_pipeline_sent_again_after_its_replies_were_lost_answers_as_the_first_did(
    redis_url: str, redis_process: RedisServer
) -> None:
    """The store sends a pipeline once more on a new connection when the first one is lost. The
    scripts ran the first time; the caller's own token makes the second answer the same
    (CLAIMED, completed), not IN_PROGRESS held by nobody or a completion said to be lost."""
    async with Relay(redis_process.port, once=True) as relay:
        store = RedisStore(relay.url, clock=FakeClock())
        try:
            assert (await _claim(store, "warm-up")).state is ClaimState.CLAIMED
            relay.broken = True
            claim = await _claim(store, "k")
            assert relay.cut.is_set()
            assert claim.state is ClaimState.CLAIMED
            relay.cut.clear()
            relay.broken = True
            assert await store.complete("k", claim.token, ttl_seconds=100)
            assert relay.cut.is_set()
            async with Redis.from_url(redis_url) as admin:
                record = await admin.hgetall("mpsflow:idem:k")
            assert (record[b"s"], record[b"t"]) == (b"completed", claim.token.encode())
            again = await _claim(store, "k")
            assert again.state is ClaimState.COMPLETED
        finally:
            await store.close()
