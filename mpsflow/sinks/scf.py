"""ScfInvokeSink: fan notifications out to another cloud function (SCF ``Invoke``, API 3.0).

Each record becomes one asynchronous invocation (``InvocationType=Event``): the record's JSON
text is the ``ClientContext``, which the called function receives as its ``event``. Requests
are signed with TC3-HMAC-SHA256 (``mpsflow.tencentcloud.tc3``) and sent with aiohttp to
``scf.tencentcloudapi.com``, or ``scf.internal.tencentcloudapi.com`` inside SCF
(``TENCENTCLOUD_RUNENV=SCF``).

Asynchronous invocations accept at most 128 KB of ``ClientContext``, and a full
WorkflowTask notification can be larger. ``overflow`` decides what happens then:

* ``"reject"`` (default): the record fails with a permanent ``SinkError`` saying so;
* an offloader such as ``S3Sink`` (anything with ``start``/``close``/``put(record) ->
  ObjectRef``): the record is written to COS first and the function is invoked with a small
  reference instead, ``{"mpsflowRef": {"bucket", "key", "region"}, "EventType", "TaskId",
  "Status"}``; the callee fetches the object when it sees ``mpsflowRef``. The sink starts and
  closes the offloader, so give it an ``S3Sink`` of its own.

Idempotency: ``Invoke`` has no deduplication (no request token), so invocations are at least
once: a handler re-run after a crash invokes the function again. The record's idempotency key
(from ``ctx.effect_key``, the same on such a re-run) is passed along for the callee to dedup
on: in the reference as ``"mpsflowKey"``, and, with ``key_field="..."``, added under that
name to a record whose JSON is an object (off by default: it changes the callee's event). An
offloaded record is stored under a name derived from its key, so a re-run overwrites it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import aiohttp
import msgspec
from yarl import URL

from mpsflow._http import SessionHolder
from mpsflow._json import dumps_line, identify
from mpsflow.clock import Clock, SystemClock
from mpsflow.errors import SinkError
from mpsflow.sinks._post import post
from mpsflow.sinks.base import KeyedSinkBase, check_keys
from mpsflow.sinks.cos import ObjectRef
from mpsflow.tencentcloud.cmq.credentials import (
    Credential,
    CredentialProvider,
    EnvironmentCredentials,
    StaticCredentials,
)
from mpsflow.tencentcloud.tc3 import tc3_headers

__all__ = [
    "MAX_ASYNC_CLIENT_CONTEXT",
    "SCF_API_VERSION",
    "Offloader",
    "ScfInvokeSink",
    "scf_host",
]

SCF_API_VERSION = "2018-04-16"
MAX_ASYNC_CLIENT_CONTEXT = 128 * 1024
"""Largest ``ClientContext`` (UTF-8 bytes) an asynchronous ``Invoke`` accepts."""

_log = logging.getLogger("mpsflow.sinks")
_TRANSIENT_CODE_PREFIXES = ("RequestLimitExceeded", "InternalError")
_MAX_REPLY = 256 * 1024


@runtime_checkable
class Offloader(Protocol):
    """Stores a record somewhere the invoked function can fetch it (``S3Sink`` is one)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def put(self, record: object, *, idempotency_key: str | None = None) -> ObjectRef:
        """Store ``record`` and say where; raise ``SinkError`` on failure.

        With ``idempotency_key``, storing the same keyed record again must not make a second
        copy (``S3Sink`` overwrites one deterministic object).
        """
        ...


def _with_field(text: bytes, field: str, value: str) -> bytes:
    """``text`` (one JSON value) with ``field: value`` set when it is an object, else as is."""
    if not text.startswith(b"{"):
        return text
    document = msgspec.json.decode(text)
    if not isinstance(document, dict):  # pragma: no cover - "{" always starts an object
        return text
    document[field] = value
    return _encoder.encode(document)


def scf_host(environ: Any = None) -> str:
    """The SCF API host: the internal one when running inside SCF."""
    env = os.environ if environ is None else environ
    if env.get("TENCENTCLOUD_RUNENV") == "SCF":
        return "scf.internal.tencentcloudapi.com"
    return "scf.tencentcloudapi.com"


class _Error(msgspec.Struct):
    Code: str = ""
    Message: str = ""


class _Result(msgspec.Struct):
    FunctionRequestId: str = ""


class _Response(msgspec.Struct):
    RequestId: str = ""
    Error: _Error | None = None
    Result: _Result | None = None


class _Envelope(msgspec.Struct):
    Response: _Response


_reply_decoder = msgspec.json.Decoder(_Envelope)
_encoder = msgspec.json.Encoder()


class ScfInvokeSink(KeyedSinkBase):
    """Invokes ``function_name`` asynchronously once per record.

    ``credentials``: a ``Credential`` or provider; by default the ``TENCENTCLOUD_*`` keys SCF
    injects (read before every request). ``endpoint``: a base URL overriding the API host
    (tests, private gateways). ``session``: an ``aiohttp.ClientSession`` to share.
    ``key_field``: add each record's idempotency key under this name to the event the callee
    receives (object records only; see the module doc).
    """

    def __init__(
        self,
        function_name: str,
        *,
        region: str,
        namespace: str = "default",
        qualifier: str = "$LATEST",
        credentials: Credential | CredentialProvider | None = None,
        endpoint: str | None = None,
        overflow: Literal["reject"] | Offloader = "reject",
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        clock: Clock | None = None,
        max_client_context: int = MAX_ASYNC_CLIENT_CONTEXT,
        key_field: str | None = None,
    ) -> None:
        if overflow != "reject" and not isinstance(overflow, Offloader):
            raise ValueError("overflow must be 'reject' or an offloader such as S3Sink")
        self.function_name = function_name
        self.region = region
        self.namespace = namespace
        self.qualifier = qualifier
        if isinstance(credentials, Credential):
            credentials = StaticCredentials(credentials)
        self._credentials: CredentialProvider = credentials or EnvironmentCredentials()
        self._url = URL(endpoint) if endpoint else URL(f"https://{scf_host()}/")
        host = self._url.raw_host or ""
        self._host = f"{host}:{self._url.port}" if self._url.explicit_port else host
        self.overflow = overflow
        self.timeout = timeout
        self.max_client_context = max_client_context
        self.key_field = key_field
        self._clock: Clock = clock or SystemClock()
        self._session = SessionHolder(session)

    async def start(self) -> None:
        await self._credentials.get_credential()  # fail at startup when no keys are set
        self._session.open()
        if not isinstance(self.overflow, str):
            await self.overflow.start()

    async def close(self) -> None:
        try:
            if not isinstance(self.overflow, str):
                await self.overflow.close()
        finally:
            await self._session.close()

    async def send_keyed(self, batch: Sequence[object], keys: Sequence[str | None]) -> None:
        """Invoke the function once per record, passing each record's key along."""
        check_keys(batch, keys)
        # Refuse or offload every record before invoking any, so a record refused for its
        # size does not cause the others to be invoked twice when the batch is split.
        contexts = [
            await self._client_context(record, key) for record, key in zip(batch, keys, strict=True)
        ]
        for client_context in contexts:
            await self._invoke(client_context)

    async def _client_context(self, record: object, key: str | None = None) -> str:
        """The ``ClientContext`` for ``record``: its JSON, or a reference when too large."""
        try:
            text = dumps_line(record)
            if key is not None and self.key_field is not None:
                text = _with_field(text, self.key_field, key)
        except (TypeError, ValueError, msgspec.MsgspecError) as exc:
            raise SinkError(
                f"record has no JSON form ({type(exc).__name__})", transient=False
            ) from None
        if len(text) <= self.max_client_context:
            return text.decode()
        if isinstance(self.overflow, str):
            raise SinkError(
                f"record is {len(text)} bytes, over the {self.max_client_context}-byte limit of "
                f"an asynchronous SCF invocation (overflow='reject'; pass an S3Sink to offload)",
                transient=False,
            )
        if key is None:
            ref = await self.overflow.put(record)
        else:
            ref = await self.overflow.put(record, idempotency_key=key)
        identity = identify(record)
        _log.info(
            "SCF %s: %d-byte record offloaded to %s/%s",
            self.function_name,
            len(text),
            ref.bucket,
            ref.key,
        )
        reference: dict[str, object] = {
            "mpsflowRef": {"bucket": ref.bucket, "key": ref.key, "region": ref.region},
            "EventType": identity.event_type,
            "TaskId": identity.task_id,
            "Status": identity.status,
        }
        if key is not None:
            reference["mpsflowKey"] = key
        return _encoder.encode(reference).decode()

    async def _invoke(self, client_context: str) -> None:
        session = self._session.session
        if session is None:
            raise SinkError(f"SCF sink for {self.function_name!r} is not started", transient=True)
        payload = _encoder.encode(
            {
                "FunctionName": self.function_name,
                "InvocationType": "Event",
                "Qualifier": self.qualifier,
                "Namespace": self.namespace,
                "ClientContext": client_context,
            }
        )
        credential = await self._credentials.get_credential()
        headers = tc3_headers(
            secret_id=credential.secret_id,
            secret_key=credential.secret_key,
            token=credential.token,
            service="scf",
            host=self._host,
            action="Invoke",
            version=SCF_API_VERSION,
            payload=payload,
            timestamp=int(self._clock.time()),
            region=self.region,
        )
        status, reply = await post(
            session,
            self._url,
            payload,
            headers,
            timeout=self.timeout,
            max_reply=_MAX_REPLY,
            describe=lambda exc: f"SCF Invoke {self.function_name!r} failed: {type(exc).__name__}",
        )
        self._check(status, reply)

    def _check(self, status: int, reply: bytes) -> None:
        where = f"SCF Invoke {self.function_name!r}"
        if status != 200:
            transient = status >= 500 or status == 429
            raise SinkError(f"{where} answered HTTP {status}", transient=transient)
        try:
            response = _reply_decoder.decode(reply).Response
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise SinkError(f"{where}: unreadable reply", transient=True) from None
        if response.Error is not None:
            code = response.Error.Code
            transient = code.startswith(_TRANSIENT_CODE_PREFIXES)
            raise SinkError(f"{where}: {code} (request {response.RequestId})", transient=transient)
        request_id = response.Result.FunctionRequestId if response.Result else ""
        _log.debug("%s queued as %s", where, request_id or response.RequestId)

    def __repr__(self) -> str:
        return (
            f"ScfInvokeSink({self.function_name!r}, region={self.region!r}, "
            f"namespace={self.namespace!r}, endpoint={str(self._url)!r})"
        )
