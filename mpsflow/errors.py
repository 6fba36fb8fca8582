"""Exceptions raised by mpsflow, all under one base class."""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DecodeError",
    "MpsflowError",
    "PayloadTooLarge",
    "SinkError",
    "StoreUnavailable",
]


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


class StoreUnavailable(MpsflowError):
    """An idempotency store could not be reached; the delivery must be retried later."""


class SinkError(MpsflowError):
    """A sink could not deliver a record.

    ``transient`` tells whether trying again later may succeed (network error, 5xx) or not
    (4xx, a record that cannot be serialised).
    """

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient
