"""The aiohttp session of an HTTP client or sink: the caller's, or one opened and closed here.

The webhook and SCF sinks and the CMQ client all take an optional ``session`` to share; without
one they open their own on start and close it on close. ``SessionHolder`` is that rule, once.
"""

from __future__ import annotations

import aiohttp

__all__ = ["SessionHolder"]


class SessionHolder:
    """Holds ``session``: the one given (used as is, never closed here) or one of its own.

    ``open`` returns the session, first opening one of its own when there is none (again after
    ``close``, or when its own was closed); ``close`` closes only a session it opened.
    """

    __slots__ = ("_owned", "session")

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self.session = session
        """The session in use; ``None`` before ``open`` and after ``close`` of its own."""
        self._owned = session is None

    def open(self) -> aiohttp.ClientSession:
        """The session, opening one of its own when there is none to use."""
        if self.session is None or (self._owned and self.session.closed):
            self.session = aiohttp.ClientSession()
        return self.session

    async def close(self) -> None:
        """Close the session if it is one of its own (a given one stays open)."""
        if self._owned and self.session is not None:
            await self.session.close()
            self.session = None
