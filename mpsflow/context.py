"""The ``Context`` a handler receives, and the context variable that holds the current one."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Mapping, MutableMapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Union

from mpsflow.errors import ConfigurationError
from mpsflow.routing import planned_subtask

if TYPE_CHECKING:
    from mpsflow.delivery import Delivery
    from mpsflow.events import LiveStreamNotification, Notification, Subtask
    from mpsflow.routing import PlannedSubtask
    from mpsflow.sinks.channel import Receipt, SinkChannel

__all__ = [
    "AnyNotification",
    "Context",
    "current_context",
    "reset_current_context",
    "set_current_context",
]

_current: contextvars.ContextVar[Context] = contextvars.ContextVar("mpsflow_context")

set_current_context = _current.set
"""Make a ``Context`` the current one (the pipeline does, around each handler call); returns
the token ``reset_current_context`` takes. The var's own method: no extra call per run."""
reset_current_context = _current.reset
"""Restore the context that was current before the matching ``set_current_context``."""

_base_log = logging.getLogger("mpsflow.handler")

_NO_SINKS: Mapping[str, SinkChannel] = MappingProxyType({})

AnyNotification = Union["Notification", "LiveStreamNotification"]


def current_context() -> Context:
    """The ``Context`` of the handler running in this task (raises LookupError outside one)."""
    return _current.get()


class Context:
    """Everything a handler may want besides its typed payload.

    One ``Context`` is made per handler run. ``emit`` hands records to named sinks; the
    handler only counts as succeeded once every record it emitted was delivered, so a
    sink failure makes the delivery retry (and finally dead-letter) instead of vanishing.
    """

    __slots__ = (
        "_effect_key",
        "_emits",
        "_log",
        "_receipts",
        "_sinks",
        "_subtask",
        "delivery",
        "handler",
        "key",
        "notification",
    )

    def __init__(
        self,
        notification: AnyNotification,
        delivery: Delivery,
        handler: str = "",
        key: str = "",
        sinks: Mapping[str, SinkChannel] | None = None,
        *,
        subtask: PlannedSubtask = None,
    ) -> None:
        self.notification = notification
        self.delivery = delivery
        self.handler = handler
        self.key = key
        self._subtask: PlannedSubtask = subtask
        self._effect_key: str | None = None
        self._sinks: Mapping[str, SinkChannel] = _NO_SINKS if sinks is None else sinks
        self._receipts: list[Receipt] | None = None
        """Made on the first ``emit``: most handlers emit nothing."""
        self._emits: dict[str, int] | None = None
        """Emits so far per sink name (numbers each record's idempotency key)."""
        self._log: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def event_type(self) -> str:
        """``EventType`` of a task notification, ``NotificationType`` of a live one."""
        n = self.notification
        return (getattr(n, "event_type", None) or getattr(n, "notification_type", None)) or ""

    @property
    def task_id(self) -> str:
        """The MPS task id ("" when the notification carries none)."""
        return self.notification.task_id or ""

    @property
    def session_id(self) -> str:
        """``SessionId`` given when the task was started (MPS's own dedup id), or ""."""
        return self.notification.session_id or ""

    @property
    def session_context(self) -> str:
        """``SessionContext`` given when the task was started (pass-through data), or ""."""
        return self.notification.session_context or ""

    @property
    def subtask(self) -> Subtask | None:
        """The subtask result a subtask handler runs for (None for event handlers)."""
        planned = self._subtask
        if not isinstance(planned, tuple):
            return planned
        subtask = self._subtask = planned_subtask(planned)
        return subtask

    @property
    def effect_key(self) -> str:
        """The stable key of this handler run's effect: pass it to downstream APIs.

        32 hex digits, the same whenever this effect is seen again (a redelivery, a re-signed
        resend, a later Change-mode notification with the same subtask state, another worker,
        a restart) and different for any other effect. Use it as an idempotency key
        (``Idempotency-Key`` header, an object key, MPS's ``SessionId``...) so that a re-run
        after a crash between the effect and its dedup record repeats nothing. See
        :mod:`mpsflow.dedup.effects`.
        """
        key = self._effect_key
        if key is None:
            from mpsflow.dedup.effects import default_scope, effect_key, record_key

            key = effect_key(
                record_key(default_scope(self.notification, self.subtask), self.handler)
            )
            self._effect_key = key
        return key

    @effect_key.setter
    def effect_key(self, value: str) -> None:
        self._effect_key = value

    @property
    def attempt(self) -> int:
        """1 for the first delivery of this notification, 2 for the first retry, …"""
        return self.delivery.attempt

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry the task id, event type and handler name: as record
        attributes (``task_id``, ``event_type``, ``handler``, for structured formatters) and
        at the start of the message (``[WorkflowTask 1250…t0 myapp.alert] …``), so any log
        format shows which notification a line is about."""
        if self._log is None:
            self._log = _HandlerLog(
                _base_log,
                {"task_id": self.task_id, "event_type": self.event_type, "handler": self.handler},
            )
        return self._log

    async def emit(self, sink: str, record: Any, *, idempotency_key: str | None = None) -> None:
        """Queue ``record`` for the sink named ``sink`` (batched; awaited before success).

        The record carries an idempotency key, ``f"{ctx.effect_key}-{n}"`` where ``n`` counts
        this run's earlier emits to the same sink (0 for the first): a re-run of the same
        effect that emits the same records in the same order per sink hands each sink the
        same keys, so shipped sinks do not repeat what the first run delivered (see
        :class:`mpsflow.sinks.base.KeyedSink`). Pass ``idempotency_key`` to choose a key
        yourself (e.g. when the number or order of emits varies); it must identify this
        record's effect just as uniquely.
        """
        try:
            channel = self._sinks[sink]
        except KeyError:
            raise ConfigurationError(
                f"no sink named {sink!r}; register it with app.sink({sink!r}, ...)"
            ) from None
        if self._emits is None:
            self._emits = {}
        count = self._emits.get(sink, 0)
        self._emits[sink] = count + 1
        if idempotency_key is None:
            idempotency_key = f"{self.effect_key}-{count}"
        receipt = await channel.submit(record, idempotency_key=idempotency_key)
        if self._receipts is None:
            self._receipts = []
        self._receipts.append(receipt)

    @property
    def emitting(self) -> bool:
        """True while records emitted by this run are not yet known to be delivered."""
        return bool(self._receipts)

    async def wait_emitted(self) -> None:
        """Wait until every record emitted so far is delivered; raises SinkError if one was not.

        The pipeline waits for this before a handler counts as succeeded.
        """
        receipts, self._receipts = self._receipts, None
        for receipt in receipts or ():
            await receipt.wait()

    def __repr__(self) -> str:
        return (
            f"Context(event_type={self.event_type!r}, task_id={self.task_id!r}, "
            f"handler={self.handler!r}, attempt={self.attempt})"
        )


class _HandlerLog(logging.LoggerAdapter[logging.Logger]):
    """``ctx.log``: the handler's fields as record attributes and as a message prefix."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        fields = self.extra or {}
        kwargs["extra"] = {**fields, **kwargs.get("extra", {})}
        about = " ".join(
            str(fields[k]) for k in ("event_type", "task_id", "handler") if fields.get(k)
        )
        return (f"[{about}] {msg}" if about else msg), kwargs
