"""Prometheus export of what the engine counts.

``PrometheusMetrics`` implements :class:`mpsflow.observability.metrics.Metrics` on
``prometheus-client``
(``pip install 'mpsflow[metrics]'``; imported only when the class is used, so the base install
works without it). ``render_metrics`` turns either it or the default ``InMemoryMetrics`` into
the Prometheus text format, so ``GET /metrics`` works with or without the extra. Both use the
same metric names, so dashboards do not care which one an app runs with.

Several processes (``mpsflow run --workers N``, or your own) share one view through
prometheus-client's multiprocess mode: with ``PROMETHEUS_MULTIPROC_DIR`` naming an empty
directory before the processes start, each keeps its values in files there and ``render``
adds up every process's (``mpsflow run --workers`` points it at a fresh directory of its own
when it is not set).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from mpsflow.errors import ConfigurationError
from mpsflow.observability.metrics import InMemoryMetrics

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_BUCKETS",
    "MULTIPROCESS_VARIABLE",
    "PrometheusMetrics",
    "Samples",
    "format_family",
    "multiprocess_directory",
    "render_in_memory",
    "render_metrics",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Content type of the Prometheus text exposition format."""

DEFAULT_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Latency buckets in seconds: handling takes from under a millisecond to tens of seconds."""


_HELP = {
    "deliveries": "Deliveries, by source and outcome (ack, retry, dead_lettered, rejected).",
    "delivery_duration_seconds": "Time from receiving a delivery to its outcome.",
    "handler_runs": "Handler runs, by routing key and outcome.",
    "handler_duration_seconds": "Time one handler run took, middleware included.",
    "in_flight": "Deliveries being processed now.",
    "dead_letters": "Dead-letter records written, by kind.",
    "signature_rejections": "Notifications refused by signature verification, by reason.",
    "duplicates_skipped": "Handler runs skipped because they had already completed.",
    "unmatched": "Notifications that reached no handler, by event type.",
    "reconcile_scans": "Reconcile passes, by outcome (full, partial, skipped).",
    "reconcile_tasks": "Finished tasks found with no arrival recorded, by outcome (processed,"
    " failed, listed).",
    "reconcile_api_errors": "MPS API calls of the reconcile source that failed, by action.",
    "reconcile_last_full_scan_timestamp_seconds": "When the last full reconcile pass ended"
    " (Unix time; 0 before the first): its age is time() minus this.",
}


class _Family(NamedTuple):
    name: str
    kind: str
    """``counter``, ``gauge`` or ``histogram`` (kept as totals in memory: a summary there)."""
    labels: tuple[str, ...]
    on_report: bool = False
    """Exported only once its hook reports a value: the last full reconcile pass, which a
    process that does not reconcile has none of (an unlabelled gauge would show 0, and an
    alert on its age would fire for every such process)."""
    across_processes: str = ""
    """A gauge's ``multiprocess_mode``: how the processes' values make one (counters and
    histograms are added up)."""


_FAMILIES = (
    _Family("deliveries", "counter", ("source", "outcome")),
    _Family("delivery_duration_seconds", "histogram", ("source",)),
    _Family("handler_runs", "counter", ("key", "outcome")),
    _Family("handler_duration_seconds", "histogram", ("key",)),
    _Family("in_flight", "gauge", ("source",), across_processes="livesum"),
    _Family("dead_letters", "counter", ("kind",)),
    _Family("signature_rejections", "counter", ("reason",)),
    _Family("duplicates_skipped", "counter", ("key",)),
    _Family("unmatched", "counter", ("event_type",)),
    _Family("reconcile_scans", "counter", ("outcome",)),
    _Family("reconcile_tasks", "counter", ("outcome",)),
    _Family("reconcile_api_errors", "counter", ("action",)),
    _Family(
        "reconcile_last_full_scan_timestamp_seconds",
        "gauge",
        (),
        on_report=True,
        across_processes="max",
    ),
)
"""Every metric family, in export order: both exports take names and labels from here."""


class PrometheusMetrics:
    """``Metrics`` backed by prometheus-client counters, gauges and histograms.

    ``registry`` defaults to a fresh ``CollectorRegistry`` (not the process-global one), so
    several apps, or tests, never collide; pass ``prometheus_client.REGISTRY`` to join the
    global one. Label children are cached, so each hook costs a dict lookup and an increment.

    In multiprocess mode (``multiprocess_dir``, from ``PROMETHEUS_MULTIPROC_DIR``) deliveries
    in flight are those of live processes (a process's are cleared by
    ``prometheus_client.multiprocess.mark_process_dead``, which ``mpsflow run --workers``
    calls as each worker ends), the last full reconcile pass is the latest of any process,
    and :meth:`render` shows every process's values, those of ended ones included.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "mpsflow",
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise ConfigurationError(
                "PrometheusMetrics needs the metrics extra (prometheus-client): "
                "pip install 'mpsflow[metrics]'"
            ) from None
        self.multiprocess_dir: str | None = multiprocess_directory()
        """The directory of prometheus-client's multiprocess mode, or ``None`` without it."""
        self.registry: CollectorRegistry = (
            registry if registry is not None else prom.CollectorRegistry(auto_describe=True)
        )
        self._generate = prom.generate_latest
        common: dict[str, Any] = {"namespace": namespace, "registry": self.registry}
        make: dict[str, Any] = {
            "counter": prom.Counter,
            "gauge": prom.Gauge,
            "histogram": functools.partial(prom.Histogram, buckets=tuple(buckets)),
        }
        self._make: dict[str, Callable[[], Any]] = {
            f.name: functools.partial(
                make[f.kind],
                f.name,
                _HELP[f.name],
                f.labels,
                **common,
                **({"multiprocess_mode": f.across_processes} if f.across_processes else {}),
            )
            for f in _FAMILIES
        }
        self._families: dict[str, Any] = {
            f.name: self._make[f.name]() for f in _FAMILIES if not f.on_report
        }
        self._children: dict[tuple[str, ...], Any] = {}
        self._last_full_scan = 0.0

    def _child(self, family: str, *labels: str) -> Any:
        key = (family, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._families[family].labels(*labels)
        return child

    def delivery_started(self, source: str) -> None:
        self._child("in_flight", source).inc()

    def delivery(self, source: str, outcome: str, seconds: float) -> None:
        self._child("in_flight", source).dec()
        self._child("deliveries", source, outcome).inc()
        self._child("delivery_duration_seconds", source).observe(seconds)

    def handler_run(self, key: str, outcome: str, seconds: float) -> None:
        self._child("handler_runs", key, outcome).inc()
        self._child("handler_duration_seconds", key).observe(seconds)

    def dead_letter(self, kind: str) -> None:
        self._child("dead_letters", kind).inc()

    def signature_rejected(self, reason: str) -> None:
        self._child("signature_rejections", reason).inc()

    def duplicate_skipped(self, key: str) -> None:
        self._child("duplicates_skipped", key).inc()

    def unmatched(self, event_type: str) -> None:
        self._child("unmatched", event_type).inc()

    def reconcile_scan(self, outcome: str) -> None:
        self._child("reconcile_scans", outcome).inc()

    def reconcile_task(self, outcome: str) -> None:
        self._child("reconcile_tasks", outcome).inc()

    def reconcile_api_error(self, action: str) -> None:
        self._child("reconcile_api_errors", action).inc()

    def reconcile_full_scan(self, timestamp: float) -> None:
        name = "reconcile_last_full_scan_timestamp_seconds"
        gauge = self._families.get(name)
        if gauge is None:  # reconciliation starts in this process: the gauge shows from now
            gauge = self._families[name] = self._make[name]()
        self._last_full_scan = max(self._last_full_scan, timestamp)
        gauge.set(self._last_full_scan)

    def render(self) -> bytes:
        """The registry in the Prometheus text format; in multiprocess mode, every process's
        values in the directory instead, added up."""
        registry = self.registry
        if self.multiprocess_dir is not None:
            from prometheus_client import CollectorRegistry, multiprocess

            registry = CollectorRegistry()
            collect_files: Any = multiprocess.MultiProcessCollector  # untyped
            collect_files(registry, path=self.multiprocess_dir)
        data: bytes = self._generate(registry)
        return data


MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""The environment variable that puts prometheus-client in multiprocess mode, read once, when
it is imported."""


def multiprocess_directory() -> str | None:
    """The directory of prometheus-client's multiprocess mode, ``None`` when it is off.

    :class:`~mpsflow.errors.ConfigurationError` when ``PROMETHEUS_MULTIPROC_DIR`` names no
    directory, or was set after prometheus-client was imported (its values are this process's
    alone then, and a combined view would show nothing of them).
    """
    from prometheus_client import values

    path = os.environ.get(MULTIPROCESS_VARIABLE) or os.environ.get(MULTIPROCESS_VARIABLE.lower())
    multiprocess = values.ValueClass is not values.MutexValue
    if not path:
        return None
    if not multiprocess:
        raise ConfigurationError(
            f"{MULTIPROCESS_VARIABLE} was set after prometheus_client was imported: "
            "set it in the environment the processes start with"
        )
    if not os.path.isdir(path):
        raise ConfigurationError(
            f"{MULTIPROCESS_VARIABLE}={path!r} is not a directory: "
            "create it, empty, before the processes start"
        )
    return path


# -- text format without prometheus-client ---------------------------------------------------

Samples = Mapping[tuple[tuple[str, str], ...], float]
"""One family's samples: label pairs → value (``()`` for an unlabelled sample)."""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def format_family(name: str, kind: str, help_text: str, samples: Samples) -> str:
    """Prometheus text for one metric family (``kind``: counter, gauge, summary, untyped).

    Counters get the conventional ``_total`` suffix on their samples; label values are
    escaped as the format requires.
    """
    sample_name = f"{name}_total" if kind == "counter" else name
    lines = [f"# HELP {sample_name} {_escape_help(help_text)}", f"# TYPE {sample_name} {kind}"]
    for labels, value in samples.items():
        if labels:
            pairs = ",".join(f'{key}="{_escape(val)}"' for key, val in labels)
            lines.append(f"{sample_name}{{{pairs}}} {_number(value)}")
        else:
            lines.append(f"{sample_name} {_number(value)}")
    return "\n".join(lines) + "\n"


def _labelled(names: tuple[str, ...], counts: Mapping[Any, float]) -> Samples:
    samples: dict[tuple[tuple[str, str], ...], float] = {}
    for key, value in sorted(counts.items()):
        values = key if isinstance(key, tuple) else (key,)
        samples[tuple(zip(names, values, strict=True))] = value
    return samples


def render_in_memory(metrics: InMemoryMetrics, namespace: str = "mpsflow") -> bytes:
    """``InMemoryMetrics`` in the Prometheus text format (same names as ``PrometheusMetrics``).

    Latencies are only kept as totals there, so they are exported as summaries without
    quantiles (``_sum`` and ``_count``). The last full reconcile pass is exported only by a
    process that reconciles, as by ``PrometheusMetrics``.
    """
    last_full_scan = metrics.reconcile_last_full_scan
    counts: dict[str, Mapping[Any, float] | None] = {
        "deliveries": metrics.deliveries,
        "handler_runs": metrics.handler_runs,
        "in_flight": metrics.in_flight_now,
        "dead_letters": metrics.dead_letters,
        "signature_rejections": metrics.signature_rejections,
        "duplicates_skipped": metrics.duplicates,
        "unmatched": metrics.unmatched_events,
        "reconcile_scans": metrics.reconcile_scans,
        "reconcile_tasks": metrics.reconcile_tasks,
        "reconcile_api_errors": metrics.reconcile_api_errors,
        "reconcile_last_full_scan_timestamp_seconds": (
            None if last_full_scan is None else {(): last_full_scan}
        ),
    }
    totals = {
        "delivery_duration_seconds": (metrics.delivery_seconds, sum(metrics.deliveries.values())),
        "handler_duration_seconds": (metrics.handler_seconds, sum(metrics.handler_runs.values())),
    }
    parts = []
    for family in _FAMILIES:
        name = f"{namespace}_{family.name}"
        if family.kind == "histogram":
            parts.append(_summary(name, _HELP[family.name], *totals[family.name]))
        elif (values := counts[family.name]) is not None:  # None: nothing reported
            samples = _labelled(family.labels, values)
            parts.append(format_family(name, family.kind, _HELP[family.name], samples))
    return "".join(parts).encode()


def _summary(name: str, help_text: str, total: float, count: int) -> str:
    return (
        f"# HELP {name} {_escape_help(help_text)}\n# TYPE {name} summary\n"
        f"{name}_sum {_number(total)}\n{name}_count {count}\n"
    )


def render_metrics(metrics: object) -> bytes | None:
    """Prometheus text for an app's metrics, or ``None`` when they have no such form.

    Works for ``PrometheusMetrics`` (and anything with a ``render() -> bytes``) and for
    ``InMemoryMetrics``.
    """
    if isinstance(metrics, InMemoryMetrics):
        return render_in_memory(metrics)
    render = getattr(metrics, "render", None)
    if callable(render):
        data = render()
        if isinstance(data, bytes):
            return data
    return None
