"""What the engine counts and how it is read: metrics, the Prometheus export, the per-worker
journal that lets several processes answer ``/metrics`` together, and readiness (health)."""

from mpsflow.observability.metrics import InMemoryMetrics, Metrics

__all__ = ["InMemoryMetrics", "Metrics"]
