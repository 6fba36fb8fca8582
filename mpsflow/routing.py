"""Routing keys, handler specs and filters, and the dispatch plan for one notification.

A key names an ``EventType`` (``WorkflowTask``…), a subtask type (``Transcode``,
``AiContentReview.Porn``…) or a live-stream ``NotificationType`` (``ProcessEof``…). Every key is
checked when a handler registers, so a typo fails at import time instead of leaving a handler
that never runs.

Status filters are checked too: ``status=`` must name statuses the key's results can have
(``mpsflow.events.statuses``), so ``status="SUCESS"`` fails at registration with a suggestion.

Order: for one notification, handlers start in this order: event-type handlers first, then
subtask handlers in the document order of the subtasks; handlers of the same key in
registration order. They then run concurrently.
"""

from __future__ import annotations

import difflib
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Union

import anyio

from mpsflow.errors import ConfigurationError
from mpsflow.events import (
    EVENT_KEYS,
    LIVE_KEYS,
    SUBTASK_KEYS,
    LiveStreamNotification,
    MediaProcessTaskResult,
    collect_subtasks,
)
from mpsflow.events.statuses import STATUSES
from mpsflow.events.subtasks import (
    MEDIA_RESULT_SET_PATH,
    MediaRoute,
    media_routes,
    media_subtask,
)
from mpsflow.middleware.base import HandlerInfo, Middleware
from mpsflow.retry import RetryPolicy

if TYPE_CHECKING:
    from mpsflow.context import AnyNotification, Context
    from mpsflow.events import Notification, Subtask

__all__ = [
    "ALL_KEYS",
    "HandlerFunc",
    "HandlerSpec",
    "KeyKind",
    "MediaRef",
    "PlannedSubtask",
    "RouteTable",
    "Work",
    "check_status",
    "key_kind",
    "normalise_status",
    "plan",
    "planned_subtask",
]

HandlerFunc = Callable[[Any, "Context"], Awaitable[object]]
KeyKind = Literal["event", "subtask", "live"]

ALL_KEYS: frozenset[str] = frozenset(EVENT_KEYS) | frozenset(SUBTASK_KEYS) | frozenset(LIVE_KEYS)


def key_kind(key: str) -> KeyKind:
    """Which part of a notification ``key`` names; ConfigurationError for unknown keys."""
    if key in EVENT_KEYS:
        return "event"
    if key in LIVE_KEYS:
        return "live"
    if key in SUBTASK_KEYS:
        return "subtask"
    near = difflib.get_close_matches(key, sorted(ALL_KEYS), n=3)
    hint = f"; did you mean {', '.join(map(repr, near))}?" if near else ""
    raise ConfigurationError(f"unknown routing key {key!r}{hint}")


@dataclass(slots=True, eq=False)
class HandlerSpec:
    """A registered handler with its key, filters and per-handler policies."""

    func: HandlerFunc
    key: str
    kind: KeyKind
    name: str
    status: frozenset[str] | None = None
    failed: bool | None = None
    ok: bool | None = None
    when: Callable[[Any], bool] | None = None
    retry: RetryPolicy | None = None
    timeout: float | None = None
    max_concurrency: int | None = None
    middleware: tuple[Middleware, ...] = ()
    emits: frozenset[str] = frozenset()
    info: HandlerInfo = field(init=False)
    _limiter: anyio.CapacityLimiter | None = field(default=None, init=False)
    has_filters: bool = field(default=False, init=False)
    """True when a filter (``status``, ``failed``, ``ok``, ``when``) must be checked."""

    def __post_init__(self) -> None:
        self.info = HandlerInfo(self.name, self.key)
        self.has_filters = not (
            self.status is None and self.failed is None and self.ok is None and self.when is None
        )
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigurationError(f"handler {self.name}: timeout must be positive")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ConfigurationError(f"handler {self.name}: max_concurrency must be at least 1")

    @property
    def limiter(self) -> anyio.CapacityLimiter | None:
        """Per-handler concurrency limit, created inside the running event loop."""
        if self.max_concurrency is None:
            return None
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.max_concurrency)
        return self._limiter


def normalise_status(status: str | Collection[str] | None) -> frozenset[str] | None:
    """``status="SUCCESS"`` or ``status={"SUCCESS", "FAIL"}`` → a frozenset (or None)."""
    if status is None:
        return None
    if isinstance(status, str):
        return frozenset({status})
    if not isinstance(status, Collection) or not all(isinstance(s, str) for s in status):
        raise ConfigurationError(
            f"status= takes a status or a collection of statuses, not {status!r}"
        )
    return frozenset(status)


def check_status(key: str, statuses: frozenset[str] | None) -> None:
    """ConfigurationError unless ``key``'s results can have every status in ``statuses``.

    The statuses a key can have are ``mpsflow.events.statuses.STATUSES``; a key that table
    does not list accepts any. A near miss gets a suggestion (``SUCESS`` → ``SUCCESS``).
    """
    if statuses is None:
        return
    if not statuses:
        raise ConfigurationError(f"status= for {key} is empty, so the handler would never run")
    known = STATUSES.get(key)
    if known is None:
        return
    what = f"{key} {'events' if key in EVENT_KEYS else 'results'}"
    if not known:
        raise ConfigurationError(
            f"status= never matches {key}: {what} have no Status "
            "(filter with ok=, failed= or when= instead)"
        )
    for status in sorted(statuses):
        if status in known:
            continue
        near = [s for s in known if s == status.upper()] or difflib.get_close_matches(
            status.upper(), known, n=1
        )
        hint = f": did you mean {near[0]!r}?" if near else ""
        raise ConfigurationError(
            f"unknown status {status!r} for {key}{hint} ({what} have {', '.join(known)})"
        )


def _matches(spec: HandlerSpec, status: str | None, ok: bool, failed: bool, payload: Any) -> bool:
    if spec.status is not None and status not in spec.status:
        return False
    if spec.failed is not None and spec.failed is not failed:
        return False
    if spec.ok is not None and spec.ok is not ok:
        return False
    return spec.when is None or bool(spec.when(payload))


def _task_failed(notification: Notification) -> bool:
    event = notification.event
    code = getattr(event, "err_code", None)
    if code not in (None, 0):
        return True
    return any(sub.failed for sub in collect_subtasks(notification))


def _event_verdict(notification: Notification) -> tuple[str | None, bool, bool]:
    status = notification.status
    failed = _task_failed(notification)
    return status, status == "FINISH" and not failed, failed


class RouteTable:
    """The registered handlers, indexed once for planning every delivery.

    ``by_key`` holds each key's handlers in registration order. When every subtask key some
    handler listens to is a ``MediaProcessResultSet`` key (``Transcode``, ``ImageSprites``…),
    ``media`` indexes them by item ``Type``, so planning a workflow notification reads only
    that list. ``plan`` gives the same work either way (a test holds the two paths equal on
    every sample).
    """

    __slots__ = ("by_key", "has_subtask_handlers", "media")

    def __init__(self, specs: Sequence[HandlerSpec], *, media_fast_path: bool = True) -> None:
        by_key: dict[str, list[HandlerSpec]] = {}
        for spec in specs:
            by_key.setdefault(spec.key, []).append(spec)
        self.by_key: dict[str, tuple[HandlerSpec, ...]] = {k: tuple(v) for k, v in by_key.items()}
        subtask_keys = {s.key for s in specs if s.kind == "subtask"}
        self.has_subtask_handlers = bool(subtask_keys)
        self.media: dict[str, tuple[MediaRoute, tuple[HandlerSpec, ...], bool]] | None = None
        routes = media_routes(subtask_keys)
        if media_fast_path and subtask_keys <= {key for key, _, _ in routes.values()}:
            self.media = {
                item_type: (route, self.by_key[route[0]], _any_filters(self.by_key[route[0]]))
                for item_type, route in routes.items()
            }


MediaRef = tuple[MediaRoute, MediaProcessTaskResult, int, Sequence[MediaProcessTaskResult]]
"""A media subtask not built yet: (route, item, index, items). Planning hands these to
unfiltered handlers so a delivery pays for a ``Subtask`` only when something asks for it
(dedup, ``ctx.subtask``); :func:`planned_subtask` builds it."""

PlannedSubtask = Union["Subtask", MediaRef, None]
"""The subtask of a planned run: built, still a :data:`MediaRef`, or None (event handlers)."""

Work = tuple[HandlerSpec, Any, PlannedSubtask]
"""One planned handler run: the handler, its typed payload, and the subtask it handles (None
for an event or live-stream handler, which handles the notification as a whole)."""


def planned_subtask(planned: PlannedSubtask) -> Subtask | None:
    """The ``Subtask`` of a planned run (built from a :data:`MediaRef` on first use)."""
    if not isinstance(planned, tuple):
        return planned
    route, item, index, items = planned
    return media_subtask(route, item, MEDIA_RESULT_SET_PATH, index, items)


def _any_filters(specs: Sequence[HandlerSpec]) -> bool:
    return any(spec.has_filters for spec in specs)


def plan(notification: AnyNotification, table: RouteTable) -> list[Work]:
    """Every (handler, payload, subtask) that ``notification`` reaches, in start order."""
    out: list[Work] = []
    by_key = table.by_key
    if isinstance(notification, LiveStreamNotification):
        for sub in notification.subtasks():
            for spec in by_key.get(sub.key, ()):
                if not spec.has_filters or _matches(
                    spec, sub.status, sub.ok, sub.failed, sub.result
                ):
                    out.append((spec, sub.result, None))
        return out
    event_specs = by_key.get(notification.event_type or "", ())
    if event_specs:
        event = notification.event
        verdict: tuple[str | None, bool, bool] | None = None
        for spec in event_specs:
            if spec.has_filters:
                if verdict is None:
                    verdict = _event_verdict(notification)
                if not _matches(spec, *verdict, event):
                    continue
            out.append((spec, event, None))
    if not table.has_subtask_handlers:
        return out
    media = table.media
    if (
        media is not None
        and notification.schedule_task_event is None
        and notification.batch_task_event is None
    ):
        workflow = notification.workflow_task_event
        if workflow is not None and workflow.media_process_result_set:
            _plan_media(workflow.media_process_result_set, media, out)
        return out
    for sub in collect_subtasks(notification, by_key):
        for spec in by_key[sub.key]:
            if not spec.has_filters or _matches(spec, sub.status, sub.ok, sub.failed, sub.result):
                out.append((spec, sub.result, sub))
    return out


def _plan_media(
    items: Sequence[MediaProcessTaskResult],
    media: dict[str, tuple[MediaRoute, tuple[HandlerSpec, ...], bool]],
    out: list[Work],
) -> None:
    """The media fast path of ``plan``: the same work ``collect_subtasks`` would give."""
    for index, item in enumerate(items):
        entry = media.get(item.type)  # type: ignore[arg-type]
        if entry is None:
            continue
        route, specs, filtered = entry
        if not filtered:  # the payload alone; the Subtask is built only if asked for
            attr = route[1]
            payload = item if attr is None else getattr(item, attr)
            if payload is not None:
                ref: MediaRef = (route, item, index, items)
                for spec in specs:
                    out.append((spec, payload, ref))
            continue
        sub = media_subtask(route, item, MEDIA_RESULT_SET_PATH, index, items)
        if sub is None:
            continue
        for spec in specs:
            if not spec.has_filters or _matches(spec, sub.status, sub.ok, sub.failed, sub.result):
                out.append((spec, sub.result, sub))
