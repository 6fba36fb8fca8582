"""The HTTP source's inbox side (``HttpSource(inbox=…)``, ``mpsflow run``'s default).

A callback whose body passes the app's admission checks (``runtime.admit``) is appended to the
inbox and answered 200 once the append is committed; a body the inbox never takes is recorded
as a dead letter and answered 413; a full inbox, or one whose storage fails, is answered 503
with ``Retry-After``, so the sender keeps the notification. The inbox's consumer runs beside
the server (:meth:`InboxIntake.run`; a CMQ queue's has received once before the server serves)
and takes appends in memory while it does; ``/readyz`` and ``/metrics`` learn the inbox's state
from :func:`inbox_state`, and ``/metrics`` when a queue's consumer last caught up from
:meth:`InboxIntake.caught_up_at` (a queue such as CMQ tells no count).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import anyio

from mpsflow._sqlite_connections import directory_problem
from mpsflow._throttle import LogThrottle, held_back, tail_line
from mpsflow.context import AnyNotification
from mpsflow.delivery import Cause, Delivery, Settlement
from mpsflow.errors import InboxRefusedBody, InboxUnavailable, StartupError
from mpsflow.inbox.base import Inbox
from mpsflow.inbox.source import InboxSource
from mpsflow.sources._http_answers import ACCEPTED, error_answer, respond
from mpsflow.sources._http_server import Answer
from mpsflow.sources.base import ConfirmsStart, Source, TracksCatchUp
from mpsflow.sources.runtime import SourceRuntime

__all__ = ["InboxIntake", "inbox_state"]

_log = logging.getLogger("mpsflow.sources.http")


class InboxIntake:
    """Where one HTTP source's admitted callbacks go: its inbox (one intake per source, kept
    across its runs)."""

    def __init__(self) -> None:
        self._lines: LogThrottle | None = None
        """Rate-limits the lines saying the inbox is full or failing."""
        self._append: Callable[[bytes, AnyNotification | None], Awaitable[bool]] | None = None
        """The inbox's consumer in this process, which takes appends in memory (see
        ``InboxSource.append``); None: append to the inbox itself."""
        self._consumer: Source | None = None
        """The inbox's consumer while it runs in this process."""

    async def run(
        self,
        inbox: Inbox,
        serve: Callable[[], Awaitable[None]],
        runtime: SourceRuntime,
        *,
        consumer: Callable[[], Source] | None,
    ) -> None:
        """Check ``inbox`` can be used, then ``serve`` with the inbox's consumer (built by
        ``consumer``; None: it runs elsewhere) running beside; say what waits in the inbox
        once done.

        A consumer that knows when it works (:class:`~mpsflow.sources.base.ConfirmsStart`: a
        CMQ queue, once a first receive worked) is waited for before serving, so a queue that
        does not exist ends the run with its one line and nothing said "serving" before it.
        """
        await _check_inbox(inbox)
        cannot_start: list[StartupError] = []
        try:
            async with anyio.create_task_group() as tg:
                serving = True
                if consumer is not None:
                    inbox_consumer = self._consumer = consumer()
                    if isinstance(inbox_consumer, InboxSource):  # hands appends over in memory
                        self._append = inbox_consumer.append
                    tg.start_soon(_consume, inbox_consumer, runtime, cannot_start, tg.cancel_scope)
                    if isinstance(inbox_consumer, ConfirmsStart):
                        serving = await _started(inbox_consumer, runtime.stop)
                if serving:
                    await serve()
            if cannot_start:  # the app ends with its one line instead of restarting the source
                raise cannot_start[0]
        finally:
            self._append = None
            self._consumer = None
            with anyio.CancelScope(shield=True):
                await _report_inbox(inbox)

    def caught_up_at(self) -> float | None:
        """When the inbox's consumer in this process last took everything waiting in it
        (wall-clock time, 0 before the first), for ``/metrics``; None when none runs here, or
        when it does not tell (a SQLite inbox's consumer: its count says more)."""
        consumer = self._consumer
        return consumer.caught_up_at if isinstance(consumer, TracksCatchUp) else None

    async def admit(
        self, delivery: Delivery, inbox: Inbox, runtime: SourceRuntime, *, retry_after: float
    ) -> Answer:
        """Check the body at the door, append it to the inbox, answer 200 once it is durable
        (503 with ``Retry-After: retry_after`` when the inbox is full or failing)."""
        outcome = await runtime.admit(delivery)
        if outcome.settlement is not Settlement.ACK:
            return respond(outcome)
        body = delivery.body
        assert isinstance(body, bytes)
        try:
            if self._append is not None:
                added = await self._append(body, delivery.notification)
            else:
                added = await inbox.append(body)
        except InboxRefusedBody as exc:  # it never fits: recorded, not left to the sender
            await runtime.dead_letter(delivery, str(exc), cause=Cause.TOO_LARGE)
            return error_answer(413, str(exc))
        except InboxUnavailable as exc:
            self._trouble("unavailable", str(exc), runtime)
            return error_answer(503, "inbox unavailable", headers=_retry_after(retry_after))
        if not added:
            self._trouble("full", f"inbox {inbox.describe()} is full (raise its bound)", runtime)
            return error_answer(503, "inbox full", headers=_retry_after(retry_after))
        return ACCEPTED

    def _trouble(self, kind: str, what: str, runtime: SourceRuntime) -> None:
        """Log that callbacks are answered 503: the first time, then once per 10 s."""
        if self._lines is None:
            self._lines = LogThrottle(
                runtime.clock, 10.0, tail=tail_line(_log, "inbox", "answered 503")
            )
        held = self._lines.admit(kind)
        if held is not None:
            _log.warning("%s; answering 503%s", what, held_back(held, "answered 503"))


def _retry_after(seconds: float) -> dict[str, str]:
    """The header of a 503: whole seconds, at least one (built only when answering one)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


async def inbox_state(inbox: Inbox | None) -> tuple[int | None, str]:
    """How many notifications ``inbox`` holds (None: no inbox, or a queue that does not
    say), and why it cannot take callbacks now (``""``: it can)."""
    if inbox is None:
        return None, ""
    try:
        size = await inbox.size()
    except InboxUnavailable:
        return None, "inbox unavailable"
    bound = getattr(inbox, "max_items", None)
    if size is not None and isinstance(bound, int) and size >= bound:
        return size, "inbox full"
    return size, ""


async def _report_inbox(inbox: Inbox) -> None:
    try:
        waiting = await inbox.size()
    except InboxUnavailable:
        return
    if waiting:
        _log.info(
            "%d notification(s) wait in the inbox %s for the next start",
            waiting,
            inbox.describe(),
        )


async def _consume(
    consumer: Source,
    runtime: SourceRuntime,
    cannot_start: list[StartupError],
    serving: anyio.CancelScope,
) -> None:
    """Run the inbox's consumer; if it cannot start (a queue that does not exist, refused
    keys), note why and stop serving, so the source ends with that error itself."""
    try:
        await consumer.run(runtime)
    except StartupError as exc:
        cannot_start.append(exc)
        serving.cancel()


async def _started(consumer: ConfirmsStart, stop: anyio.Event) -> bool:
    """Wait until ``consumer`` works (True), or ``stop`` is set first (False). A consumer that
    cannot start cancels this wait (``_consume``)."""
    async with anyio.create_task_group() as tg:

        async def started() -> None:
            await consumer.wait_started()
            tg.cancel_scope.cancel()

        tg.start_soon(started)
        await stop.wait()
        tg.cancel_scope.cancel()
    return not stop.is_set()


async def _check_inbox(inbox: Inbox) -> None:
    """Fail at startup, with what to check, when the inbox cannot be used at all (its SQLite
    file cannot be opened); a queue service answers ``size`` with None and is checked by its
    consumer."""
    try:
        await inbox.size()
    except InboxUnavailable as exc:
        problem = directory_problem(exc, "the inbox", "give --inbox a file path", "inbox.sqlite3")
        if problem is not None:  # "--inbox ." : the folder is fine, the path is not a file
            raise StartupError(problem) from exc
        raise StartupError(
            f"{exc}: check the inbox's path (--inbox): its folder must be writable"
            " (it is made if missing)"
        ) from exc
