"""What the inbox tests post at a receiver's door: signed notifications, and the answer."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from mpsflow.testing import build_notification, sign_payload

__all__ = ["KEY", "post", "signed"]

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
