"""Counters of several worker processes added up, through one file per worker in a directory.

``mpsflow run --workers N`` forks N processes that share one port, so a scrape of ``/metrics``
reaches one of them at random. Each worker publishes its counters to ``<dir>/<pid>.json``
(written whole, then renamed into place), and the worker that answers a scrape adds up its own
live counters, the other workers' last published ones, and those of workers that have exited:
their counts stay, so a combined counter never goes down when a worker is replaced, and none
of their deliveries counts as in flight.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mpsflow.metrics import InMemoryMetrics

__all__ = ["WorkerMetrics"]

_log = logging.getLogger("mpsflow.metrics")


class WorkerMetrics:
    """One worker's view of the shared metrics directory (``pid`` defaults to this process)."""

    def __init__(self, directory: str | os.PathLike[str], *, pid: int | None = None) -> None:
        self.directory = Path(directory)
        self.pid = os.getpid() if pid is None else pid
        self.directory.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"WorkerMetrics({str(self.directory)!r}, pid={self.pid})"

    @property
    def path(self) -> Path:
        """This worker's file."""
        return self.directory / f"{self.pid}.json"

    def publish(self, metrics: InMemoryMetrics, responses: Mapping[int, int]) -> None:
        """Write this worker's counters (and HTTP status counts) for the others to add up."""
        document = {
            "metrics": metrics.state(),
            "responses": {str(code): n for code, n in responses.items()},
        }
        scratch = self.directory / f".{self.pid}.json.tmp"
        scratch.write_bytes(json.dumps(document).encode())
        os.replace(scratch, self.path)

    def combined(
        self, metrics: InMemoryMetrics, responses: Mapping[int, int]
    ) -> tuple[InMemoryMetrics, Counter[int]]:
        """This worker's live counters plus every other worker's file, as new objects."""
        total = InMemoryMetrics()
        total.add_state(metrics.state())
        codes: Counter[int] = Counter(responses)
        for path in sorted(self.directory.glob("*.json")):
            try:
                pid = int(path.stem)
            except ValueError:
                continue
            if pid == self.pid:
                continue
            document = _read(path)
            if document is None:
                continue
            total.add_state(document.get("metrics", {}), finished=not _alive(pid))
            codes.update({int(code): int(n) for code, n in document.get("responses", {}).items()})
        return total, codes


def _read(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        _log.warning("unreadable worker metrics file %s; left out", path)
        return None
    return document if isinstance(document, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
