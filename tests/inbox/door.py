"""What the inbox tests post at a receiver's door: signed notifications, and the answer."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from mpsflow.sources.http import HttpSource
from mpsflow.testing import build_notification, sign_payload
from tests.sources.http_app import base_url

__all__ = ["KEY", "post", "probe", "signed"]

KEY = "inbox-test-key"


def signed(task_id: str, *, expires_in: float = 600) -> bytes:
    payload: dict[str, Any] = build_notification(task_id=task_id)
    sign_payload(payload, KEY, expires_at=int(time.time() + expires_in))
    return json.dumps(payload).encode()


async def post(url: str, body: bytes) -> tuple[int, dict[str, Any], str]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, data=body) as response,
    ):
        return response.status, await response.json(), response.headers.get("Retry-After", "")


async def probe(source: HttpSource) -> tuple[tuple[int, object], str]:
    """``/readyz``'s status and JSON, and the text of ``/metrics``."""
    base = base_url(source)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/readyz") as ready:
            readiness = (ready.status, await ready.json())
        async with session.get(f"{base}/metrics") as metrics:
            return readiness, await metrics.text()
