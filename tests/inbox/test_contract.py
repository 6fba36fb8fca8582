"""The LeasedInbox contract, run against every implementation: bounded appends, leases oldest
first and hidden while held, appends already leased to the caller, settlement by the current
lease only, retries that come back after their delay as the next attempt, and an inbox that is
closed saying so.

Each implementation gets a fixture factory with a FakeClock; add new ones to ``INBOXES``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

from mpsflow.clock import FakeClock
from mpsflow.errors import InboxUnavailable
from mpsflow.inbox import Inbox, LeasedInbox, SQLiteInbox

LEASE = 30.0

InboxFactory = Callable[[Path, FakeClock, int], LeasedInbox]

INBOXES: dict[str, InboxFactory] = {
    "sqlite": lambda folder, clock, max_items: SQLiteInbox(
        folder / "inbox.sqlite3", max_items=max_items, clock=clock
    ),
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture(params=sorted(INBOXES))
async def inbox(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[LeasedInbox]:
    box = INBOXES[request.param](tmp_path, clock, 3)
    yield box
    await box.close()


async def test_appends_are_leased_oldest_first_and_hidden_while_leased(
    inbox: LeasedInbox,
) -> None:
    for body in (b"a", b"b", b"c"):
        assert await inbox.append(body)
    first = await inbox.lease(2, LEASE)
    assert [(i.body, i.attempt) for i in first] == [(b"a", 1), (b"b", 1)]
    [rest] = await inbox.lease(5, LEASE)
    assert rest.body == b"c"
    assert await inbox.lease(5, LEASE) == []  # all leased
    assert await inbox.size() == 3


async def test_a_full_inbox_refuses_until_one_is_settled(inbox: LeasedInbox) -> None:
    for body in (b"a", b"b", b"c"):
        assert await inbox.append(body)
    assert not await inbox.append(b"d")
    [item] = await inbox.lease(1, LEASE)
    assert await inbox.settle(item.id, item.attempt)
    assert await inbox.size() == 2
    assert await inbox.append(b"d")


async def test_a_retry_comes_back_after_its_delay_as_the_next_attempt(
    inbox: LeasedInbox, clock: FakeClock
) -> None:
    await inbox.append(b"a")
    [item] = await inbox.lease(1, LEASE)
    assert await inbox.retry(item.id, item.attempt, 5.0)
    assert await inbox.lease(1, LEASE) == []
    clock.advance(5.0)
    [again] = await inbox.lease(1, LEASE)
    assert (again.id, again.attempt) == (item.id, 2)


async def test_an_ended_lease_is_leased_again_and_the_old_holder_cannot_settle_it(
    inbox: LeasedInbox, clock: FakeClock
) -> None:
    await inbox.append(b"a")
    [item] = await inbox.lease(1, LEASE)
    clock.advance(LEASE + 1)
    [again] = await inbox.lease(1, LEASE)
    assert again.attempt == 2
    assert not await inbox.settle(item.id, item.attempt)  # the stale lease
    assert not await inbox.retry(item.id, item.attempt, 0.0)
    assert await inbox.settle(again.id, again.attempt)
    assert await inbox.size() == 0


async def test_a_closed_inbox_is_unavailable(inbox: LeasedInbox) -> None:
    await inbox.close()
    with pytest.raises(InboxUnavailable, match="closed"):
        await inbox.append(b"a")


async def test_an_item_leased_and_not_settled_is_leased_again_after_its_lease(
    inbox: LeasedInbox, clock: FakeClock
) -> None:
    """What a consumer that died holding a lease leaves: the item, for the next lease."""
    await inbox.append(b"a")
    await inbox.append(b"b")
    [first, _] = await inbox.lease(2, LEASE)
    assert await inbox.settle(first.id, first.attempt)
    clock.advance(LEASE)
    [again] = await inbox.lease(5, LEASE)
    assert (again.body, again.attempt) == (b"b", 2)


async def test_the_inbox_is_an_inbox(inbox: LeasedInbox) -> None:
    assert isinstance(inbox, Inbox)
    assert isinstance(inbox, LeasedInbox)
    assert inbox.describe()


async def test_a_retry_that_is_not_counted_gives_the_attempt_back(
    inbox: LeasedInbox, clock: FakeClock
) -> None:
    """A run put off by middleware, or cut off at shutdown, did not fail: same attempt next."""
    await inbox.append(b"a")
    [item] = await inbox.lease(1, LEASE)
    assert await inbox.retry(item.id, item.attempt, 5.0, counted=False)
    clock.advance(5.0)
    [again] = await inbox.lease(1, LEASE)
    assert again.attempt == item.attempt == 1


async def test_an_append_leased_to_the_caller_is_hidden_until_its_lease_ends(
    inbox: LeasedInbox, clock: FakeClock
) -> None:
    item = await inbox.append_leased(b"a", LEASE)
    assert item is not None
    assert (item.body, item.attempt) == (b"a", 1)
    assert await inbox.lease(5, LEASE) == []  # the caller holds it
    clock.advance(LEASE)
    [again] = await inbox.lease(5, LEASE)  # the caller died: it comes back
    assert (again.id, again.body, again.attempt) == (item.id, b"a", 2)
    assert not await inbox.settle(item.id, item.attempt)
    assert await inbox.settle(again.id, again.attempt)


async def test_an_append_leased_counts_against_the_bound_and_settles_like_a_lease(
    inbox: LeasedInbox,
) -> None:
    for body in (b"a", b"b"):
        assert await inbox.append(body)
    held = await inbox.append_leased(b"c", LEASE)
    assert held is not None
    assert await inbox.append_leased(b"d", LEASE) is None  # full
    assert await inbox.retry(held.id, held.attempt, 0.0, counted=False)
    leased = await inbox.lease(5, LEASE)
    assert [(i.body, i.attempt) for i in leased] == [(b"a", 1), (b"b", 1), (b"c", 1)]


async def test_wake_ends_a_wait_for_items_and_a_leased_append_does_not(
    inbox: LeasedInbox,
) -> None:
    """A leased append is run by its consumer at once: only ``wake`` (an item handed over
    that waits) or a plain append ends the consumer's wait before ``at_most``."""
    assert await inbox.lease(5, LEASE) == []  # a consumer that found nothing
    with anyio.fail_after(5):
        inbox.wake()
        await inbox.wait_for_items(3600)
        await inbox.append(b"a")
        await inbox.wait_for_items(3600)
    assert await inbox.append_leased(b"b", LEASE) is not None
    with anyio.move_on_after(0.05) as waited:
        await inbox.wait_for_items(3600)
    assert waited.cancelled_caught
