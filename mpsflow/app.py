"""``App``: handlers, sinks, middleware and lifecycle around one pipeline.

What one ``App.run`` does with its sources (supervision, stop signals, the drain) is
:mod:`mpsflow._running`.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, Literal

import anyio

from mpsflow._running import AppRun
from mpsflow._throttle import report_held_back
from mpsflow.clock import Clock, SystemClock
from mpsflow.codec import DEFAULT_MAX_SIZE
from mpsflow.deadletter import DeadLetterLimits
from mpsflow.dedup.idempotency import Idempotency
from mpsflow.dedup.middleware import DedupMiddleware
from mpsflow.dedup.stores.base import IdempotencyStore
from mpsflow.delivery import Cause, Delivery, Outcome
from mpsflow.errors import ConfigurationError, SinkError, StartupError
from mpsflow.middleware.base import Middleware
from mpsflow.observability.health import Readiness, ReadinessCheck, probe, require_store
from mpsflow.observability.metrics import InMemoryMetrics, Metrics
from mpsflow.observability.summaries import DEFERRAL_SUMMARY_INTERVAL
from mpsflow.pipeline import Pipeline, UnmatchedPolicy
from mpsflow.retry import RetryPolicy
from mpsflow.router import Router
from mpsflow.signing.middleware import SignatureMiddleware
from mpsflow.signing.verifier import (
    DEFAULT_MAX_LIFETIME,
    DEFAULT_SKEW,
    SignatureVerifier,
    UnsignedPolicy,
)
from mpsflow.sinks.base import CheckedSink, Sink
from mpsflow.sinks.channel import SinkChannel
from mpsflow.sinks.jsonl import JsonlSink
from mpsflow.sources.base import Source
from mpsflow.sources.runtime import Consumer, SourceRuntime

__all__ = [
    "DEFAULT_DEAD_LETTER_PATH",
    "DEFAULT_MAX_BODY_SIZE",
    "App",
    "Hook",
    "Lifespan",
]

DEFAULT_DEAD_LETTER_PATH = "mpsflow-dead-letters.jsonl"
DEFAULT_MAX_BODY_SIZE = DEFAULT_MAX_SIZE
"""The default body size limit (16 MiB): the codec's."""

_log = logging.getLogger("mpsflow.app")

Hook = Callable[[], Awaitable[None]]
Lifespan = Callable[["App"], AbstractAsyncContextManager[None]]


class App(Router):
    """An mpsflow application: register handlers with ``@app.on(key)``, then run sources.

    ``async with app:`` starts sinks and lifespan hooks; ``await app.process(delivery)`` runs
    one delivery through the pipeline; ``await app.run(*sources)`` feeds sources until they
    end or SIGTERM/SIGINT arrives, then drains in-flight work for up to
    ``shutdown_timeout`` seconds and leaves the rest for redelivery. Each source gets a
    :class:`~mpsflow.sources.runtime.SourceRuntime` (``source_runtime``), the only part of
    the app it sees.

    ``notify_keys`` turns signature checks on (several keys = rotation; ``signature_skew`` and
    ``max_signature_lifetime``, in seconds, bound the expiry from both sides); ``idempotency`` (a
    store or an ``Idempotency``) turns per-handler dedup on.

    ``dead_letters`` is a sink, or a path for a :class:`~mpsflow.sinks.jsonl.JsonlSink` that
    rotates by size. ``dead_letter_limits`` (:class:`~mpsflow.deadletter.DeadLetterLimits`)
    bounds what refused deliveries (bad signatures, poison) may write: an excerpt of the body,
    at most 20 records a minute per sender and 120 in all by default; and sets that rotation
    (64 MiB, 5 old files kept). The app does not start (``StartupError``, one line) when the
    dead-letter sink or another sink does not (a file it cannot write), and is not ready
    (``/readyz`` 503) while a sink that can tell (:class:`~mpsflow.sinks.base.CheckedSink`, as
    ``JsonlSink``) says it cannot.
    """

    def __init__(
        self,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        unmatched: UnmatchedPolicy = "ack",
        dead_letters: Sink | str | os.PathLike[str] | None = DEFAULT_DEAD_LETTER_PATH,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        middleware: Sequence[Middleware] = (),
        lifespan: Lifespan | None = None,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        shutdown_timeout: float = 30.0,
        notify_keys: Sequence[str] = (),
        signature_skew: float = DEFAULT_SKEW,
        max_signature_lifetime: float | None = DEFAULT_MAX_LIFETIME,
        allow_unsigned: UnsignedPolicy | bool = False,
        idempotency: Idempotency | IdempotencyStore | None = None,
        dead_letter_limits: DeadLetterLimits | None = None,
    ) -> None:
        super().__init__(retry=retry or RetryPolicy(), timeout=timeout)
        if unmatched not in ("ack", "dead_letter"):
            raise ConfigurationError("unmatched must be 'ack' or 'dead_letter'")
        if dead_letters is None:
            raise ConfigurationError(
                "a dead-letter sink is required: nothing may be dropped silently"
            )
        self.clock: Clock = clock or SystemClock()
        self.metrics: Metrics = metrics or InMemoryMetrics()
        self.max_body_size = max_body_size
        self.shutdown_timeout = shutdown_timeout
        self.drain_report_interval = 5.0
        """Seconds between two "draining: …" lines while ``run`` drains."""
        self.stop_signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
        """The signals ``run`` drains on; the same one again stops at once. ``mpsflow run
        --workers`` adds SIGUSR1 in its workers, the stop its supervisor forwards: a signal
        sent to the whole process group or cgroup (systemd's default) reaches them directly
        too, and two different signals are one request, not "stop at once"."""
        self.forwarded_stops: dict[signal.Signals, Callable[[], signal.Signals | None]] = {}
        """Stop signals a supervisor sends on the user's behalf (``mpsflow run --workers``:
        SIGUSR1), each with a function returning the signal the supervisor received (None: it
        stops of its own accord). The drain lines name that one ("the supervisor received
        SIGINT; draining …"), not the carrier, and say a request once when it also came
        directly (Ctrl-C reaches the whole process group)."""
        self.deferral_summary_interval = DEFERRAL_SUMMARY_INTERVAL
        """Seconds between two "deferred N handler runs …" summary lines, at most."""
        self.unmatched: UnmatchedPolicy = unmatched
        limits = dead_letter_limits or DeadLetterLimits()
        self.dead_letter_limits = limits
        """What refusals may write (read when the app starts; see ``DeadLetterLimits``)."""
        if isinstance(dead_letters, str | os.PathLike):
            try:
                dead_letters = JsonlSink(
                    os.fspath(dead_letters),
                    rotate_bytes=limits.rotate_bytes,
                    keep=limits.keep_files,
                )
            except ConfigurationError as exc:  # a folder: say which option names it
                raise ConfigurationError(f"App(dead_letters=…): {exc}") from None
        self._dead_letter_sink: Sink = dead_letters
        self._delivery_middleware: list[Middleware] = list(middleware)
        self._app_handler_middleware: list[Middleware] = []
        self._sinks: dict[str, tuple[Sink, dict[str, Any]]] = {}
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._lifespan = lifespan
        self._pipeline: Pipeline | None = None
        self._stack: AsyncExitStack | None = None
        self._dedup: Idempotency | None = None
        """The running app's dedup (set on start), settled in the background by ``run``."""
        self._stop: anyio.Event | None = None
        self.notify_keys = tuple(notify_keys)
        if isinstance(notify_keys, str):
            raise ConfigurationError("notify_keys is a list of keys, not one string")
        self.signature_skew = signature_skew
        self.max_signature_lifetime = max_signature_lifetime
        self.allow_unsigned = allow_unsigned
        self.idempotency = idempotency
        self.channels: dict[str, SinkChannel] = {}
        self.readiness_checks: list[ReadinessCheck] = []
        """Async checks ``/readyz`` runs (e.g. the dedup store answers)."""

    # -- configuration ----------------------------------------------------------------------

    def sink(
        self,
        name: str,
        sink: Sink,
        *,
        batch_size: int = 100,
        max_delay: float = 0.05,
        buffer_size: int = 10_000,
        max_attempts: int = 5,
    ) -> Sink:
        """Register ``sink`` under ``name`` for ``ctx.emit(name, record)``."""
        if self._pipeline is not None:
            raise ConfigurationError("register sinks before the app starts")
        if name in self._sinks:
            raise ConfigurationError(f"a sink named {name!r} is already registered")
        self._sinks[name] = (
            sink,
            {
                "batch_size": batch_size,
                "max_delay": max_delay,
                "buffer_size": buffer_size,
                "max_attempts": max_attempts,
            },
        )
        return sink

    def replace_sink(self, name: str, sink: Sink) -> Sink:
        """Swap the sink registered as ``name`` (keeps its channel options); return the one it
        replaces. Used by tests."""
        if name not in self._sinks:
            raise ConfigurationError(f"no sink named {name!r}")
        previous, options = self._sinks[name]
        self._sinks[name] = (sink, options)
        return previous

    @property
    def sink_names(self) -> tuple[str, ...]:
        return tuple(self._sinks)

    @property
    def dead_letter_sink(self) -> Sink:
        return self._dead_letter_sink

    @dead_letter_sink.setter
    def dead_letter_sink(self, sink: Sink) -> None:
        if self._pipeline is not None:
            raise ConfigurationError("set the dead-letter sink before the app starts")
        self._dead_letter_sink = sink

    def use_default_idempotency(self, path: str | os.PathLike[str]) -> None:
        """Dedup with the embedded SQLite store at ``path`` unless a store is set already."""
        if self.idempotency is None:
            from mpsflow.dedup.stores.sqlite import SQLiteStore

            self.idempotency = SQLiteStore(os.fspath(path))

    def _idempotency(self) -> Idempotency | None:
        configured = self.idempotency
        if configured is None or isinstance(configured, Idempotency):
            return configured
        return Idempotency(configured, clock=self.clock)

    def add_middleware(
        self,
        middleware: Middleware,
        *,
        scope: Literal["handler", "delivery"] = "handler",
        first: bool = False,
    ) -> None:
        """Add app-wide middleware.

        ``scope="delivery"`` wraps each whole delivery before decoding (sees raw bytes);
        ``scope="handler"`` wraps every handler run (outermost of the handler-scope chain).
        Middleware runs in the order added; ``first=True`` puts it before the others.
        """
        chain = self._middleware_list(scope)
        chain.insert(0 if first else len(chain), middleware)

    def remove_middleware(
        self, middleware: Middleware, *, scope: Literal["handler", "delivery"] = "handler"
    ) -> None:
        """Take out middleware added with ``add_middleware`` (e.g. by a test harness)."""
        chain = self._middleware_list(scope)
        if middleware not in chain:
            raise ConfigurationError(f"{middleware!r} is not {scope}-scope middleware of this app")
        chain.remove(middleware)

    def _middleware_list(self, scope: str) -> list[Middleware]:
        if self._pipeline is not None:
            raise ConfigurationError("change middleware before the app starts")
        if scope == "delivery":
            return self._delivery_middleware
        if scope == "handler":
            return self._app_handler_middleware
        raise ConfigurationError("scope must be 'handler' or 'delivery'")

    def on_startup(self, hook: Hook) -> Hook:
        """Run ``hook`` when the app starts (after sinks are open)."""
        self._startup.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        """Run ``hook`` when the app stops (before sinks close)."""
        self._shutdown.append(hook)
        return hook

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._pipeline is not None

    async def __aenter__(self) -> App:
        if self._stack is not None:
            raise RuntimeError("the app is already running")
        specs = self.handlers
        for spec in specs:
            missing = spec.emits - self._sinks.keys()
            if missing:
                raise ConfigurationError(
                    f"handler {spec.name} emits to unknown sink(s) {sorted(missing)}; "
                    "register them with app.sink(name, sink)"
                )
        async with AsyncExitStack() as stack:
            dead = SinkChannel(
                self._dead_letter_sink, batch_size=50, max_delay=0.01, clock=self.clock
            )
            await _start_sink(stack, dead, "the dead-letter sink", "App(dead_letters=…)")
            channels: dict[str, SinkChannel] = {}
            for name, (sink, options) in self._sinks.items():
                channel = SinkChannel(sink, clock=self.clock, **options)
                await _start_sink(stack, channel, f"sink {name!r}", f"its {type(sink).__name__}")
                channels[name] = channel
            if self._lifespan is not None:
                await stack.enter_async_context(self._lifespan(self))
            for hook in self._startup:
                await hook()
            stack.push_async_callback(self._run_shutdown_hooks)
            delivery_mw: list[Middleware] = []
            verifier = self.signature_verifier()
            if verifier is not None:
                delivery_mw.append(
                    SignatureMiddleware(verifier, metrics=self.metrics, max_size=self.max_body_size)
                )
            handler_mw: list[Middleware] = list(self._app_handler_middleware)
            idempotency = self._idempotency()
            checks = list(self.readiness_checks)
            stack.callback(self._restore_checks, checks)
            self._check_dead_letter_sink()
            self._dedup = idempotency
            if idempotency is not None:
                handler_mw.append(DedupMiddleware(idempotency))
                stack.push_async_callback(idempotency.store.close)
                stack.push_async_callback(idempotency.settle_pending)  # before the close
                self.readiness_checks.append(idempotency.store.ping)
            self.channels = channels
            self._pipeline = Pipeline(
                specs=specs,
                delivery_middleware=[*delivery_mw, *self._delivery_middleware],
                handler_middleware=handler_mw,
                sinks=channels,
                dead_letters=dead,
                retry=self._retry or RetryPolicy(),
                unmatched=self.unmatched,
                metrics=self.metrics,
                clock=self.clock,
                max_body_size=self.max_body_size,
                dead_letter_limits=self.dead_letter_limits,
            )
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._stack = self._stack, None
        self._pipeline = None
        if stack is not None:
            await stack.aclose()
        report_held_back()  # what rate-limited warnings held back shows before the app is gone

    def _restore_checks(self, checks: list[ReadinessCheck]) -> None:
        self.readiness_checks[:] = checks

    def signature_verifier(self) -> SignatureVerifier | None:
        """The signature check of this app's deliveries, from its settings (``notify_keys``,
        ``signature_skew``, ``max_signature_lifetime``, ``allow_unsigned``, ``clock``); None
        when it checks none. A replay's dry run asks it what the app would refuse."""
        if not self.notify_keys:
            return None
        return SignatureVerifier(
            self.notify_keys,
            skew_seconds=self.signature_skew,
            max_lifetime_seconds=self.max_signature_lifetime,
            clock=self.clock,
            allow_unsigned=self.allow_unsigned,
        )

    def _check_dead_letter_sink(self) -> None:
        """While running, ``/readyz`` also asks the dead-letter sink whether it can write
        (when it can tell: a ``CheckedSink``)."""
        sink = self._dead_letter_sink
        if not isinstance(sink, CheckedSink):
            return

        async def dead_letter_sink_writable() -> bool:
            return await sink.ready()

        dead_letter_sink_writable.__qualname__ = f"dead-letter sink {_sink_name(sink)} writable"
        self.readiness_checks.append(dead_letter_sink_writable)

    async def _run_shutdown_hooks(self) -> None:
        for hook in reversed(self._shutdown):
            try:
                await hook()
            except Exception:
                _log.exception("shutdown hook %r failed", hook)

    def process(self, delivery: Delivery) -> Coroutine[Any, Any, Outcome]:
        """Run one delivery through the pipeline: ``await app.process(delivery)``.

        The app must be started. A plain function handing back the pipeline's coroutine, so
        sources pay for no extra frame per delivery.
        """
        pipeline = self._pipeline
        if pipeline is None:
            raise RuntimeError("start the app first: `async with app:` or `await app.run(...)`")
        return pipeline(delivery)

    async def readiness(self) -> Readiness:
        """Whether to take traffic now: started, and every readiness check passing."""
        return await probe(self.readiness_checks, started=self.started)

    def source_runtime(
        self, stop: anyio.Event, *, consumer: Consumer | None = None
    ) -> SourceRuntime:
        """What a source may use of this app, for one ``run``; ``App.run`` builds one per source.

        ``consumer`` replaces ``app.process`` (e.g. a wrapper that observes each outcome);
        everything else (readiness, metrics, limits, dead letters) stays the app's.
        """
        return SourceRuntime(
            consumer=self.process if consumer is None else consumer,
            stop=stop,
            clock=self.clock,
            max_body_size=self.max_body_size,
            metrics=self.metrics,
            readiness=self.readiness,
            shutdown_timeout=self.shutdown_timeout,
            dead_letter=self._dead_letter,
            admit=self._admit,
        )

    async def _admit(self, delivery: Delivery) -> Outcome:
        """The runtime's admission check: the pipeline's, once the app has started."""
        pipeline = self._pipeline
        if pipeline is None:
            raise RuntimeError("start the app first: `async with app:` or `await app.run(...)`")
        return await pipeline.admit(delivery)

    async def _dead_letter(
        self, delivery: Delivery, reason: str, *, cause: Cause = Cause.REJECTED, path: str = ""
    ) -> Outcome:
        """The runtime's dead-letter path: the pipeline's, once the app has started."""
        pipeline = self._pipeline
        if pipeline is None:
            raise RuntimeError("start the app first: `async with app:` or `await app.run(...)`")
        return await pipeline.dead_letter(delivery, reason, cause=cause, path=path)

    def stop(self) -> None:
        """Ask ``run`` to stop pulling, drain in-flight work and return."""
        if self._stop is not None:
            self._stop.set()

    async def run(self, *sources: Source, handle_signals: bool = True) -> dict[str, int]:
        """Feed ``sources`` into the pipeline until they end or the app is stopped.

        Startup failures end it with a :class:`~mpsflow.errors.StartupError` (or the
        ``ConfigurationError`` a source raised on its first run) instead of a restart loop: a
        source that cannot start (a port in use, credentials refused), or a dedup store that
        does not answer. A source that fails later is restarted with backoff. On SIGTERM or
        SIGINT (``handle_signals``) in-flight work drains for up to ``shutdown_timeout``
        seconds; the same signal again stops at once, leaves in-flight work for redelivery
        and raises ``KeyboardInterrupt`` once the app is closed.

        Returns what the shutdown timeout left in flight for redelivery, as deliveries by
        source name (``{"http": 2}``); empty when every delivery finished.
        """
        if not sources:
            raise ConfigurationError("run() needs at least one source")
        async with self:
            if self._dedup is not None:
                await require_store(self._dedup.store)
            assert self._pipeline is not None
            run = AppRun(self, self._pipeline, self._dedup)
            self._stop = run.stop
            try:
                await run.run_sources(sources, handle_signals=handle_signals)
            finally:
                self._stop = None
                run.log_deferrals()
        if run.failure is not None:
            raise run.failure
        if run.interrupted:
            raise KeyboardInterrupt
        return run.left

    def scf_handler(self) -> Callable[[dict[str, Any], dict[str, Any]], Any]:
        """A synchronous ``main_handler(event, context)`` for the SCF Python runtime."""
        from mpsflow.sources.scf import make_scf_handler

        return make_scf_handler(self)

    def serve(self, *sources: Source) -> dict[str, int]:
        """Blocking ``run``: for scripts and the command line."""
        return anyio.run(lambda: self.run(*sources))


def _sink_name(sink: Sink) -> str:
    path = getattr(sink, "path", None)
    return os.fspath(path) if isinstance(path, str | os.PathLike) else type(sink).__name__


async def _start_sink(stack: AsyncExitStack, channel: SinkChannel, what: str, give: str) -> None:
    """Start ``channel`` (its sink) on ``stack``; a ``SinkError`` becomes a ``StartupError``
    whose one line names the sink (``what``) and what to do (``give`` it another path)."""
    try:
        await stack.enter_async_context(channel)
    except SinkError as exc:
        raise StartupError(_sink_cannot_start(channel.sink, exc, what, give)) from None


def _sink_cannot_start(sink: Sink, exc: SinkError, what: str, give: str) -> str:
    """The one line ``StartupError`` says when a sink does not start."""
    if not isinstance(sink, JsonlSink):
        return f"{what} {_sink_name(sink)} did not start: {exc}"
    cause = exc.__cause__
    if isinstance(cause, IsADirectoryError):  # the path names a directory, not a file
        path = os.fsdecode(cause.filename) if cause.filename is not None else sink.path
        return (
            f"{what} cannot write {path}: it is a directory, not a file: move it away, or give"
            f" {give} another path"
        )
    where = os.fspath(sink.path.parent) or "."
    return (
        f"{what} {exc}: make {where} a writable directory (the app creates missing ones), or"
        f" give {give} a path that is"
    )
