"""The shared idempotency store: Redis, for many workers on many hosts (``mpsflow[redis]``).

A record is one Redis hash (state, owner token, payload hash, expiry) whose key TTL is the
lease or the completed TTL, so Redis itself drops abandoned leases. Every operation is one
Lua script, hence atomic: ``claim`` writes only when no live record exists, and ``complete`` /
``release`` are compare-and-set / compare-and-delete on the owner token.

Liveness is decided by the stored expiry compared with ``now`` from the store's clock (passed
to the script), not by Redis' own clock alone: the key TTL is the backstop that frees memory.
This keeps the semantics identical to the other stores and lets tests drive time with a fake
clock. Hosts sharing one Redis should keep their clocks in sync (NTP); skew shifts when a
lease is seen as expired by that amount.

Calls are pipelined: what concurrent callers (every handler of a delivery, every delivery in
flight) ask for in one turn of the event loop, or while the previous pipeline is out, goes to
Redis as one pipeline of scripts, one round trip for all of them. Each script stays atomic on
its own; a pipeline that fails (a timeout, a lost connection) fails every call in it with
``StoreUnavailable``. The batching uses asyncio futures: the store needs anyio's asyncio backend.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from typing import Any, Final

try:
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.connection import SSLConnection
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.commands.core import AsyncScript
    from redis.exceptions import NoScriptError, RedisError
except ModuleNotFoundError as _missing:
    if _missing.name != "redis" and not (_missing.name or "").startswith("redis."):
        raise
    raise ModuleNotFoundError(
        "RedisStore needs the redis extra: pip install 'mpsflow[redis]'", name="redis"
    ) from None

from mpsflow.clock import Clock, SystemClock
from mpsflow.dedup.stores.base import Claim, ClaimState, store_unavailable
from mpsflow.errors import ConfigurationError

__all__ = ["RedisStore"]

_MAX_PIPELINE: Final = 256
"""The most calls in one pipeline."""

_Call = tuple[AsyncScript, str, tuple[str | int, ...], "asyncio.Future[Any]"]

# Lua strings below spell the ClaimState values: "in_progress", "completed", "claimed".
_CLAIMED = "claimed"

# KEYS[1] record; ARGV: now, lease ms, token, payload hash, expires_at.
# Returns {state, payload hash, expires_at} of a live record, or {"claimed", "", expires_at}.
_CLAIM = """
local r = redis.call('HMGET', KEYS[1], 's', 'h', 'e')
local e = tonumber(r[3])
if r[1] and e and e > tonumber(ARGV[1]) then
  return {r[1], r[2] or '', r[3]}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 's', 'in_progress', 't', ARGV[3], 'h', ARGV[4], 'e', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {'claimed', '', ARGV[5]}
"""

# Only the owner of a live lease gets past this prologue of complete and release.
_OWNED = """
local r = redis.call('HMGET', KEYS[1], 's', 't', 'e')
local e = tonumber(r[3])
if r[1] ~= 'in_progress' or r[2] ~= ARGV[1] or not e or e <= tonumber(ARGV[2]) then
  return 0
end
"""

# ARGV: token, now, ttl ms, expires_at.
_COMPLETE = (
    _OWNED
    + """
redis.call('HSET', KEYS[1], 's', 'completed', 'e', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# ARGV: token, now.
_RELEASE = (
    _OWNED
    + """
redis.call('DEL', KEYS[1])
return 1
"""
)


class RedisStore:
    """Idempotency records in Redis, shared by every worker pointing at the same server.

    Pass a URL (``redis://host:6379/0``; the store then owns and closes its client, with short
    socket timeouts and one immediate reconnect) or a ready ``redis.asyncio.Redis`` client (left
    open on :meth:`close`; its own timeouts apply). Any Redis error or timeout raises
    :class:`~mpsflow.errors.StoreUnavailable`. Keys are ``prefix + key``.

    At most ``max_connections`` commands run at once; more wait up to ``pool_timeout`` for a
    free connection; each command still fails within ``socket_timeout`` once the server stops
    answering.
    """

    def __init__(
        self,
        url_or_client: str | Redis,
        *,
        prefix: str = "mpsflow:idem:",
        clock: Clock | None = None,
        socket_timeout: float = 1.0,
        connect_timeout: float = 1.0,
        max_connections: int = 32,
        pool_timeout: float = 10.0,
    ) -> None:
        if pool_timeout <= 0:
            raise ConfigurationError("pool_timeout must be positive")
        if isinstance(url_or_client, str):
            # A bounded pool: under load, commands queue for a connection (up to
            # ``pool_timeout``) instead of opening one connection per in-flight delivery. The
            # wait is longer than the socket timeout: a busy pool means a live but loaded
            # store, and deferring the delivery would only bring it back later.
            pool = BlockingConnectionPool.from_url(
                url_or_client,
                max_connections=max_connections,
                timeout=pool_timeout,
                socket_timeout=socket_timeout,
                socket_connect_timeout=connect_timeout,
                retry=Retry(NoBackoff(), 1),
            )
            self._client = Redis.from_pool(pool)  # the client owns (and closes) the pool
            self._owns_client = True
        else:
            self._client = url_or_client
            self._owns_client = False
        self._prefix = prefix
        self._description, self._secrets = _where(self._client)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._claim = self._client.register_script(_CLAIM)
        self._complete = self._client.register_script(_COMPLETE)
        self._release = self._client.register_script(_RELEASE)
        self._closed = False
        self._queued: list[_Call] = []
        self._flusher: asyncio.Task[None] | None = None
        self.pipelines = 0
        """Pipelines sent so far (for tests and benchmarks)."""

    def __repr__(self) -> str:
        # Never the URL as given: it may carry a password.
        return f"RedisStore({self._description!r}, prefix={self._prefix!r})"

    def describe(self) -> str:
        """The server as ``redis://host:port/db`` (``rediss://`` over TLS, ``unix://path?db=n``
        for a socket), without username or password."""
        return self._description

    async def claim(
        self, key: str, *, lease_seconds: float, payload_hash: str, token: str = ""
    ) -> Claim:
        """Take ``key`` as IN_PROGRESS unless a live record exists."""
        lease_ms = _milliseconds("lease_seconds", lease_seconds)
        now = self._clock.time()
        token = token or secrets.token_hex(16)
        expires_at = now + lease_seconds
        args = (repr(now), lease_ms, token, payload_hash, repr(expires_at))
        state, stored_hash, stored_expiry = map(_text, await self._call(self._claim, key, args))
        if state == _CLAIMED:
            return Claim(ClaimState.CLAIMED, token=token, expires_at=expires_at)
        return Claim(ClaimState(state), payload_hash=stored_hash, expires_at=float(stored_expiry))

    async def complete(self, key: str, token: str, *, ttl_seconds: float) -> bool:
        """Turn the caller's live lease into a COMPLETED record kept for ``ttl_seconds``."""
        ttl_ms = _milliseconds("ttl_seconds", ttl_seconds)
        now = self._clock.time()
        args = (token, repr(now), ttl_ms, repr(now + ttl_seconds))
        return bool(await self._call(self._complete, key, args))

    async def release(self, key: str, token: str) -> bool:
        """Delete the caller's live lease so a redelivery can run the handler again."""
        args = (token, repr(self._clock.time()))
        return bool(await self._call(self._release, key, args))

    async def ping(self) -> bool:
        """True when Redis answers PING."""
        if self._closed:
            return False
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        """Close the client if this store created it; later calls raise StoreUnavailable."""
        if self._closed:
            return
        self._closed = True
        flusher = self._flusher
        if (
            flusher is not None
            and not flusher.done()
            and flusher.get_loop() is (asyncio.get_running_loop())
        ):
            await asyncio.wait([flusher])  # answer what was asked before closing
        if self._owns_client:
            await self._client.aclose()

    async def _call(self, script: AsyncScript, key: str, args: tuple[str | int, ...]) -> Any:
        if self._closed:
            raise store_unavailable(self._description, "closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queued.append((script, self._prefix + key, args, future))
        flusher = self._flusher
        if flusher is None or flusher.done() or flusher.get_loop() is not loop:
            self._flusher = loop.create_task(self._flush())
        try:
            return await future
        except (RedisError, OSError) as exc:
            raise store_unavailable(self._description, exc, secrets=self._secrets) from exc

    async def _flush(self) -> None:
        """Send what is queued, a pipeline at a time, until nothing is left."""
        await asyncio.sleep(0)  # the callers of this turn of the loop join the first pipeline
        while self._queued:
            batch = self._queued[:_MAX_PIPELINE]
            del self._queued[:_MAX_PIPELINE]
            try:
                results = await self._send(batch)
            except (RedisError, OSError) as exc:
                results = [exc] * len(batch)
            except BaseException:  # cancelled with its event loop: nobody is left to answer
                for *_, future in batch:
                    future.cancel()
                raise
            for (*_, future), result in zip(batch, results, strict=True):
                if future.done():  # its caller was cancelled
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _send(self, batch: list[_Call]) -> list[Any]:
        """One pipeline of EVALSHAs; scripts the server does not know are loaded and rerun."""
        self.pipelines += 1
        pipeline = self._client.pipeline(transaction=False)
        for script, key, args, _ in batch:
            pipeline.evalsha(script.sha, 1, key, *args)
        results: list[Any] = await pipeline.execute(raise_on_error=False)
        unknown = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if unknown:  # a restarted or different server: load them, then run those calls again
            for script in {batch[i][0] for i in unknown}:
                script.sha = await self._client.script_load(script.script)
            pipeline = self._client.pipeline(transaction=False)
            for i in unknown:
                script, key, args, _ = batch[i]
                pipeline.evalsha(script.sha, 1, key, *args)
            for i, result in zip(
                unknown, await pipeline.execute(raise_on_error=False), strict=True
            ):
                results[i] = result
        return results


def _where(client: Redis) -> tuple[str, tuple[str, ...]]:
    """(the client's server, safe to log; its password, to mask wherever it might show up)."""
    try:
        pool = client.connection_pool
        options = pool.connection_kwargs
        password = options.get("password")
        secrets = (password,) if isinstance(password, str) and len(password) >= 4 else ()
        db = options.get("db", 0)
        if options.get("path"):
            return f"unix://{options['path']}?db={db}", secrets
        scheme = "rediss" if issubclass(pool.connection_class, SSLConnection) else "redis"
        host = str(options.get("host", "localhost"))
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{options.get('port', 6379)}/{db}", secrets
    except Exception:  # a client of an unexpected shape: say what it is, nothing more
        return f"redis ({type(client).__name__})", ()


def _text(value: bytes | str) -> str:
    """Script replies are bytes, or str on a client made with ``decode_responses=True``."""
    return value.decode() if isinstance(value, bytes) else value


def _milliseconds(name: str, seconds: float) -> int:
    if not seconds > 0:
        raise ValueError(f"{name} must be positive")
    return max(1, math.ceil(seconds * 1000))
