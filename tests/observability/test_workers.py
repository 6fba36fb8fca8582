"""Counters of several workers added up through a shared directory (``run --workers``)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from mpsflow.observability.metrics import InMemoryMetrics
from mpsflow.observability.prometheus import render_in_memory
from mpsflow.observability.workers import WorkerMetrics


def _exited_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _busy(acks: int, in_flight: int, *, dead_letter: str | None = None) -> InMemoryMetrics:
    metrics = InMemoryMetrics()
    for _ in range(acks + in_flight):
        metrics.delivery_started("http")
    for _ in range(acks):
        metrics.delivery("http", "ack", 0.25)
        metrics.handler_run("on_task", "ok", 0.125)
    if dead_letter:
        metrics.dead_letter(dead_letter)
    return metrics


def test_state_round_trips_into_equal_counters() -> None:
    metrics = _busy(3, 2, dead_letter="poison")
    metrics.signature_rejected("mismatch")
    metrics.duplicate_skipped("on_task")
    metrics.unmatched("EditMediaTask")
    copy = InMemoryMetrics()
    copy.add_state(metrics.state())
    assert copy.snapshot() == metrics.snapshot()
    assert (copy.delivery_seconds, copy.handler_seconds) == (0.75, 0.375)
    assert render_in_memory(copy) == render_in_memory(metrics)


def test_a_scrape_adds_live_and_exited_workers(tmp_path: Path) -> None:
    me = WorkerMetrics(tmp_path)
    live_peer = WorkerMetrics(tmp_path, pid=os.getppid())
    exited_peer = WorkerMetrics(tmp_path, pid=_exited_pid())
    live_peer.publish(_busy(4, 1), {200: 4})
    exited_peer.publish(_busy(2, 3, dead_letter="poison"), {200: 2, 400: 1})
    me.publish(_busy(100, 0), {200: 100})  # stale: the live counters below are used instead

    total, responses = me.combined(_busy(5, 2), {200: 5, 503: 1})

    assert total.deliveries == {("http", "ack"): 11}
    assert total.handler_runs == {("on_task", "ok"): 11}
    assert total.dead_letters == {"poison": 1}
    # in flight: mine (2) and the live peer's (1); the exited worker's 3 never finish
    assert total.in_flight_now == {"http": 3}
    assert responses == {200: 11, 400: 1, 503: 1}
    assert total.delivery_seconds == pytest.approx(11 * 0.25)


def test_stray_and_unreadable_files_are_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "notes.json").write_text("{}")
    (tmp_path / f"{os.getppid()}.json").write_text("{not json")
    me = WorkerMetrics(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mpsflow.observability.metrics"):
        total, responses = me.combined(_busy(1, 0), {200: 1})
    assert total.deliveries == {("http", "ack"): 1}
    assert responses == {200: 1}
    assert "unreadable worker metrics file" in caplog.text


def test_the_last_full_reconcile_pass_comes_only_from_workers_that_reconcile(
    tmp_path: Path,
) -> None:
    reader = WorkerMetrics(tmp_path)
    journalled = WorkerMetrics(tmp_path, pid=os.getppid())
    published = WorkerMetrics(tmp_path, pid=_exited_pid())
    journalled.record(_busy(2, 0), {200: 2})  # a worker that does not reconcile
    total, _ = reader.combined(InMemoryMetrics(), {})
    assert total.deliveries == {("http", "ack"): 2}
    assert total.reconcile_last_full_scan is None  # nobody reconciles: no gauge
    assert b"reconcile_last_full_scan" not in render_in_memory(total)

    starting = _busy(1, 0)
    starting.reconcile_full_scan(0.0)  # reconciliation started, no full pass yet
    journalled.record(starting, {200: 1})
    total, _ = reader.combined(InMemoryMetrics(), {})
    assert total.reconcile_last_full_scan == 0.0

    scanned = InMemoryMetrics()
    scanned.reconcile_full_scan(1_700_000_000.5)
    published.publish(scanned, {})
    total, _ = reader.combined(InMemoryMetrics(), {})
    assert total.reconcile_last_full_scan == 1_700_000_000.5  # the latest of them
    assert total.deliveries == {("http", "ack"): 1}


def test_publishing_replaces_the_file_whole(tmp_path: Path) -> None:
    worker = WorkerMetrics(tmp_path, pid=12345)
    worker.publish(_busy(1, 0), {})
    worker.publish(_busy(2, 0), {200: 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["12345.json"]
    total, responses = WorkerMetrics(tmp_path, pid=1).combined(InMemoryMetrics(), {})
    assert total.deliveries == {("http", "ack"): 2}
    assert responses == {200: 2}


_KILLED_AFTER_ANSWERING = """
import os, signal, sys
from collections import Counter
from mpsflow.observability.metrics import InMemoryMetrics
from mpsflow.observability.workers import WorkerMetrics

worker = WorkerMetrics(sys.argv[1])
metrics, responses = InMemoryMetrics(), Counter()
worker.publish(metrics, responses)  # the periodic publish, long before the callbacks
for _ in range(int(sys.argv[2])):  # each callback: counted, recorded, then answered
    metrics.delivery_started("http")
    metrics.handler_run("on_task", "ok", 0.5)
    metrics.delivery("http", "ack", 0.25)
    responses[200] += 1
    worker.record(metrics, responses)
metrics.delivery_started("http")  # one more in flight, not answered when it dies
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_worker_killed_right_after_answering_leaves_every_count(tmp_path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_ANSWERING, str(tmp_path), "25"], check=False
    )
    assert child.returncode == -signal.SIGKILL

    total, responses = WorkerMetrics(tmp_path).combined(InMemoryMetrics(), {})

    assert total.deliveries == {("http", "ack"): 25}
    assert total.handler_runs == {("on_task", "ok"): 25}
    assert total.in_flight_now == {"http": 0}  # it exited: nothing of it is in flight
    assert total.delivery_seconds == 25 * 0.25
    assert responses == {200: 25}


def test_the_journal_and_the_snapshot_give_the_higher_counts(tmp_path: Path) -> None:
    peer = WorkerMetrics(tmp_path, pid=os.getppid())
    reader = WorkerMetrics(tmp_path)
    metrics, codes = _busy(2, 0), Counter({200: 2})
    peer.publish(metrics, codes)
    for _ in range(3):
        _busy_one(metrics)
        codes[200] += 1
        peer.record(metrics, codes)
    total, responses = reader.combined(InMemoryMetrics(), {})
    assert total.deliveries == {("http", "ack"): 5}  # the journal is newer
    assert responses == {200: 5}

    journal = peer.journal_path.read_bytes()
    peer.publish(metrics, codes)
    assert peer.journal_path.read_bytes() == b""  # the snapshot has it all now
    peer.journal_path.write_bytes(journal)  # a reader may still see the old journal
    total, responses = reader.combined(InMemoryMetrics(), {})
    assert total.deliveries == {("http", "ack"): 5}  # counted once
    assert responses == {200: 5}
    peer.close()


def test_a_torn_last_record_is_left_out(tmp_path: Path) -> None:
    peer = WorkerMetrics(tmp_path, pid=os.getppid())
    metrics, codes = _busy(1, 0), Counter({200: 1})
    peer.publish(metrics, codes)
    peer.record(metrics, codes)
    whole = peer.journal_path.stat().st_size
    _busy_one(metrics)
    codes[200] += 1
    peer.record(metrics, codes)
    with peer.journal_path.open("r+b") as file:  # the writer died inside the write
        file.truncate(whole + (peer.journal_path.stat().st_size - whole) // 2)
    total, responses = WorkerMetrics(tmp_path).combined(InMemoryMetrics(), {})
    assert total.deliveries == {("http", "ack"): 1}
    assert responses == {200: 1}
    peer.close()


def test_a_failed_write_is_cut_off_before_the_next_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    peer = WorkerMetrics(tmp_path, pid=os.getppid())
    metrics, codes = _busy(1, 0), Counter({200: 1})
    peer.record(metrics, codes)
    real_write = os.write

    def half_write(fd: int, data: bytes) -> int:  # the disk filled up mid-record
        return real_write(fd, data[: len(data) // 2])

    monkeypatch.setattr(os, "write", half_write)
    with caplog.at_level(logging.WARNING, logger="mpsflow.observability.metrics"):
        for _ in range(2):
            _busy_one(metrics)
            codes[200] += 1
            peer.record(metrics, codes)
    assert caplog.text.count("could not append") == 1  # once until a write succeeds
    monkeypatch.setattr(os, "write", real_write)
    _busy_one(metrics)
    codes[200] += 1
    peer.record(metrics, codes)
    total, responses = WorkerMetrics(tmp_path).combined(InMemoryMetrics(), {})
    assert total.deliveries == {("http", "ack"): 4}
    assert responses == {200: 4}
    peer.close()


def test_the_journal_stays_small(tmp_path: Path) -> None:
    worker = WorkerMetrics(tmp_path, pid=12345, max_journal_bytes=4096)
    metrics, codes = InMemoryMetrics(), Counter[int]()
    worker.publish(metrics, codes)
    for _ in range(1000):
        _busy_one(metrics)
        codes[200] += 1
        worker.record(metrics, codes)
        assert worker.journal_path.stat().st_size < 4096
    total, responses = WorkerMetrics(tmp_path, pid=1).combined(InMemoryMetrics(), {})
    assert total.deliveries == {("http", "ack"): 1000}
    assert responses == {200: 1000}
    worker.publish(metrics, codes)  # the periodic or final publish
    worker.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["12345.json"]


def _busy_one(metrics: InMemoryMetrics) -> None:
    metrics.delivery_started("http")
    metrics.handler_run("on_task", "ok", 0.125)
    metrics.delivery("http", "ack", 0.25)
