"""Summary lines for the log: deferred handler runs, and the deliveries a drain waits for.

A deferral (a duplicate in progress, in this process or elsewhere, the idempotency store
briefly unavailable) is routine: the run is put off and tried again later without using up an
attempt. The pipeline logs each one at INFO and counts it here; the running app logs one
summary line per interval (at most one a minute) while deferrals happen, and a last one when it
stops, e.g. ``deferred 50 handler runs in the last 60s (a duplicate is in progress in this
process: 48, idempotency store unavailable: 2)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

__all__ = ["DEFERRAL_SUMMARY_INTERVAL", "DeferralCounter", "describe_in_flight"]

DEFERRAL_SUMMARY_INTERVAL = 60.0
"""Seconds between two deferral summary lines, at most."""

_MAX_REASONS = 8
"""Reasons named in one summary line; the rest are counted as "other"."""


class DeferralCounter:
    """Deferred runs by reason since the last :meth:`summary`.

    A reason counts under its text up to the first ``": "``, so details after it (a store's
    address, an error) do not split the counts. ``now`` is a monotonic clock in seconds.
    """

    def __init__(self, *, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._since = now()
        self._counts: dict[str, int] = {}
        self.total = 0
        """Deferred runs since the last summary."""

    def add(self, reason: str) -> None:
        """Count one deferred run."""
        key = reason.split(": ", 1)[0] or "deferred"
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        self.total += 1

    def summary(self) -> str | None:
        """The line summing up the runs deferred since the last summary (``None`` when there
        were none), and a new count from now on."""
        now = self._now()
        elapsed, self._since = now - self._since, now
        if not self.total:
            return None
        ranked = sorted(self._counts.items(), key=lambda item: (-item[1], item[0]))
        shown = [f"{reason}: {count}" for reason, count in ranked[:_MAX_REASONS]]
        rest = sum(count for _, count in ranked[_MAX_REASONS:])
        if rest:
            shown.append(f"other: {rest}")
        total, self.total = self.total, 0
        self._counts = {}
        runs = "handler run" if total == 1 else "handler runs"
        seconds = max(1, round(elapsed))
        return f"deferred {total} {runs} in the last {seconds}s ({', '.join(shown)})"


def describe_in_flight(in_flight: Mapping[str, int]) -> str:
    """``3 deliveries in flight (cmq 1, http 2)``, ``1 delivery in flight (http 1)`` or ``no
    deliveries in flight``: what a drain waits for, by source."""
    total = sum(in_flight.values())
    if not total:
        return "no deliveries in flight"
    parts = ", ".join(f"{source} {count}" for source, count in sorted(in_flight.items()) if count)
    return f"{total} {'delivery' if total == 1 else 'deliveries'} in flight ({parts})"
