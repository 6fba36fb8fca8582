"""A token bucket on an injectable clock: the client-side cap on MPS API requests per second.

MPS allows 100 requests per second per action and account (Tencent Cloud API docs); a
reconcile scan shares that budget with the application's own calls, so the client stays well
under it. Every attempt, retries included, takes a token first.
"""

from __future__ import annotations

import anyio

from mpsflow.clock import Clock, SystemClock

__all__ = ["TokenBucket"]

_EPSILON = 1e-9  # float drift: a wait of exactly the missing fraction must be enough


class TokenBucket:
    """Allows ``rate`` acquisitions per second on average and ``burst`` at once.

    The bucket starts full. Waiters are served in arrival order (one waits on the clock at a
    time), so in any span of ``t`` seconds at most ``burst + rate * t`` acquisitions succeed.
    Share one bucket between clients that spend the same account's limit.
    """

    def __init__(self, rate: float, burst: int = 1, *, clock: Clock | None = None) -> None:
        if not rate > 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = rate
        self.burst = burst
        self._clock: Clock = clock or SystemClock()
        self._tokens = float(burst)
        self._updated: float | None = None
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate!r}, burst={self.burst!r})"

    def _refill(self) -> None:
        now = self._clock.monotonic()
        if self._updated is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        """Take one token, waiting on the clock until there is one."""
        async with self._lock:
            self._refill()
            while self._tokens < 1.0 - _EPSILON:
                await self._clock.sleep((1.0 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1.0
