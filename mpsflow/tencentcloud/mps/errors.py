"""MPS API failures as exceptions that carry the API's error ``Code``, ``Message`` and
``RequestId``, and the action that failed.

An API 3.0 error is ``{"Response": {"Error": {"Code", "Message"}, "RequestId"}}`` (the official
SDK's ``AbstractClient._check_error`` in ``tencentcloud/common/abstract_client.py`` reads it
into ``TencentCloudSDKException(code, message, requestId)``). Codes come from the SDK's
``tencentcloud/mps/v20190612/errorcodes.py`` (``AuthFailure``,
``ResourceNotFound.TaskNotFound``, ``FailedOperation.TaskNotFound``,
``InvalidParameterValue.TaskId``, ...) and the API's common codes (``RequestLimitExceeded``
and its ``.UinLimitExceeded`` / ``.GlobalRegionUinLimitExceeded`` variants, which the SDK's
``StandardRetryer`` in ``tencentcloud/common/retry.py`` retries, ``InternalError``).

``retryable`` says whether the same request may succeed if sent again soon: throttling, an
internal error, and network trouble (the SDK's ``ClientNetworkError`` / ``ServerNetworkError``).
The client retries exactly those, with backoff; never an authentication failure.
The client never puts a secret key, session token, signature or request body into one; the
``message`` is the server's own text.
"""

from __future__ import annotations

from typing import Final

from mpsflow.errors import MpsflowError

__all__ = [
    "CLIENT_NETWORK_ERROR",
    "INVALID_RESPONSE",
    "SERVER_NETWORK_ERROR",
    "TASK_NOT_FOUND_CODES",
    "MpsApiError",
    "MpsAuthError",
    "MpsNetworkError",
    "MpsPermissionError",
    "MpsResponseError",
    "MpsTaskNotFoundError",
    "MpsThrottledError",
    "api_error",
]

TASK_NOT_FOUND_CODES: Final = frozenset(
    {
        "ResourceNotFound.TaskNotFound",
        "FailedOperation.TaskNotFound",
        "InvalidParameterValue.TaskId",
    }
)
"""The codes MPS answers for a ``TaskId`` it does not know (or no longer keeps)."""

CLIENT_NETWORK_ERROR: Final = "ClientNetworkError"
"""Code of a request that got no answer (the SDK's name for it)."""

SERVER_NETWORK_ERROR: Final = "ServerNetworkError"
"""Code of an answer with an HTTP status other than 200 (the SDK's name for it)."""

INVALID_RESPONSE: Final = "InvalidResponse"
"""Code of a 200 answer that is not the action's JSON response (mpsflow's own)."""

_AUTH_PREFIX: Final = "AuthFailure"
_PERMISSION_PREFIX: Final = "UnauthorizedOperation"
_THROTTLED_PREFIX: Final = "RequestLimitExceeded"
_INTERNAL_PREFIX: Final = "InternalError"


def _matches(code: str, prefix: str) -> bool:
    return code == prefix or code.startswith(prefix + ".")


class MpsApiError(MpsflowError):
    """Base of every MPS API failure: the ``code``, ``message`` and ``request_id`` of the
    answer (``request_id`` is ``""`` when none came back) and the ``action`` called."""

    retryable: bool = False

    def __init__(self, code: str, message: str, request_id: str, action: str) -> None:
        super().__init__(f"MPS {action} failed: {code} (request {request_id or '-'}): {message}")
        self.code = code
        self.api_message = message
        self.request_id = request_id
        self.action = action


class MpsAuthError(MpsApiError):
    """``AuthFailure.*``: the SecretId is unknown, the signature or token is wrong or expired,
    or the clock is off by more than five minutes. Never retried: fix the keys."""


class MpsPermissionError(MpsAuthError):
    """``UnauthorizedOperation*``: the keys are valid but lack permission (CAM) for the action.
    An ``MpsAuthError`` too, so that a startup check treats both alike."""


class MpsTaskNotFoundError(MpsApiError):
    """The ``TaskId`` is unknown, or older than the API keeps (see ``TASK_NOT_FOUND_CODES``)."""


class MpsThrottledError(MpsApiError):
    """``RequestLimitExceeded*``: over the request rate; retried with backoff."""

    retryable = True


class MpsNetworkError(MpsApiError):
    """No usable answer: no connection, a timeout, or an HTTP status other than 200.

    ``code`` is ``ClientNetworkError`` when nothing came back and ``ServerNetworkError`` for a
    non-200 status (``status``). Connection trouble, timeouts, 5xx and 429 are retryable,
    other statuses are not. ``unreachable`` says why no connection could be made at all
    (``"connection refused"``, ``"no such host"``) and is empty otherwise.
    """

    def __init__(
        self,
        action: str,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = True,
        unreachable: str = "",
    ) -> None:
        code = CLIENT_NETWORK_ERROR if status is None else SERVER_NETWORK_ERROR
        super().__init__(code, message, "", action)
        self.status = status
        self.retryable = retryable
        self.unreachable = unreachable


class MpsResponseError(MpsApiError):
    """A 200 answer that is not the action's JSON response (or is larger than allowed).

    Not retried: the same request would get the same answer. ``code`` is ``InvalidResponse``.
    """

    def __init__(self, action: str, message: str) -> None:
        super().__init__(INVALID_RESPONSE, message, "", action)


def api_error(code: str, message: str, request_id: str, action: str) -> MpsApiError:
    """The most specific exception for an API error ``code``.

    ``InternalError*`` is a plain ``MpsApiError`` marked ``retryable`` (the read-only calls of
    this client are safe to repeat).
    """
    if _matches(code, _AUTH_PREFIX):
        return MpsAuthError(code, message, request_id, action)
    if _matches(code, _PERMISSION_PREFIX):
        return MpsPermissionError(code, message, request_id, action)
    if code in TASK_NOT_FOUND_CODES:
        return MpsTaskNotFoundError(code, message, request_id, action)
    if _matches(code, _THROTTLED_PREFIX):
        return MpsThrottledError(code, message, request_id, action)
    error = MpsApiError(code, message, request_id, action)
    error.retryable = _matches(code, _INTERNAL_PREFIX)
    return error
