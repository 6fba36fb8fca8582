"""A ``WorkflowTask`` handler that says when it starts and then waits: work left in flight."""

from __future__ import annotations

import anyio

from mpsflow import App, Context
from mpsflow.events import WorkflowTask

__all__ = ["blocking_handler"]


def blocking_handler(app: App, release: anyio.Event | None = None) -> anyio.Event:
    """Register a handler on ``app`` that sets the returned event when it starts.

    It then waits for ``release``, or forever when there is none.
    """
    started = anyio.Event()

    @app.on("WorkflowTask")
    async def blocked(event: WorkflowTask, ctx: Context) -> None:
        started.set()
        if release is None:
            await anyio.sleep_forever()
        else:
            await release.wait()

    return started
