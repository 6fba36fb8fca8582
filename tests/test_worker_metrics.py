"""Counters of several workers added up through a shared directory (``run --workers``)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpsflow.metrics import InMemoryMetrics
from mpsflow.prometheus import render_in_memory
from mpsflow.worker_metrics import WorkerMetrics


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
    with caplog.at_level(logging.WARNING, logger="mpsflow.metrics"):
        total, responses = me.combined(_busy(1, 0), {200: 1})
    assert total.deliveries == {("http", "ack"): 1}
    assert responses == {200: 1}
    assert "unreadable worker metrics file" in caplog.text


def test_publishing_replaces_the_file_whole(tmp_path: Path) -> None:
    worker = WorkerMetrics(tmp_path, pid=12345)
    worker.publish(_busy(1, 0), {})
    worker.publish(_busy(2, 0), {200: 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["12345.json"]
    total, responses = WorkerMetrics(tmp_path, pid=1).combined(InMemoryMetrics(), {})
    assert total.deliveries == {("http", "ack"): 2}
    assert responses == {200: 2}
