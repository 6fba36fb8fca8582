"""Rate-limited log lines: the first event of a kind of trouble, then one line per interval.

A flood (a misconfigured sender, a store that is down) must not become a flood of log lines,
and the lines it does get must say how much they stand for. Time comes from the app's clock,
so tests drive the interval with a ``FakeClock``.
"""

from __future__ import annotations

import math
from collections import Counter

from mpsflow.clock import Clock

__all__ = ["LogThrottle", "held_back"]


class LogThrottle:
    """Admits the first event, then at most one per ``interval`` seconds, counting the rest.

    :meth:`admit` answers ``None`` for an event to leave unlogged (it is counted under its
    ``kind``), or, for an event to log, the counts by kind of the events held back since the
    last logged one (empty when there were none).
    """

    __slots__ = ("_clock", "_held", "_interval", "_next")

    def __init__(self, clock: Clock, interval: float = 10.0) -> None:
        if not interval > 0:
            raise ValueError("interval must be positive")
        self._clock = clock
        self._interval = interval
        self._next = -math.inf
        self._held: Counter[str] = Counter()

    def admit(self, kind: str = "") -> Counter[str] | None:
        """``None`` to hold this event back, else the held-back counts to report with it."""
        now = self._clock.monotonic()
        if now < self._next:
            self._held[kind] += 1
            return None
        self._next = now + self._interval
        held, self._held = self._held, Counter()
        return held


def held_back(held: Counter[str], what: str, *, by_kind: bool = True) -> str:
    """The tail of a line that stands for ``held`` events too: ``"; 3 more rejected since the
    last such line (expired 1, mismatch 2)"``, or ``""`` when none were held back."""
    if not held:
        return ""
    counts = ", ".join(f"{kind} {n}" for kind, n in sorted(held.items()))
    return f"; {held.total()} more {what} since the last such line" + (
        f" ({counts})" if by_kind else ""
    )
