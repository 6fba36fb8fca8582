"""Bounded exponential backoff with jitter, configurable per app and per handler."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how far apart a failing delivery is tried again.

    ``max_attempts`` counts every delivery, the first included: 5 means one try and four
    retries, then the dead-letter sink. Delay before attempt ``n + 1`` is
    ``min(max_delay, base_delay * factor ** (n - 1))``, scaled by a random factor in
    ``[1 - jitter, 1]`` ("equal jitter" for jitter=0.5) so that a burst of failures does not
    come back as a burst.
    """

    max_attempts: int = 5
    base_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.factor < 1:
            raise ValueError("delays must be non-negative and factor at least 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")

    def exhausted(self, attempt: int) -> bool:
        """True when delivery number ``attempt`` was the last one allowed."""
        return attempt >= self.max_attempts

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed delivery number ``attempt`` (1-based)."""
        raw = min(self.max_delay, self.base_delay * self.factor ** max(attempt - 1, 0))
        if not self.jitter:
            return raw
        spread = (rng or random).random() * self.jitter
        return raw * (1.0 - spread)
