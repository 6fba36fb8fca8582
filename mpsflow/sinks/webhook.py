"""WebhookSink: POST records as JSON to an HTTP endpoint, optionally HMAC-signed.

Each record becomes one POST (or, with ``batch_body=True``, a batch becomes one JSON array).
A ``template`` turns a record into the body to send. Replies map onto ``SinkError``:
5xx, 408, 429 and network errors are transient; any other non-2xx reply is permanent.

Signing (``secret=...``): every request carries ``X-Mpsflow-Timestamp: <unix seconds>`` and
``X-Mpsflow-Signature: sha256=<hex>``, the HMAC-SHA256 under the shared secret of
``<timestamp> + "." + <the exact body bytes>``. A receiver verifies it like this
(``verify_signature`` does exactly that)::

    1. read both headers and the raw body, before any JSON parsing;
    2. refuse if the timestamp is more than a few minutes from now (limits replays);
    3. recompute "sha256=" + hex(HMAC_SHA256(secret, timestamp + "." + body)) and compare it
       with the header using a constant-time comparison (hmac.compare_digest).

Idempotency: a record emitted by a handler carries a key derived from ``ctx.effect_key``, the
same when a re-run of the same effect (after a crash, on another worker) emits it again. Each
request carries it as ``Idempotency-Key: <key>`` (``idempotency_header``), so the receiver can
drop the repeat. With ``batch_body=True`` a request holds several records and carries one key,
:func:`batch_idempotency_key` of its records' keys in order: the same for the same batch sent
again (the channel retrying it), but a re-run may batch records differently, so receivers
that must never see a record twice should use one request per record (the default). The
header is not covered by the HMAC signature. Records without a key (submitted outside a
handler) get no header. Besides, the sink remembers the keys of its last ``remember_keys``
delivered records and does not post them again (a batch retried after it was half sent, a
handler re-run in the same process).

URLs are logged and shown with their query values and user info masked (WeCom robot keys
live in the query string); the secret never appears in logs, errors or reprs.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping, Sequence

import aiohttp
from yarl import URL

from mpsflow._http import SessionHolder, connect_failure
from mpsflow._json import dumps
from mpsflow.clock import Clock, SystemClock
from mpsflow.errors import SinkError
from mpsflow.sinks._post import post
from mpsflow.sinks.base import KeyedSinkBase, RecentKeys, check_keys

__all__ = [
    "Template",
    "WebhookSink",
    "batch_idempotency_key",
    "redact_url",
    "sign_body",
    "verify_signature",
]

Template = Callable[[object], object]
"""Turns a record into the JSON-able body to send."""

_log = logging.getLogger("mpsflow.sinks")
_MAX_REPLY = 64 * 1024
_TRANSIENT_STATUSES = frozenset({408, 425, 429})


def redact_url(url: str | URL) -> str:
    """``url`` with user info dropped and every query value replaced by ``***``."""
    parsed = URL(url)
    if parsed.user is not None or parsed.password is not None:
        parsed = parsed.with_user(None)
    if parsed.query_string:
        parsed = parsed.with_query([(name, "***") for name in parsed.query])
    return str(parsed)


def batch_idempotency_key(keys: Sequence[str | None]) -> str | None:
    """The one ``Idempotency-Key`` of a request holding records with ``keys`` (in order).

    ``None`` when no record has a key; else 32 hex digits of SHA-256 over the keys joined by
    newlines (a record without a key counts as ""), so the same records give the same key.
    """
    if all(key is None for key in keys):
        return None
    material = "\n".join(key or "" for key in keys).encode()
    return hashlib.sha256(material).hexdigest()[:32]


def _header_value(key: str) -> str:
    """``key`` itself when it is printable ASCII (always true of derived keys), else its digest."""
    if key.isascii() and key.isprintable() and len(key) <= 255:
        return key
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign_body(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Mpsflow-Signature`` value: ``sha256=`` + HMAC of ``f"{timestamp}."`` + body."""
    mac = hmac.new(_key(secret), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(
    secret: str | bytes,
    body: bytes,
    *,
    signature: str,
    timestamp: str,
    now: float,
    tolerance: float = 300.0,
) -> bool:
    """True when ``signature`` and ``timestamp`` (header values) are valid for ``body``."""
    try:
        stamp = int(timestamp)
    except ValueError:
        return False
    if abs(now - stamp) > tolerance:
        return False
    return hmac.compare_digest(sign_body(secret, stamp, body), signature)


class _RateLimit:
    """At most ``count`` requests in any ``window`` seconds, waiting on the clock."""

    def __init__(self, count: int, window: float, clock: Clock) -> None:
        self._count = count
        self._window = window
        self._clock = clock
        self._sent: collections.deque[float] = collections.deque()

    async def acquire(self) -> None:
        while True:
            now = self._clock.monotonic()
            while self._sent and self._sent[0] <= now - self._window:
                self._sent.popleft()
            if len(self._sent) < self._count:
                self._sent.append(now)
                return
            await self._clock.sleep(self._sent[0] + self._window - now)


class WebhookSink(KeyedSinkBase):
    """POSTs records (through ``template``) as JSON to ``url``.

    ``session``: an ``aiohttp.ClientSession`` to share (not closed by the sink); by default
    the sink opens its own in ``start``. ``rate_limit=(n, seconds)`` spaces requests out so
    that at most ``n`` go in any ``seconds`` (WeCom robots allow 20 a minute).
    ``idempotency_header`` names the header carrying each request's idempotency key (``None``:
    send none); ``remember_keys`` bounds the delivered keys kept to skip repeats (0: keep none).
    """

    def __init__(
        self,
        url: str,
        *,
        template: Template | None = None,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        secret: str | bytes | None = None,
        signature_header: str = "X-Mpsflow-Signature",
        timestamp_header: str = "X-Mpsflow-Timestamp",
        session: aiohttp.ClientSession | None = None,
        batch_body: bool = False,
        rate_limit: tuple[int, float] | None = None,
        clock: Clock | None = None,
        idempotency_header: str | None = "Idempotency-Key",
        remember_keys: int = 10_000,
    ) -> None:
        if remember_keys < 0:
            raise ValueError("remember_keys must not be negative")
        self._url = URL(url)
        self.safe_url = redact_url(self._url)
        self.template = template
        self.timeout = timeout
        self._headers = {"Content-Type": "application/json", "User-Agent": "mpsflow"}
        self._headers.update(headers or {})
        self._secret = secret
        self.signature_header = signature_header
        self.timestamp_header = timestamp_header
        self.batch_body = batch_body
        self._clock: Clock = clock or SystemClock()
        self._rate = _RateLimit(*rate_limit, self._clock) if rate_limit else None
        self._session = SessionHolder(session)
        self.idempotency_header = idempotency_header
        self.remember_keys = remember_keys
        self._delivered = RecentKeys(remember_keys)

    async def start(self) -> None:
        self._session.open()

    async def close(self) -> None:
        await self._session.close()

    async def send_keyed(self, batch: Sequence[object], keys: Sequence[str | None]) -> None:
        """POST the records, each with its key; records whose key was delivered are skipped."""
        check_keys(batch, keys)
        todo: list[tuple[bytes, str | None]] = []
        seen: set[str] = set()
        for index, (record, key) in enumerate(zip(batch, keys, strict=True)):
            body = self._encode(record, index)
            if key is not None:
                if key in seen or key in self._delivered:
                    _log.debug("POST %s: skipping already delivered %s", self.safe_url, key)
                    continue
                seen.add(key)
            todo.append((body, key))
        if not todo:
            return
        if self.batch_body:
            batch_keys = [key for _, key in todo]
            body = b"[" + b",".join(body for body, _ in todo) + b"]"
            await self._post(body, batch_idempotency_key(batch_keys))
            self._remember(batch_keys)
            return
        for body, key in todo:
            await self._post(body, key)
            self._remember([key])

    def _remember(self, keys: Sequence[str | None]) -> None:
        for key in keys:
            if key is not None:
                self._delivered.add(key)

    def check_response(self, status: int, body: bytes) -> None:
        """Judge a 2xx reply; raise ``SinkError`` to refuse it. Accepts everything here.

        Subclasses override this for endpoints that report errors inside a 200 (WeCom).
        """

    def _encode(self, record: object, index: int) -> bytes:
        try:
            value = self.template(record) if self.template is not None else record
            return dumps(value)
        except Exception as exc:
            raise SinkError(
                f"record {index} could not be turned into a body ({type(exc).__name__})",
                transient=False,
            ) from None

    async def _post(self, body: bytes, key: str | None = None) -> None:
        session = self._session.session
        if session is None:
            raise SinkError(f"webhook {self.safe_url} is not started", transient=True)
        headers = dict(self._headers)
        if key is not None and self.idempotency_header:
            headers[self.idempotency_header] = _header_value(key)
        if self._secret is not None:
            stamp = int(self._clock.time())
            headers[self.timestamp_header] = str(stamp)
            headers[self.signature_header] = sign_body(self._secret, stamp, body)
        if self._rate is not None:
            await self._rate.acquire()
        status, reply = await post(
            session,
            self._url,
            body,
            headers,
            timeout=self.timeout,
            max_reply=_MAX_REPLY,
            describe=lambda exc: f"POST {self.safe_url} failed: {_reason(exc, self.timeout)}",
        )
        _log.debug("POST %s -> %d (%d bytes)", self.safe_url, status, len(body))
        if 200 <= status < 300:
            self.check_response(status, reply)
            return
        transient = status >= 500 or status in _TRANSIENT_STATUSES
        raise SinkError(f"POST {self.safe_url} answered {status}", transient=transient)

    def __repr__(self) -> str:
        secret = ", secret=<hidden>" if self._secret is not None else ""
        return f"{type(self).__name__}({self.safe_url!r}{secret})"


def _reason(exc: BaseException, timeout: float) -> str:
    """A short, URL-free description of a transport error."""
    if isinstance(exc, asyncio.TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({connect_failure(exc)})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
