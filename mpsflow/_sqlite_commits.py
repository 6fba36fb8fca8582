"""What waits for a commit: the callers of a batch, and what waits for operations answered in
place.

A writer answering in place (:meth:`mpsflow._sqlite.SQLiteWriter.run_now`) tells its callers
that a claim is taken or a completion written before its transaction commits. What must not
become durable before those operations do waits here: the inbox marks a notification done only
once the completions of its handlers are committed, or a crash in between would leave a done
notification without the record that it ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final, Protocol

__all__ = [
    "WAITING",
    "BatchOutcome",
    "Committing",
    "after_commit",
    "answer",
    "answer_from_thread",
    "committed",
    "run_all",
]

BatchOutcome = list[object] | BaseException
"""What a batch came to: each operation's result in order, or what made it roll back."""

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
    committed (or written again after a failed commit); at once when none waits.

    When writing them again fails too, ``callback`` still runs (and an error is logged): a
    notification left pending would run its handlers again, which is worse than a missing
    record.
    """
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


def answer(batch: list[tuple[Any, asyncio.Future[Any]]], outcome: BatchOutcome) -> None:
    """Answer the callers of a batch run on the event loop's thread (each ``(operation,
    future)``): their results, or everyone the exception that rolled the batch back."""
    _settle(_answers(batch, outcome), isinstance(outcome, BaseException))


def answer_from_thread(batch: list[tuple[Any, asyncio.Future[Any]]], outcome: BatchOutcome) -> None:
    """Answer a batch the writer's thread ran: one wake-up per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], object]]] = {}
    for pair in _answers(batch, outcome):
        by_loop.setdefault(pair[0].get_loop(), []).append(pair)
    for loop, answers in by_loop.items():
        # A closed loop (RuntimeError) has nobody waiting for these answers.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, answers, isinstance(outcome, BaseException))


def _answers(
    batch: list[tuple[Any, asyncio.Future[Any]]], outcome: BatchOutcome
) -> list[tuple[asyncio.Future[Any], object]]:
    if isinstance(outcome, BaseException):
        return [(future, outcome) for _, future in batch]
    return [(future, result) for (_, future), result in zip(batch, outcome, strict=True)]


def _settle(answers: list[tuple[asyncio.Future[Any], object]], failed: bool) -> None:
    for future, result in answers:
        if future.done():  # its caller was cancelled
            continue
        if failed:
            assert isinstance(result, BaseException)
            future.set_exception(result)
        else:
            future.set_result(result)
