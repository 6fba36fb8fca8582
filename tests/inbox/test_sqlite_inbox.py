"""SQLiteInbox: bounded appends, leases, settlement by the current lease only, retries that
come back after their delay, and leases of a process that is gone taken back."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from mpsflow.clock import FakeClock
from mpsflow.errors import ConfigurationError, InboxUnavailable
from mpsflow.inbox import SQLiteInbox

LEASE = 30.0


@pytest.fixture
async def inbox(tmp_path: Path) -> AsyncIterator[SQLiteInbox]:
    box = SQLiteInbox(tmp_path / "inbox.sqlite3", max_items=3, clock=FakeClock(1000.0))
    yield box
    await box.close()


def clock_of(inbox: SQLiteInbox) -> FakeClock:
    clock = inbox._clock
    assert isinstance(clock, FakeClock)
    return clock


async def test_appends_are_leased_oldest_first_and_hidden_while_leased(
    inbox: SQLiteInbox,
) -> None:
    for body in (b"a", b"b", b"c"):
        assert await inbox.append(body)
    first = await inbox.lease(2, LEASE)
    assert [(i.body, i.attempt) for i in first] == [(b"a", 1), (b"b", 1)]
    [rest] = await inbox.lease(5, LEASE)
    assert rest.body == b"c"
    assert await inbox.lease(5, LEASE) == []  # all leased
    assert await inbox.size() == 3


async def test_a_full_inbox_refuses_until_one_is_settled(inbox: SQLiteInbox) -> None:
    for body in (b"a", b"b", b"c"):
        assert await inbox.append(body)
    assert not await inbox.append(b"d")
    [item] = await inbox.lease(1, LEASE)
    assert await inbox.settle(item.id, item.attempt)
    assert await inbox.size() == 2
    assert await inbox.append(b"d")


async def test_a_retry_comes_back_after_its_delay_as_the_next_attempt(
    inbox: SQLiteInbox,
) -> None:
    await inbox.append(b"a")
    [item] = await inbox.lease(1, LEASE)
    assert await inbox.retry(item.id, item.attempt, 5.0)
    assert await inbox.lease(1, LEASE) == []
    clock_of(inbox).advance(5.0)
    [again] = await inbox.lease(1, LEASE)
    assert (again.id, again.attempt) == (item.id, 2)


async def test_an_ended_lease_is_leased_again_and_the_old_holder_cannot_settle_it(
    inbox: SQLiteInbox,
) -> None:
    await inbox.append(b"a")
    [item] = await inbox.lease(1, LEASE)
    clock_of(inbox).advance(LEASE + 1)
    [again] = await inbox.lease(1, LEASE)
    assert again.attempt == 2
    assert not await inbox.settle(item.id, item.attempt)  # the stale lease
    assert not await inbox.retry(item.id, item.attempt, 0.0)
    assert await inbox.settle(again.id, again.attempt)
    assert await inbox.size() == 0


async def test_leases_of_a_process_that_is_gone_are_taken_back(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    leaser = (
        "import anyio, sys\n"
        "from mpsflow.inbox import SQLiteInbox\n"
        "async def main():\n"
        "    box = SQLiteInbox(sys.argv[1])\n"
        "    await box.append(b'a'); await box.append(b'b')\n"
        "    print(len(await box.lease(5, 3600)))\n"
        "    await box.close()\n"
        "anyio.run(main)\n"
    )
    done = await anyio.run_process([sys.executable, "-c", leaser, str(path)])
    assert done.stdout.decode().strip() == "2"  # leased for an hour by a process that has ended
    inbox = SQLiteInbox(path)
    try:
        assert await inbox.lease(5, LEASE) == []
        assert await inbox.reclaim() == 2
        assert [i.body for i in await inbox.lease(5, LEASE)] == [b"a", b"b"]
        assert await inbox.reclaim() == 0  # our own leases stay ours
    finally:
        await inbox.close()


async def test_a_closed_inbox_is_unavailable(tmp_path: Path) -> None:
    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3")
    await inbox.close()
    with pytest.raises(InboxUnavailable, match="closed"):
        await inbox.append(b"a")


async def test_a_broken_database_is_unavailable_and_nothing_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    inbox = SQLiteInbox(path)
    try:
        with pytest.raises(InboxUnavailable, match=str(path)):
            await inbox.append(b"a")
    finally:
        await inbox.close()


def test_max_items_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="max_items"):
        SQLiteInbox(tmp_path / "x", max_items=0)
