"""Store errors say which store and why; the dedup middleware logs them at a sane rate; a
missing ``redis`` extra says what to install."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from mpsflow import App, Cause, Context, Delivery, Settlement
from mpsflow.clock import FakeClock
from mpsflow.dedup.idempotency import Idempotency
from mpsflow.dedup.middleware import DedupMiddleware
from mpsflow.dedup.stores import MemoryStore, RedisStore, SQLiteStore
from mpsflow.dedup.stores.base import (
    Claim,
    describe_store,
    store_unavailable,
    unavailable_message,
)
from mpsflow.delivery import Outcome
from mpsflow.errors import ConfigurationError, StartupError, StoreUnavailable
from mpsflow.events import WorkflowTask
from mpsflow.middleware.base import Call, HandlerInfo
from mpsflow.observability.health import require_store
from mpsflow.sinks.memory import MemorySink
from mpsflow.testing import build_notification
from tests.modules import run_ok
from tests.plugins.redis_server import RedisServer

NOW = 1_735_787_000.0
LEASE = 30.0
ROOT = Path(__file__).resolve().parents[2]
# the cause in parentheses, whatever the library's words
UNAVAILABLE = r"^idempotency store {} unavailable \(.+\)$"


def _refused_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the stores' own messages ------------------------------------------------------------------


async def test_an_unreachable_redis_is_named_with_its_cause_and_no_password() -> None:
    port = _refused_port()
    secret = "hunter2-password"
    store = RedisStore(f"redis://:{secret}@127.0.0.1:{port}/3", connect_timeout=0.5)
    address = f"redis://127.0.0.1:{port}/3"
    try:
        assert store.describe() == address
        assert repr(store) == f"RedisStore({address!r}, prefix='mpsflow:idem:')"
        with pytest.raises(StoreUnavailable, match=UNAVAILABLE.format(re.escape(address))) as e:
            await store.claim("k", lease_seconds=LEASE, payload_hash="h")
        assert e.value.__cause__ is not None  # the library's error stays chained
        assert type(e.value.__cause__).__name__ in str(e.value)  # and is named in the message
        assert secret not in str(e.value)
    finally:
        await store.close()
    with pytest.raises(StoreUnavailable, match=r"^idempotency store .+ unavailable \(closed\)$"):
        await store.claim("k", lease_seconds=LEASE, payload_hash="h")


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://localhost", "redis://localhost:6379/0"),
        ("rediss://user:pass-word@cache.example:6380/2", "rediss://cache.example:6380/2"),
        ("unix://:pass-word@/run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
        ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
    ],
)
async def test_redis_addresses_never_carry_credentials(url: str, address: str) -> None:
    store = RedisStore(url)
    try:
        assert store.describe() == address
        assert "pass-word" not in repr(store)
        assert "user" not in repr(store)
    finally:
        await store.close()


async def test_a_ready_client_is_described_by_its_server() -> None:
    client = Redis(host="10.0.0.5", port=6390, db=4, password="pass-word")
    store = RedisStore(client)
    assert store.describe() == "redis://10.0.0.5:6390/4"
    await client.aclose()


async def test_sqlite_errors_name_the_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "missing-dir").write_text("a file where the folder should be")
    store = SQLiteStore(Path("missing-dir") / "dedup.sqlite3")
    expected = f"sqlite:{tmp_path / 'missing-dir' / 'dedup.sqlite3'}"
    assert store.describe() == expected
    with pytest.raises(StoreUnavailable, match=UNAVAILABLE.format(re.escape(expected))):
        await store.claim("k", lease_seconds=LEASE, payload_hash="h")
    await store.close()
    with pytest.raises(StoreUnavailable, match=r" unavailable \(closed\)$"):
        await store.claim("k", lease_seconds=LEASE, payload_hash="h")


async def test_memory_store_errors_say_what_to_change() -> None:
    store = MemoryStore(max_entries=1)
    await store.claim("a", lease_seconds=LEASE, payload_hash="h")
    with pytest.raises(
        StoreUnavailable,
        match=r"^idempotency store memory unavailable \(full of live leases \(max_entries=1\); "
        r"raise max_entries\)$",
    ):
        await store.claim("b", lease_seconds=LEASE, payload_hash="h")
    await store.close()
    with pytest.raises(StoreUnavailable, match=r"^idempotency store memory unavailable \(closed\)"):
        await store.claim("a", lease_seconds=LEASE, payload_hash="h")


def test_causes_are_one_short_line_with_secrets_masked() -> None:
    cause = OSError("line one\nline two  s3cret-value " + "x" * 1000)
    message = str(store_unavailable("redis://h:1/0", cause, secrets=("s3cret-value",)))
    assert message.startswith(
        "idempotency store redis://h:1/0 unavailable (OSError: line one line two *** xxx"
    )
    assert message.endswith("...)")
    assert len(message) < 400
    bare = str(store_unavailable("x", ValueError()))
    assert bare == "idempotency store x unavailable (ValueError)"


class _ThirdPartyStore:
    """A store of someone else's: plain StoreUnavailable messages, maybe a describe()."""

    def __init__(self, description: str | None = None) -> None:
        self.description = description

    def describe(self) -> str | None:
        return self.description


def test_other_stores_messages_are_wrapped_in_the_same_words() -> None:
    plain = StoreUnavailable("connection pool exhausted")
    assert (
        unavailable_message(plain, _ThirdPartyStore("dynamodb:table-1"))
        == "idempotency store dynamodb:table-1 unavailable (connection pool exhausted)"
    )
    assert describe_store(_ThirdPartyStore()) == "_ThirdPartyStore"  # never its repr
    own = store_unavailable("memory", "closed")
    assert unavailable_message(own, object()) == str(own)


# -- what the dedup middleware logs ---------------------------------------------------------------


def _lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "mpsflow.dedup.idempotency" and r.levelno == level
    ]


def _body(task: str) -> bytes:
    return json.dumps(build_notification(task_id=task)).encode()


async def test_a_store_outage_is_logged_with_address_and_cause_once_per_burst(
    caplog: pytest.LogCaptureFixture, redis_spawn: Callable[[], RedisServer]
) -> None:
    caplog.set_level(logging.INFO, logger="mpsflow.dedup.idempotency")
    server = redis_spawn()
    clock = FakeClock(NOW)
    app = App(idempotency=RedisStore(server.url), clock=clock, dead_letters=MemorySink())
    ran: list[str] = []

    @app.on("WorkflowTask")
    async def on_task(event: WorkflowTask, ctx: Context) -> None:
        ran.append(ctx.task_id)

    async with app:
        assert (await app.process(Delivery(_body("t-0")))).settlement is Settlement.ACK
        server.stop()
        outcomes = []
        for index in range(1, 6):  # a burst within one 10 s window
            outcomes.append(await app.process(Delivery(_body(f"t-{index}"))))
            clock.advance(1.0)
        assert {o.cause for o in outcomes} == {Cause.DEFERRED}  # retried later, never run
        [first] = _lines(caplog, logging.WARNING)
        assert re.fullmatch(
            rf"idempotency store {re.escape(server.url)} unavailable \(.+\); handler "
            rf"\S*on_task will be retried in 5s",
            first,
        ), first
        clock.advance(10.0)
        await app.process(Delivery(_body("t-6")))
        second = _lines(caplog, logging.WARNING)[1]
        assert second.startswith(f"idempotency store {server.url} unavailable (")
        assert second.endswith("; 4 more handler runs deferred since the last such line")

        server.start()
        assert (await app.process(Delivery(_body("t-7")))).settlement is Settlement.ACK
        await app.process(Delivery(_body("t-8")))
    assert _lines(caplog, logging.INFO) == [
        f"idempotency store {server.url} answers again; 6 handler runs were deferred while it "
        "was unavailable"
    ]
    assert len(_lines(caplog, logging.WARNING)) == 2
    assert ran == ["t-0", "t-7", "t-8"]


class _DownStore:
    """Claims fail like a third-party store's would; nothing else is called."""

    async def claim(
        self, key: str, *, lease_seconds: float, payload_hash: str, token: str = ""
    ) -> Claim:
        raise StoreUnavailable("backend timed out")

    async def complete(self, key: str, token: str, *, ttl_seconds: float) -> bool:
        raise AssertionError("not reached")

    async def release(self, key: str, token: str) -> bool:
        return False

    async def ping(self) -> bool:
        return False

    async def close(self) -> None:
        return None


async def test_the_middleware_names_any_store_and_uses_its_clock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mpsflow.dedup.idempotency")
    clock = FakeClock(NOW)
    middleware = DedupMiddleware(
        Idempotency(_DownStore(), clock=clock), store_retry_after=2.5, log_interval=30.0
    )

    async def never(call: Call) -> Outcome:
        raise AssertionError("must not run unclaimed")

    def call() -> Call:
        return Call(Delivery(_body("t")), scope="handler", handler=HandlerInfo("h", "WorkflowTask"))

    for _ in range(3):
        outcome = await middleware(call(), never)
        assert outcome.cause is Cause.DEFERRED
        assert outcome.retry_after == 2.5
        clock.advance(10.0)
    clock.advance(10.0)
    await middleware(call(), never)
    assert _lines(caplog, logging.WARNING) == [
        "idempotency store _DownStore unavailable (backend timed out); handler h will be "
        "retried in 2.5s",
        "idempotency store _DownStore unavailable (backend timed out); handler h will be "
        "retried in 2.5s; 2 more handler runs deferred since the last such line",
    ]


async def test_a_completion_the_store_missed_names_the_store(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.WARNING, logger="mpsflow.dedup.idempotency")
    store = SQLiteStore(tmp_path / "dedup.sqlite3")
    idempotency = Idempotency(store, clock=FakeClock(NOW))
    decision = await idempotency.begin("k", "h", "hash")
    await store.close()
    assert not await idempotency.succeeded(decision)
    [line] = _lines(caplog, logging.WARNING)
    assert line.startswith(
        f"could not record k:h as completed (idempotency store sqlite:{tmp_path / 'dedup.sqlite3'}"
        " unavailable (closed)); "
    )


# -- a missing extra ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "from mpsflow.dedup.stores import RedisStore",
        "import mpsflow.dedup.stores; mpsflow.dedup.stores.RedisStore('redis://localhost')",
        "from mpsflow.dedup.stores.redis import RedisStore",
    ],
)
def test_without_redis_the_error_says_what_to_install(statement: str) -> None:
    probe = (
        "import sys\n"
        "sys.modules['redis'] = None  # as if the redis extra were not installed\n"
        "import mpsflow, mpsflow.dedup.stores  # the rest works without it\n"
        "try:\n"
        f"    {statement}\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(type(exc).__name__, exc.name, str(exc), sep='|')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = run_ok([sys.executable, "-c", probe], None, env, timeout=60)
    assert done.stdout.strip() == (
        "ModuleNotFoundError|redis|RedisStore needs the redis extra: pip install 'mpsflow[redis]'"
    )


# -- configuration mistakes, and what startup says about them --------------------------------


def test_a_url_given_to_the_sqlite_store_says_where_redis_goes() -> None:
    with pytest.raises(ConfigurationError, match=r"RedisStore\(url\)"):
        SQLiteStore("redis://127.0.0.1:6379/0")


async def test_the_sqlite_store_makes_its_folder(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "data" / "dedup" / "idem.sqlite3", clock=FakeClock())
    try:
        claim = await store.claim("k", lease_seconds=30, payload_hash="h")
        assert claim.token
        assert (tmp_path / "data" / "dedup" / "idem.sqlite3").is_file()
    finally:
        await store.close()


def test_the_blocking_redis_client_is_refused_at_once() -> None:
    import redis

    with pytest.raises(ConfigurationError, match=r"redis\.asyncio\.Redis client, not redis\."):
        RedisStore(redis.Redis())  # type: ignore[arg-type]


def test_a_redis_url_without_a_scheme_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigurationError, match="redis://host:6379/0") as caught:
        RedisStore("admin:hunter2-secret@127.0.0.1:6379")
    assert "hunter2-secret" not in str(caught.value)


async def test_a_refused_password_is_named_at_startup(
    redis_spawn: Callable[[], RedisServer],
) -> None:
    server = redis_spawn()
    async with Redis.from_url(server.url) as admin:
        await admin.config_set("requirepass", "the-real-password")
    for url in (server.url, server.url.replace("redis://", "redis://:wrong-password@")):
        store = RedisStore(url, connect_timeout=0.5)
        try:
            with pytest.raises(StartupError) as caught:
                await require_store(store)
            assert str(caught.value).endswith(": check its password (dedup cannot run without it)")
            assert "wrong-password" not in str(caught.value)
        finally:
            await store.close()
