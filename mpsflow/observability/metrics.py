"""What the pipeline counts, behind a small protocol, with an in-process default.

``InMemoryMetrics`` keeps plain counters (cheap enough for the hot path) that tests and the
``/metrics`` endpoint read; ``mpsflow.observability.prometheus.PrometheusMetrics`` exports
the same names
in Prometheus format when ``mpsflow[metrics]`` is installed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["InMemoryMetrics", "Metrics", "ReconcileMetrics"]

_PAIRS = ("deliveries", "handler_runs")
_COUNTERS = (
    "dead_letters",
    "signature_rejections",
    "duplicates",
    "unmatched_events",
    "reconcile_scans",
    "reconcile_tasks",
    "reconcile_api_errors",
)
_SECONDS = ("delivery_seconds", "handler_seconds")


class Metrics(Protocol):
    """Hooks the engine calls; every implementation must be cheap and never raise."""

    def delivery_started(self, source: str) -> None:
        """A delivery entered the pipeline (it is in flight until ``delivery`` reports it)."""

    def delivery(self, source: str, outcome: str, seconds: float) -> None:
        """A delivery left the pipeline.

        ``outcome``: ack, retry, dead_lettered, rejected, or cancelled (shutdown cut it short;
        it is left for redelivery).
        """

    def handler_run(self, key: str, outcome: str, seconds: float) -> None:
        """A handler run ended: ok, skipped, defer, retry, reject, error or timeout."""

    def dead_letter(self, kind: str) -> None:
        """One dead-letter record written (exhausted, rejected, poison, unmatched, signature)."""

    def signature_rejected(self, reason: str) -> None:
        """A notification failed signature verification."""

    def duplicate_skipped(self, key: str) -> None:
        """A handler was skipped because it already completed for this notification."""

    def unmatched(self, event_type: str) -> None:
        """A notification reached no handler."""


@runtime_checkable
class ReconcileMetrics(Protocol):
    """Hooks the reconcile source calls when the app's metrics have them (both built-in
    backends do; a backend of your own may leave them out)."""

    def reconcile_scan(self, outcome: str) -> None:
        """A pass ended: full (every due window is scanned), partial, or skipped (another
        worker held the lease)."""

    def reconcile_task(self, outcome: str) -> None:
        """A finished task with no arrival recorded was found: processed, failed (left for the
        next pass) or listed (a dry run)."""

    def reconcile_api_error(self, action: str) -> None:
        """An MPS API call failed after the client's retries."""

    def reconcile_full_scan(self, timestamp: float) -> None:
        """A full pass ended at ``timestamp`` (wall-clock seconds). Also called with 0 as
        reconciliation starts in this process: the last-full-pass gauge shows from then on (0
        until a pass is full), and never in a process that does not reconcile."""


class InMemoryMetrics:
    """Counters in dicts; ``snapshot()`` gives a plain view for tests and health pages.

    The per-delivery counters (``deliveries``, ``handler_runs``, ``started``) are plain dicts,
    which update faster than ``Counter``; read them with ``.get(key, 0)``.
    """

    def __init__(self) -> None:
        self.deliveries: dict[tuple[str, str], int] = {}
        self.handler_runs: dict[tuple[str, str], int] = {}
        self.started: dict[str, int] = {}
        self.dead_letters: Counter[str] = Counter()
        self.signature_rejections: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()
        self.unmatched_events: Counter[str] = Counter()
        self.reconcile_scans: Counter[str] = Counter()
        self.reconcile_tasks: Counter[str] = Counter()
        self.reconcile_api_errors: Counter[str] = Counter()
        self.reconcile_last_full_scan: float | None = None
        """Wall time the last full reconcile pass ended; 0 before the first, None while this
        process does not reconcile (``/metrics`` then has no such gauge)."""
        self.delivery_seconds = 0.0
        self.handler_seconds = 0.0

    def delivery_started(self, source: str) -> None:
        started = self.started
        started[source] = started.get(source, 0) + 1

    def delivery(self, source: str, outcome: str, seconds: float) -> None:
        deliveries = self.deliveries
        key = (source, outcome)
        deliveries[key] = deliveries.get(key, 0) + 1
        self.delivery_seconds += seconds

    def handler_run(self, key: str, outcome: str, seconds: float) -> None:
        runs = self.handler_runs
        run = (key, outcome)
        runs[run] = runs.get(run, 0) + 1
        self.handler_seconds += seconds

    def dead_letter(self, kind: str) -> None:
        self.dead_letters[kind] += 1

    def signature_rejected(self, reason: str) -> None:
        self.signature_rejections[reason] += 1

    def duplicate_skipped(self, key: str) -> None:
        self.duplicates[key] += 1

    def unmatched(self, event_type: str) -> None:
        self.unmatched_events[event_type] += 1

    def reconcile_scan(self, outcome: str) -> None:
        self.reconcile_scans[outcome] += 1

    def reconcile_task(self, outcome: str) -> None:
        self.reconcile_tasks[outcome] += 1

    def reconcile_api_error(self, action: str) -> None:
        self.reconcile_api_errors[action] += 1

    def reconcile_full_scan(self, timestamp: float) -> None:
        last = self.reconcile_last_full_scan
        self.reconcile_last_full_scan = timestamp if last is None else max(last, timestamp)

    @property
    def in_flight_now(self) -> dict[str, int]:
        """Deliveries started but not yet finished, by source."""
        finished: Counter[str] = Counter()
        for (source, _outcome), count in self.deliveries.items():
            finished[source] += count
        return {source: count - finished[source] for source, count in self.started.items()}

    def snapshot(self) -> dict[str, dict[str, float]]:
        """All counters as nested plain dicts (keys joined with ``/``)."""
        return {
            "deliveries": {"/".join(k): v for k, v in self.deliveries.items()},
            "handler_runs": {"/".join(k): v for k, v in self.handler_runs.items()},
            "dead_letters": dict(self.dead_letters),
            "signature_rejections": dict(self.signature_rejections),
            "duplicates_skipped": dict(self.duplicates),
            "unmatched": dict(self.unmatched_events),
            "in_flight": dict(self.in_flight_now),
        }

    def state(self) -> dict[str, Any]:
        """Every raw counter as JSON-able data (label pairs as lists), for :meth:`add_state`."""
        state: dict[str, Any] = {
            name: [[*k, v] for k, v in getattr(self, name).items()] for name in _PAIRS
        }
        state["started"] = dict(self.started)
        state.update({name: dict(getattr(self, name)) for name in _COUNTERS})
        state.update({name: getattr(self, name) for name in _SECONDS})
        state["reconcile_last_full_scan"] = self.reconcile_last_full_scan
        return state

    def add_state(self, state: Mapping[str, Any], *, finished: bool = False) -> None:
        """Add another process's :meth:`state` to these counters (combining workers).

        ``finished``: that process has exited, so nothing of it is in flight any more (its
        started deliveries count only as far as they finished).
        """
        for name in _PAIRS:
            mine: dict[tuple[str, str], int] = getattr(self, name)
            for first, second, count in state.get(name, ()):
                mine[first, second] = mine.get((first, second), 0) + int(count)
        started: dict[str, int] = dict(state.get("started", {}))
        if finished:
            started = dict.fromkeys(started, 0)
            for source, _outcome, count in state.get("deliveries", ()):
                started[source] = started.get(source, 0) + int(count)
        for source, count in started.items():
            self.started[source] = self.started.get(source, 0) + int(count)
        for name in _COUNTERS:
            counter: Counter[str] = getattr(self, name)
            counter.update({k: int(v) for k, v in state.get(name, {}).items()})
        for name in _SECONDS:
            setattr(self, name, getattr(self, name) + float(state.get(name, 0.0)))
        last_full_scan = state.get("reconcile_last_full_scan")
        if last_full_scan is not None:  # that process reconciles
            self.reconcile_full_scan(float(last_full_scan))
