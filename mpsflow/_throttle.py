"""Rate-limited log lines: the first event of a kind of trouble, then one line per interval.

A flood (a misconfigured sender, a store that is down) must not become a flood of log lines,
and the lines it does get must say how much they stand for. Time comes from the app's clock,
so tests drive the interval with a ``FakeClock``.

Events held back after the last line of a burst would otherwise never show: a throttle made
with a ``tail`` reports them itself, in one line, when :func:`report_held_back` runs (the
running app calls it every few seconds for those whose interval has passed, and for all of
them when it stops).
"""

from __future__ import annotations

import logging
import math
import weakref
from collections import Counter
from collections.abc import Callable

from mpsflow.clock import Clock

__all__ = ["LogThrottle", "Tail", "held_back", "report_held_back", "tail_line"]

Tail = Callable[[Counter[str]], None]
"""Logs the line that stands for events held back with no line after them."""

_holding: weakref.WeakSet[LogThrottle] = weakref.WeakSet()
"""Throttles with a tail that hold events back."""


class LogThrottle:
    """Admits the first event, then at most one per ``interval`` seconds, counting the rest.

    :meth:`admit` answers ``None`` for an event to leave unlogged (it is counted under its
    ``kind``), or, for an event to log, the counts by kind of the events held back since the
    last logged one (empty when there were none). With a ``tail``, events held back and not
    followed by a logged one are reported through it (:func:`report_held_back`).
    """

    __slots__ = ("__weakref__", "_clock", "_held", "_interval", "_next", "_tail")

    def __init__(self, clock: Clock, interval: float = 10.0, *, tail: Tail | None = None) -> None:
        if not interval > 0:
            raise ValueError("interval must be positive")
        self._clock = clock
        self._interval = interval
        self._next = -math.inf
        self._held: Counter[str] = Counter()
        self._tail = tail

    def admit(self, kind: str = "") -> Counter[str] | None:
        """``None`` to hold this event back, else the held-back counts to report with it."""
        now = self._clock.monotonic()
        if now < self._next:
            if not self._held and self._tail is not None:
                _holding.add(self)
            self._held[kind] += 1
            return None
        self._next = now + self._interval
        held, self._held = self._held, Counter()
        return held

    def report_tail(self, *, due_only: bool = False) -> bool:
        """Report the events held back through the tail (``due_only``: only once the
        interval of the last line has passed); True when none are left held."""
        if not self._held:
            return True
        now = self._clock.monotonic()
        if due_only and now < self._next:
            return False
        held, self._held = self._held, Counter()
        self._next = now + self._interval  # the tail line is this interval's line
        if self._tail is not None:
            self._tail(held)
        return True


def report_held_back(*, due_only: bool = False) -> None:
    """Report the held-back events of every throttle with a tail (``due_only``: of those
    whose interval has passed)."""
    for throttle in list(_holding):
        if throttle.report_tail(due_only=due_only):
            _holding.discard(throttle)


def held_back(held: Counter[str], what: str, *, by_kind: bool = True) -> str:
    """The tail of a line that stands for ``held`` events too: ``"; 3 more rejected since the
    last such line (expired 1, mismatch 2)"``, or ``""`` when none were held back."""
    if not held:
        return ""
    return f"; {_more(held, what, by_kind=by_kind)}"


def tail_line(logger: logging.Logger, subject: str, what: str, *, by_kind: bool = True) -> Tail:
    """A tail logging ``"SUBJECT: 3 more WHAT since the last such line (expired 1, …)"`` as
    a WARNING, for a throttle whose lines are warnings about ``subject``."""

    def tail(held: Counter[str]) -> None:
        logger.warning(
            "%s: %s",
            subject,
            _more(held, what, by_kind=by_kind),
            extra={"suppressed": held.total()},
        )

    return tail


def _more(held: Counter[str], what: str, *, by_kind: bool) -> str:
    counts = ", ".join(f"{kind} {n}" for kind, n in sorted(held.items()))
    return f"{held.total()} more {what} since the last such line" + (
        f" ({counts})" if by_kind else ""
    )
