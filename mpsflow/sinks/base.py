"""The Sink protocol: where emitted records go (files, webhooks, object storage, queues).

Records emitted by a handler carry an idempotency key (``ctx.effect_key`` plus the record's
position among the run's emits to that sink), so that a re-run of the same effect after a
crash hands the sink the same keys again. A sink that can use them implements
:class:`KeyedSink` (``send_keyed``); the channel then calls that instead of ``send``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = ["KeyedSink", "Sink", "keyed_sender"]


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


@runtime_checkable
class KeyedSink(Sink, Protocol):
    """A sink that is also told each record's idempotency key.

    ``keys[i]`` is the key of ``batch[i]`` (same length), or ``None`` for a record submitted
    without one (outside a handler, dead letters). A key is the same whenever the same
    effect emits the same record again (a re-run after a crash), so a sink uses it to make
    that re-run repeat nothing: a header, an object name, a skipped duplicate.
    ``send(batch)`` must behave like ``send_keyed(batch, [None] * len(batch))``.
    """

    async def send_keyed(self, batch: Sequence[object], keys: Sequence[str | None]) -> None:
        """Deliver every record of ``batch`` (with its key) or raise ``SinkError``."""
        ...


def keyed_sender(sink: Sink) -> KeyedSink | None:
    """``sink`` when the channel should call its ``send_keyed``, else ``None``.

    A subclass that overrides ``send`` but not ``send_keyed`` (to wrap or count sends) keeps
    being called through ``send``: ``send_keyed`` is used only when it is defined at least as
    far down the class hierarchy as ``send``.
    """
    if not isinstance(sink, KeyedSink):
        return None
    mro = type(sink).__mro__
    owner_keyed = next((cls for cls in mro if "send_keyed" in vars(cls)), None)
    owner_send = next((cls for cls in mro if "send" in vars(cls)), None)
    if owner_keyed is None:  # set on the instance: trust it
        return sink
    if owner_send is not None and not issubclass(owner_keyed, owner_send):
        return None
    return sink
