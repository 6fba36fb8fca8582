"""``mpsflow run --workers N``: a pre-fork supervisor that serves one HTTP port from N processes.

The listening socket is bound before forking, so every worker accepts on the same port; the
supervisor restarts workers that crash and forwards SIGTERM/SIGINT, as SIGUSR1, so each
drains gracefully (a second signal makes them stop at once). SIGUSR1, not the signal itself: a
signal sent to the whole process group or cgroup (Ctrl-C, systemd) reaches the workers directly
too, and one request must not look like two. SIGUSR1 is ours, not the user's: the supervisor
notes the signal it received in a byte of memory it shares with the workers, and their drain
lines name that one ("the supervisor received SIGINT; draining …"). A worker that cannot
start (a :class:`~mpsflow.errors.StartupError`, e.g. its dedup store does not answer) is not
restarted: the supervisor stops the others and ends with that error, reported once. The first
worker starts alone, and the others once it serves: what stops every worker from starting (a
misspelt CMQ inbox, a store that does not answer) ends the run with that one line as with one
worker, not with the lines of others that were starting, stopped or failed too (in whatever
order they came).

Whichever worker answers ``/metrics`` reports all of them: the default metrics through files
each worker publishes (:mod:`mpsflow.observability.workers`), ``PrometheusMetrics`` through
prometheus-client's multiprocess mode, which :func:`prometheus_multiprocess` turns on with a
fresh directory before the app is imported (unless the environment names one); a worker's
live gauges (deliveries in flight) are cleared as it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import mmap
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

from mpsflow.cli._heap import prepare_heap_for_serving
from mpsflow.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_STARTUP
from mpsflow.errors import ConfigurationError, StartupError
from mpsflow.observability.prometheus import MULTIPROCESS_VARIABLE, multiprocess_directory

if TYPE_CHECKING:
    from mpsflow.app import App
    from mpsflow.sources.base import Source

__all__ = ["Supervisor", "exit_reason", "prometheus_multiprocess", "serve_workers"]

_FORWARDED_STOP: Final = signal.SIGUSR1
"""The signal the supervisor stops its workers with (their apps drain on it)."""
_STOPPED_CODES: Final = frozenset(-s for s in (_FORWARDED_STOP, signal.SIGTERM, signal.SIGINT))
"""How a worker killed by a stop ends: before its app handled signals (or after), it held no
work, so such an end is a stop, not a failure."""

_log = logging.getLogger("mpsflow.cli")


class Supervisor:
    """Forks N workers that serve one inherited listening socket; restarts crashed ones.

    SIGTERM/SIGINT are forwarded to every worker as SIGUSR1 (each drains gracefully); the supervisor
    exits once they all have. A second signal is forwarded too (each worker then stops at
    once) and the supervisor exits with 130. A worker that keeps dying before it serves (5
    times in a row; it serves once it calls :meth:`serving`) makes it give up and stop the
    others; one that cannot start (``StartupError``) makes it stop the others at once, and
    ``startup_error`` says why.

    With ``first_alone`` the first worker starts on its own, and the others once it calls
    :meth:`serving`: one that cannot start, or that ends before it serves for any other reason
    (its app's startup hook raised), is then the only worker there was, and none is restarted.
    """

    _GIVE_UP_AFTER = 5

    def __init__(
        self,
        count: int,
        work: Callable[[], int],
        *,
        first_alone: bool = False,
        on_end: Callable[[int], None] | None = None,
    ) -> None:
        self.count = count
        self.work = work
        self.first_alone = first_alone
        self.on_end = on_end
        """Called with each worker's pid once it has ended, to clear what it leaves behind."""
        self.workers: dict[int, float] = {}  # pid -> start time
        self.stopping = False
        self.interrupted = False
        """A second signal came: the workers were told to stop at once."""
        self.startup_error: str | None = None
        """Why a worker could not start (its ``StartupError``), when one could not."""
        self._signals = 0
        self._wake = threading.Event()
        self._reports: tuple[int, int] | None = None
        """A pipe on which a worker that cannot start writes why, for the supervisor."""
        self._received: mmap.mmap | None = None
        """While running: memory shared with the workers. Byte 0 is the number of the last stop
        signal the supervisor received (0: none), read by ``received`` in a worker; byte
        ``1 + slot`` is 1 once the worker in that slot serves."""
        self._slots: dict[int, int] = {}
        """pid -> the slot of its byte in ``_received`` (the supervisor's; one per worker)."""
        self._slot: int | None = None
        """In a worker: its slot."""
        self._first_pending = False
        """While the first worker of ``first_alone`` starts alone."""
        self._serves: int | None = None
        """In the first worker of ``first_alone``: the pipe on which it says it serves."""
        self._failed = False
        self._quick_deaths = 0

    def received(self) -> signal.Signals | None:
        """In a worker: the stop signal the supervisor received last (None: none, it stops
        the workers of its own accord), for the drain lines (``App.forwarded_stops``)."""
        shared = self._received
        number = shared[0] if shared is not None and not shared.closed else 0
        return signal.Signals(number) if number else None

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self._received is not None:
            self._received[0] = signum  # before the workers are told
        self._signals += 1
        if self._signals > 1:
            self.interrupted = True
        self._stop_workers()

    def _stop_workers(self) -> None:
        self.stopping = True
        self._wake.set()
        for pid in list(self.workers):
            _kill(pid, _FORWARDED_STOP)

    def serving(self) -> None:
        """In a worker: it serves. The supervisor counts its end as a crash from now on, not
        as a failed start; the first worker of ``first_alone`` also tells it to start the
        others. Outside a worker this does nothing."""
        shared, slot = self._received, self._slot
        if shared is not None and not shared.closed and slot is not None:
            shared[1 + slot] = 1
        serves, self._serves = self._serves, None
        if serves is not None:
            with contextlib.suppress(OSError):
                os.write(serves, b"serving\n")
            os.close(serves)

    def _spawn(self, *, serves: int | None = None) -> int:
        """Fork a worker (``serves``: the pipe the first worker of ``first_alone`` says it
        serves on); its pid."""
        slot = min(set(range(self.count)) - set(self._slots.values()))
        if self._received is not None:
            self._received[1 + slot] = 0
        pid = os.fork()
        if pid == 0:  # the worker
            self._serves = serves
            self._slot = slot
            code = EXIT_FAILED
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                code = self.work()
            except StartupError as exc:
                self._report(str(exc))
                code = EXIT_STARTUP
            except KeyboardInterrupt:  # stopped at once by a second signal
                code = EXIT_INTERRUPTED
            except OSError as exc:  # one line, as `mpsflow run` prints it with one worker
                _log.error("worker failed: %s", exc)
            except BaseException:
                _log.exception("worker failed")
            finally:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.workers[pid] = time.monotonic()
        self._slots[pid] = slot
        if serves is None:
            _log.info("worker %d started", pid)
        else:  # said once it serves: a worker that cannot start is the run's one line
            _log.debug("worker %d started; the others start once it serves", pid)
        return pid

    def _start_first(self) -> None:
        """Start the first worker alone and wait until it serves, then start the others; when
        it ended before serving, handle its end first (it could not start: none is started)."""
        read, write = os.pipe()
        self._first_pending = True
        try:
            try:
                pid = self._spawn(serves=write)
            finally:
                os.close(write)  # the worker's copy is the only one left: EOF once it ended
            serves = os.read(read, 64) != b""
        finally:
            os.close(read)
        if serves:
            self._first_pending = False
            more = self.count - 1
            _log.info("worker %d started%s", pid, f"; starting {more} more" if more else "")
        else:
            _, status = os.waitpid(pid, 0)
            self._ended(pid, status)
            self._first_pending = False
        if not self.stopping:
            for _ in range(self.count - 1):
                self._spawn()

    def _report(self, message: str) -> None:
        """In a worker: tell the supervisor why this worker cannot start."""
        if self._reports is not None:
            with contextlib.suppress(OSError):
                os.write(self._reports[1], message.encode()[: select.PIPE_BUF - 1] + b"\n")

    def _read_report(self) -> str:
        """In the supervisor: the first reason a worker gave for not starting."""
        if self._reports is None:
            return ""
        try:
            data = os.read(self._reports[0], 65536)
        except BlockingIOError:
            return ""
        return data.decode(errors="replace").split("\n", 1)[0]

    def run(self) -> int:
        """Start the workers and supervise them until all have exited; the exit code."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        self._failed = False
        self._quick_deaths = 0
        self._reports = os.pipe()
        os.set_blocking(self._reports[0], False)
        # Anonymous and shared: the workers see its writes, and it sees theirs.
        self._received = mmap.mmap(-1, 1 + self.count)
        try:
            if self.first_alone:
                self._start_first()
            else:
                for _ in range(self.count):
                    self._spawn()
            while self.workers:
                pid, status = os.wait()
                self._ended(pid, status)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for end in self._reports:
                os.close(end)
            self._reports = None
            self._received.close()
            self._received = None
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self._failed else EXIT_OK

    def _ended(self, pid: int, status: int) -> None:
        """Handle the end of worker ``pid`` (``status`` from ``os.wait``): note a startup
        error and stop the others, say how it stopped, or restart it."""
        started = self.workers.pop(pid, None)
        if started is None:
            return
        if self.on_end is not None:
            self.on_end(pid)
        slot = self._slots.pop(pid)
        served = self._received is not None and self._received[1 + slot] == 1
        code = os.waitstatus_to_exitcode(status)
        if code == EXIT_STARTUP and self.startup_error is None:
            self.startup_error = self._read_report() or "a worker could not start"
            self._failed = True
            self._stop_workers()  # the others too; none is restarted
            return
        if self.stopping:
            # Killed by the stop it was sent (or by the group's SIGTERM, or Ctrl-C's
            # SIGINT): it had not set up its app's signal handling yet (or had ended
            # it), so it held no work.
            stopped = code in _STOPPED_CODES
            self._failed |= code != 0 and not stopped
            how = "stopped, holding no work" if stopped else exit_reason(code)
            _log.info("worker %d exited (%s)", pid, "drained" if code == 0 else how)
            return
        if self._first_pending:  # as one worker would, the run ends: nothing served yet
            _log.error(
                "worker %d ended before it served (%s); not starting the others",
                pid,
                exit_reason(code),
            )
            self._failed = True
            self.stopping = True
            return
        # Before it served: a failed start, which another is likely to repeat. Counted by
        # serving, not by time: a dead worker may be reaped late, after a backoff wait.
        self._quick_deaths = 0 if served else self._quick_deaths + 1
        if self._quick_deaths >= self._GIVE_UP_AFTER:
            _log.error(
                "worker %d exited unexpectedly (%s); %d workers in a row ended before they"
                " served: giving up",
                pid,
                exit_reason(code),
                self._quick_deaths,
            )
            self._failed = True
            self._stop_workers()
            return
        _log.error("worker %d exited unexpectedly (%s); restarting it", pid, exit_reason(code))
        if self._quick_deaths:
            self._wake.wait(min(0.1 * 2**self._quick_deaths, 5.0))
        if not self.stopping:
            self._spawn()


@contextlib.contextmanager
def prometheus_multiprocess(workers: int) -> Iterator[None]:
    """With more than one worker, put prometheus-client in multiprocess mode on a fresh
    directory (removed at the end) for what runs inside, the app's import included, so its
    ``PrometheusMetrics`` reports every worker's values.

    Nothing changes when the environment names a directory already (the user's), or
    prometheus-client was imported before (too late: it reads the variable once, and the
    HTTP source then logs that each worker reports its own).
    """
    given = {MULTIPROCESS_VARIABLE, MULTIPROCESS_VARIABLE.lower()} & os.environ.keys()
    if workers <= 1 or given or "prometheus_client" in sys.modules:
        yield
        return
    directory = tempfile.mkdtemp(prefix="mpsflow-prometheus-")
    os.environ[MULTIPROCESS_VARIABLE] = directory
    try:
        yield
    finally:
        os.environ.pop(MULTIPROCESS_VARIABLE, None)
        shutil.rmtree(directory, ignore_errors=True)


def _clear_live_gauges(pid: int) -> None:
    """Clear an ended worker's live prometheus-client gauges (its deliveries in flight), in
    multiprocess mode; its counters stay, so a combined counter never goes down."""
    if "prometheus_client" not in sys.modules:  # the app does not use it
        return
    with contextlib.suppress(ConfigurationError, OSError):  # the mode is off, or misset
        directory = multiprocess_directory()
        if directory is not None:
            from prometheus_client import multiprocess

            mark_process_dead: Any = multiprocess.mark_process_dead  # untyped
            mark_process_dead(pid, directory)


def exit_reason(code: int) -> str:
    """A worker's end in words: ``exit status 1``, or ``killed by SIGKILL`` (a negative
    ``os.waitstatus_to_exitcode``), so a log line never shows a bare ``-9``."""
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def serve_workers(
    app: App,
    args: argparse.Namespace,
    worker_sources: Callable[[socket.socket, str], list[Source]],
) -> int:
    """Bind ``args.http``, then serve ``app`` from ``args.workers`` forked processes.

    ``worker_sources(sock, metrics_dir)`` builds each worker's sources: its HTTP source on
    the shared socket, and any that run beside it in every worker (reconciliation); every
    worker publishes its counters in ``metrics_dir``, so any of them answers /metrics.
    """
    if not hasattr(os, "fork"):
        raise ConfigurationError("--workers needs a platform with fork()")
    from mpsflow._listen import listen

    host, port = args.http
    sock = listen(host, port)  # StartupError saying what to do when the port is taken
    # Every worker accepts on it from an event loop, and the blocking mode belongs to the open
    # file they all share: a worker whose loop calls accept() on a blocking one stalls there.
    sock.setblocking(False)
    bound_port = sock.getsockname()[1]
    args.http = (host, bound_port)
    scheme = "https" if args.certfile else "http"
    shown = f"[{host}]" if ":" in host else host
    # Not "serving": each worker says so once it serves (after its CMQ inbox's consumer
    # works). Not INFO: a first worker that cannot start ends the run with its one line alone.
    _log.debug(
        "starting %d workers to serve MPS callbacks on %s://%s:%d%s",
        args.workers,
        scheme,
        shown,
        bound_port,
        args.path,
    )

    # Each worker publishes its counters here, so any of them answers /metrics for all.
    metrics_dir = tempfile.mkdtemp(prefix="mpsflow-metrics-")

    def work() -> int:
        app.stop_signals = (*app.stop_signals, _FORWARDED_STOP)
        app.forwarded_stops = {**app.forwarded_stops, _FORWARDED_STOP: supervisor.received}
        import anyio

        sources = worker_sources(sock, metrics_dir)
        left = anyio.run(_serve, app, sources, supervisor.serving)
        return EXIT_FAILED if left else EXIT_OK  # the shutdown timeout left work in flight

    prepare_heap_for_serving()
    supervisor = Supervisor(args.workers, work, first_alone=True, on_end=_clear_live_gauges)
    try:
        code = supervisor.run()
    finally:
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if supervisor.startup_error is not None:
        raise StartupError(supervisor.startup_error)
    return code


async def _serve(app: App, sources: list[Source], serving: Callable[[], None]) -> dict[str, int]:
    """``app.run(*sources)`` (what ``app.serve`` runs), calling ``serving`` once its HTTP
    sources serve, for the supervisor to start the other workers."""
    import asyncio

    from mpsflow.sources.http import HttpSource

    async def report() -> None:
        for source in sources:
            if isinstance(source, HttpSource):
                await source.wait_serving()
        serving()

    # A task beside the app's, not a task group: app.run's StartupError stays itself, not
    # wrapped in an exception group, for the worker to report.
    watch = asyncio.get_running_loop().create_task(report())
    try:
        return await app.run(*sources)
    finally:
        watch.cancel()
