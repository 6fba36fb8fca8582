"""CMQ failures as exceptions that carry the CMQ ``code`` and ``requestId``.

Codes are those of the CMQ API's ``code`` field (Tencent Cloud CMQ docs, "Error codes",
cloud.tencent.com/document/product/406/5903; the official SDK's ``CMQServerException``).
``7000`` (no message) and the batch-delete partial codes ``6010``/``6020`` are outcomes, not
errors: the client turns them into ``None``, ``[]`` and a per-handle error list. ``retryable``
says whether the same request may succeed if sent again soon (network trouble, throttling, an
internal error); the client retries exactly those with backoff, never an authentication failure
nor a full queue (4410: it stays full until a consumer deletes messages, which no backoff of a
few seconds waits for; the caller decides, e.g. answers 503 or keeps the message).
"""

from __future__ import annotations

from typing import Final

from mpsflow.errors import MpsflowError

__all__ = [
    "CODE_AUTH_FAILED",
    "CODE_BATCH_DELETE_ALL_FAILED",
    "CODE_BATCH_DELETE_PARTIAL",
    "CODE_INTERNAL",
    "CODE_INVALID_PARAMETER",
    "CODE_MESSAGE_TOO_LARGE",
    "CODE_NO_MESSAGE",
    "CODE_QUEUE_FULL",
    "CODE_QUEUE_NOT_FOUND",
    "CODE_RECEIPT_HANDLE_INVALID",
    "CODE_THROTTLED",
    "CmqAuthError",
    "CmqError",
    "CmqMessageTooLargeError",
    "CmqNetworkError",
    "CmqQueueFullError",
    "CmqQueueNotFoundError",
    "CmqReceiptHandleError",
    "CmqServerError",
    "CmqThrottledError",
    "server_error",
]

CODE_INVALID_PARAMETER: Final = 4000
CODE_AUTH_FAILED: Final = 4100
CODE_MESSAGE_TOO_LARGE: Final = 4400
CODE_QUEUE_FULL: Final = 4410
CODE_THROTTLED: Final = 4420
CODE_RECEIPT_HANDLE_INVALID: Final = 4430
CODE_QUEUE_NOT_FOUND: Final = 4440
CODE_INTERNAL: Final = 6000
CODE_BATCH_DELETE_PARTIAL: Final = 6010
CODE_BATCH_DELETE_ALL_FAILED: Final = 6020
CODE_NO_MESSAGE: Final = 7000


class CmqError(MpsflowError):
    """Base of every CMQ failure; ``retryable`` tells whether trying again may help."""

    retryable: bool = False


class CmqNetworkError(CmqError):
    """The request did not get a usable answer: connection, timeout, or a non-200 status.

    ``status`` is the HTTP status when one was received. Connection trouble, timeouts and 5xx
    are retryable; other statuses (a wrong path, a proxy refusing) are not. ``unreachable``
    says why no connection could be made at all (``"connection refused"``, ``"no such host"``),
    and is empty otherwise: a caller that never reached the endpoint may stop trying.
    ``timed_out`` says no answer came within the request's timeout (an endpoint that takes
    connections and never answers, such as a VPC-internal address seen from outside).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = True,
        unreachable: str = "",
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.unreachable = unreachable
        self.timed_out = timed_out

    def reach_hint(self, url: str) -> str:
        """What to check when CMQ at ``url`` could not be reached or did not answer (``""``
        when it answered): the one wording of ``run --cmq``'s startup error and ``send``'s
        hint."""
        if self.timed_out:
            return (
                f"CMQ at {url} did not answer ({self}): check the endpoint (an internal address"
                " answers only inside its VPC), and that the queue service is running there"
            )
        if self.unreachable:
            return (
                f"cannot reach CMQ at {url} ({self.unreachable}): check the endpoint, and that"
                " the queue service is running there (`mpsflow cmq-server` for a local one)"
            )
        return ""


class CmqServerError(CmqError):
    """The server answered with a non-zero ``code``."""

    def __init__(self, action: str, code: int, message: str, request_id: str) -> None:
        super().__init__(f"{action} failed: code {code}, requestId {request_id or '-'}: {message}")
        self.action = action
        self.code = code
        self.cmq_message = message
        self.request_id = request_id
        self.retryable = code in (CODE_THROTTLED, CODE_INTERNAL)


class CmqAuthError(CmqServerError):
    """4100: the key is unknown, expired, or the signature does not match. Never retried."""


class CmqMessageTooLargeError(CmqServerError):
    """4400: a message (or a batch) is larger than the queue accepts."""


class CmqQueueFullError(CmqServerError):
    """4410: the queue already holds its ``maxMsgHeapNum`` messages; nothing was enqueued.

    Not ``retryable``: the client raises it at once, without backoff. The queue accepts
    messages again only once consumers delete some, so retry later (or tell the producer to)
    rather than within the same call.
    """


class CmqThrottledError(CmqServerError):
    """4420: too many requests per second; retried with backoff."""


class CmqReceiptHandleError(CmqServerError):
    """4430: the receipt handle expired or the message was received again or deleted."""


class CmqQueueNotFoundError(CmqServerError):
    """4440: the queue does not exist."""


_BY_CODE: dict[int, type[CmqServerError]] = {
    CODE_AUTH_FAILED: CmqAuthError,
    CODE_MESSAGE_TOO_LARGE: CmqMessageTooLargeError,
    CODE_QUEUE_FULL: CmqQueueFullError,
    CODE_THROTTLED: CmqThrottledError,
    CODE_RECEIPT_HANDLE_INVALID: CmqReceiptHandleError,
    CODE_QUEUE_NOT_FOUND: CmqQueueNotFoundError,
}


def server_error(action: str, code: int, message: str, request_id: str) -> CmqServerError:
    """The most specific exception for a CMQ error ``code``."""
    return _BY_CODE.get(code, CmqServerError)(action, code, message, request_id)
