"""Every exception the framework raises or understands, in one place.

::

    Exception
    ├── Retry                     a handler asks for its delivery to be tried again later
    ├── Reject                    a handler refuses its delivery: straight to the dead letters
    └── MpsflowError              raised by mpsflow on purpose
        ├── DecodeError           not a valid MPS notification (``path`` says where); ValueError
        │   └── PayloadTooLarge   over the size limit, refused before parsing
        ├── ConfigurationError    the app is wired wrongly: fix it and start again
        │   └── StartupError      could not start (port in use, keys refused, store down)
        ├── StoreUnavailable      the idempotency store cannot be reached: retried later
        ├── SinkError             a sink could not deliver a record (``transient`` or not)
        ├── InvocationFailed      an SCF invocation failed retryably, so the platform retries it
        └── CmqError              a CMQ API call failed (see :mod:`mpsflow.tencentcloud.cmq`)

``Retry`` and ``Reject`` are control flow for handlers, not failures of mpsflow, so they sit
outside ``MpsflowError``. (``mpsflow.testing.NotSettledError`` is a test assertion, an
``AssertionError``, and lives with the test client.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mpsflow.delivery import Outcome

__all__ = [
    "ConfigurationError",
    "DecodeError",
    "InboxRefusedBody",
    "InboxUnavailable",
    "InvocationFailed",
    "MpsflowError",
    "PayloadTooLarge",
    "Reject",
    "Retry",
    "SinkError",
    "StartupError",
    "StoreUnavailable",
]


class Retry(Exception):
    """Retry this delivery later (counts as an attempt; bounded by the retry policy).

    ``delay`` overrides the policy's backoff for the next attempt, where the source can honour
    it (in-process and file sources; CMQ redelivers after its visibility timeout instead).
    """

    def __init__(self, reason: str = "retry requested", *, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


class Reject(Exception):
    """Never retry this delivery: it goes straight to the dead-letter sink with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MpsflowError(Exception):
    """Base class of every error mpsflow raises on purpose."""


class DecodeError(MpsflowError, ValueError):
    """A payload is not a valid MPS notification.

    ``path`` is the JSON path of the offending value (``$`` for the document itself), so a
    caller can report *where* a notification is malformed, not just that it is.
    """

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(message)
        self.path = path


class PayloadTooLarge(DecodeError):
    """The payload is over the size limit (refused before parsing; HTTP 413)."""


class ConfigurationError(MpsflowError):
    """The app is wired wrongly (unknown routing key, unknown sink name, bad option)."""


class StartupError(ConfigurationError):
    """The app could not start: what it was told to use refused it, so it stops at once.

    Raised by a source before it has served (it cannot listen on its address, the queue
    refused the credentials or does not exist) or by ``App.run`` when the idempotency store
    does not answer at startup. ``App.run`` ends with it instead of restarting the source:
    the message says what failed and what to do, in one line.
    """


class StoreUnavailable(MpsflowError):
    """An idempotency store could not be reached; the delivery must be retried later."""


class InboxUnavailable(MpsflowError):
    """A source's inbox could not take or give notifications (its database failed).

    The receiver answers "try again later" (HTTP 503): nothing was accepted, so nothing is lost.
    """


class InboxRefusedBody(MpsflowError):
    """The inbox can never take this body (larger than its queue's message size): the
    receiver records it as a dead letter and answers 413, since sending it again cannot help."""


class SinkError(MpsflowError):
    """A sink could not deliver a record.

    ``transient`` tells whether trying again later may succeed (network error, 5xx) or not
    (4xx, a record that cannot be serialised).
    """

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class InvocationFailed(MpsflowError):
    """The notification failed in a retryable way; raised so the platform retries it.

    ``outcome`` is the pipeline's verdict; the message is its log-safe reason.
    """

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason or "retryable failure")
        self.outcome = outcome
