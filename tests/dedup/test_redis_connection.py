"""RedisStore's own connection (``mpsflow.dedup.stores._resp``): the reply parser, which servers
it speaks for, and the store over it against a real redis-server (TCP with a password and a
database number, and a Unix socket)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.credentials import UsernamePasswordCredentialProvider
from redis.exceptions import ConnectionError, NoScriptError, ResponseError

from mpsflow.clock import FakeClock
from mpsflow.dedup.stores import RedisStore
from mpsflow.dedup.stores._resp import RespAddress, RespConnection, fast_address, parse_reply
from mpsflow.dedup.stores.base import ClaimState
from mpsflow.errors import StoreUnavailable
from tests.plugins.redis_server import RedisServer

LEASE = 30.0


# -- the parser -------------------------------------------------------------------------------


def _encode(reply: Any) -> bytes:
    """``reply`` in RESP2, as a server sends it."""
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, bytes):
        return b"$%d\r\n%b\r\n" % (len(reply), reply)
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    return b"*%d\r\n" % len(reply) + b"".join(_encode(item) for item in reply)


_replies = st.recursive(
    st.none() | st.binary(max_size=40) | st.integers(min_value=-(2**63), max_value=2**63 - 1),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(replies=st.lists(_replies, min_size=1, max_size=5), data=st.data())
def test_replies_split_anywhere_parse_to_what_was_sent(replies: list[Any], data: Any) -> None:
    stream = b"".join(_encode(reply) for reply in replies)
    cut = data.draw(st.integers(min_value=0, max_value=len(stream)))
    buffer = bytearray(stream[:cut])
    parsed: list[Any] = []
    position = 0
    while True:  # what the first part holds, up to the reply it ends inside
        reply, end = parse_reply(buffer, position)
        if end == position:
            break
        parsed.append(reply)
        position = end
    del buffer[:position]
    buffer += stream[cut:]
    position = 0
    while position < len(buffer):
        reply, position = parse_reply(buffer, position)
        parsed.append(reply)
    assert parsed == replies


def test_error_replies_are_exceptions_and_noscript_is_its_own() -> None:
    buffer = bytearray(b"-NOSCRIPT No matching script.\r\n-ERR wrong number of arguments\r\n")
    first, end = parse_reply(buffer, 0)
    second, _ = parse_reply(buffer, end)
    assert isinstance(first, NoScriptError)
    assert type(second) is ResponseError
    assert "wrong number of arguments" in str(second)


def test_simple_strings_and_null_arrays() -> None:
    buffer = bytearray(b"+OK\r\n*-1\r\n")
    ok, end = parse_reply(buffer, 0)
    assert (ok, parse_reply(buffer, end)) == (b"OK", (None, len(buffer)))


def test_bytes_that_are_not_resp_are_an_error() -> None:
    with pytest.raises(ValueError, match="reply type"):
        parse_reply(bytearray(b"HTTP/1.1 400 Bad Request\r\n"), 0)


class _Transport(asyncio.Transport):
    """Records what the connection writes and whether it gave up (no socket needed)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True


async def test_bytes_nobody_asked_for_fail_the_connection() -> None:
    """A reply past the last pipeline means the connection is out of step: it is given up, and
    what is sent next fails instead of reading a stranger's reply."""
    connection = RespConnection(RespAddress(host="127.0.0.1"))
    transport = _Transport()
    connection.connection_made(transport)
    first = connection.exchange(b"*1\r\n$4\r\nPING\r\n", 1)
    connection.data_received(b"+PONG\r\n")
    assert await first == [b"PONG"]
    connection.data_received(b"+PONG\r\n")
    assert transport.aborted
    assert not connection.usable
    with pytest.raises(ConnectionError, match="unexpected reply"):
        await connection.exchange(b"*1\r\n$4\r\nPING\r\n", 1)


# -- which servers it speaks for --------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6390/0", RespAddress(host="127.0.0.1", port=6390)),
        (
            "redis://user:pw@example.internal:7000/4",
            RespAddress(host="example.internal", port=7000, username="user", password="pw", db=4),
        ),
        ("redis://:pw@localhost", RespAddress(host="localhost", password="pw")),
        ("unix:///run/redis.sock?db=2", RespAddress(path="/run/redis.sock", db=2)),
    ],
)
def test_plain_servers_get_the_stores_own_connection(url: str, expected: RespAddress) -> None:
    """Where and as whom (timeouts and keepalive are redis-py's defaults, tested below)."""
    address = fast_address(ConnectionPool.from_url(url))
    assert address is not None
    where = ("host", "port", "path", "username", "password", "db")
    assert [getattr(address, name) for name in where] == [getattr(expected, n) for n in where]


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConnectionPool.from_url("rediss://127.0.0.1:6390/0"),
        lambda: ConnectionPool.from_url("redis://127.0.0.1:6390/0", client_name="billing"),
        lambda: ConnectionPool.from_url("redis://127.0.0.1:6390/0", protocol=3),
        lambda: (
            Redis(
                credential_provider=UsernamePasswordCredentialProvider("user", "pw")
            ).connection_pool
        ),
    ],
    ids=["tls", "client-name", "resp3", "credential-provider"],
)
def test_other_servers_stay_on_redis_pys_connections(make: Callable[[], ConnectionPool]) -> None:
    assert fast_address(make()) is None


def test_timeouts_come_from_the_pool() -> None:
    pool = ConnectionPool.from_url(
        "redis://127.0.0.1:6390/0", socket_timeout=0.25, socket_connect_timeout=2
    )
    address = fast_address(pool)
    assert address is not None
    assert (address.socket_timeout, address.connect_timeout) == (0.25, 2.0)


def test_a_clients_defaults_apply_as_redis_py_applies_them() -> None:
    """A client given no timeouts gets redis-py's defaults (whatever this version's are), and
    the connect timeout falls back to the socket timeout, as in redis-py."""
    pool = Redis(host="127.0.0.1", port=6390).connection_pool
    built = pool.connection_class(**pool.connection_kwargs)
    address = fast_address(pool)
    assert address is not None
    assert address.socket_timeout == built.socket_timeout
    only_socket = fast_address(Redis(host="127.0.0.1", socket_timeout=0.5).connection_pool)
    assert only_socket is not None
    built = Connection(host="127.0.0.1", socket_timeout=0.5)
    assert only_socket.connect_timeout == (built.socket_connect_timeout or 0.5)


@pytest.mark.parametrize(
    ("username", "password", "auth"),
    [
        (None, None, None),
        (None, "", None),  # an empty password sends no AUTH, as in redis-py
        (None, "pw", ("AUTH", "pw")),
        ("worker", "pw", ("AUTH", "worker", "pw")),
        ("worker", None, ("AUTH", "worker", "")),
    ],
)
def test_auth_is_sent_as_redis_py_sends_it(
    username: str | None, password: str | None, auth: tuple[str, ...] | None
) -> None:
    address = RespAddress(host="h", username=username, password=password, db=3)
    assert address.handshake() == [*([auth] if auth else []), ("SELECT", 3)]


def test_the_password_is_not_in_the_addresss_repr() -> None:
    address = fast_address(ConnectionPool.from_url("redis://admin:hunter2-secret@h:1/0"))
    assert address is not None
    assert "hunter2-secret" not in repr(address)
    assert "admin" not in repr(address)


def test_a_password_given_as_bytes_stays_on_redis_pys_connections() -> None:
    assert fast_address(Redis(host="h", password=b"pw").connection_pool) is None  # type: ignore[arg-type]


async def test_a_server_without_users_gets_the_password_alone() -> None:
    """Before Redis 6, AUTH takes one argument: redis-py retries with the password alone."""
    connection = RespConnection(RespAddress(host="127.0.0.1", username="h", password="pw"))
    transport = _Transport()
    connection.connection_made(transport)
    authenticating = asyncio.ensure_future(connection._authenticate())
    await asyncio.sleep(0)
    connection.data_received(b"-ERR wrong number of arguments for 'auth' command\r\n")
    await asyncio.sleep(0)
    connection.data_received(b"+OK\r\n")
    await authenticating
    assert bytes(transport.written).endswith(b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n")


# -- the store over it, against a real redis-server -------------------------------------------


async def test_a_password_and_a_database_number_are_sent_first(
    redis_spawn: Callable[[], RedisServer],
) -> None:
    server = redis_spawn()
    async with Redis.from_url(server.url) as admin:
        await admin.config_set("requirepass", "right-password")
    url = server.url.replace("redis://", "redis://:right-password@").replace("/0", "/5")
    store = RedisStore(url, clock=FakeClock())
    try:
        claim = await store.claim("k", lease_seconds=LEASE, payload_hash="h")
        assert claim.state is ClaimState.CLAIMED
        assert await store.complete("k", claim.token, ttl_seconds=100)
        async with Redis.from_url(url) as admin:
            assert await admin.hget("mpsflow:idem:k", "s") == b"completed"
        async with Redis.from_url(url.replace("/5", "/0")) as admin:
            assert await admin.dbsize() == 0
    finally:
        await store.close()


async def test_the_store_works_over_a_unix_socket(
    redis_url: str, redis_process: RedisServer
) -> None:
    store = RedisStore(redis_process.socket_url, prefix="unix:", clock=FakeClock())
    try:
        claim = await store.claim("k", lease_seconds=LEASE, payload_hash="h")
        assert claim.state is ClaimState.CLAIMED
        busy = await store.claim("k", lease_seconds=LEASE, payload_hash="other")
        assert (busy.state, busy.payload_hash) == (ClaimState.IN_PROGRESS, "h")
        assert await store.release("k", claim.token)
        async with Redis.from_url(redis_url) as admin:  # the same server, over TCP
            assert await admin.exists("unix:k") == 0
    finally:
        await store.close()


async def test_a_client_with_a_short_timeout_fails_on_a_silent_server_and_closes(
    silent_server: int,
) -> None:
    client = Redis(host="127.0.0.1", port=silent_server, socket_timeout=0.1)
    store = RedisStore(client, clock=FakeClock())
    try:
        with pytest.raises(StoreUnavailable, match="Timeout"):
            await store.claim("k", lease_seconds=LEASE, payload_hash="h")
    finally:
        await store.close()
        await client.aclose()


async def test_a_malformed_host_name_is_unavailable_not_cancelled() -> None:
    store = RedisStore("redis://redis..internal:6379/0", clock=FakeClock())
    try:
        with pytest.raises(StoreUnavailable):
            await store.claim("k", lease_seconds=LEASE, payload_hash="h")
    finally:
        await store.close()


async def test_keepalive_is_on_when_the_client_asks_for_it(redis_url: str) -> None:
    client = Redis.from_url(
        redis_url, socket_keepalive=True, socket_keepalive_options={socket.TCP_KEEPIDLE: 42}
    )
    store = RedisStore(client, clock=FakeClock())
    try:
        await store.claim("k", lease_seconds=LEASE, payload_hash="h")
        link = store._link
        assert link is not None
        assert link._transport is not None
        sock = link._transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 42
    finally:
        await store.close()
        await client.aclose()
