"""Harnesses that drive each source through its own channel, for the Source contract suite.

A harness runs an :class:`~mpsflow.App` on its source with the public API only (``app.run``,
``app.stop()``, ``app.scf_handler()``), hands notifications to the source the way its real peer
does, and reads back how each delivery was settled *in the channel's own terms*, mapped to two
words: the channel is done with it (:attr:`Verdict.ACKED`) or holds it for another delivery
(:attr:`Verdict.REDELIVER`).

=========  ============================  =======================  =============================
source     a notification arrives by     acked                    left for redelivery
=========  ============================  =======================  =============================
memory     ``MemorySource.add``          settled in ``report``    ``retry`` in ``report``
inprocess  ``InProcessSource.put``       settled in ``report``    ``retry`` in ``report``
file       one ``.json`` file each       settled in ``report``    ``retry`` in ``report``
http       a POST over loopback          200, or a final 4xx      5xx, 503, refused, cut off
http-inbox a POST over loopback; its     deleted from the inbox   made visible again after the
           200 puts it in the inbox      (``settle``), or a       retry delay (``retry``), still
                                         final 4xx at the door    leased when the run ended; at
                                                                  the door: 503, refused, cut off
cmq        ``CmqClient.send``            its receipt deleted      not deleted: it comes back
                                                                  with ``dequeueCount`` + 1
scf        ``main_handler(event, ctx)``  it returns               it raises InvocationFailed
=========  ============================  =======================  =============================

Redelivery is the peer's job: the HTTP harness posts again (as MPS or an operator would), the
SCF harness invokes again (as the platform does), the CMQ harness moves the queue server's
FakeClock past the visibility timeout, the HTTP-inbox harness moves the inbox's FakeClock past
the retry delay or the lease (and posts again what the door did not take); in-process sources
retry by themselves, after a backoff slept on a FakeClock. A *restart* is another
``running()`` block: the channel survives it (the queue, the files, the inbox's file, the
sender's unanswered notifications, the in-memory source object), as it would survive a process
restart.
"""

from __future__ import annotations

import abc
import enum
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import aiohttp
import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from mpsflow import App, Call, CallNext, Delivery, Outcome, Source
from mpsflow.clock import FakeClock
from mpsflow.deadletter import DeadLetter
from mpsflow.errors import InvocationFailed
from mpsflow.inbox import InboxItem, InboxSource, SQLiteInbox
from mpsflow.sinks.memory import MemorySink
from mpsflow.sources.cmq import CmqSource
from mpsflow.sources.file import FileSource
from mpsflow.sources.http import HttpSource
from mpsflow.sources.inprocess import InProcessSource
from mpsflow.sources.memory import MemorySource
from mpsflow.sources.scf import ScfHandler
from mpsflow.tencentcloud.cmq.client import CmqClient
from mpsflow.tencentcloud.cmq.credentials import Credential
from mpsflow.tencentcloud.cmq.models import DeleteFailure, Message
from tests.plugins.cmq_server import CmqServerFactory

__all__ = ["HARNESSES", "Case", "Env", "Signal", "SourceHarness", "Ticket", "Verdict"]

MAX_DELIVERIES = 10
"""``until_acked`` gives up after this many deliveries of one notification."""


class Case(enum.Enum):
    """The cases of the contract; a harness names those that cannot apply to its source."""

    ACK = "ack"
    RETRY = "retry"
    EXHAUSTED = "exhausted"
    POISON = "poison"
    BAD_SIGNATURE = "bad-signature"
    STOP_DRAINS = "stop-drains"
    STOP_TAKES_NO_MORE = "stop-takes-no-more"
    SHUTDOWN_TIMEOUT = "shutdown-timeout"
    MAX_IN_FLIGHT = "max-in-flight"


class Verdict(enum.Enum):
    """How a channel settled one delivery."""

    ACKED = "acked"
    """The channel is done with it: it will not be delivered again."""
    REDELIVER = "redeliver"
    """The channel still holds it and delivers it again."""


class Signal:
    """Wakes whoever waits for a condition each time something it watches may have changed."""

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def notify(self) -> None:
        event, self._event = self._event, None
        if event is not None:
            event.set()

    async def wait_until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()


@dataclass(eq=False)
class Ticket:
    """One notification handed to a source's channel."""

    body: bytes
    ref: str = ""
    """The channel's name for it: delivery id, file path or CMQ message id."""
    answers: list[str] = field(default_factory=list)
    """Push channels: each answer the sender got (HTTP status, SCF return or raise)."""
    read: int = 0
    """Settlements already reported by ``next_verdict`` or ``left_for_redelivery``."""


@dataclass(frozen=True)
class Env:
    """What the harnesses may use from pytest."""

    tmp_path: Path
    cmq_server_factory: CmqServerFactory
    cmq_credential: Credential


class SourceHarness(abc.ABC):
    """Runs an app on one kind of source and reads how its channel settled each notification.

    The life of a case: ``make_app`` (register handlers on it), ``deliver`` (before the app
    runs, or while it does), ``running()`` (one run of ``app.run``: the block ends with
    ``app.stop()`` and returns once ``app.run`` has), then ``history`` for the evidence.
    """

    name: ClassVar[str]
    not_applicable: ClassVar[Mapping[Case, str]] = {}
    """Cases that cannot apply to this source by its nature, and why."""
    violations: ClassVar[Mapping[Case, str]] = {}
    """Cases this source is known to fail (strict xfail), and how."""

    @classmethod
    def marks(cls, case: Case) -> list[pytest.MarkDecorator]:
        if case in cls.not_applicable:
            reason = f"not applicable to {cls.name}: {cls.not_applicable[case]}"
            return [pytest.mark.skip(reason=reason)]
        if case in cls.violations:
            reason = f"{cls.name} breaks the contract: {cls.violations[case]}"
            return [pytest.mark.xfail(strict=True, reason=reason)]
        return []

    def __init__(self, env: Env) -> None:
        self.env = env
        self.dead = MemorySink()
        self.max_in_flight: int | None = None
        """The source's in-flight limit for the next run (None: its default)."""
        self.tickets: list[Ticket] = []
        self.changed = Signal()
        self._app: App | None = None
        self._group: anyio.abc.TaskGroup | None = None

    async def setup(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Open what the channel needs (servers, clients) before the case starts."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release what ``setup`` opened."""

    # -- the app and its run ------------------------------------------------------------------

    def make_app(self, **options: Any) -> App:
        """The app under test, its dead letters kept in ``dead``; drains for 5 s by default."""
        options.setdefault("shutdown_timeout", 5.0)
        self._app = App(dead_letters=self.dead, **options)
        return self._app

    @property
    def app(self) -> App:
        assert self._app is not None, "make_app() first"
        return self._app

    @property
    def dead_letters(self) -> list[DeadLetter]:
        return [record for record in self.dead.records if isinstance(record, DeadLetter)]

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """One run of the app on the source; on exit, ``app.stop()`` and ``app.run`` returned."""
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                try:
                    await self._start(group)
                    yield
                finally:
                    self.app.stop()
        finally:
            self._group = None

    def _limit(self) -> dict[str, Any]:
        """The source's ``max_in_flight`` option, when the case sets one."""
        return {} if self.max_in_flight is None else {"max_in_flight": self.max_in_flight}

    def _run_app(self, group: anyio.abc.TaskGroup, source: Source) -> None:
        group.start_soon(partial(self.app.run, source, handle_signals=False))

    async def stop(self) -> None:
        """``app.stop()``, and let the source act on it before anything else happens."""
        self.app.stop()
        await anyio.wait_all_tasks_blocked()

    @abc.abstractmethod
    async def _start(self, group: anyio.abc.TaskGroup) -> None:
        """Start the app on a source (in ``group``) and hand it what was delivered so far."""

    # -- notifications ------------------------------------------------------------------------

    async def deliver(self, body: bytes) -> Ticket:
        """Hand ``body`` to the channel (it reaches the app once, and while, the app runs)."""
        ticket = Ticket(body)
        self.tickets.append(ticket)
        await self._hand_over(ticket)
        return ticket

    @abc.abstractmethod
    async def _hand_over(self, ticket: Ticket) -> None:
        """Put ``ticket`` into the channel (and set its ``ref``)."""

    @abc.abstractmethod
    def settlements(self, ticket: Ticket) -> list[str]:
        """The channel's evidence of how each delivery of ``ticket`` was settled, in order."""

    @abc.abstractmethod
    def verdict(self, settlement: str) -> Verdict:
        """What one piece of evidence means."""

    def history(self, ticket: Ticket) -> list[Verdict]:
        """Every settlement of ``ticket`` so far (complete once the run has ended)."""
        return [self.verdict(settlement) for settlement in self.settlements(ticket)]

    async def until(self, ready: Callable[[], bool]) -> None:
        """Wait until ``ready()`` (woken by ``changed``)."""
        await self.changed.wait_until(ready)

    async def next_verdict(self, ticket: Ticket) -> Verdict:
        """Wait for the settlement of ``ticket``'s next delivery."""
        await self.until(lambda: len(self.settlements(ticket)) > ticket.read)
        verdict = self.verdict(self.settlements(ticket)[ticket.read])
        ticket.read += 1
        return verdict

    async def redeliver(self, ticket: Ticket) -> None:  # noqa: B027 - pull sources: nothing
        """Let the channel deliver ``ticket`` again; by default the source does so by itself."""

    async def until_acked(self, ticket: Ticket) -> list[Verdict]:
        """The verdicts of ``ticket``'s deliveries, redelivering it until one acks it."""
        verdicts: list[Verdict] = []
        for _ in range(MAX_DELIVERIES):
            verdicts.append(await self.next_verdict(ticket))
            if verdicts[-1] is Verdict.ACKED:
                return verdicts
            await self.redeliver(ticket)
        raise AssertionError(f"not acked after {MAX_DELIVERIES} deliveries: {verdicts}")

    def left_for_redelivery(self, ticket: Ticket) -> bool:
        """After a run: nothing acked ``ticket``, so the channel still owes it a delivery.

        Later verdicts are counted from here on.
        """
        settlements = self.settlements(ticket)
        ticket.read = len(settlements)
        return all(self.verdict(settlement) is Verdict.REDELIVER for settlement in settlements)

    async def untaken(self, ticket: Ticket) -> bool:
        """While the source is at its limit or stopping: it did not take ``ticket`` (yet).

        Pull channels, once everything is quiet: nothing was settled for it (CMQ: it was not
        even received); that its handler did not start is the case's to check.
        """
        await anyio.wait_all_tasks_blocked()
        return not self.settlements(ticket)


# -- push channels: HTTP and SCF ----------------------------------------------------------------


class PushHarness(SourceHarness):
    """A sender pushes each notification and reads the answer; it pushes again to redeliver."""

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self._staged: list[Ticket] = []

    async def _start(self, group: anyio.abc.TaskGroup) -> None:
        await self._open(group)
        staged, self._staged = self._staged, []
        self._send_staged(group, staged)

    def _send_staged(self, group: anyio.abc.TaskGroup, staged: list[Ticket]) -> None:
        """Push what was delivered before the run: all at once, as a burst of callbacks."""
        for ticket in staged:
            group.start_soon(self._send, ticket)

    @abc.abstractmethod
    async def _open(self, group: anyio.abc.TaskGroup) -> None:
        """Make the receiving end ready."""

    @abc.abstractmethod
    async def _push(self, ticket: Ticket) -> str:
        """Push ``ticket`` once and return the answer."""

    async def _send(self, ticket: Ticket) -> None:
        ticket.answers.append(await self._push(ticket))
        self.changed.notify()

    async def _hand_over(self, ticket: Ticket) -> None:
        if self._group is None:
            self._staged.append(ticket)
        else:
            self._group.start_soon(self._send, ticket)

    async def redeliver(self, ticket: Ticket) -> None:
        await self._hand_over(ticket)

    def settlements(self, ticket: Ticket) -> list[str]:
        return ticket.answers


class HttpHarness(PushHarness):
    """``HttpSource`` on a free loopback port; aiohttp posts each notification on a new
    connection, as MPS's callbacks do; a restart listens on a new port."""

    name = "http"
    REFUSALS = ("503", "refused")

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self._source: HttpSource | None = None
        self._session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            self._session = session
            async with super().running():
                yield

    async def _open(self, group: anyio.abc.TaskGroup) -> None:
        self._source = HttpSource(port=0, **self._limit(), **self._source_options())
        self._run_app(group, self._source)
        await self._source.wait_serving()

    def _source_options(self) -> dict[str, Any]:
        """More ``HttpSource`` options for this run."""
        return {}

    async def _push(self, ticket: Ticket) -> str:
        assert self._session is not None
        assert self._source is not None
        try:
            async with self._session.post(self._source.url, data=ticket.body) as response:
                await response.read()
                return str(response.status)
        except aiohttp.ClientConnectorError:
            return "refused"
        except aiohttp.ClientError:
            return "cut off"

    def verdict(self, settlement: str) -> Verdict:
        # 2xx: done; 4xx: malformed or rejected, never worth sending again; the rest: resend.
        final = settlement[:1] in ("2", "4")
        return Verdict.ACKED if final else Verdict.REDELIVER

    async def untaken(self, ticket: Ticket) -> bool:
        await self.until(lambda: len(ticket.answers) > ticket.read)
        return ticket.answers[ticket.read] in self.REFUSALS


class InboxEvidence(NamedTuple):
    """One settlement of a notification in the HTTP-inbox channel."""

    text: str
    """What happened, in the channel's words (what ``settlements`` lists)."""
    back_at: float | None = None
    """For an item left in the inbox: the inbox's time (its FakeClock) it is visible again."""


@dataclass
class InboxLease:
    """One lease of an item the harness knows (its body is a ticket's)."""

    ticket: Ticket
    until: float
    """The inbox's time the lease ends."""
    run: int
    """The run that took it (``InboxLog.run``)."""
    ended: bool = False
    """Settled, retried, or counted as left when its run ended."""


@dataclass
class InboxLog:
    """Every settlement per ticket: the door's refusals (noted by the harness), and what the
    source's inbox answered its consumer (noted by ``RecordingInbox``)."""

    changed: Signal
    clock: FakeClock
    tickets: Sequence[Ticket]
    evidence: dict[Ticket, list[InboxEvidence]] = field(default_factory=dict)
    leases: dict[tuple[int, int], InboxLease] = field(default_factory=dict)
    """By ``(item id, attempt)``: the lease the inbox's ``settle`` and ``retry`` name."""
    appended: int = 0
    removed: int = 0
    run: int = 0

    def note(self, ticket: Ticket, evidence: InboxEvidence) -> None:
        self.evidence.setdefault(ticket, []).append(evidence)
        self.changed.notify()

    def leased(self, items: Sequence[InboxItem], until: float) -> None:
        for item in items:
            ticket = next((t for t in self.tickets if t.body == item.body), None)
            if ticket is not None:
                self.leases[item.id, item.attempt] = InboxLease(ticket, until, self.run)
        self.changed.notify()

    def leases_of(self, ticket: Ticket) -> int:
        return sum(lease.ticket is ticket for lease in self.leases.values())

    def ended(self, item_id: int, attempt: int, evidence: InboxEvidence) -> None:
        lease = self.leases.get((item_id, attempt))
        if lease is not None and not lease.ended:
            lease.ended = True
            self.note(lease.ticket, evidence)

    def left_leased(self) -> None:
        """After a run: the leases it took and did not settle are still the inbox's items,
        hidden until the lease ends (then leased again, as the next attempt)."""
        for lease in self.leases.values():
            if lease.run == self.run and not lease.ended:
                lease.ended = True
                self.note(lease.ticket, InboxEvidence(STILL_LEASED, lease.until))


DELETED = "deleted from the inbox"
NOT_DELETED = "not deleted: the lease was no longer this one"
RETRIED = "visible again after the retry delay"
NOT_RETRIED = "not retried: the lease was no longer this one"
STILL_LEASED = "still leased when the run ended"
_AT_DOOR = "answered "


class RecordingInbox:
    """The source's inbox: a ``SQLiteInbox`` on the harness's file and FakeClock, every call
    delegated to it, what it answered noted in an ``InboxLog``.

    One addition: ``wait_for_items`` also returns once the inbox's clock has moved since the
    last lease, as it returns once ``at_most`` real seconds passed: the inbox's time is the
    FakeClock here, so an item whose retry delay or lease the harness let pass is leased at
    once instead of at the consumer's next poll.
    """

    def __init__(self, inbox: SQLiteInbox, log: InboxLog, moved: Signal) -> None:
        self._inbox = inbox
        self._log = log
        self._moved = moved
        self._looked_at = log.clock.time()

    def describe(self) -> str:
        return self._inbox.describe()

    async def append(self, body: bytes) -> bool:
        added = await self._inbox.append(body)
        self._log.appended += added
        return added

    async def append_leased(self, body: bytes, lease_seconds: float) -> InboxItem | None:
        now = self._log.clock.time()
        item = await self._inbox.append_leased(body, lease_seconds)
        if item is not None:
            self._log.appended += 1
            self._log.leased([item], now + lease_seconds)
        return item

    def consumer(
        self, *, name: str = "inbox", max_in_flight: int = 64, lease_seconds: float = 60.0
    ) -> InboxSource:
        return InboxSource(
            self, name=name, max_in_flight=max_in_flight, lease_seconds=lease_seconds
        )

    async def lease(self, max_count: int, lease_seconds: float) -> list[InboxItem]:
        self._looked_at = now = self._log.clock.time()  # the inbox reads its clock now too
        items = await self._inbox.lease(max_count, lease_seconds)
        self._log.leased(items, now + lease_seconds)
        return items

    async def settle(self, item_id: int, attempt: int) -> bool:
        done = await self._inbox.settle(item_id, attempt)
        self._log.removed += done
        self._log.ended(item_id, attempt, InboxEvidence(DELETED if done else NOT_DELETED))
        return done

    async def retry(
        self, item_id: int, attempt: int, delay: float, *, counted: bool = True
    ) -> bool:
        back_at = self._log.clock.time() + max(delay, 0.0)
        done = await self._inbox.retry(item_id, attempt, delay, counted=counted)
        evidence = InboxEvidence(RETRIED, back_at) if done else InboxEvidence(NOT_RETRIED)
        self._log.ended(item_id, attempt, evidence)
        return done

    async def reclaim(self) -> int:
        return await self._inbox.reclaim()

    def wake(self) -> None:
        self._inbox.wake()

    async def wait_for_items(self, at_most: float) -> None:
        looked_at = self._looked_at
        clock = self._log.clock
        async with anyio.create_task_group() as group:

            async def appended() -> None:
                await self._inbox.wait_for_items(at_most)
                group.cancel_scope.cancel()

            group.start_soon(appended)
            await self._moved.wait_until(lambda: clock.time() != looked_at)
            group.cancel_scope.cancel()

    async def size(self) -> int:
        return await self._inbox.size()

    async def close(self) -> None:
        await self._inbox.close()


class HttpInboxHarness(HttpHarness):
    """``HttpSource`` with a durable inbox (``mpsflow run``'s default): the door checks a POST
    (signature, decode), appends it and answers 200; the source's consumer leases it from the
    inbox and settles it there.

    A POST answered 200 is handed over, not settled: the inbox holds it. Its deliveries are
    the inbox's leases, settled in the inbox's own terms: deleted (acked), made visible again
    after the retry delay, or left leased by a run that ended (both left for redelivery: the
    lease is taken again, as the next attempt, once that time has passed). A door that
    refuses (401, 400: recorded as dead letters) gives a final answer and queues nothing; a
    503, a refused or a cut-off POST is the sender's to send again, as for ``http``.

    Items are the tickets whose body they hold (a case's bodies differ from each other).
    The inbox is a ``SQLiteInbox`` on one file and on the harness's FakeClock: a restart
    opens the same file (the notifications it holds survive, as they survive a process
    restart), and redelivery moves the clock past the retry delay or the lease, as the CMQ
    harness moves its server's. The lease is the source's ``handler_budget`` (60 s on the
    inbox's clock; the app's deadlines stay on real time, far away).
    """

    name = "http-inbox"

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self.clock = FakeClock()
        self.moved = Signal()
        """Notified when the harness moves the inbox's clock."""
        self.path = env.tmp_path / "inbox.sqlite3"
        self.log = InboxLog(self.changed, self.clock, self.tickets)
        self._inbox: RecordingInbox | None = None
        self._posted: dict[Ticket, tuple[int, int]] = {}
        """Per ticket: how many times it was posted, and how many leases it had by the last."""

    def _source_options(self) -> dict[str, Any]:
        self._inbox = RecordingInbox(SQLiteInbox(self.path, clock=self.clock), self.log, self.moved)
        return {"inbox": self._inbox}

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self.log.run += 1
        try:
            async with super().running():
                yield
            self.log.left_leased()
            assert self._inbox is not None
            held = self.log.appended - self.log.removed
            assert await self._inbox.size() == held, "the inbox does not hold what was left"
        finally:
            inbox, self._inbox = self._inbox, None
            if inbox is not None:
                await inbox.close()

    def _send_staged(self, group: anyio.abc.TaskGroup, staged: list[Ticket]) -> None:
        """One after another: a sender with a backlog (MPS catching up, ``mpsflow send`` of a
        folder) each answered at once by the inbox; unlike ``http``, no answer waits for a
        handler, so the door's request limit is never what holds a notification back."""

        async def in_order() -> None:
            for ticket in staged:
                await self._send(ticket)

        group.start_soon(in_order)

    async def _hand_over(self, ticket: Ticket) -> None:
        posts, _ = self._posted.get(ticket, (0, 0))
        self._posted[ticket] = (posts + 1, self.log.leases_of(ticket))
        await super()._hand_over(ticket)

    async def _send(self, ticket: Ticket) -> None:
        answer = await self._push(ticket)
        ticket.answers.append(answer)
        if answer != "200":  # not in the inbox: the door's answer settles this delivery
            self.log.note(ticket, InboxEvidence(_AT_DOOR + answer))
        self.changed.notify()

    def settlements(self, ticket: Ticket) -> list[str]:
        return [evidence.text for evidence in self.log.evidence.get(ticket, [])]

    def verdict(self, settlement: str) -> Verdict:
        if settlement.startswith(_AT_DOOR):
            return super().verdict(settlement.removeprefix(_AT_DOOR))
        return {
            DELETED: Verdict.ACKED,
            NOT_DELETED: Verdict.REDELIVER,
            RETRIED: Verdict.REDELIVER,
            NOT_RETRIED: Verdict.REDELIVER,
            STILL_LEASED: Verdict.REDELIVER,
        }[settlement]

    async def redeliver(self, ticket: Ticket) -> None:
        settled = self.log.evidence.get(ticket, [])[: ticket.read]
        if not settled:
            return  # in the inbox, never leased: the source takes it by itself
        last = settled[-1]
        if last.text.startswith(_AT_DOOR):
            await self._hand_over(ticket)  # the sender kept it: it posts it again
        elif last.back_at is not None and last.back_at >= self.clock.time():
            self.clock.advance(last.back_at - self.clock.time() + 1)
            self.moved.notify()

    async def untaken(self, ticket: Ticket) -> bool:
        posts, leases = self._posted[ticket]
        await self.until(lambda: len(ticket.answers) >= posts)
        if ticket.answers[-1] != "200":
            return ticket.answers[-1] in self.REFUSALS
        await anyio.wait_all_tasks_blocked()  # in the inbox: the consumer had every chance
        # Waiting: in the inbox, or handed over at its append (one lease, made by the door)
        # and waiting in the consumer's memory for a slot; either way nothing settled it.
        return self.log.leases_of(ticket) - leases <= 1 and not self.settlements(ticket)


class ScfHarness(PushHarness):
    """``app.scf_handler()`` invoked as the SCF runtime does: synchronously, from a thread of
    its own, with the parsed event; the platform invokes again after a raise."""

    name = "scf"
    _ONE_INVOCATION = (
        "an SCF invocation is one synchronous call that starts the app, processes one event "
        "and stops the app before it returns; there is no app.run to stop (the platform ends "
        "an invocation by its time limit)"
    )
    not_applicable: ClassVar[Mapping[Case, str]] = {
        Case.STOP_DRAINS: _ONE_INVOCATION,
        Case.STOP_TAKES_NO_MORE: _ONE_INVOCATION,
        Case.SHUTDOWN_TIMEOUT: _ONE_INVOCATION,
        Case.MAX_IN_FLIGHT: (
            "one event per invocation, and the handler serialises an instance's invocations; "
            "concurrency is the platform's (instances), there is no max_in_flight"
        ),
    }

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self._handler: ScfHandler | None = None

    async def _open(self, group: anyio.abc.TaskGroup) -> None:
        self._handler = self.app.scf_handler()

    async def _push(self, ticket: Ticket) -> str:
        assert self._handler is not None
        try:
            event: Any = json.loads(ticket.body)
        except ValueError:
            event = ticket.body.decode()
        context = {"request_id": f"req-{len(ticket.answers)}", "time_limit_in_ms": 30_000}
        try:
            summary = await anyio.to_thread.run_sync(self._handler, event, context)
        except InvocationFailed:
            return "raised"
        return f"returned {summary['status']}"

    def verdict(self, settlement: str) -> Verdict:
        return Verdict.REDELIVER if settlement == "raised" else Verdict.ACKED


# -- pull channels: in-process sources and CMQ ---------------------------------------------------


class InProcessFamily(SourceHarness):
    """Sources that retry in process (on a FakeClock) and report every settlement."""

    keeps_source: ClassVar[bool] = True
    """The channel lives in the source object, so every run uses the same one."""

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self.clock = FakeClock()
        self._sources: list[InProcessSource] = []

    def _options(self) -> dict[str, Any]:
        return {"clock": self.clock, **self._limit()}

    def _source_for_run(self) -> InProcessSource:
        """The source to run now: the same object again, or a new one on the same channel."""
        if not (self.keeps_source and self._sources):
            self._sources.append(self._new_source())
        return self._sources[-1]

    @abc.abstractmethod
    def _new_source(self) -> InProcessSource:
        """A source on this harness's channel."""

    async def _start(self, group: anyio.abc.TaskGroup) -> None:
        self._run_app(group, self._source_for_run())

    def settlements(self, ticket: Ticket) -> list[str]:
        return [
            settled.outcome.settlement.value
            for source in self._sources
            for settled in source.report
            if settled.delivery.id == ticket.ref
        ]

    def verdict(self, settlement: str) -> Verdict:
        return Verdict.REDELIVER if settlement == "retry" else Verdict.ACKED

    async def until(self, ready: Callable[[], bool]) -> None:
        # ``report`` has no change notification: look again at every scheduling point.
        while not ready():
            await anyio.lowlevel.checkpoint()


class MemoryHarness(InProcessFamily):
    """One ``MemorySource`` (it ends once all is settled) fed with ``add``, kept across runs."""

    name = "memory"

    def _new_source(self) -> MemorySource:
        return MemorySource(**self._options())

    async def _hand_over(self, ticket: Ticket) -> None:
        source = self._source_for_run()
        assert isinstance(source, MemorySource)
        ticket.ref = source.add(ticket.body).id


class InProcessHarness(InProcessFamily):
    """One long-running ``InProcessSource`` fed ``Delivery`` objects by ``put``."""

    name = "inprocess"

    def _new_source(self) -> InProcessSource:
        return InProcessSource(name="inprocess", close_when_done=False, **self._options())

    async def _hand_over(self, ticket: Ticket) -> None:
        ticket.ref = f"inprocess-{len(self.tickets)}"
        self._source_for_run().put(Delivery(ticket.body, source="inprocess", id=ticket.ref))


class FileHarness(InProcessFamily):
    """A folder of ``.json`` files; each run is a new ``FileSource`` over the folder (a re-run
    of the backfill), which reads the files there when it is made."""

    name = "file"
    keeps_source = False

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self.folder = env.tmp_path / "notifications"
        self.folder.mkdir()

    def _new_source(self) -> FileSource:
        return FileSource(self.folder, **self._options())

    async def _hand_over(self, ticket: Ticket) -> None:
        path = self.folder / f"{len(self.tickets):04d}.json"
        await anyio.Path(path).write_bytes(ticket.body)
        ticket.ref = str(path)


@dataclass
class CmqLog:
    """What the source's CMQ client received, and which receipt handles it asked to delete."""

    changed: Signal
    receives: dict[str, list[Message]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)

    def received(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self.receives.setdefault(message.msg_id, []).append(message)
        self.changed.notify()

    def deleting(self, handles: Sequence[str]) -> None:
        self.deleted.update(handles)
        self.changed.notify()


class TappedCmqClient(CmqClient):
    """The source's CMQ client, noting every message it receives and every delete it sends."""

    def __init__(self, endpoint: str, credentials: Credential, *, log: CmqLog) -> None:
        super().__init__(endpoint, credentials)
        self._log = log

    async def receive(
        self, queue: str, wait: int | None = None, *, retry_timeouts: bool | None = None
    ) -> Message | None:
        message = await super().receive(queue, wait, retry_timeouts=retry_timeouts)
        self._log.received([message] if message is not None else [])
        return message

    async def batch_receive(
        self, queue: str, n: int, wait: int | None = None, *, retry_timeouts: bool | None = None
    ) -> list[Message]:
        messages = await super().batch_receive(queue, n, wait, retry_timeouts=retry_timeouts)
        self._log.received(messages)
        return messages

    async def delete(self, queue: str, receipt_handle: str) -> None:
        self._log.deleting([receipt_handle])
        await super().delete(queue, receipt_handle)

    async def batch_delete(self, queue: str, receipt_handles: Sequence[str]) -> list[DeleteFailure]:
        self._log.deleting(receipt_handles)
        return await super().batch_delete(queue, receipt_handles)


class CmqHarness(SourceHarness):
    """A ``CmqSource`` on the local CMQ server, whose FakeClock expires visibility timeouts.

    A delivery is acked when the source deletes its receipt handle, and left for redelivery
    when it does not: it comes back once the clock passes the visibility timeout, with
    ``dequeueCount`` + 1. Each run is a new source on the same queue.
    """

    name = "cmq"
    QUEUE = "contract"
    VISIBILITY_TIMEOUT = 30

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self.clock = FakeClock()
        self.log = CmqLog(self.changed)
        self.outcomes: dict[tuple[bytes, int], Outcome] = {}
        """The pipeline's outcome per (body, attempt): tells what to wait for, proves nothing."""
        self._sender: CmqClient | None = None
        self._client: TappedCmqClient | None = None

    async def setup(self) -> None:
        server = await self.env.cmq_server_factory(
            clock=self.clock, visibility_timeout=self.VISIBILITY_TIMEOUT
        )
        server.create_queue(self.QUEUE)
        credential = self.env.cmq_credential
        self._sender = CmqClient(server.url, credential)
        self._client = TappedCmqClient(server.url, credential, log=self.log)

    async def aclose(self) -> None:
        for client in (self._sender, self._client):
            if client is not None:
                await client.aclose()

    def make_app(self, **options: Any) -> App:
        app = super().make_app(**options)
        app.add_middleware(self._note_outcome, scope="delivery")
        return app

    async def _note_outcome(self, call: Call, call_next: CallNext) -> Outcome:
        outcome = await call_next(call)
        body = call.delivery.body
        if isinstance(body, bytes):
            self.outcomes[body, call.delivery.attempt] = outcome
            self.changed.notify()
        return outcome

    async def _start(self, group: anyio.abc.TaskGroup) -> None:
        assert self._client is not None
        limit = self._limit()
        source = CmqSource(self._client, self.QUEUE, wait_seconds=0, delete_delay=0, **limit)
        self._run_app(group, source)

    async def _hand_over(self, ticket: Ticket) -> None:
        assert self._sender is not None
        ticket.ref = await self._sender.send(self.QUEUE, ticket.body)

    def _receives(self, ticket: Ticket) -> list[Message]:
        return self.log.receives.get(ticket.ref, [])

    def settlements(self, ticket: Ticket) -> list[str]:
        deleted = self.log.deleted
        return [
            "deleted" if message.receipt_handle in deleted else "not deleted"
            for message in self._receives(ticket)
        ]

    def verdict(self, settlement: str) -> Verdict:
        return Verdict.ACKED if settlement == "deleted" else Verdict.REDELIVER

    async def next_verdict(self, ticket: Ticket) -> Verdict:
        # The k-th receive is acked once its handle is deleted; it is left once it came back,
        # or once the pipeline asked for a retry (then the final history must agree).
        k = ticket.read
        await self.until(lambda: len(self._receives(ticket)) > k)
        message = self._receives(ticket)[k]
        handle = message.receipt_handle
        outcome_key = (ticket.body, message.dequeue_count)

        def settled() -> bool:
            outcome = self.outcomes.get(outcome_key)
            retry = outcome is not None and not outcome.settled
            return handle in self.log.deleted or len(self._receives(ticket)) > k + 1 or retry

        await self.until(settled)
        ticket.read += 1
        return Verdict.ACKED if handle in self.log.deleted else Verdict.REDELIVER

    async def redeliver(self, ticket: Ticket) -> None:
        self.clock.advance(self.VISIBILITY_TIMEOUT + 1)


HARNESSES: tuple[type[SourceHarness], ...] = (
    MemoryHarness,
    InProcessHarness,
    FileHarness,
    HttpHarness,
    HttpInboxHarness,
    CmqHarness,
    ScfHarness,
)
"""Every source the contract runs against."""
