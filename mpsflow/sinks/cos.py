"""S3Sink: store each notification as an object in Tencent COS or any S3-compatible storage.

Objects are named by ``key_template`` (default ``{prefix}/{date}/{task_id}-{status}.json``),
with the event type, task id and status peeked from the record and the UTC date of the write
from the clock, so a redelivered notification overwrites its own object: retries are
idempotent.

A record emitted by a handler carries an idempotency key (from ``ctx.effect_key``), the same
when a re-run of the same effect emits it again (after a crash, on another worker, on another
day). Such a record is named by ``keyed_template`` instead (default
``{prefix}/{task_id}/{key}.json``), built only from the key and the record itself (no date,
time or digest), so a re-run overwrites the object the first run wrote instead of writing a
second one. Records without a key keep the ``key_template`` naming.

Raw notification bytes are stored exactly as received; other records are encoded as JSON.
Needs the ``cos`` extra (``aiobotocore``), imported only on ``start``: without it, ``start``
raises ``ConfigurationError`` saying ``pip install 'mpsflow[cos]'``.

Credentials, in order: the ``credentials`` argument (a ``Credential`` or a provider, asked
before every batch so rotating keys are honoured), the ``TENCENTCLOUD_SECRETID`` /
``TENCENTCLOUD_SECRETKEY`` / ``TENCENTCLOUD_SESSIONTOKEN`` variables SCF injects, else
botocore's default chain (``AWS_*`` variables, config files, instance roles).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import anyio

from mpsflow._json import dumps, identify
from mpsflow.clock import Clock, SystemClock
from mpsflow.errors import ConfigurationError, SinkError
from mpsflow.sinks.base import KeyedSinkBase, check_keys
from mpsflow.tencentcloud.cmq.credentials import (
    Credential,
    CredentialProvider,
    EnvironmentCredentials,
    StaticCredentials,
)

__all__ = [
    "DEFAULT_KEYED_TEMPLATE",
    "DEFAULT_KEY_TEMPLATE",
    "ObjectRef",
    "S3Sink",
    "cos_endpoint",
]

DEFAULT_KEY_TEMPLATE = "{prefix}/{date}/{task_id}-{status}.json"
DEFAULT_KEYED_TEMPLATE = "{prefix}/{task_id}/{key}.json"
_KEY_FIELDS = frozenset({"prefix", "date", "time", "event_type", "task_id", "status", "digest"})
_KEYED_FIELDS = frozenset({"prefix", "event_type", "task_id", "status", "key"})
"""Fields that are the same when a re-run emits the same record (no date, time or digest)."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "RequestTimeout",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
    }
)


def cos_endpoint(region: str) -> str:
    """The S3-compatible endpoint of Tencent COS in ``region`` (e.g. ``ap-guangzhou``)."""
    return f"https://cos.{region}.myqcloud.com"


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """Where a record was stored."""

    bucket: str
    key: str
    region: str


def _safe(value: str) -> str:
    cleaned = _UNSAFE.sub("_", value).strip(".")
    return cleaned or "unknown"


def _check_template(template: str) -> None:
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    unknown = names - _KEY_FIELDS
    if unknown or not names:
        raise ConfigurationError(
            f"key_template fields must be among {sorted(_KEY_FIELDS)}; got {sorted(names)}"
        )


def _check_keyed_template(template: str) -> None:
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    unknown = names - _KEYED_FIELDS
    if unknown or "key" not in names:
        raise ConfigurationError(
            f"keyed_template must use {{key}} and only fields among {sorted(_KEYED_FIELDS)} "
            f"(no date, time or digest: a re-run must get the same name); got {sorted(names)}"
        )


class S3Sink(KeyedSinkBase):
    """Writes every record to ``bucket`` as its own object (``put_object``).

    ``endpoint_url``: ``cos_endpoint(region)`` for COS (or use ``S3Sink.for_cos``), any
    S3-compatible URL, or ``None`` for AWS. ``concurrency`` objects of a batch are written at
    once. botocore's own retries are off: the ``SinkChannel`` in front owns retrying.
    ``keyed_template`` names records that carry an idempotency key (see the module doc).
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "mps",
        endpoint_url: str | None = None,
        region: str | None = None,
        credentials: Credential | CredentialProvider | None = None,
        key_template: str = DEFAULT_KEY_TEMPLATE,
        keyed_template: str = DEFAULT_KEYED_TEMPLATE,
        addressing_style: Literal["auto", "virtual", "path"] = "auto",
        content_type: str = "application/json",
        concurrency: int = 8,
        timeout: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        _check_template(key_template)
        _check_keyed_template(keyed_template)
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.key_template = key_template
        self.keyed_template = keyed_template
        self.addressing_style = addressing_style
        self.content_type = content_type
        self.concurrency = concurrency
        self.timeout = timeout
        self._clock: Clock = clock or SystemClock()
        if isinstance(credentials, Credential):
            credentials = StaticCredentials(credentials)
        self._provider: CredentialProvider | None = credentials
        self._session: Any = None
        self._client: Any = None
        self._client_stack: contextlib.AsyncExitStack | None = None
        self._client_identity: tuple[str, str, str | None] | None = None
        self._lock = anyio.Lock()

    @classmethod
    def for_cos(cls, bucket: str, *, region: str, **options: Any) -> S3Sink:
        """An ``S3Sink`` for the COS bucket ``bucket`` (``name-appid``) in ``region``."""
        options.setdefault("endpoint_url", cos_endpoint(region))
        options.setdefault("addressing_style", "virtual")
        return cls(bucket, region=region, **options)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            from aiobotocore.session import get_session
        except ImportError:
            raise ConfigurationError(
                "S3Sink needs the cos extra (aiobotocore): pip install 'mpsflow[cos]'"
            ) from None
        if self._provider is None and os.environ.get("TENCENTCLOUD_SECRETID"):
            self._provider = EnvironmentCredentials()
        self._session = get_session()
        async with self._lock:
            await self._ensure_client()

    async def close(self) -> None:
        async with self._lock:
            await self._drop_client()

    async def _ensure_client(self) -> Any:
        """The S3 client, re-created when the provider hands out different keys."""
        credential = await self._provider.get_credential() if self._provider else None
        identity = (
            (credential.secret_id, credential.secret_key, credential.token) if credential else None
        )
        if self._client is not None and identity == self._client_identity:
            return self._client
        await self._drop_client()
        from aiobotocore.config import AioConfig

        config = AioConfig(
            retries={"total_max_attempts": 1},
            s3={"addressing_style": self.addressing_style},
            # COS and most S3-compatible stores reject the checksum trailers that recent
            # botocore versions add by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=self.timeout,
            read_timeout=self.timeout,
            max_pool_connections=max(self.concurrency, 10),
        )
        keys: dict[str, Any] = {}
        if credential is not None:
            keys = {
                "aws_access_key_id": credential.secret_id,
                "aws_secret_access_key": credential.secret_key,
                "aws_session_token": credential.token,
            }
        stack = contextlib.AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                self._session.create_client(
                    "s3",
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    config=config,
                    **keys,
                )
            )
        except BaseException:
            await stack.aclose()
            raise
        self._client_stack = stack
        self._client_identity = identity
        return self._client

    async def _drop_client(self) -> None:
        stack, self._client_stack = self._client_stack, None
        self._client = None
        self._client_identity = None
        if stack is not None:
            await stack.aclose()

    # -- writing ---------------------------------------------------------------------------

    def key_for(
        self, record: object, body: bytes | None = None, *, idempotency_key: str | None = None
    ) -> str:
        """The object key ``record`` is written under now (with its idempotency key, if any)."""
        identity = identify(record)
        if idempotency_key is not None:
            keyed: Mapping[str, str] = {
                "prefix": self.prefix,
                "event_type": _safe(identity.event_type),
                "task_id": _safe(identity.task_id),
                "status": _safe(identity.status),
                "key": _safe(idempotency_key),
            }
            key = self.keyed_template.format_map(keyed)
            return re.sub(r"/{2,}", "/", key).lstrip("/")
        now = self._clock.time()
        fields: Mapping[str, str] = {
            "prefix": self.prefix,
            "date": time.strftime("%Y-%m-%d", time.gmtime(now)),
            "time": time.strftime("%H%M%S", time.gmtime(now)),
            "event_type": _safe(identity.event_type),
            "task_id": _safe(identity.task_id),
            "status": _safe(identity.status),
            "digest": hashlib.sha256(body if body is not None else dumps(record)).hexdigest()[:16],
        }
        key = self.key_template.format_map(fields)
        return re.sub(r"/{2,}", "/", key).lstrip("/")

    async def put(self, record: object, *, idempotency_key: str | None = None) -> ObjectRef:
        """Write one record and return where it went (used by ``ScfInvokeSink`` overflow).

        With ``idempotency_key`` the object is named by ``keyed_template``: writing the same
        keyed record again overwrites it.
        """
        async with self._lock:
            client = await self._client_or_fail()
        return await self._put(client, record, idempotency_key)

    async def send_keyed(self, batch: Sequence[object], keys: Sequence[str | None]) -> None:
        """Write each record as an object; keyed records under their deterministic name."""
        check_keys(batch, keys)
        async with self._lock:
            client = await self._client_or_fail()
        errors: list[SinkError] = []
        limiter = anyio.CapacityLimiter(self.concurrency)

        async def put_one(record: object, key: str | None) -> None:
            async with limiter:
                try:
                    await self._put(client, record, key)
                except SinkError as exc:
                    errors.append(exc)

        async with anyio.create_task_group() as group:
            for record, key in zip(batch, keys, strict=True):
                group.start_soon(put_one, record, key)
        if errors:
            permanent = [error for error in errors if not error.transient]
            raise permanent[0] if permanent else errors[0]

    async def _client_or_fail(self) -> Any:
        if self._session is None:
            raise SinkError(f"S3 sink for bucket {self.bucket!r} is not started", transient=True)
        try:
            return await self._ensure_client()
        except ConfigurationError as exc:
            raise SinkError(
                f"no credentials for bucket {self.bucket!r}: {exc}", transient=False
            ) from None
        except Exception as exc:
            raise _classify(exc, self.bucket) from None

    async def _put(self, client: Any, record: object, idempotency_key: str | None) -> ObjectRef:
        try:
            body = dumps(record)
        except (TypeError, ValueError) as exc:
            raise SinkError(
                f"record has no JSON form ({type(exc).__name__})", transient=False
            ) from None
        key = self.key_for(record, body, idempotency_key=idempotency_key)
        try:
            await client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType=self.content_type
            )
        except Exception as exc:
            raise _classify(exc, self.bucket) from None
        return ObjectRef(self.bucket, key, self.region or "")

    def __repr__(self) -> str:
        endpoint = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"S3Sink({self.bucket!r}, prefix={self.prefix!r}{endpoint})"


def _classify(exc: BaseException, bucket: str) -> SinkError:
    """Map a botocore / transport error onto a ``SinkError`` (no keys, no payload)."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        ParamValidationError,
        PartialCredentialsError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        transient = status >= 500 or status in (408, 429) or code in _TRANSIENT_CODES
        return SinkError(f"S3 bucket {bucket!r}: {code} (HTTP {status})", transient=transient)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | ParamValidationError):
        return SinkError(f"S3 bucket {bucket!r}: {type(exc).__name__}", transient=False)
    if isinstance(exc, BotoCoreError | aiohttp.ClientError | asyncio.TimeoutError | OSError):
        return SinkError(f"S3 bucket {bucket!r}: {type(exc).__name__}", transient=True)
    return SinkError(f"S3 bucket {bucket!r}: unexpected {type(exc).__name__}", transient=True)
