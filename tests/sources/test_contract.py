"""The Source contract: every source (memory, in-process, file, HTTP, HTTP with a durable
inbox, CMQ, SCF) passes it.

Each case is written once against :class:`~tests.sources.harness.SourceHarness` and runs once
per source; how a source is fed and how it settles (HTTP status, the inbox's delete or retry,
CMQ delete, SCF return or raise, the in-process report) is the harness's business, so the
cases read as the delivery contract does:

- a valid notification runs its handler once and is acked;
- a failed delivery is left for redelivery and comes back as attempt 2; when the retry
  policy runs out it is dead-lettered once, then acked;
- a malformed (or badly signed) body is dead-lettered and acked, never retried;
- ``app.stop()`` with a handler running: no new work is taken, the running delivery is
  finished and settled, or (past the shutdown timeout) left for redelivery, never lost and
  never acked unfinished, and ``app.run`` returns;
- with ``max_in_flight=N``, at most N handlers run at once and the rest are not lost.

Cases that cannot apply to a source are excluded by the harness, with the reason; a case a
source is known to break is a strict xfail that says how.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from mpsflow import App, Context, Retry, RetryPolicy
from mpsflow.testing import build_notification, sign_payload
from tests.sources.harness import Case, Signal, SourceHarness, Ticket, Verdict

ACKED, REDELIVER = Verdict.ACKED, Verdict.REDELIVER
KEY = "contract-notify-key"
TIMEOUT = 20.0
"""Every case finishes long before this; a bug fails the case instead of hanging the suite."""
REDELIVERY_WAIT = 2.0
"""How long a restarted source gets to deliver what it was left with (it takes milliseconds)."""
RETRY = RetryPolicy(max_attempts=3, base_delay=1.0, jitter=0.0)


def task(n: int) -> str:
    return f"contract-task-{n}"


def _signed(payload: dict[str, Any], key: str) -> bytes:
    return json.dumps(sign_payload(payload, key, expires_at=int(time.time()) + 3600)).encode()


def notification(n: int, *, key: str = KEY) -> bytes:
    """A finished WorkflowTask notification, signed with ``key``."""
    return _signed(build_notification(task_id=task(n)), key)


POISON = _signed({"EventType": "WorkflowTask", "WorkflowTaskEvent": 7}, KEY)
"""Authentic, but not a valid notification: its event is a number."""

Behaviour = Callable[[Context], Awaitable[None]]


class Calls:
    """A handler on ``WorkflowTask`` that notes each run and then does ``behaviour``.

    ``started`` holds ``(task id, attempt)`` per run, ``finished`` the task ids of runs that
    completed; ``peak`` is the most runs at once. With ``blocking``, runs wait for ``gate``.
    Under SCF, handlers run on another thread's event loop: no case waits on ``gate`` or
    ``wait_started`` there (a Signal sets nothing while nobody waits on it).
    """

    def __init__(self, app: App, behaviour: Behaviour | None = None, *, blocking: bool = False):
        self.started: list[tuple[str, int]] = []
        self.finished: list[str] = []
        self.running = 0
        self.peak = 0
        self.gate = anyio.Event()
        self._blocking = blocking
        self._changed = Signal()

        @app.on("WorkflowTask")
        async def contract_handler(event: Any, ctx: Context) -> None:
            self.started.append((ctx.task_id, ctx.delivery.attempt))
            self.running += 1
            self.peak = max(self.peak, self.running)
            self._changed.notify()
            try:
                if self._blocking:
                    await self.gate.wait()
                if behaviour is not None:
                    await behaviour(ctx)
                self.finished.append(ctx.task_id)
            finally:
                self.running -= 1

    async def wait_started(self, count: int) -> None:
        await self._changed.wait_until(lambda: len(self.started) >= count)


async def fail_first_attempt(ctx: Context) -> None:
    if ctx.delivery.attempt == 1:
        raise Retry("downstream busy")


async def always_fail(ctx: Context) -> None:
    raise RuntimeError("catalogue database unreachable")


async def redelivered_after_restart(harness: SourceHarness, ticket: Ticket) -> Verdict:
    """Run the source again: what it was left with must be delivered, and this time acked."""
    async with harness.running():
        await harness.redeliver(ticket)
        with anyio.move_on_after(REDELIVERY_WAIT) as waiting:
            verdicts = await harness.until_acked(ticket)
        assert not waiting.cancelled_caught, "lost: not delivered again after a restart"
    return verdicts[-1]


# -- settling ------------------------------------------------------------------------------------


async def check_settling(
    harness: SourceHarness,
    body: bytes,
    behaviour: Behaviour | None,
    verdicts: list[Verdict],
    runs: list[int],
    *,
    dead: Sequence[tuple[str, int]] = (),
    signed: bool = True,
) -> None:
    """Deliver ``body`` to a running source and redeliver it until it is acked.

    ``verdicts`` are how its deliveries were settled (as seen then, and as the channel's
    evidence shows after the run), ``runs`` the attempt number of each handler run, ``dead``
    the ``(kind, attempt)`` of each dead letter. Only a handler run that ended well finishes.
    """
    options: dict[str, Any] = {"notify_keys": [KEY]} if signed else {}
    calls = Calls(harness.make_app(retry=RETRY, **options), behaviour)
    with anyio.fail_after(TIMEOUT):
        ticket = await harness.deliver(body)
        async with harness.running():
            assert await harness.until_acked(ticket) == verdicts
    assert harness.history(ticket) == verdicts
    task_ids = {task_id for task_id, _ in calls.started}
    assert len(task_ids) <= 1
    assert [attempt for _, attempt in calls.started] == runs
    succeeded = verdicts[-1:] == [ACKED] and not dead
    assert calls.finished == (list(task_ids) if succeeded else [])
    assert [(letter.kind, letter.attempt) for letter in harness.dead_letters] == list(dead)
    for letter in harness.dead_letters:
        assert json.loads(letter.raw_body()) == json.loads(body)


@pytest.mark.contract_case(Case.ACK)
async def test_a_valid_notification_runs_its_handler_once_and_is_acked(
    harness: SourceHarness, seed_sample: bytes
) -> None:
    await check_settling(harness, seed_sample, None, [ACKED], [1], signed=False)  # verbatim


@pytest.mark.contract_case(Case.RETRY)
async def test_a_failed_delivery_is_left_for_redelivery_and_comes_back_as_attempt_2(
    harness: SourceHarness,
) -> None:
    await check_settling(harness, notification(1), fail_first_attempt, [REDELIVER, ACKED], [1, 2])


@pytest.mark.contract_case(Case.EXHAUSTED)
async def test_when_retries_run_out_it_is_dead_lettered_once_then_acked(
    harness: SourceHarness,
) -> None:
    verdicts = [REDELIVER, REDELIVER, ACKED]
    body = notification(1)
    await check_settling(harness, body, always_fail, verdicts, [1, 2, 3], dead=[("exhausted", 3)])


@pytest.mark.contract_case(Case.POISON)
async def test_a_malformed_body_is_dead_lettered_as_poison_and_acked(
    harness: SourceHarness,
) -> None:
    await check_settling(harness, POISON, None, [ACKED], [], dead=[("poison", 1)])


@pytest.mark.contract_case(Case.BAD_SIGNATURE)
async def test_a_badly_signed_notification_is_dead_lettered_and_never_retried(
    harness: SourceHarness,
) -> None:
    body = notification(1, key="not-the-key")
    await check_settling(harness, body, None, [ACKED], [], dead=[("signature", 1)])


# -- stopping ------------------------------------------------------------------------------------


@asynccontextmanager
async def stopped_in_flight(
    harness: SourceHarness, **options: Any
) -> AsyncIterator[tuple[Calls, Ticket]]:
    """Run one notification (task 1) whose handler waits on ``calls.gate``, and stop the app
    while it waits; the block runs then, inside the run, which ends with the block."""
    calls = Calls(harness.make_app(notify_keys=[KEY], **options), blocking=True)
    ticket = await harness.deliver(notification(1))
    async with harness.running():
        await calls.wait_started(1)
        await harness.stop()
        assert calls.finished == []
        assert ACKED not in harness.history(ticket)  # not acked while unfinished
        yield calls, ticket
    if calls.finished:
        assert harness.history(ticket) == [ACKED]  # finished while draining: settled once
    else:
        assert ACKED not in harness.history(ticket)  # never acked unfinished


@pytest.mark.contract_case(Case.STOP_DRAINS)
async def test_stop_lets_the_running_delivery_finish_and_settles_it(
    harness: SourceHarness,
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with stopped_in_flight(harness) as (calls, _):
            calls.gate.set()
        # app.run has returned
    assert calls.finished == [task(1)]
    assert harness.dead_letters == []


@pytest.mark.contract_case(Case.STOP_TAKES_NO_MORE)
async def test_after_stop_no_new_work_is_taken_and_none_is_lost(harness: SourceHarness) -> None:
    with anyio.fail_after(TIMEOUT):
        async with stopped_in_flight(harness) as (calls, _):
            late = await harness.deliver(notification(2))
            assert await harness.untaken(late)
            calls.gate.set()
        assert calls.started == [(task(1), 1)]
        assert harness.left_for_redelivery(late)
        assert await redelivered_after_restart(harness, late) is ACKED
    assert calls.finished.count(task(2)) == 1
    assert harness.dead_letters == []


@pytest.mark.contract_case(Case.SHUTDOWN_TIMEOUT)
async def test_past_the_shutdown_timeout_unfinished_work_is_left_for_redelivery(
    harness: SourceHarness,
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with stopped_in_flight(harness, shutdown_timeout=0.2) as (calls, ticket):
            pass
        # app.run has returned, with the handler still waiting
        assert calls.finished == []
        assert harness.left_for_redelivery(ticket)
        calls.gate.set()
        assert await redelivered_after_restart(harness, ticket) is ACKED
    assert calls.finished == [task(1)]
    assert harness.dead_letters == []


# -- limits --------------------------------------------------------------------------------------


@pytest.mark.contract_case(Case.MAX_IN_FLIGHT)
async def test_max_in_flight_bounds_the_running_handlers_and_loses_none(
    harness: SourceHarness,
) -> None:
    limit, total = 2, 5
    harness.max_in_flight = limit
    calls = Calls(harness.make_app(notify_keys=[KEY]), blocking=True)
    with anyio.fail_after(TIMEOUT):
        tickets = {task(n): await harness.deliver(notification(n)) for n in range(total)}
        async with harness.running():
            await calls.wait_started(limit)
            taken = {task_id for task_id, _ in calls.started}
            for task_id, ticket in tickets.items():
                if task_id not in taken:
                    assert await harness.untaken(ticket), task_id  # HTTP: 503; else not taken
            assert (calls.running, len(calls.started)) == (limit, limit)
            calls.gate.set()
            verdicts = [await harness.until_acked(ticket) for ticket in tickets.values()]
    assert calls.peak == limit
    assert sorted(calls.finished) == sorted(tickets)  # each exactly once
    assert [harness.history(ticket) for ticket in tickets.values()] == verdicts
    for seen in verdicts:  # the pull sources' rest waited; HTTP's was refused, then sent again
        assert seen[-1] is ACKED
        assert set(seen[:-1]) <= {REDELIVER}
    assert harness.dead_letters == []
