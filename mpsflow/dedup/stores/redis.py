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
``StoreUnavailable``, while an error reply fails only its own call. The store writes the
pipeline's RESP itself (under half the CPU of redis-py's packing).

Pipelines go over the store's own connection (:mod:`mpsflow.dedup.stores._resp`: one write and
one future per pipeline, replies parsed as they arrive), which costs about half the CPU of
reading each reply through redis-py; a lost connection is opened again once, at once. Servers
that connection cannot speak for (TLS, a credential provider, RESP3, a client name) are reached
through a connection of the client's pool instead, under that connection's retry policy. The
batching uses asyncio futures: the store needs anyio's asyncio backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import math
import os
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any, Final, NamedTuple

try:
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.connection import AbstractConnection, ConnectionPool, SSLConnection
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError, NoScriptError, RedisError, ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ModuleNotFoundError as _missing:
    if _missing.name != "redis" and not (_missing.name or "").startswith("redis."):
        raise
    raise ModuleNotFoundError(
        "RedisStore needs the redis extra: pip install 'mpsflow[redis]'", name="redis"
    ) from None

from mpsflow.clock import Clock, SystemClock
from mpsflow.dedup.stores._resp import RespConnection, fast_address
from mpsflow.dedup.stores.base import Claim, ClaimState, store_unavailable
from mpsflow.errors import ConfigurationError

__all__ = ["RedisStore"]

_MAX_PIPELINE: Final = 256
"""The most calls in one pipeline."""


class _Script(NamedTuple):
    """A Lua script and the SHA1 that EVALSHA names it by."""

    text: str
    sha: str


_Call = tuple[_Script, str, tuple[str | int, ...], "asyncio.Future[Any]"]
_Command = Sequence[str | int]
_Exchange = Callable[[list[_Command]], Awaitable[list[Any]]]

# Lua strings below spell the ClaimState values: "in_progress", "completed", "claimed".
_CLAIMED = "claimed"

# KEYS[1] record; ARGV: now, lease ms, token, payload hash, expires_at.
# Returns {state, payload hash, expires_at} of a live record, or {"claimed", "", expires_at}.
# A live lease under the caller's own token is the caller's: a pipeline sent again after its
# connection was lost (the first one ran, its replies were lost) answers as the first did.
_CLAIM = """
local r = redis.call('HMGET', KEYS[1], 's', 'h', 'e', 't')
local e = tonumber(r[3])
if r[1] and e and e > tonumber(ARGV[1]) then
  if r[1] == 'in_progress' and r[4] == ARGV[3] then
    return {'claimed', '', r[3]}
  end
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
  return %s
end
"""

# ARGV: token, now, ttl ms, expires_at[, "again"]. Sent again (ARGV[5], see _CLAIM), a record
# the caller's token completed answers 1: the first call did it, and its reply was lost.
_COMPLETE = (
    _OWNED
    % (
        "(ARGV[5] == 'again' and r[1] == 'completed' and r[2] == ARGV[1] and e"
        " and e > tonumber(ARGV[2])) and 1 or 0"
    )
    + """
redis.call('HSET', KEYS[1], 's', 'completed', 'e', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# ARGV: token, now.
_RELEASE = (
    _OWNED % "0"
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

    Calls fail within twice ``socket_timeout`` (the pipeline is sent once more, on a new
    connection; the scripts make that harmless) once the server stops answering; a given
    client's own timeouts, keepalive and defaults apply. ``max_connections``
    and ``pool_timeout`` bound the client's pool: on a server reached through it (TLS and the
    like, see the module docstring) at most ``max_connections`` pipelines run at once, and more
    wait up to ``pool_timeout`` for a free connection.
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
        given: object = url_or_client  # typed away, but redis.Redis is an easy mistake
        if not isinstance(given, (str, Redis)):
            kind = type(given)
            raise ConfigurationError(
                "RedisStore needs a URL or a redis.asyncio.Redis client, not"
                f" {kind.__module__}.{kind.__qualname__} (redis.Redis is the blocking client)"
            )
        if pool_timeout <= 0:
            raise ConfigurationError("pool_timeout must be positive")
        if isinstance(url_or_client, str):
            # A bounded pool: under load, commands queue for a connection (up to
            # ``pool_timeout``) instead of opening one connection per in-flight delivery. The
            # wait is longer than the socket timeout: a busy pool means a live but loaded
            # store, and deferring the delivery would only bring it back later.
            try:
                pool = BlockingConnectionPool.from_url(
                    url_or_client,
                    max_connections=max_connections,
                    timeout=pool_timeout,
                    socket_timeout=socket_timeout,
                    socket_connect_timeout=connect_timeout,
                    retry=Retry(NoBackoff(), 1),
                )
            except ValueError:  # never the URL itself in the message: it may hold a password
                raise ConfigurationError(
                    "RedisStore needs a URL like redis://host:6379/0 (or rediss://, unix://);"
                    " the one given has no such scheme or cannot be read"
                ) from None
            self._client = Redis.from_pool(pool)  # the client owns (and closes) the pool
            self._owns_client = True
        else:
            self._client = url_or_client
            self._owns_client = False
        self._prefix = prefix
        self._description, self._secrets = _where(self._client)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._pool: ConnectionPool = self._client.connection_pool
        # typed here: redis-py's pool methods carry no annotations
        get_connection: Callable[..., Awaitable[AbstractConnection]] = self._pool.get_connection
        self._get_connection = get_connection
        # redis-py < 5.3 needs a command name to hand out a connection; later ones warn on one.
        parameter = inspect.signature(get_connection).parameters.get("command_name")
        self._connection_args: tuple[str, ...] = (
            ("EVALSHA",)
            if parameter is not None and parameter.default is inspect.Parameter.empty
            else ()
        )
        options = self._pool.connection_kwargs  # str arguments encoded as the client would
        self._encoding = (
            str(options.get("encoding", "utf-8")),
            str(options.get("encoding_errors", "strict")),
        )
        self._address = fast_address(self._pool)
        """Where the store's own connection goes; None: through the client's pool."""
        self._link: RespConnection | None = None
        self._claim = _script(_CLAIM)
        self._complete = _script(_COMPLETE)
        self._release = _script(_RELEASE)
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
        reply = await self._call(self._claim, key, args)
        state, stored_hash, stored_expiry = (part.decode() for part in reply)  # read as bytes
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
        self._drop_link()
        if self._owns_client:
            await self._client.aclose()

    async def _call(self, script: _Script, key: str, args: tuple[str | int, ...]) -> Any:
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
        """One pipeline of EVALSHAs, on the store's own connection or one of the pool's."""
        self.pipelines += 1
        if self._address is not None:
            return await self._run_scripts(batch, self._exchange_own)
        connection = await self._get_connection(*self._connection_args)
        answered = False
        try:
            results = await self._run_scripts(batch, partial(self._exchange, connection))
            answered = True
        finally:
            try:
                if not answered:  # never back into the pool with replies left unread
                    await connection.disconnect(nowait=True)
            finally:
                await asyncio.shield(self._pool.release(connection))
        return results

    async def _run_scripts(self, batch: list[_Call], exchange: _Exchange) -> list[Any]:
        """The replies to ``batch``; scripts the server does not know are loaded and rerun."""
        results = await exchange([_evalsha(call) for call in batch])
        unknown = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if unknown:  # a restarted or different server: load them, then run those calls again
            scripts = list(dict.fromkeys(batch[i][0] for i in unknown))
            loads: list[_Command] = [("SCRIPT", "LOAD", script.text) for script in scripts]
            replies = await exchange(loads + [_evalsha(batch[i]) for i in unknown])
            loaded, rerun = replies[: len(loads)], replies[len(loads) :]
            failed = {  # a script that did not load: its calls get the reason
                script: reply
                for script, reply in zip(scripts, loaded, strict=True)
                if isinstance(reply, Exception)
            }
            for i, reply in zip(unknown, rerun, strict=True):
                results[i] = failed.get(batch[i][0], reply)
        return results

    async def _exchange_own(self, commands: list[_Command]) -> list[Any]:
        """``commands`` on the store's own connection, opened (again) when needed; a pipeline
        whose connection is lost or times out is sent once more on a new one."""
        assert self._address is not None
        payload = _pack(commands, *self._encoding)
        for attempt in (1, 2):
            if attempt == 2:  # a completion that went through the first time answers 1
                payload = _pack([self._again(command) for command in commands], *self._encoding)
            link = self._link
            if link is None or not link.usable:
                self._drop_link()
                if self._closed:
                    raise ConnectionError("the store is closed")
                link = self._link = await RespConnection.open(self._address)
            try:
                return await link.exchange(payload, len(commands))
            except (ConnectionError, RedisTimeoutError):
                self._drop_link()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _again(self, command: _Command) -> _Command:
        """``command`` as sent a second time: a completion says so (see ``_COMPLETE``)."""
        if len(command) > 1 and command[1] == self._complete.sha:
            return (*command, "again")
        return command

    def _drop_link(self) -> None:
        """Forget the store's own connection, closing it when it is this process's: a forked
        child must not touch its parent's sockets (their event loop's epoll is shared)."""
        link, self._link = self._link, None
        if link is not None and link.pid == os.getpid():
            with contextlib.suppress(RuntimeError):  # its event loop is closed
                link.close()

    async def _exchange(
        self, connection: AbstractConnection, commands: list[_Command]
    ) -> list[Any]:
        """Send ``commands`` in one write and read their replies (bytes, ints, lists of them;
        an error reply as its exception), retried on a lost connection as its policy says."""

        async def round_trip() -> list[Any]:
            await connection.send_packed_command(_pack(commands, *self._encoding))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response(disable_decoding=True))
                except ResponseError as error:  # read whole: the connection stays in step
                    replies.append(error)
            return replies

        async def reconnect(_error: Exception) -> None:
            await connection.disconnect()

        replies: list[Any] = await connection.retry.call_with_retry(round_trip, reconnect)
        return replies


def _script(text: str) -> _Script:
    return _Script(text, hashlib.sha1(text.encode()).hexdigest())


def _evalsha(call: _Call) -> _Command:
    script, key, args, _ = call
    return ("EVALSHA", script.sha, 1, key, *args)


def _pack(commands: Iterable[_Command], encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``commands`` as RESP arrays of bulk strings, byte for byte what redis-py's
    ``pack_commands`` sends for them, at a fraction of its CPU cost."""
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            data = arg.encode(encoding, errors) if isinstance(arg, str) else b"%d" % arg
            out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


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


def _milliseconds(name: str, seconds: float) -> int:
    if not seconds > 0:
        raise ValueError(f"{name} must be positive")
    return max(1, math.ceil(seconds * 1000))
