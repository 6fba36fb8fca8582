"""``SourceRuntime``: everything a source may use, handed to it explicitly.

A source gets one runtime per ``run`` and uses nothing else of the app: the consumer (the
pipeline's entry), the clock, the body size limit, the metrics, a readiness probe, the
shutdown timeout, the stop event, a dead-letter path, and the admission check a source with
an inbox runs before queueing a body. ``App.run`` builds it
(``app.source_runtime(stop)``); a test or a tool may build one by hand, or wrap the consumer
of an app's runtime with ``dataclasses.replace`` or ``app.source_runtime(stop, consumer=…)``
and keep the rest (readiness, metrics) the app's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from mpsflow.clock import Clock, SystemClock
from mpsflow.codec import DEFAULT_MAX_SIZE
from mpsflow.delivery import Cause, Delivery, Outcome, Settlement
from mpsflow.observability.health import ReadinessProbe, always_ready
from mpsflow.observability.metrics import Metrics

__all__ = ["Consumer", "DeadLetterPath", "SourceRuntime", "admit_all", "no_dead_letters"]

Consumer = Callable[[Delivery], Awaitable[Outcome]]
"""The pipeline, as a source sees it: one delivery in, its outcome out (never raises)."""


class DeadLetterPath(Protocol):
    """Record a delivery as a dead letter without running the pipeline.

    For sources that must record something they cannot hand on (a body they refuse at the
    door). ``cause`` says why, in the pipeline's words, and picks the record's kind. Returns
    the DEAD_LETTERED outcome, or RETRY when the record could not be written (nothing lost).
    """

    def __call__(
        self, delivery: Delivery, reason: str, *, cause: Cause = ..., path: str = ...
    ) -> Awaitable[Outcome]: ...


async def no_dead_letters(
    delivery: Delivery, reason: str, *, cause: Cause = Cause.REJECTED, path: str = ""
) -> Outcome:
    """The dead-letter path of a runtime without a sink: nothing is written, so retry."""
    return Outcome(Settlement.RETRY, cause=Cause.DEFERRED, reason="no dead-letter sink")


_ADMITTED = Outcome(Settlement.ACK, reason="admitted")


async def admit_all(delivery: Delivery) -> Outcome:
    """The admission check of a runtime without an app: every body may be queued."""
    return _ADMITTED


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceRuntime:
    """What one source run may use; only ``consumer`` and ``stop`` have no default."""

    consumer: Consumer
    """Where deliveries go: the app's pipeline (``app.process``), possibly wrapped."""
    stop: anyio.Event
    """Set when the source must stop taking work, settle what it started and return."""
    clock: Clock = field(default_factory=SystemClock)
    """The app's clock (deadlines, timestamps)."""
    max_body_size: int = DEFAULT_MAX_SIZE
    """The app's body size limit; a source may refuse larger bodies before reading them."""
    metrics: Metrics | None = None
    """The app's metrics, for sources that export them (``None``: nothing to export)."""
    readiness: ReadinessProbe = always_ready
    """Whether the app may take traffic now (started, readiness checks passing)."""
    shutdown_timeout: float = 30.0
    """Seconds in-flight work may take to finish once ``stop`` is set."""
    dead_letter: DeadLetterPath = no_dead_letters
    """Record a delivery as a dead letter without running the pipeline."""
    admit: Consumer = admit_all
    """Check a delivery at the door of an inbox without processing it (the app's signature
    check and decode, :meth:`mpsflow.pipeline.Pipeline.admit`): ACK means it may be queued,
    anything else is the answer to give (the refusal is already recorded)."""

    @property
    def stopping(self) -> bool:
        """True once ``stop`` is set."""
        return self.stop.is_set()
