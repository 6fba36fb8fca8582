"""Timing middleware: how long deliveries and handler runs take, per scope and handler."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from mpsflow.delivery import Outcome
from mpsflow.middleware.base import Call, CallNext

__all__ = ["Timing", "TimingMiddleware"]


@dataclass(slots=True)
class Timing:
    """Running totals for one name (``delivery`` or a handler name)."""

    count: int = 0
    total: float = 0.0
    max: float = 0.0

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)


class TimingMiddleware:
    """Measures each call (failures included) into ``stats`` and an optional callback.

    ``stats["delivery"]`` covers whole deliveries; ``stats[handler_name]`` each handler.
    ``timer`` is injectable so tests can count without real time.
    """

    def __init__(
        self,
        *,
        on_timing: Callable[[str, float], None] | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.stats: dict[str, Timing] = {}
        self._on_timing = on_timing
        self._timer = timer

    async def __call__(self, call: Call, call_next: CallNext) -> Outcome:
        name = call.handler.name if call.handler is not None else "delivery"
        started = self._timer()
        try:
            return await call_next(call)
        finally:
            seconds = self._timer() - started
            self.stats.setdefault(name, Timing()).add(seconds)
            if self._on_timing is not None:
                self._on_timing(name, seconds)
