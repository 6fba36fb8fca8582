"""Exceptions a handler raises to steer its delivery: ``Retry`` and ``Reject``."""

from __future__ import annotations

__all__ = ["Reject", "Retry"]


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
