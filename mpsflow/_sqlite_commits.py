"""What waits for the commit of operations answered in place.

A writer answering in place (:meth:`mpsflow._sqlite.SQLiteWriter.run_now`) tells its callers
that a claim is taken or a completion written before its transaction commits. What must not
become durable before those operations do waits here: the inbox marks a notification done only
once the completions of its handlers are committed, or a crash in between would leave a done
notification without the record that it ran.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final, Protocol

__all__ = ["WAITING", "Committing", "after_commit", "committed", "run_all"]

_log = logging.getLogger("mpsflow.sqlite")


class Committing(Protocol):
    """A writer with operations answered in place and not committed yet."""

    def when_committed(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` once what it answered so far is committed (or written again)."""
        ...


WAITING: Final[set[Committing]] = set()
"""The writers of this process with answered operations not committed yet (a writer adds
itself when it opens such a transaction and takes itself out once it is over)."""


def after_commit(callback: Callable[[], object]) -> None:
    """Run ``callback`` once every operation answered in place in this process so far is
    committed (or written again after a failed commit); at once when none waits."""
    for writer in WAITING:
        writer.when_committed(lambda: after_commit(callback))
        return
    callback()


async def committed() -> None:
    """Return once what was answered in place so far is committed (see :func:`after_commit`);
    at once when nothing waits."""
    if not WAITING:
        return
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def now_committed() -> None:
        if not done.done():
            done.set_result(None)

    after_commit(now_committed)
    await done


def run_all(callbacks: list[Callable[[], object]]) -> None:
    """Run what waited for a commit; one that fails is logged and the others still run."""
    for callback in callbacks:
        try:
            callback()
        except Exception:
            _log.exception("a callback waiting for a commit failed")
