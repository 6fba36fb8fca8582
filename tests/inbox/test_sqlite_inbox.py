"""SQLiteInbox specifics (the contract is in test_contract.py): leases of a process that is
gone taken back, a broken database file, settings checked."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from mpsflow.errors import ConfigurationError, InboxUnavailable
from mpsflow.inbox import SQLiteInbox

LEASE = 30.0


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
