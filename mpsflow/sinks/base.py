"""The Sink protocol: where emitted records go (files, webhooks, object storage, queues).

Records emitted by a handler carry an idempotency key (``ctx.effect_key`` plus the record's
position among the run's emits to that sink), so that a re-run of the same effect after a
crash hands the sink the same keys again. A sink that can use them implements
:class:`KeyedSink` (``send_keyed``); the channel then calls that instead of ``send``.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

__all__ = [
    "CheckedSink",
    "KeyedSink",
    "KeyedSinkBase",
    "RecentKeys",
    "Sink",
    "check_keys",
    "keyed_sender",
]


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


@runtime_checkable
class CheckedSink(Sink, Protocol):
    """A sink that can say whether it could take a record now (``JsonlSink``: the file and
    its directory are writable). The app's readiness (``/readyz``) asks its dead-letter sink
    when it is one: a process that could not record a dead letter should not take traffic.
    """

    async def ready(self) -> bool:
        """True when a ``send`` now could succeed; cheap enough for a readiness probe, and
        never raises (a problem is logged and answered ``False``)."""
        ...


class KeyedSinkBase(abc.ABC):
    """Base of a sink that implements ``send_keyed``: its ``send`` is ``send_keyed`` with no
    keys, as the ``KeyedSink`` contract requires. A subclass without ``send_keyed`` cannot be
    instantiated."""

    @abc.abstractmethod
    async def send_keyed(self, batch: Sequence[object], keys: Sequence[str | None]) -> None:
        """Deliver every record of ``batch`` (with its key) or raise ``SinkError``."""

    async def send(self, batch: Sequence[object]) -> None:
        """Deliver every record of ``batch``, none of them keyed."""
        await self.send_keyed(batch, [None] * len(batch))


def check_keys(batch: Sequence[object], keys: Sequence[str | None]) -> None:
    """Refuse (``ValueError``) a ``send_keyed`` call whose keys do not match its records."""
    if len(keys) != len(batch):
        raise ValueError("send_keyed needs one key per record")


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


class RecentKeys:
    """The last ``limit`` idempotency keys a sink delivered, oldest dropped first.

    What keyed sinks consult to skip a record they already delivered (0 keeps none).
    """

    __slots__ = ("_keys", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("the number of keys to remember must not be negative")
        self.limit = limit
        self._keys: dict[str, None] = {}  # insertion-ordered

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: str) -> None:
        """Remember ``key`` (a key already held keeps its place)."""
        if self.limit == 0 or key in self._keys:
            return
        self._keys[key] = None
        while len(self._keys) > self.limit:
            del self._keys[next(iter(self._keys))]
