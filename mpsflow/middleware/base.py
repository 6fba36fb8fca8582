"""The one middleware protocol, used at app, router and handler scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mpsflow.delivery import Delivery, Outcome

if TYPE_CHECKING:
    from mpsflow.context import AnyNotification, Context

__all__ = [
    "Call",
    "CallNext",
    "HandlerInfo",
    "Middleware",
    "chain",
    "runs_at_admission",
]


@dataclass(frozen=True, slots=True)
class HandlerInfo:
    """What middleware may know about the handler a call is about to run."""

    name: str
    key: str


@dataclass(slots=True)
class Call:
    """One unit of work passing through middleware.

    At ``scope == "delivery"`` (app middleware) the call wraps the whole delivery: only
    ``delivery`` is set, the raw payload has not been decoded yet. Delivery middleware that
    decodes the body itself may put the result in ``notification``: the pipeline then uses it
    instead of decoding again (and sets it after decoding otherwise). At ``scope == "handler"``
    (router and handler middleware) it wraps one handler run: ``notification``, ``handler``,
    ``payload`` (the typed result the handler receives) and ``context`` are set too.
    """

    delivery: Delivery
    scope: Literal["delivery", "handler"] = "delivery"
    notification: AnyNotification | None = None
    handler: HandlerInfo | None = None
    payload: Any = None
    context: Context | None = None


CallNext = Callable[[Call], Awaitable[Outcome]]


class Middleware(Protocol):
    """``async def mw(call, call_next) -> Outcome``.

    Call ``await call_next(call)`` to go on (or don't, to short-circuit with your own
    ``Outcome``). At handler scope a failing handler's exception propagates through
    ``call_next``: catch it to observe, re-raise to keep the failure.

    Delivery middleware with a true ``at_admission`` attribute (the signature check) also
    runs when a source admits a body into an inbox (``Pipeline.admit``), and then not again
    when the admitted delivery is processed (see :func:`runs_at_admission`).
    """

    def __call__(self, call: Call, call_next: CallNext, /) -> Awaitable[Outcome]: ...


def runs_at_admission(middleware: Middleware) -> bool:
    """Whether delivery ``middleware`` checks bodies at the door of an inbox (``at_admission``)."""
    return bool(getattr(middleware, "at_admission", False))


def chain(middleware: Sequence[Middleware], endpoint: CallNext) -> CallNext:
    """Compose ``middleware`` (outermost first) around ``endpoint`` once, ahead of time."""
    handler = endpoint
    for mw in reversed(middleware):
        handler = _bind(mw, handler)
    return handler


def _bind(mw: Middleware, call_next: CallNext) -> CallNext:
    """``mw`` with its ``call_next`` filled in.

    A plain function handing back ``mw``'s awaitable, which the caller awaits: no coroutine of
    its own wrapped around each middleware call (a frame per middleware per handler run).
    """

    def bound(call: Call) -> Awaitable[Outcome]:
        return mw(call, call_next)

    return bound
