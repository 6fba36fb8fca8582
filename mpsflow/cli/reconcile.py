"""``mpsflow reconcile``: one reconciliation pass, by hand.

Lists the finished MPS tasks of the last ``--since`` whose notification never reached the app
(its dedup store has no record of their final notification), and processes them through the
app, as ``mpsflow run --reconcile`` does every ``--interval``; ``--dry-run`` only lists them.
Only a run with reconciliation records arrivals, so the tasks a plain ``mpsflow run`` handled
are listed too ("no arrival recorded", not "lost"); processing them again runs no handler that
the dedup store remembers.
A progress line counts the windows on a terminal.

Exit codes: 0 when nothing is missing, everything missing was processed, or with
``--dry-run``; 1 when some were left for a retry, or another reconciler holds the lease (a
killed one holds it for about three minutes); 2 for a wrong command line; 3 when the MPS API
refuses the keys or cannot be reached; 130 when stopped (SIGINT, SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import anyio

from mpsflow.cli.common import (
    DEFAULT_DEDUP_PATH,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STARTUP,
    Command,
    duration,
    load_app,
    use_dedup_option,
)
from mpsflow.errors import StartupError

if TYPE_CHECKING:
    from mpsflow.app import App
    from mpsflow.sources.reconcile import ReconcileSource, ScanReport

__all__ = ["COMMAND"]


def _configure(parser: argparse.ArgumentParser) -> None:
    from mpsflow.cli.run import add_reconcile_options

    parser.add_argument("app", metavar="MODULE:APP", help="the App to process them with")
    parser.add_argument(
        "--since",
        metavar="DURATION",
        type=duration,
        default=24 * 3600.0,
        help="how far back to look: 90m, 24h, 7d (24h; the API keeps about 7 days)",
    )
    parser.add_argument(
        "--window",
        metavar="DURATION",
        type=duration,
        default=3600.0,
        help="the time span one DescribeTasks listing covers (1h, or --since when shorter)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the finished tasks with no arrival recorded (only run --reconcile records"
        " arrivals), do nothing",
    )
    parser.add_argument(
        "--handler-budget",
        metavar="SECONDS",
        type=duration,
        default=60.0,
        help="how long processing one notification may take (60)",
    )
    add_reconcile_options(parser)
    parser.add_argument(
        "--dedup",
        metavar="PATH",
        help=f"SQLite dedup store used when the app configures none ({DEFAULT_DEDUP_PATH}):"
        " the one mpsflow run uses",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error"),
        help="logging threshold (%(default)s)",
    )
    parser.set_defaults(run=_reconcile)


def _reconcile(args: argparse.Namespace) -> int:
    from mpsflow.cli.run import reconcile_source
    from mpsflow.dedup.stores.memory import MemoryStore

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    app = load_app(args.app)
    use_dedup_option(app, args.dedup)
    store = getattr(app.idempotency, "store", app.idempotency)
    if isinstance(store, MemoryStore):
        print(
            "mpsflow reconcile: warning: the app's dedup store is in memory, so this run"
            " remembers nothing from earlier ones: every task that finished since --since is"
            " processed again (its handlers are skipped only where they keep their own records)",
            file=sys.stderr,
        )
    args.lookback, args.interval = args.since, min(args.window, args.since)
    source = reconcile_source(
        args, app, flag="mpsflow reconcile", lookback_option="--since", window_option="--window"
    )
    source.dry_run = args.dry_run
    source.progress = _progress if sys.stderr.isatty() else None
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C: leases freed
    try:
        report = anyio.run(_one_pass, app, source)
    except StartupError as exc:
        print(f"mpsflow reconcile: error: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    return _summary(report, dry_run=args.dry_run)


async def _one_pass(app: App, source: ReconcileSource) -> ScanReport:
    async with app:
        await source.check()
        return await source.scan(app.source_runtime(anyio.Event()))


def _progress(done: int, total: int) -> None:
    end = "\n" if done == total else ""
    print(f"\rscanned {done}/{total} windows", end=end, file=sys.stderr, flush=True)


def _summary(report: ScanReport, *, dry_run: bool) -> int:
    if report.skipped_pass:
        until = datetime.fromtimestamp(report.held_until, tz=timezone.utc)
        print(
            "mpsflow reconcile: error: another reconciler is scanning (a pass of mpsflow run"
            " --reconcile, or a reconcile that was killed): its lease ends at"
            f" {until:%H:%M:%S} UTC; try again then",
            file=sys.stderr,
        )
        return EXIT_FAILED
    for task in report.missing:
        print(f"{task.task_id}\t{task.task_type}\tfinished {task.finish_time or '?'}")
    listed = f"{report.tasks} finished task(s) in {report.windows} window(s) listed"
    if report.marked:
        listed += f" ({report.marked} more scanned before)"
    # Missing means no arrival recorded, not lost: only a run with --reconcile records them.
    missing = f"{len(report.missing)} with no arrival recorded"
    if dry_run:
        unrecorded = "; a run without --reconcile records none" if report.missing else ""
        print(f"{listed}; {missing} (dry run: nothing processed{unrecorded})")
        return EXIT_OK
    print(f"{listed}; {missing}: {report.reconciled} processed, {report.failed} left for a retry")
    return EXIT_FAILED if report.failed else EXIT_OK


COMMAND = Command(
    "process finished MPS tasks whose notification never arrived (--dry-run lists them)",
    _configure,
)
"""The ``reconcile`` entry of :data:`mpsflow.cli.COMMANDS`."""
