"""The Sink protocol: where emitted records go (files, webhooks, object storage, queues)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = ["Sink"]


@runtime_checkable
class Sink(Protocol):
    """Something that durably takes batches of records.

    ``send`` delivers the whole batch or raises :class:`mpsflow.errors.SinkError`
    (``transient=True`` when a later try may succeed). Batching, buffering, retries and
    backpressure live in :class:`mpsflow.sinks.channel.SinkChannel`, not in each sink.
    """

    async def start(self) -> None:
        """Open connections / files; called once in the app lifespan."""
        ...

    async def send(self, batch: Sequence[object]) -> None:
        """Deliver every record of ``batch`` or raise ``SinkError``."""
        ...

    async def close(self) -> None:
        """Flush and release resources; called once at shutdown."""
        ...
