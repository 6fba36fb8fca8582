"""The reconcile source: finished MPS tasks whose notification never arrived, found through the
MPS API and processed through the same pipeline.

MPS's HTTP push has no documented retry policy, and Tencent's FAQ tells users to query the API
when a callback does not arrive. This source does it for them. Every ``interval`` it scans the
time windows between ``now - lookback`` and ``now - grace`` (``grace`` gives a real
notification time to arrive); for each window it lists the ``FINISH`` tasks
(``DescribeTasks``), skips those whose final notification was already processed, fetches the
detail of the rest (``DescribeTaskDetail``, ``DescribeBatchTaskDetail`` for batch tasks),
builds the notification MPS would have sent and hands it to the pipeline as an admitted
delivery of source ``reconcile`` (``ctx.delivery.source``): it was read through the
authenticated API, so it has no ``Timestamp``/``Sign`` to check.

State lives in the app's dedup store, next to the handlers' records:

- ``mpsflow:reconcile:task:<TaskId>``: the task's final notification was processed. The
  :attr:`ReconcileSource.recorder` middleware records it when a ``FINISH`` notification is
  settled (acked or dead-lettered: it arrived, nothing was lost), and the source when it
  processed one itself. Kept for ``lookback`` + ``interval``.
- ``mpsflow:reconcile:window:<start>-<end>``: the window was scanned and every task in it had
  finished and been processed: a restart does not scan it again (the persisted cursor).
- ``mpsflow:reconcile:pass``: a lease, so that of several workers one scans at a time.

A real notification that arrives after its task was reconciled runs no handler twice: the
handlers' own dedup records (same TaskId, same results) say they ran.

**The time filter.** Whether ``DescribeTasks``'s ``StartTime``/``EndTime`` filter on a
task's creation or finish time is not documented. Both are safe here: a window is marked
scanned only when no task created in it is still ``WAITING`` or ``PROCESSING`` (one listing
of those per pass, over all windows; with a finish-time filter it finds none). Until then it
is scanned again every pass, and only its unprocessed ``FINISH`` tasks cost a detail call.

**What it costs.** A pass lists the running tasks (one call per 100), then each window not
marked scanned: one ``DescribeTasks`` call per 100 finished tasks in it, and one detail call
per task with no arrival recorded. A window is listed until it is marked, so in steady state a
pass lists about two windows; the first pass after a fresh start lists ``lookback / window`` of
them. The client sends at most 20 requests a second (MPS allows 100).

A poll sees the final state only: the intermediate ``PROCESSING`` notifications of Change
mode are not rebuilt.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

import anyio

from mpsflow.clock import Clock, SystemClock, format_duration
from mpsflow.dedup.idempotency import Idempotency
from mpsflow.dedup.stores.base import ClaimState, IdempotencyStore, describe_store
from mpsflow.delivery import Delivery, Outcome, Settlement
from mpsflow.errors import ConfigurationError, StartupError, StoreUnavailable
from mpsflow.middleware.base import Call, CallNext
from mpsflow.observability.metrics import ReconcileMetrics
from mpsflow.sources.runtime import SourceRuntime
from mpsflow.tencentcloud.mps.errors import MpsApiError, MpsAuthError, MpsTaskNotFoundError
from mpsflow.tencentcloud.mps.models import (
    BatchTaskDetail,
    DescribeTasksPage,
    TaskDetail,
    TaskSimpleInfo,
    TaskStatus,
)

__all__ = ["ReconcileSource", "ScanReport", "TaskApi"]

_log = logging.getLogger("mpsflow.sources.reconcile")

_PREFIX = "mpsflow:reconcile:"
_SETTLED = frozenset({Settlement.ACK, Settlement.DEAD_LETTERED})
"""Outcomes after which a notification is no longer lost: processed, or a dead letter."""
_MARK_LEASE = 60.0
"""Seconds a marker claim is held while it is written."""
_SCAN_LEASE = 120.0
"""Seconds the pass lease and a window's claim are held (plus the handler budget). Short, so a
reconciler killed mid-pass holds the next one back for minutes at most; a pass that outlives
it may meet another worker's in a window, which only costs listing calls: each task is
claimed before it is processed."""


class TaskApi(Protocol):
    """What the source needs of the MPS API (:class:`~mpsflow.tencentcloud.mps.MpsApiClient`)."""

    def iter_tasks(
        self,
        status: TaskStatus = "FINISH",
        *,
        start_time: datetime | str | None = None,
        end_time: datetime | str | None = None,
    ) -> AsyncIterator[TaskSimpleInfo]: ...

    async def describe_tasks(
        self,
        status: TaskStatus = "FINISH",
        *,
        start_time: datetime | str | None = None,
        end_time: datetime | str | None = None,
        limit: int = 100,
    ) -> DescribeTasksPage: ...

    async def describe_task_detail(self, task_id: str) -> TaskDetail: ...

    async def describe_batch_task_detail(self, task_id: str) -> BatchTaskDetail: ...

    async def verify_credentials(self) -> None: ...


@dataclass(slots=True)
class ScanReport:
    """What one pass did."""

    windows: int = 0
    """Windows listed in this pass."""
    marked: int = 0
    """Windows not listed: marked scanned by an earlier pass."""
    completed: int = 0
    """Windows marked scanned by this pass (every task in them finished and processed)."""
    tasks: int = 0
    """``FINISH`` tasks listed in the scanned windows."""
    missing: list[TaskSimpleInfo] = field(default_factory=list)
    """Finished tasks whose final notification had not been processed."""
    reconciled: int = 0
    """Notifications built and settled through the pipeline (acked or dead-lettered)."""
    failed: int = 0
    """Notifications the pipeline left for a retry, and tasks whose detail failed."""
    skipped_pass: bool = False
    """Another reconciler held the pass lease (until ``held_until``, wall time)."""
    held_until: float = 0.0


class ReconcileSource:
    """Reconciles the app with MPS's task list (see the module docstring).

    ``store`` is where markers live: the app's dedup store (``App(idempotency=…)``, a store or
    an ``Idempotency``), so that workers sharing it share the markers. Add :attr:`recorder` to
    the app as delivery middleware so that notifications that do arrive are recorded::

        reconcile = ReconcileSource(MpsApiClient(...), store)
        app.add_middleware(reconcile.recorder, scope="delivery")
        await app.run(http_source, reconcile)

    ``lookback``, ``grace``, ``interval`` and ``window`` are seconds; windows are aligned to
    multiples of ``window``. ``dry_run`` lists what is missing (``ScanReport.missing``)
    without processing it or marking anything.
    """

    def __init__(
        self,
        client: TaskApi,
        store: IdempotencyStore | Idempotency | None,
        *,
        lookback: float = 24 * 3600.0,
        grace: float = 600.0,
        interval: float = 300.0,
        window: float | None = None,
        name: str = "reconcile",
        clock: Clock | None = None,
        handler_budget: float = 60.0,
        dry_run: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        window = interval if window is None else window
        if not (lookback > 0 and interval > 0 and window > 0 and grace >= 0):
            raise ConfigurationError(
                "reconcile lookback, interval and window must be positive, grace not negative"
            )
        if grace >= lookback:
            raise ConfigurationError(
                f"the reconcile grace ({grace:g}s) must be shorter than the lookback"
                f" ({lookback:g}s): no task could ever be due"
            )
        if window > lookback:
            raise ConfigurationError(
                f"the reconcile window ({window:g}s) must not be longer than the lookback"
                f" ({lookback:g}s)"
            )
        store = _store_of(store)
        self.client = client
        self.store = store
        self.lookback = lookback
        self.grace = grace
        self.interval = interval
        self.window = window
        self.name = name
        self.handler_budget = handler_budget
        self.dry_run = dry_run
        self.progress = progress
        """Called with (windows done, windows to scan) as a pass goes (a progress bar)."""
        self._given_clock = clock
        self._clock: Clock = clock or SystemClock()
        self.reports: list[ScanReport] = []
        """The last passes' reports, newest last (at most 16)."""
        self.last_full_scan: float | None = None
        """Wall time the last pass that left no window unscanned ended."""
        self.api_errors = 0
        """MPS API calls that failed (after the client's own retries)."""
        self._passes = 0
        self._metrics: ReconcileMetrics | None = None

    def __repr__(self) -> str:
        return f"ReconcileSource({self.client!r}, store={describe_store(self.store)})"

    @property
    def retention(self) -> float:
        """Seconds a marker is kept: as long as a window that holds its task may be scanned."""
        return self.lookback + self.interval + self.window

    # -- the recorder ----------------------------------------------------------------------

    async def recorder(self, call: Call, call_next: CallNext) -> Outcome:
        """Delivery middleware: record every ``FINISH`` notification that was settled, so no
        pass fetches its task's detail. Never fails a delivery: a marker that could not be
        written only costs a detail call later (dedup keeps the handlers from rerunning)."""
        outcome = await call_next(call)
        notification = call.notification
        if (
            outcome.settlement in _SETTLED
            and notification is not None
            and call.delivery.source != self.name  # the source marks its own
        ):
            task_id = getattr(notification, "task_id", None)
            if task_id and getattr(notification, "status", None) == "FINISH":
                try:
                    await self._mark(task_id)
                except StoreUnavailable as exc:
                    _log.warning("could not record task %s as notified: %s", task_id, exc)
        return outcome

    async def _mark(self, task_id: str) -> None:
        key = f"{_PREFIX}task:{task_id}"
        claim = await self.store.claim(key, lease_seconds=_MARK_LEASE, payload_hash="")
        if claim.state is ClaimState.CLAIMED:
            await self.store.complete(key, claim.token, ttl_seconds=self.retention)

    # -- running ---------------------------------------------------------------------------

    async def run(self, runtime: SourceRuntime) -> None:
        """A pass at once, then one every ``interval``, until ``runtime.stop`` is set."""
        if self._given_clock is None:
            self._clock = runtime.clock
        metrics: object = runtime.metrics
        if isinstance(metrics, ReconcileMetrics):
            # This process reconciles: its last-full-pass gauge shows from now on (0 until a
            # pass is full); a process that does not reconcile has none.
            metrics.reconcile_full_scan(self.last_full_scan or 0.0)
        if self._passes == 0:
            await self.check()
            _log.info(
                "reconciling tasks that finished between %s and %s ago, every %s, with %s",
                format_duration(self.lookback),
                format_duration(self.grace),
                format_duration(self.interval),
                _where(self.client),
            )
        while not runtime.stop.is_set():
            await self.scan(runtime)
            with anyio.move_on_after(self.interval):
                await runtime.stop.wait()

    async def check(self) -> None:
        """Fail at startup, with a :class:`~mpsflow.errors.StartupError` saying what to do,
        when the MPS API refuses the keys or cannot be reached."""
        try:
            await self.client.verify_credentials()
        except MpsAuthError as exc:
            raise StartupError(
                f"the MPS API refused the credentials ({exc.code}): check "
                "TENCENTCLOUD_SECRETID/TENCENTCLOUD_SECRETKEY"
            ) from exc
        except MpsApiError as exc:
            raise StartupError(
                f"cannot reconcile: the MPS API at {_where(self.client)} failed ({exc}): check"
                " --mps-endpoint and --region"
            ) from exc

    async def scan(self, runtime: SourceRuntime) -> ScanReport:
        """One pass over the windows that are due; what it did."""
        metrics = runtime.metrics
        self._metrics = metrics if isinstance(metrics, ReconcileMetrics) else None
        report = ScanReport()
        self._passes += 1
        key = f"{_PREFIX}pass"
        lease = await self.store.claim(
            key, lease_seconds=_SCAN_LEASE + self.handler_budget, payload_hash=""
        )
        if lease.state is not ClaimState.CLAIMED:
            report.skipped_pass = True
            report.held_until = lease.expires_at
            _log.info("another reconciler is scanning; skipping this pass")
            self._count_scan("skipped")
            return self._keep(report)
        token = lease.token
        left = 0
        try:
            windows = self._due_windows(self._clock.time())
            running = await self._running_since(windows)
            left += running is None  # the running tasks could not be listed
            for done, (start, end) in enumerate(windows):
                if runtime.stop.is_set():
                    left += len(windows) - done
                    break
                busy = running is None or any(start <= t < end for t in running)
                scanned = await self._window(start, end, busy, runtime, report)
                left += not scanned
                if self.progress is not None:
                    self.progress(done + 1, len(windows))
        finally:
            with anyio.CancelScope(shield=True):
                await self._release(key, token)
        if not left:
            self._full_scan_done()
        self._count_scan("partial" if left else "full")
        level = logging.INFO if left or report.missing or self._passes == 1 else logging.DEBUG
        _log.log(
            level,
            "reconcile pass %s: %d window(s) listed (%d marked scanned before), %d finished"
            " task(s), %d with no arrival recorded%s",
            "partial" if left else "full",
            report.windows,
            report.marked,
            report.tasks,
            len(report.missing),
            " (dry run: listed only)"
            if self.dry_run
            else f": {report.reconciled} processed, {report.failed} left for the next pass",
        )
        return self._keep(report)

    def _full_scan_done(self) -> None:
        self.last_full_scan = self._clock.time()
        if self._metrics is not None:
            self._metrics.reconcile_full_scan(self.last_full_scan)

    def _count_scan(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.reconcile_scan(outcome)

    def _count_task(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.reconcile_task(outcome)

    def _api_error(self, action: str) -> None:
        self.api_errors += 1
        if self._metrics is not None:
            self._metrics.reconcile_api_error(action)

    def _keep(self, report: ScanReport) -> ScanReport:
        self.reports = [*self.reports[-15:], report]
        return report

    def _due_windows(self, now: float) -> list[tuple[float, float]]:
        """Windows inside ``[now - lookback, now - grace]``, oldest first: whole ones aligned
        to multiples of ``window``, then the part of the next one that has passed (scanned,
        never marked: its rest is still to come)."""
        size = self.window
        first = math.ceil((now - self.lookback) / size) * size
        last_end = now - self.grace
        count = max(0, int((last_end - first) // size))
        windows = [(first + i * size, first + (i + 1) * size) for i in range(count)]
        partial_start = first + count * size
        if last_end > partial_start:
            windows.append((partial_start, last_end))
        return windows

    async def _running_since(self, windows: list[tuple[float, float]]) -> list[float] | None:
        """Creation times of the tasks listed as ``WAITING`` or ``PROCESSING`` over all
        ``windows`` (one paged listing per pass, not per window); None when the API failed,
        so that no window is marked scanned."""
        if not windows:
            return []
        start, end = _utc(windows[0][0]), _utc(windows[-1][1])
        running: list[float] = []
        try:
            for status in ("WAITING", "PROCESSING"):
                async for task in self.client.iter_tasks(status, start_time=start, end_time=end):
                    created = task.created_at
                    if created is None:
                        return None  # cannot tell which window it is in
                    running.append(created.timestamp())
        except MpsApiError as exc:
            self._api_error(exc.action)
            _log.warning("reconcile: listing running tasks failed: %s", exc)
            return None
        return running

    async def _window(
        self, start: float, end: float, busy: bool, runtime: SourceRuntime, report: ScanReport
    ) -> bool:
        """Scan one window unless marked scanned; True when it was listed and every finished
        task in it was processed (now or before). It is marked scanned only when it is whole
        and not ``busy``: a task created in it still runs."""
        whole = (end - start) >= self.window
        key = f"{_PREFIX}window:{int(start)}-{int(end) if whole else 'now'}"
        claim = await self.store.claim(
            key, lease_seconds=_SCAN_LEASE + self.handler_budget, payload_hash=""
        )
        if claim.state is ClaimState.COMPLETED:
            report.marked += 1
            return True
        if claim.state is ClaimState.IN_PROGRESS:
            return False
        report.windows += 1
        done = mark = False
        try:
            done = await self._scan_window(_utc(start), _utc(end), runtime, report)
            mark = done and whole and not busy and not self.dry_run
        finally:
            with anyio.CancelScope(shield=True):
                if mark:
                    await self.store.complete(key, claim.token, ttl_seconds=self.retention)
                else:
                    await self.store.release(key, claim.token)
        report.completed += mark
        return done

    async def _scan_window(
        self, start: datetime, end: datetime, runtime: SourceRuntime, report: ScanReport
    ) -> bool:
        """List the window's tasks and process the missing ones; True when all were."""
        all_done = True
        try:
            async for task in self.client.iter_tasks("FINISH", start_time=start, end_time=end):
                report.tasks += 1
                if runtime.stop.is_set():
                    return False
                all_done &= await self._task(task, runtime, report)
        except MpsApiError as exc:
            self._api_error(exc.action)
            _log.warning("reconcile: listing tasks %s – %s failed: %s", start, end, exc)
            return False
        return all_done

    async def _task(self, task: TaskSimpleInfo, runtime: SourceRuntime, report: ScanReport) -> bool:
        """Process one listed task unless its final notification was; True when it was."""
        key = f"{_PREFIX}task:{task.task_id}"
        claim = await self.store.claim(key, lease_seconds=self.handler_budget, payload_hash="")
        if claim.state is ClaimState.COMPLETED:
            return True
        if claim.state is ClaimState.IN_PROGRESS:
            return False  # a real notification (or another scan) is being processed
        report.missing.append(task)
        processed = False
        try:
            if self.dry_run:
                self._count_task("listed")
            else:
                processed = await self._reconcile(task, runtime, report)
        finally:
            with anyio.CancelScope(shield=True):
                if processed:
                    await self.store.complete(key, claim.token, ttl_seconds=self.retention)
                else:
                    await self.store.release(key, claim.token)
        return processed

    async def _reconcile(
        self, task: TaskSimpleInfo, runtime: SourceRuntime, report: ScanReport
    ) -> bool:
        """Fetch the detail, build the notification, process it; True once it settled."""
        try:
            if task.task_type == "BatchTask":
                detail: TaskDetail | BatchTaskDetail = await self.client.describe_batch_task_detail(
                    task.task_id
                )
            else:
                detail = await self.client.describe_task_detail(task.task_id)
        except MpsTaskNotFoundError:
            _log.info("reconcile: task %s is gone from the API's history", task.task_id)
            return True  # nothing to build it from: not scanned again
        except MpsApiError as exc:
            self._api_error(exc.action)
            report.failed += 1
            self._count_task("failed")
            _log.warning("reconcile: the detail of task %s failed: %s", task.task_id, exc)
            return False
        body = detail.notification_json()
        if body is None:
            return True  # a task that sends no notification (live streams)
        delivery = Delivery(
            body,
            source=self.name,
            id=task.task_id,
            meta={"reconciled": "1"},
            deadline=self._clock.monotonic() + self.handler_budget,
            admitted=True,
        )
        outcome = await runtime.consumer(delivery)
        if outcome.settlement in _SETTLED:
            report.reconciled += 1
            self._count_task("processed")
            return True
        report.failed += 1
        self._count_task("failed")
        return False

    async def _release(self, key: str, token: str) -> None:
        try:
            await self.store.release(key, token)
        except StoreUnavailable as exc:
            _log.warning("could not release the reconcile lease: %s (it ends by itself)", exc)


def _store_of(store: IdempotencyStore | Idempotency | None) -> IdempotencyStore:
    if store is None:
        raise ConfigurationError(
            "reconciliation keeps its state in the dedup store: give the app one"
            " (App(idempotency=…)) and pass it"
        )
    return store.store if isinstance(store, Idempotency) else store


def _where(client: object) -> str:
    return str(getattr(client, "url", client))


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)
