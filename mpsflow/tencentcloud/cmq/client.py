"""An asyncio client for the CMQ / TDMQ-CMQ data-plane HTTP API (queue message actions).

It speaks the CMQ form API that TDMQ-CMQ keeps for its data flow (Tencent Cloud docs: TDMQ for
CMQ "HTTP data-flow SDK"; CMQ API 2.0 "common parameters" and message APIs,
cloud.tencent.com/document/product/406/5883 and /406/5837 onwards): POST (or GET) to
``/v2/index.php`` with ``Action``, the common parameters and a signature (see
:mod:`mpsflow.tencentcloud.cmq.signing`), JSON answers with ``code``. It sends, receives and
deletes messages, one at a time or in batches of up to 16; ``7000`` (queue empty after the long
poll) comes back as ``None`` / ``[]``, and a partly failed batch delete as the list of handles
that failed. Network errors (a request that got no answer in time too, unless
``retry_timeouts=False``), throttling (4420) and internal errors (6000) are retried with backoff
on an injectable clock; authentication failures (4100) never are.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import Any, Final, TypeVar
from urllib.parse import urlencode, urlsplit

import aiohttp
import msgspec
import yarl

from mpsflow._http import PLAIN_HTTP_ADDRESS, SessionHolder, cannot_connect, connect_failure
from mpsflow.clock import Clock, SystemClock
from mpsflow.retry import RetryPolicy
from mpsflow.tencentcloud.cmq.credentials import Credential, CredentialProvider, StaticCredentials
from mpsflow.tencentcloud.cmq.errors import (
    CODE_BATCH_DELETE_ALL_FAILED,
    CODE_BATCH_DELETE_PARTIAL,
    CODE_NO_MESSAGE,
    CmqError,
    CmqNetworkError,
    server_error,
)
from mpsflow.tencentcloud.cmq.models import (
    BatchDeleteMessageResponse,
    BatchReceiveMessageResponse,
    BatchSendMessageResponse,
    CmqResponse,
    DeleteFailure,
    Message,
    ReceiveMessageResponse,
    SendMessageResponse,
)
from mpsflow.tencentcloud.cmq.signing import DEFAULT_PATH, SignatureMethod, sign, string_to_sign

__all__ = [
    "MAX_BATCH",
    "MAX_POLLING_WAIT",
    "CmqClient",
    "legacy_endpoint",
    "tdmq_endpoint",
]

MAX_BATCH: Final = 16
"""Most messages or handles one batch action takes (§A.4)."""

MAX_POLLING_WAIT: Final = 30
"""Longest long poll, in seconds (§A.4)."""

_FORM: Final = {"Content-Type": "application/x-www-form-urlencoded"}
_NO_CODES: Final[frozenset[int]] = frozenset()
_POLLED: Final = frozenset({CODE_NO_MESSAGE})
_DEFAULT_RETRY: Final = RetryPolicy(max_attempts=4, base_delay=0.2, max_delay=5.0)
_log = logging.getLogger("mpsflow.tencentcloud.cmq")

_R = TypeVar("_R", bound=CmqResponse)
_C = TypeVar("_C", bound="CmqClient")
_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def tdmq_endpoint(region: str, *, private: bool = False) -> str:
    """The TDMQ-CMQ data-flow endpoint of a region such as ``gz`` (§A.1).

    The console may show an account-specific public address; prefer that one when it does.
    """
    if private:
        return f"http://{region}.mqadapter.cmq.tencentyun.com"
    return f"https://cmq-{region}.public.tencenttdmq.com"


def legacy_endpoint(region: str, *, private: bool = False) -> str:
    """The legacy CMQ queue-model endpoint of a region such as ``gz`` (deprecated, §A.1)."""
    if private:
        return f"http://cmq-queue-{region}.api.tencentyun.com"
    return f"https://cmq-queue-{region}.api.qcloud.com"


def _decoder(response_type: type[_R]) -> msgspec.json.Decoder[_R]:
    decoder = _DECODERS.get(response_type)
    if decoder is None:
        decoder = _DECODERS[response_type] = msgspec.json.Decoder(response_type)
    return decoder


def _text(body: str | bytes) -> str:
    if isinstance(body, str):
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("a CMQ message body must be UTF-8 text") from None


def _check_wait(wait: int | None) -> None:
    if wait is not None and not 0 <= wait <= MAX_POLLING_WAIT:
        raise ValueError(f"wait must be between 0 and {MAX_POLLING_WAIT} seconds")


def _timed_out(exc: CmqError) -> bool:
    """Whether ``exc`` says no answer came in time (not tried again without retry_timeouts)."""
    return isinstance(exc, CmqNetworkError) and exc.timed_out


def _check_batch(count: int, what: str) -> None:
    if not 1 <= count <= MAX_BATCH:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH} {what}, not {count}")


class CmqClient:
    """Send, receive and delete CMQ queue messages over HTTP.

    ``endpoint`` is ``https://host[:port]`` (see :func:`tdmq_endpoint` and
    :func:`legacy_endpoint`); the host, with the port if one is given, is part of the signed
    text, as in the SDKs. ``credentials`` is a :class:`Credential` or a provider asked before
    every attempt. Pass ``session`` to share an ``aiohttp.ClientSession``; otherwise the client
    opens one and closes it in :meth:`aclose` (or ``async with``).

    A long poll's HTTP timeout is its wait plus ``poll_timeout_margin``, so the server always
    answers first; other actions time out after ``request_timeout``. With
    ``retry_timeouts=False`` a request that got no answer in time is not sent again, so a caller
    at a terminal (``mpsflow send``) reports an endpoint that never answers after one timeout,
    not after every attempt's; errors that came with an answer (throttling, a 5xx) are still
    retried. The receive actions take ``retry_timeouts`` for one call too (a consumer's first
    receive, which checks the queue works, while its later long polls ride out timeouts).

    An ``https://`` endpoint whose server answers plain HTTP fails saying to use
    ``plain_http_address`` instead (a command names what to give its option, such as
    ``--inbox cmq+http://HOST:PORT/QUEUE``).
    """

    def __init__(
        self,
        endpoint: str,
        credentials: Credential | CredentialProvider,
        *,
        session: aiohttp.ClientSession | None = None,
        signature_method: SignatureMethod = "HmacSHA256",
        http_method: str = "POST",
        path: str = DEFAULT_PATH,
        request_timeout: float = 10.0,
        poll_timeout_margin: float = 10.0,
        retry: RetryPolicy | None = None,
        retry_timeouts: bool = True,
        clock: Clock | None = None,
        request_client: str | None = "SDK_Python_1.3",
        plain_http_address: str = PLAIN_HTTP_ADDRESS,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
            raise ValueError(f"endpoint must be http(s)://host[:port], not {endpoint!r}")
        method = http_method.upper()
        if method not in ("GET", "POST"):
            raise ValueError("http_method must be GET or POST")
        self._host = parts.netloc
        self._path = parts.path if parts.path not in ("", "/") else path
        self._url = f"{parts.scheme}://{self._host}{self._path}"
        self._credentials: CredentialProvider = (
            StaticCredentials(credentials) if isinstance(credentials, Credential) else credentials
        )
        self._session = SessionHolder(session)
        self._signature_method = signature_method
        self._http_method = method
        self._request_timeout = request_timeout
        self._poll_margin = poll_timeout_margin
        self._retry = retry or _DEFAULT_RETRY
        self._retry_timeouts = retry_timeouts
        self._clock = clock or SystemClock()
        self._request_client = request_client
        self._rng = random.Random()
        self._plain_http = plain_http_address

    def __repr__(self) -> str:
        return f"CmqClient({self._url!r})"

    @property
    def url(self) -> str:
        """The full request URL (scheme, host, port and path)."""
        return self._url

    async def __aenter__(self: _C) -> _C:
        self._session.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session if this client opened it."""
        await self._session.close()

    # -- actions -----------------------------------------------------------------------------

    async def send(self, queue: str, body: str | bytes, *, delay_seconds: int = 0) -> str:
        """SendMessage; returns the new ``msgId``."""
        params = {"queueName": queue, "msgBody": _text(body), "delaySeconds": str(delay_seconds)}
        response = await self._call("SendMessage", params, SendMessageResponse)
        return response.msg_id

    async def batch_send(
        self, queue: str, bodies: Sequence[str | bytes], *, delay_seconds: int = 0
    ) -> list[str]:
        """BatchSendMessage of 1 to 16 bodies (64 KB in total); returns their ids in order."""
        _check_batch(len(bodies), "messages")
        params = {"queueName": queue, "delaySeconds": str(delay_seconds)}
        for index, body in enumerate(bodies, start=1):
            params[f"msgBody.{index}"] = _text(body)
        response = await self._call("BatchSendMessage", params, BatchSendMessageResponse)
        return [item.msg_id for item in response.msg_list]

    async def receive(
        self, queue: str, wait: int | None = None, *, retry_timeouts: bool | None = None
    ) -> Message | None:
        """ReceiveMessage, long-polling up to ``wait`` seconds (None: the queue's default).

        Returns None when no message arrived in time (code 7000). ``retry_timeouts`` overrides
        the client's setting for this call (None: the client's).
        """
        params = {"queueName": queue}
        response = await self._poll(
            "ReceiveMessage", params, ReceiveMessageResponse, wait, retry_timeouts
        )
        if response.code == CODE_NO_MESSAGE:
            return None
        return response.to_message()

    async def batch_receive(
        self, queue: str, n: int, wait: int | None = None, *, retry_timeouts: bool | None = None
    ) -> list[Message]:
        """BatchReceiveMessage of up to ``n`` (1-16) messages; ``[]`` when none arrived.

        ``retry_timeouts`` overrides the client's setting for this call (None: the client's).
        """
        _check_batch(n, "messages")
        params = {"queueName": queue, "numOfMsg": str(n)}
        batch = await self._poll(
            "BatchReceiveMessage", params, BatchReceiveMessageResponse, wait, retry_timeouts
        )
        return batch.msg_info_list

    async def delete(self, queue: str, receipt_handle: str) -> None:
        """DeleteMessage; raises ``CmqReceiptHandleError`` (4430) if the handle expired."""
        params = {"queueName": queue, "receiptHandle": receipt_handle}
        await self._call("DeleteMessage", params, CmqResponse)

    async def batch_delete(self, queue: str, receipt_handles: Sequence[str]) -> list[DeleteFailure]:
        """BatchDeleteMessage of up to 16 handles; returns the handles that failed, and why.

        An empty list means every message was deleted. Codes 6010 (some failed) and 6020 (all
        failed) are returned this way, not raised, so a caller sees which handles expired.
        """
        if not receipt_handles:
            return []
        _check_batch(len(receipt_handles), "receipt handles")
        params = {"queueName": queue}
        for index, handle in enumerate(receipt_handles, start=1):
            params[f"receiptHandle.{index}"] = handle
        response = await self._call(
            "BatchDeleteMessage",
            params,
            BatchDeleteMessageResponse,
            outcomes=frozenset({CODE_BATCH_DELETE_PARTIAL, CODE_BATCH_DELETE_ALL_FAILED}),
        )
        return response.error_list

    # -- transport ---------------------------------------------------------------------------

    async def _poll(
        self,
        action: str,
        params: dict[str, str],
        response_type: type[_R],
        wait: int | None,
        retry_timeouts: bool | None,
    ) -> _R:
        """A receive action long-polling up to ``wait`` seconds; 7000 (no message) is an answer.

        Its HTTP timeout is the wait plus the margin, so that the server always answers first.
        """
        _check_wait(wait)
        if wait is not None:
            params["pollingWaitSeconds"] = str(wait)
        timeout = (MAX_POLLING_WAIT if wait is None else wait) + self._poll_margin
        return await self._call(
            action,
            params,
            response_type,
            timeout=timeout,
            outcomes=_POLLED,
            retry_timeouts=retry_timeouts,
        )

    async def _call(
        self,
        action: str,
        params: dict[str, str],
        response_type: type[_R],
        *,
        timeout: float | None = None,
        outcomes: frozenset[int] = _NO_CODES,
        retry_timeouts: bool | None = None,
    ) -> _R:
        if retry_timeouts is None:
            retry_timeouts = self._retry_timeouts
        attempt = 1
        while True:
            try:
                return await self._attempt(
                    action, params, response_type, timeout or self._request_timeout, outcomes
                )
            except CmqError as exc:
                if (
                    not exc.retryable
                    or self._retry.exhausted(attempt)
                    or (not retry_timeouts and _timed_out(exc))
                ):
                    raise
                delay = self._retry.delay(attempt, self._rng)
                # DEBUG: what the last attempt's error means is its caller's line to log.
                _log.debug("CMQ %s attempt %d failed (%s); retrying", action, attempt, exc)
                attempt += 1
                await self._clock.sleep(delay)

    async def _signed_form(self, action: str, params: dict[str, str]) -> str:
        credential = await self._credentials.get_credential()
        signed = dict(params)
        signed["Action"] = action
        signed["SecretId"] = credential.secret_id
        signed["Nonce"] = str(self._rng.randint(1, 2**62))
        signed["Timestamp"] = str(int(self._clock.time()))
        signed["SignatureMethod"] = self._signature_method
        if self._request_client:
            signed["RequestClient"] = self._request_client
        if credential.token:
            signed["Token"] = credential.token
        text = string_to_sign(self._http_method, self._host, self._path, signed)
        signed["Signature"] = sign(credential.secret_key, text, self._signature_method)
        return urlencode(signed)

    async def _attempt(
        self,
        action: str,
        params: dict[str, str],
        response_type: type[_R],
        timeout: float,
        outcomes: frozenset[int],
    ) -> _R:
        form = await self._signed_form(action, params)
        session = self._session.open()
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        try:
            if self._http_method == "POST":
                request = session.post(
                    self._url, data=form.encode("ascii"), headers=_FORM, timeout=client_timeout
                )
            else:
                url = yarl.URL(f"{self._url}?{form}", encoded=True)
                request = session.get(url, timeout=client_timeout)
            async with request as http_response:
                status = http_response.status
                payload = await http_response.read()
        except aiohttp.ClientConnectorError as exc:  # no connection made at all
            plain_http = self._plain_http
            raise CmqNetworkError(
                f"{action}: {cannot_connect(exc, plain_http=plain_http)}",
                unreachable=connect_failure(exc, plain_http=plain_http),
            ) from exc
        except asyncio.TimeoutError as exc:
            raise CmqNetworkError(
                f"{action}: no answer within {timeout:g}s", timed_out=True
            ) from exc
        except aiohttp.ClientConnectionError as exc:
            # It does not carry the query string, so no Signature or Token can leak from here.
            detail = str(exc) or type(exc).__name__
            raise CmqNetworkError(f"{action}: {detail}") from exc
        except aiohttp.ClientError as exc:
            raise CmqNetworkError(f"{action}: {type(exc).__name__}") from None
        if status != 200:
            raise CmqNetworkError(
                f"{action}: HTTP {status}", status=status, retryable=status >= 500 or status == 429
            )
        try:
            response = _decoder(response_type).decode(payload)
        except msgspec.DecodeError:
            raise CmqNetworkError(
                f"{action}: the answer is not a CMQ JSON response", status=status, retryable=False
            ) from None
        if response.code != 0 and response.code not in outcomes:
            raise server_error(action, response.code, response.message, response.request_id)
        return response
