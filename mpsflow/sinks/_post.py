"""One POST for the HTTP-based sinks: bounded reply, no redirects, errors as SinkError."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import aiohttp

from mpsflow.errors import SinkError

__all__ = ["post"]


async def post(
    session: aiohttp.ClientSession,
    url: str | object,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    max_reply: int,
    describe: Callable[[BaseException], str],
) -> tuple[int, bytes]:
    """POST ``body``; return the status and at most ``max_reply`` bytes of the reply.

    Network errors and timeouts raise a transient ``SinkError`` whose message is
    ``describe(exc)`` (``from None``: aiohttp errors may spell out URLs carrying keys).
    """
    try:
        async with session.post(
            url,  # type: ignore[arg-type]
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            return response.status, await response.content.read(max_reply)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise SinkError(describe(exc), transient=True) from None
