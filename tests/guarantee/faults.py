"""Store faults on a schedule: a store proxy that goes down, or loses its answers, for a while.

A window of store calls (counted from the first) fails. Inside it, each call either fails
before reaching the store (``down``: nothing written) or after the store did its work
(``lost``: written, but the caller never hears so). The second kind is what a network
timeout produces, and the one that used to leave claims behind and completions unwritten.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from mpsflow.dedup.stores.base import Claim, IdempotencyStore
from mpsflow.errors import StoreUnavailable

__all__ = ["FaultyStore"]

T = TypeVar("T")


class FaultyStore:
    """An :class:`IdempotencyStore` proxy that fails the calls in ``windows``.

    ``windows`` are half-open ranges of call numbers ``[start, end)``; ``lost`` is the share
    of failing calls that reach the store first. ``script`` lists the faults of the next calls
    one by one (``"down"``, ``"lost"`` or ``""`` for none), ahead of the windows. ``dead`` makes
    every call fail from now on (a process that died: nothing it sends arrives any more).
    """

    def __init__(
        self,
        inner: IdempotencyStore,
        *,
        windows: Sequence[tuple[int, int]] = (),
        lost: float = 0.5,
        seed: int = 0,
        close_inner: bool = True,
    ) -> None:
        self.inner = inner
        self.close_inner = close_inner
        self.windows = list(windows)
        self.lost = lost
        self.calls = 0
        self.dead = False
        self.script: list[str] = []
        self.failures: Counter[str] = Counter()
        self._rng = random.Random(seed)

    async def _call(self, op: str, run: Callable[[], Awaitable[T]]) -> T:
        self.calls += 1
        if self.script:
            fault = self.script.pop(0)
        elif self.dead or any(a <= self.calls < b for a, b in self.windows):
            fault = "lost" if not self.dead and self._rng.random() < self.lost else "down"
        else:
            fault = ""
        if not fault:
            return await run()
        if fault == "lost":
            self.failures[f"{op}:lost"] += 1
            await run()
        else:
            self.failures[f"{op}:down"] += 1
        raise StoreUnavailable(f"injected fault on {op}")

    async def claim(
        self, key: str, *, lease_seconds: float, payload_hash: str, token: str = ""
    ) -> Claim:
        return await self._call(
            "claim",
            lambda: self.inner.claim(
                key, lease_seconds=lease_seconds, payload_hash=payload_hash, token=token
            ),
        )

    async def complete(self, key: str, token: str, *, ttl_seconds: float) -> bool:
        return await self._call(
            "complete", lambda: self.inner.complete(key, token, ttl_seconds=ttl_seconds)
        )

    async def release(self, key: str, token: str) -> bool:
        return await self._call("release", lambda: self.inner.release(key, token))

    async def ping(self) -> bool:
        return not self.dead and await self.inner.ping()

    async def close(self) -> None:
        if self.close_inner:
            await self.inner.close()
