"""An app served by an ``HttpSource`` on loopback, and the bodies and records its tests use.

Shared by the HTTP source tests (``test_http.py``, ``test_http_limits.py``) and ``mpsflow
send`` (``tests/cli/test_send.py``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import aiohttp
import anyio

from mpsflow import App
from mpsflow.deadletter import DeadLetter
from mpsflow.sinks.memory import MemorySink
from mpsflow.sources.http import HttpSource
from mpsflow.testing import build_notification, media_result

__all__ = ["base_url", "make_app", "posted", "records", "seed_like", "serve"]


def make_app(**kwargs: Any) -> tuple[App, MemorySink]:
    """An app whose dead letters land in memory and whose drain is short."""
    dead = MemorySink()
    kwargs.setdefault("shutdown_timeout", 5.0)
    return App(dead_letters=dead, **kwargs), dead


@asynccontextmanager
async def serve(app: App, **options: Any) -> AsyncIterator[HttpSource]:
    """Run ``app`` on an ``HttpSource`` on a free loopback port until the block ends."""
    options.setdefault("port", 0)
    source = HttpSource(**options)
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(app.run, source, handle_signals=False))
        await source.wait_serving()
        try:
            yield source
        finally:
            app.stop()


@asynccontextmanager
async def posted(app: App, data: Any, **options: Any) -> AsyncIterator[aiohttp.ClientResponse]:
    """The response to ``data`` POSTed once to ``app`` served as by ``serve(app, **options)``."""
    async with (
        serve(app, **options) as source,
        aiohttp.ClientSession() as session,
        session.post(source.url, data=data) as response,
    ):
        yield response


def base_url(source: HttpSource) -> str:
    """``http://host:port`` of a serving source (its callback URL without the path)."""
    assert source.address is not None
    host, port = source.address
    return f"http://{host}:{port}"


def seed_like(task_id: str = "task-1", **kwargs: Any) -> bytes:
    """A WorkflowTask notification with one finished Transcode result."""
    return json.dumps(
        build_notification(
            task_id=task_id,
            media_results=[media_result("Transcode", output={"Path": "/out/a.mp4"})],
            **kwargs,
        )
    ).encode()


def records(sink: MemorySink) -> list[DeadLetter]:
    """The dead letters ``sink`` received."""
    return [r for r in sink.records if isinstance(r, DeadLetter)]
