"""Prometheus export: ``PrometheusMetrics`` and the text rendering of ``InMemoryMetrics``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from mpsflow.errors import ConfigurationError
from mpsflow.observability.metrics import InMemoryMetrics, Metrics
from mpsflow.observability.prometheus import (
    PrometheusMetrics,
    format_family,
    render_in_memory,
    render_metrics,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: bytes) -> Samples:
    """Every sample of a Prometheus text page, by name and sorted labels."""
    found: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def exercise(metrics: Metrics) -> None:
    """The same events, in the order the engine would report them."""
    for source in ("http", "http", "http", "cmq"):
        metrics.delivery_started(source)
    metrics.delivery("http", "ack", 0.004)
    metrics.delivery("http", "ack", 0.006)
    metrics.delivery("cmq", "retry", 0.5)
    metrics.handler_run("Transcode", "ok", 0.002)
    metrics.handler_run("Transcode", "error", 0.3)
    metrics.handler_run("WorkflowTask", "skipped", 0.0001)
    metrics.dead_letter("exhausted")
    metrics.dead_letter("poison")
    metrics.dead_letter("poison")
    metrics.signature_rejected("expired")
    metrics.duplicate_skipped("WorkflowTask")
    metrics.unmatched("ScheduleTask")


EXPECTED: Samples = {
    ("mpsflow_deliveries_total", (("outcome", "ack"), ("source", "http"))): 2,
    ("mpsflow_deliveries_total", (("outcome", "retry"), ("source", "cmq"))): 1,
    ("mpsflow_handler_runs_total", (("key", "Transcode"), ("outcome", "ok"))): 1,
    ("mpsflow_handler_runs_total", (("key", "Transcode"), ("outcome", "error"))): 1,
    ("mpsflow_handler_runs_total", (("key", "WorkflowTask"), ("outcome", "skipped"))): 1,
    ("mpsflow_in_flight", (("source", "http"),)): 1,
    ("mpsflow_in_flight", (("source", "cmq"),)): 0,
    ("mpsflow_dead_letters_total", (("kind", "exhausted"),)): 1,
    ("mpsflow_dead_letters_total", (("kind", "poison"),)): 2,
    ("mpsflow_signature_rejections_total", (("reason", "expired"),)): 1,
    ("mpsflow_duplicates_skipped_total", (("key", "WorkflowTask"),)): 1,
    ("mpsflow_unmatched_total", (("event_type", "ScheduleTask"),)): 1,
}


def test_prometheus_metrics_counts_every_hook() -> None:
    metrics = PrometheusMetrics()
    exercise(metrics)
    found = samples(metrics.render())
    for key, value in EXPECTED.items():
        assert found[key] == value, key
    assert found["mpsflow_delivery_duration_seconds_count", (("source", "http"),)] == 2
    assert found["mpsflow_delivery_duration_seconds_sum", (("source", "http"),)] == pytest.approx(
        0.01
    )
    bucket = ("le", "0.005"), ("source", "http")
    assert found["mpsflow_delivery_duration_seconds_bucket", bucket] == 1
    assert found["mpsflow_handler_duration_seconds_count", (("key", "Transcode"),)] == 2


def test_in_memory_metrics_render_to_the_same_names() -> None:
    metrics = InMemoryMetrics()
    exercise(metrics)
    text = render_in_memory(metrics)
    found = samples(text)
    for key, value in EXPECTED.items():
        assert found[key] == value, key
    assert found["mpsflow_delivery_duration_seconds_count", ()] == 3
    assert found["mpsflow_delivery_duration_seconds_sum", ()] == pytest.approx(0.51)
    assert found["mpsflow_handler_duration_seconds_count", ()] == 3


@pytest.mark.parametrize("backend", [InMemoryMetrics, PrometheusMetrics])
def test_the_last_full_pass_gauge_shows_once_reconciliation_reports_it(
    backend: type[InMemoryMetrics | PrometheusMetrics],
) -> None:
    metrics = backend()
    exercise(metrics)
    gauge = ("mpsflow_reconcile_last_full_scan_timestamp_seconds", ())

    def shown() -> float | None:
        text = render_metrics(metrics)
        assert text is not None
        return samples(text).get(gauge)

    assert shown() is None  # a process that does not reconcile
    metrics.reconcile_full_scan(0.0)  # reconciliation starts
    assert shown() == 0
    metrics.reconcile_full_scan(1_700_000_000.5)
    metrics.reconcile_full_scan(0.0)  # the source started again: the last pass stays
    assert shown() == 1_700_000_000.5


def test_label_values_are_escaped() -> None:
    metrics = InMemoryMetrics()
    metrics.unmatched('odd "type"\\with\nnewline')
    found = samples(render_in_memory(metrics))
    assert found["mpsflow_unmatched_total", (("event_type", 'odd "type"\\with\nnewline'),)] == 1


def test_format_family_of_a_gauge_and_an_unlabelled_counter() -> None:
    gauge = format_family("x_queue", "gauge", "Queue depth.", {(("q", "a"),): 3.5})
    assert gauge == '# HELP x_queue Queue depth.\n# TYPE x_queue gauge\nx_queue{q="a"} 3.5\n'
    counter = format_family("x_done", "counter", "Done.", {(): 7})
    assert counter.splitlines()[-1] == "x_done_total 7"


def test_render_metrics_picks_the_right_form() -> None:
    in_memory = InMemoryMetrics()
    prom = PrometheusMetrics()
    assert render_metrics(in_memory) == render_in_memory(in_memory)
    assert render_metrics(prom) == prom.render()
    assert render_metrics(object()) is None
    assert render_metrics(None) is None


def test_registries_are_separate_unless_shared() -> None:
    first, second = PrometheusMetrics(), PrometheusMetrics()
    first.dead_letter("poison")
    assert ("mpsflow_dead_letters_total", (("kind", "poison"),)) not in samples(second.render())
    registry = CollectorRegistry()
    shared = PrometheusMetrics(registry, namespace="app")
    shared.unmatched("X")
    assert registry.get_sample_value("app_unmatched_total", {"event_type": "X"}) == 1
    # prometheus_client refuses the same names twice (its ValueError, its wording)
    with pytest.raises(ValueError):  # noqa: PT011
        PrometheusMetrics(registry, namespace="app")
    shared.unmatched("X")  # the first set of metrics is untouched and still counts
    assert registry.get_sample_value("app_unmatched_total", {"event_type": "X"}) == 2


def test_without_prometheus_client_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigurationError, match=r"mpsflow\[metrics\]"):
        PrometheusMetrics()
    assert b"mpsflow_deliveries_total" in render_in_memory(InMemoryMetrics())


# -- multiprocess mode: prometheus-client reads PROMETHEUS_MULTIPROC_DIR once, on import, so
# each case runs in a fresh interpreter.

TWO_PROCESSES = """
import os, sys
from prometheus_client import multiprocess
from mpsflow.observability.prometheus import PrometheusMetrics

metrics = PrometheusMetrics()
child = os.fork()
if child == 0:  # a worker that handled two, holds one in flight and ends (killed, say)
    for _ in range(3):
        metrics.delivery_started("http")
    metrics.delivery("http", "ack", 0.01)
    metrics.delivery("http", "ack", 0.01)
    metrics.reconcile_full_scan(200.0)
    os._exit(0)
os.waitpid(child, 0)
multiprocess.mark_process_dead(child)  # as the supervisor does when it reaps one
for _ in range(2):
    metrics.delivery_started("http")
metrics.delivery("http", "ack", 0.01)
metrics.reconcile_full_scan(100.0)
sys.stdout.buffer.write(metrics.render())
"""


def run_python(
    script: str, env: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_in_multiprocess_mode_render_adds_up_every_process(tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    done = run_python(TWO_PROCESSES, {"PROMETHEUS_MULTIPROC_DIR": str(directory)}, tmp_path)
    assert done.returncode == 0, done.stderr
    found = samples(done.stdout.encode())
    assert found["mpsflow_deliveries_total", (("outcome", "ack"), ("source", "http"))] == 3
    assert found["mpsflow_delivery_duration_seconds_count", (("source", "http"),)] == 3
    # the ended process's delivery in flight went with it; this one's is live
    assert found["mpsflow_in_flight", (("source", "http"),)] == 1
    # the latest pass of any process, an ended one's too
    assert found["mpsflow_reconcile_last_full_scan_timestamp_seconds", ()] == 200


def test_a_multiprocess_directory_that_is_missing_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    script = """
from mpsflow.errors import ConfigurationError
from mpsflow.observability.prometheus import PrometheusMetrics
try:
    PrometheusMetrics()
except ConfigurationError as exc:
    print(exc)
"""
    missing = tmp_path / "missing"
    done = run_python(script, {"PROMETHEUS_MULTIPROC_DIR": str(missing)}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert str(missing) in done.stdout
    assert "PROMETHEUS_MULTIPROC_DIR" in done.stdout


def test_a_multiprocess_directory_set_after_the_import_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    """prometheus-client read the variable on import: the values would be this process's
    alone, and a combined render would leave them out."""
    script = f"""
import os
import prometheus_client
os.environ["PROMETHEUS_MULTIPROC_DIR"] = {str(tmp_path)!r}
from mpsflow.errors import ConfigurationError
from mpsflow.observability.prometheus import PrometheusMetrics
try:
    PrometheusMetrics()
except ConfigurationError as exc:
    print(exc)
"""
    done = run_python(script, {}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "PROMETHEUS_MULTIPROC_DIR" in done.stdout
    assert list(tmp_path.iterdir()) == []  # nothing was written there


def test_without_the_variable_multiprocess_mode_is_off() -> None:
    assert PrometheusMetrics().multiprocess_dir is None
