"""An asyncio client for the MPS API calls reconciliation needs: ``DescribeTasks``,
``DescribeTaskDetail`` and ``DescribeBatchTaskDetail``.

It speaks Tencent Cloud API 3.0 as the official SDK does (``AbstractClient`` in
``tencentcloud/common/abstract_client.py``, ``MpsClient`` in
``tencentcloud/mps/v20190612/mps_client.py``): ``POST /`` of the JSON parameters, with
``Content-Type: application/json``, ``X-TC-Action``, ``X-TC-Version: 2019-06-12``,
``X-TC-Timestamp``, ``X-TC-Region`` and ``X-TC-Token`` when set, and a TC3-HMAC-SHA256
``Authorization`` over ``content-type;host`` for service ``mps``
(:mod:`mpsflow.tencentcloud.tc3`). The body is ``json.dumps`` of the parameters in the SDK's
order, so a request is byte for byte the official client's. Answers are
``{"Response": {...}}``; an ``Error`` in it becomes an :class:`~.errors.MpsApiError`.

Throttling (``RequestLimitExceeded*``), ``InternalError``, network errors, 5xx and 429 are
retried with exponential backoff and jitter on an injectable clock; authentication failures
never are. A token bucket (20 requests/s by default, the API allows 100) caps every attempt,
so a long scan cannot crowd out the application's own calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Final, TypeVar
from urllib.parse import urlsplit

import aiohttp
import msgspec

from mpsflow._http import SessionHolder, cannot_connect, connect_failure
from mpsflow.clock import Clock, SystemClock
from mpsflow.retry import RetryPolicy
from mpsflow.tencentcloud.cmq.credentials import (
    Credential,
    CredentialProvider,
    EnvironmentCredentials,
    StaticCredentials,
)
from mpsflow.tencentcloud.mps.errors import (
    MpsApiError,
    MpsNetworkError,
    MpsResponseError,
    api_error,
)
from mpsflow.tencentcloud.mps.models import (
    TASK_STATUSES,
    ApiResponse,
    BatchTaskDetail,
    DescribeBatchTaskDetailRequest,
    DescribeTaskDetailRequest,
    DescribeTasksPage,
    DescribeTasksRequest,
    MpsApiStruct,
    TaskDetail,
    TaskSimpleInfo,
    TaskStatus,
    decode_response,
    format_time,
    request_params,
)
from mpsflow.tencentcloud.mps.ratelimit import TokenBucket
from mpsflow.tencentcloud.tc3 import tc3_headers

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_RATE_LIMIT",
    "INTL_ENDPOINT",
    "MAX_LIMIT",
    "MAX_RESPONSE_SIZE",
    "MPS_API_VERSION",
    "MPS_SERVICE",
    "MpsApiClient",
]

DEFAULT_ENDPOINT: Final = "https://mps.tencentcloudapi.com"
"""The API's endpoint (``MpsClient._endpoint``); it routes to the region of ``X-TC-Region``."""

INTL_ENDPOINT: Final = "https://mps.intl.tencentcloudapi.com"
"""The international site's endpoint."""

MPS_API_VERSION: Final = "2019-06-12"
"""``X-TC-Version`` (``MpsClient._apiVersion``)."""

MPS_SERVICE: Final = "mps"
"""The service name in the signature's credential scope (``MpsClient._service``)."""

MAX_LIMIT: Final = 100
"""Most tasks one ``DescribeTasks`` page holds (SDK ``DescribeTasksRequest.Limit``)."""

DEFAULT_RATE_LIMIT: Final = 20.0
"""Requests per second the client sends at most, by default (the API allows 100)."""

MAX_RESPONSE_SIZE: Final = 64 * 1024 * 1024
"""Largest answer read by default; a task detail with every AI result stays far below."""

_JSON: Final = "application/json"
_DEFAULT_RETRY: Final = RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=10.0)
_CHUNK: Final = 64 * 1024
_log = logging.getLogger("mpsflow.tencentcloud.mps")

_R = TypeVar("_R", bound=ApiResponse)
_C = TypeVar("_C", bound="MpsApiClient")


def _time_param(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return format_time(value)


class MpsApiClient:
    """Lists MPS tasks and reads their details over the MPS API.

    ``credentials``: a :class:`Credential` or a provider asked before every attempt; by
    default :class:`EnvironmentCredentials` (``TENCENTCLOUD_SECRETID`` /
    ``TENCENTCLOUD_SECRETKEY`` / ``TENCENTCLOUD_SESSIONTOKEN``, read on each request).
    ``endpoint``: ``http(s)://host[:port]``, :data:`DEFAULT_ENDPOINT` unless a local server or
    :data:`INTL_ENDPOINT` is wanted; the host with its port is what is signed.
    ``region``: ``X-TC-Region`` such as ``ap-guangzhou`` (tasks are regional; left out when
    ``None``). ``rate_limit``: requests per second, a :class:`TokenBucket` to share among
    clients, or ``None`` for no cap. Pass ``session`` to share an ``aiohttp.ClientSession``;
    otherwise the client opens one and closes it in :meth:`aclose` (or ``async with``).
    """

    def __init__(
        self,
        credentials: Credential | CredentialProvider | None = None,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        region: str | None = None,
        session: aiohttp.ClientSession | None = None,
        request_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        rate_limit: float | TokenBucket | None = DEFAULT_RATE_LIMIT,
        max_response_size: int = MAX_RESPONSE_SIZE,
        request_client: str = "mpsflow",
    ) -> None:
        parts = urlsplit(endpoint)
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or "@" in parts.netloc
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
        ):
            raise ValueError(f"endpoint must be http(s)://host[:port], not {endpoint!r}")
        self._host = parts.netloc
        self._url = f"{parts.scheme}://{self._host}/"
        if credentials is None:
            credentials = EnvironmentCredentials()
        self._credentials: CredentialProvider = (
            StaticCredentials(credentials) if isinstance(credentials, Credential) else credentials
        )
        self._region = region or None
        self._session = SessionHolder(session)
        self._request_timeout = request_timeout
        self._retry = retry or _DEFAULT_RETRY
        self._clock: Clock = clock or SystemClock()
        self._limiter: TokenBucket | None = (
            TokenBucket(rate_limit, clock=self._clock)
            if isinstance(rate_limit, (int, float))
            else rate_limit
        )
        self._max_response_size = max_response_size
        self._request_client = request_client
        self._rng = random.Random()

    def __repr__(self) -> str:
        return f"MpsApiClient({self._url!r}, region={self._region!r})"

    @property
    def url(self) -> str:
        """The request URL (scheme, host, port and ``/``)."""
        return self._url

    @property
    def region(self) -> str | None:
        """The ``X-TC-Region`` sent, or ``None``."""
        return self._region

    async def __aenter__(self: _C) -> _C:
        self._session.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session if this client opened it."""
        await self._session.close()

    # -- actions -----------------------------------------------------------------------------

    async def verify_credentials(self) -> None:
        """One cheap call (a one-task ``DescribeTasks``) to fail at startup, not mid-scan.

        Raises :class:`~.errors.MpsAuthError` for keys the API refuses (not retried),
        ``ConfigurationError`` when the environment holds no keys, or another
        :class:`~.errors.MpsApiError` when the API cannot be reached.
        """
        await self.describe_tasks(limit=1)

    async def describe_tasks(
        self,
        status: TaskStatus = "FINISH",
        *,
        start_time: datetime | str | None = None,
        end_time: datetime | str | None = None,
        limit: int = MAX_LIMIT,
        scroll_token: str | None = None,
        sub_task_has_failed: bool | None = None,
    ) -> DescribeTasksPage:
        """One page of ``DescribeTasks``: tasks in ``status``, newest first.

        ``start_time``/``end_time`` are aware ``datetime`` objects (sent as ISO 8601 UTC, to
        the second) or API time strings. ``scroll_token`` is the previous page's
        ``scroll_token``; ``sub_task_has_failed`` keeps only tasks with (``True``) or without
        (``False``) a failed subtask. The API keeps a few days of history (7 days per the
        Chinese docs, 3 per the English ones).
        """
        if status not in TASK_STATUSES:
            raise ValueError(f"status must be one of {sorted(TASK_STATUSES)}, not {status!r}")
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
        request = DescribeTasksRequest(
            status=status,
            sub_task_has_failed=sub_task_has_failed,
            limit=limit,
            scroll_token=scroll_token or None,
            start_time=_time_param(start_time),
            end_time=_time_param(end_time),
        )
        return await self._call("DescribeTasks", request, DescribeTasksPage)

    async def iter_pages(
        self,
        status: TaskStatus = "FINISH",
        *,
        start_time: datetime | str | None = None,
        end_time: datetime | str | None = None,
        limit: int = MAX_LIMIT,
        scroll_token: str | None = None,
        sub_task_has_failed: bool | None = None,
    ) -> AsyncIterator[DescribeTasksPage]:
        """Every page of ``DescribeTasks``, following ``ScrollToken`` until it is ``""``.

        The first page's ``total_count`` says how many tasks to expect (a progress bar's
        total). Raises :class:`~.errors.MpsResponseError` if a page hands back the token it
        was asked with (the scan would never end).
        """
        token = scroll_token or None
        while True:
            page = await self.describe_tasks(
                status,
                start_time=start_time,
                end_time=end_time,
                limit=limit,
                scroll_token=token,
                sub_task_has_failed=sub_task_has_failed,
            )
            yield page
            if not page.has_more:
                return
            if page.scroll_token == token:
                raise MpsResponseError(
                    "DescribeTasks", "the ScrollToken did not advance; stopping the scan"
                )
            token = page.scroll_token

    async def iter_tasks(
        self,
        status: TaskStatus = "FINISH",
        *,
        start_time: datetime | str | None = None,
        end_time: datetime | str | None = None,
        limit: int = MAX_LIMIT,
        scroll_token: str | None = None,
        sub_task_has_failed: bool | None = None,
    ) -> AsyncIterator[TaskSimpleInfo]:
        """Every task of :meth:`iter_pages`, in the order the API lists them."""
        async for page in self.iter_pages(
            status,
            start_time=start_time,
            end_time=end_time,
            limit=limit,
            scroll_token=scroll_token,
            sub_task_has_failed=sub_task_has_failed,
        ):
            for task in page.task_set:
                yield task

    async def describe_task_detail(self, task_id: str) -> TaskDetail:
        """``DescribeTaskDetail`` of one task; raises :class:`~.errors.MpsTaskNotFoundError`
        for an unknown (or expired) ``task_id``."""
        if not task_id:
            raise ValueError("task_id must not be empty")
        request = DescribeTaskDetailRequest(task_id=task_id)
        return await self._call("DescribeTaskDetail", request, TaskDetail)

    async def describe_batch_task_detail(self, task_id: str) -> BatchTaskDetail:
        """``DescribeBatchTaskDetail`` of one batch task (``TaskType`` ``BatchTask``)."""
        if not task_id:
            raise ValueError("task_id must not be empty")
        request = DescribeBatchTaskDetailRequest(task_id=task_id)
        return await self._call("DescribeBatchTaskDetail", request, BatchTaskDetail)

    # -- transport ---------------------------------------------------------------------------

    async def _call(self, action: str, request: MpsApiStruct, response_type: type[_R]) -> _R:
        # json.dumps, not msgspec: the official SDK's exact bytes (spaces, ASCII escapes).
        payload = json.dumps(request_params(request)).encode()
        attempt = 1
        while True:
            try:
                return await self._attempt(action, payload, response_type)
            except MpsApiError as exc:
                if not exc.retryable or self._retry.exhausted(attempt):
                    raise
                delay = self._retry.delay(attempt, self._rng)
                # DEBUG: what the last attempt's error means is its caller's line to log.
                _log.debug(
                    "MPS %s attempt %d failed (%s); retrying in %.2fs", action, attempt, exc, delay
                )
                attempt += 1
                await self._clock.sleep(delay)

    async def _signed_headers(self, action: str, payload: bytes) -> dict[str, str]:
        credential = await self._credentials.get_credential()
        return tc3_headers(
            secret_id=credential.secret_id,
            secret_key=credential.secret_key,
            token=credential.token,
            service=MPS_SERVICE,
            host=self._host,
            action=action,
            version=MPS_API_VERSION,
            payload=payload,
            timestamp=int(self._clock.time()),
            region=self._region,
            content_type=_JSON,
            request_client=self._request_client,
        )

    async def _attempt(self, action: str, payload: bytes, response_type: type[_R]) -> _R:
        if self._limiter is not None:
            await self._limiter.acquire()
        headers = await self._signed_headers(action, payload)
        session = self._session.open()
        timeout = aiohttp.ClientTimeout(total=self._request_timeout)
        try:
            async with session.post(
                self._url, data=payload, headers=headers, timeout=timeout, allow_redirects=False
            ) as http_response:
                status = http_response.status
                if status != 200:
                    raise MpsNetworkError(
                        action,
                        f"HTTP {status}",
                        status=status,
                        retryable=status >= 500 or status == 429,
                    )
                body = await self._read(action, http_response)
        except aiohttp.ClientConnectorError as exc:  # no connection made at all
            raise MpsNetworkError(
                action, cannot_connect(exc), unreachable=connect_failure(exc)
            ) from exc
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            raise MpsNetworkError(action, str(exc) or type(exc).__name__) from exc
        except aiohttp.ClientError as exc:
            raise MpsNetworkError(action, type(exc).__name__) from None
        return self._decode(action, body, response_type)

    async def _read(self, action: str, http_response: aiohttp.ClientResponse) -> bytes:
        """The whole answer, refused once it is over ``max_response_size``."""
        limit = self._max_response_size
        too_large = f"the answer is over the {limit}-byte limit"
        if http_response.content_length is not None and http_response.content_length > limit:
            raise MpsResponseError(action, too_large)
        chunks: list[bytes] = []
        size = 0
        async for chunk in http_response.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise MpsResponseError(action, too_large)
            chunks.append(chunk)
        return b"".join(chunks)

    def _decode(self, action: str, body: bytes, response_type: type[_R]) -> _R:
        try:
            response = decode_response(body, response_type)
        except msgspec.DecodeError as exc:
            # msgspec names the JSON path and the expected type, never the value found.
            raise MpsResponseError(action, f"not a {action} response: {exc}") from None
        error = response.error
        if error is not None:
            code = error.code or "UnknownError"
            raise api_error(code, error.message, response.request_id, action)
        return response
