"""One ``App.run``: the sources supervised until they end or the app stops, and the drain.

Each source runs with its runtime (``app.source_runtime``) and is restarted with backoff when
it fails; a ``ConfigurationError`` on its first run (a port in use, credentials refused) ends
the run instead. A stop signal starts the drain, the same signal again stops at once; the drain
says what it waits for and, past the shutdown timeout, cancels the sources and leaves their
deliveries for redelivery. Beside the sources run the running app's chores: the deferral
summary lines, the rate-limited lines held back, dedup store faults settled.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio

from mpsflow._throttle import report_held_back
from mpsflow.dedup.idempotency import Idempotency
from mpsflow.errors import ConfigurationError, MpsflowError
from mpsflow.observability.summaries import describe_in_flight
from mpsflow.pipeline import Pipeline
from mpsflow.sources.base import Source

if TYPE_CHECKING:
    from mpsflow.app import App

__all__ = ["AppRun"]

_log = logging.getLogger("mpsflow.app")  # the lines of a run are the app's

_HELD_BACK_CHECK_INTERVAL = 5.0
"""Seconds between two looks for rate-limited warnings held back past their interval."""


class AppRun:
    """One ``App.run`` of the started ``app`` (its ``pipeline`` and ``dedup``): its stop event,
    its outermost cancel scope, and how it ended. The app's settings (shutdown timeout, stop
    signals, report intervals, clock) are read from ``app`` as the run goes."""

    def __init__(self, app: App, pipeline: Pipeline, dedup: Idempotency | None) -> None:
        self.app = app
        self.pipeline = pipeline
        self.dedup = dedup
        self.stop = anyio.Event()
        self.scope = anyio.CancelScope()
        self.failure: ConfigurationError | None = None
        """The first source that could not start: ``run`` raises it once the app is closed."""
        self.interrupted = False
        """A second signal stopped the app at once: ``run`` raises ``KeyboardInterrupt``."""
        self.left: dict[str, int] = {}
        """Deliveries in flight by source when the shutdown timeout cancelled them."""

    async def run_sources(self, sources: Sequence[Source], *, handle_signals: bool) -> None:
        """Run ``sources`` until they end, or until the stop and its drain (stopping on the
        app's stop signals with ``handle_signals``, in the main thread)."""
        async with anyio.create_task_group() as outer:
            self.scope = outer.cancel_scope
            if handle_signals and threading.current_thread() is threading.main_thread():
                outer.start_soon(self._stop_on_signals)
            outer.start_soon(self._supervise_all, sources)

    def fail(self, error: ConfigurationError) -> None:
        """A source cannot start: stop the others (they drain) and end with ``error``."""
        if self.failure is None:
            self.failure = error
        self.stop.set()

    def log_deferrals(self) -> None:
        """The summary line of the handler runs deferred since the last one, if any."""
        line = self.pipeline.deferrals.summary()
        if line is not None:
            _log.info("%s", line)

    async def _supervise_all(self, sources: Sequence[Source]) -> None:
        """Run every source under supervision; past the shutdown timeout, cancel them."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._drain, tg.cancel_scope)
            tg.start_soon(self._summarize_deferrals)
            tg.start_soon(self._report_held_back_lines)
            if self.dedup is not None:
                tg.start_soon(self._settle_store_faults, self.dedup)
            async with anyio.create_task_group() as supervised:
                for source in sources:
                    supervised.start_soon(self._supervise, source)
            tg.cancel_scope.cancel()  # every source ended: the timeout watch is not needed
        self.scope.cancel()

    async def _settle_store_faults(self, idempotency: Idempotency) -> None:
        """Write what dedup store faults left (completions, lost claims) once the store is
        back, also when no delivery comes to do it (see :class:`Idempotency`).

        Paced in real time, not on the app's clock: sleeping on a test's FakeClock would move
        its time on by itself.
        """
        while True:
            await anyio.sleep(idempotency.retry_interval)
            if idempotency.unsettled:
                await idempotency.settle_pending()

    async def _summarize_deferrals(self) -> None:
        """One summary line per interval while handler runs are deferred (in real time)."""
        while True:
            await anyio.sleep(self.app.deferral_summary_interval)
            self.log_deferrals()

    async def _report_held_back_lines(self) -> None:
        """Rate-limited warnings held back after the last line of a burst are reported once
        their interval has passed (checked every few seconds, in real time)."""
        while True:
            await anyio.sleep(_HELD_BACK_CHECK_INTERVAL)
            report_held_back(due_only=True)

    async def _drain(self, drain_scope: anyio.CancelScope) -> None:
        """Once ``stop`` is set: say what the drain waits for, every ``drain_report_interval``
        seconds, and cancel the sources when the shutdown timeout is reached."""
        await self.stop.wait()
        timeout = self.app.shutdown_timeout
        deadline = anyio.current_time() + timeout
        with anyio.move_on_after(timeout) as waited:
            while True:
                self._report_drain(deadline - anyio.current_time())
                await anyio.sleep(self.app.drain_report_interval)
        if waited.cancelled_caught:
            self.left = self.pipeline.in_flight
            _log.warning(
                "shutdown timeout (%gs) reached; leaving %s for redelivery",
                timeout,
                describe_in_flight(self.left),
            )
            drain_scope.cancel()

    def _report_drain(self, left: float) -> None:
        in_flight = self.pipeline.in_flight
        if in_flight:
            _log.info(
                "draining: %s; up to %ds left",
                describe_in_flight(in_flight),
                math.ceil(left),
            )

    async def _stop_on_signals(self) -> None:
        """A stop signal: drain. The same signal again: stop at once (``interrupted``).

        A signal a supervisor forwarded (``app.forwarded_stops``) is named by the one the
        supervisor received; one the user sent that is announced already (it reached this
        process directly and forwarded) is logged at DEBUG only.
        """
        first_names: dict[int, str | None] = {}
        """What each signal received stood for the first time (None: nothing the user sent)."""
        announced: set[str] = set()
        """The user's signals whose drain was announced."""
        with anyio.open_signal_receiver(*self.app.stop_signals) as signals:
            async for signum in signals:
                cause, name = self._stop_cause(signum)
                if signum in first_names:
                    again = " again" if name == first_names[signum] else ""
                    _log.warning(
                        "%s%s: stopping now, leaving %s for redelivery",
                        cause,
                        again,
                        describe_in_flight(self.pipeline.in_flight),
                    )
                    self.interrupted = True
                    self.scope.cancel()
                    return
                first_names[signum] = name
                if name is not None and name in announced:
                    _log.debug("%s: already draining", cause)
                elif name is None:
                    _log.info("%s; draining for up to %gs", cause, self.app.shutdown_timeout)
                else:
                    announced.add(name)
                    _log.info(
                        "%s; draining for up to %gs (%s again stops at once)",
                        cause,
                        self.app.shutdown_timeout,
                        name,
                    )
                self.stop.set()

    def _stop_cause(self, signum: int) -> tuple[str, str | None]:
        """What a stop signal means to the user, and the name of the signal they sent (None:
        the supervisor stops of its own accord)."""
        forwarded = self.app.forwarded_stops.get(signal.Signals(signum))
        if forwarded is None:
            name = signal.Signals(signum).name
            return f"received {name}", name
        received = forwarded()
        if received is None:
            return "the supervisor is stopping the workers", None
        return f"the supervisor received {received.name}", received.name

    async def _supervise(self, source: Source) -> None:
        """Run ``source``, restarting it with backoff when it fails; a ``ConfigurationError``
        (``StartupError`` included) on its first run stops the app instead."""
        name = getattr(source, "name", type(source).__name__)
        runtime = self.app.source_runtime(self.stop)
        delay = 0.5
        first = True
        while True:
            try:
                await source.run(runtime)
                return
            except Exception as exc:
                cause = _root_cause(exc)
                if first and isinstance(cause, ConfigurationError):
                    self.fail(cause)
                    return
                if isinstance(cause, ConfigurationError):  # a setting, not a bug
                    _log.error("source %s cannot run: %s; restarting in %gs", name, cause, delay)
                elif isinstance(cause, MpsflowError):  # expected (CMQ refused, …): its words
                    _log.error("source %s failed: %s; restarting in %gs", name, cause, delay)
                else:
                    _log.error("source %s crashed; restarting in %gs", name, delay, exc_info=cause)
            first = False
            if self.stop.is_set():
                return
            await self.app.clock.sleep(delay)
            if self.stop.is_set():
                return
            delay = min(delay * 2, 30.0)


def _root_cause(exc: BaseException) -> BaseException:
    """The failure an exception group stands for: its first ``ConfigurationError``, else its
    first leaf (task groups wrap what a source's tasks raise)."""
    leaves: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop(0)
        inner = getattr(current, "exceptions", None)  # an (exception) group, also on 3.10
        if isinstance(inner, tuple):
            pending[:0] = [e for e in inner if isinstance(e, BaseException)]
        else:
            leaves.append(current)
    return next(
        (e for e in leaves if isinstance(e, ConfigurationError)), leaves[0] if leaves else exc
    )
