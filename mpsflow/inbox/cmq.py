"""A TDMQ-CMQ queue as the inbox: HTTP receivers on any number of machines append to it, and
CMQ workers anywhere consume it.

An append is a ``SendMessage`` of the raw notification; it is answered 200 only once CMQ
accepted the message (answered with its ``msgId``): from then on the queue keeps it. The
consumer is a :class:`~mpsflow.sources.cmq.CmqSource` whose deliveries are admitted: the
receiver checked the signature at the door, so a message that waited longer than its
``Timestamp`` allows is still processed. The queue's own visibility timeout is the lease;
set it at least as long as a notification's processing may take (``--handler-budget``).

CMQ bounds the queue by its ``maxMsgHeapNum``: a full queue (code 4410) is a full inbox,
answered 503. Other refusals and an endpoint that cannot be reached are
:class:`~mpsflow.errors.InboxUnavailable`, also answered 503, so the sender keeps the
notification. A body larger than the queue's ``maxMsgSize`` (code 4400) can never be
appended: it is :class:`~mpsflow.errors.InboxRefusedBody`, which the receiver records as a
dead letter and answers 413, with what to change. CMQ tells no count a receiver could check
for readiness, so an append that failed is the sign: the inbox reports itself unavailable
(``/readyz`` answers 503) until an append works again, or for ``unavailable_for`` seconds.
"""

from __future__ import annotations

import logging

from mpsflow.clock import Clock, SystemClock
from mpsflow.errors import InboxRefusedBody, InboxUnavailable
from mpsflow.sources.cmq import CmqSource
from mpsflow.tencentcloud.cmq.client import MAX_BATCH, CmqClient
from mpsflow.tencentcloud.cmq.errors import (
    CmqError,
    CmqMessageTooLargeError,
    CmqQueueFullError,
)

__all__ = ["CmqInbox"]

_log = logging.getLogger("mpsflow.inbox")


class CmqInbox:
    """An :class:`~mpsflow.inbox.base.Inbox` that is the CMQ queue ``queue`` at ``client``.

    ``pollers``, ``batch_size`` and ``wait_seconds`` configure the consumer's long polls (see
    :class:`~mpsflow.sources.cmq.CmqSource`). ``close`` closes the client.

    After an append that failed (the queue unreachable, or refusing), :meth:`size` raises
    ``InboxUnavailable`` until one works again or ``unavailable_for`` seconds have passed: a
    receiver that refuses every callback is not ready, and one that no traffic reaches any more
    (a load balancer took it out) is ready again soon and tries.
    """

    def __init__(
        self,
        client: CmqClient,
        queue: str,
        *,
        pollers: int = 2,
        batch_size: int = MAX_BATCH,
        wait_seconds: int = 30,
        unavailable_for: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.queue = queue
        self.pollers = pollers
        self.batch_size = batch_size
        self.wait_seconds = wait_seconds
        self.unavailable_for = unavailable_for
        self._clock = clock or SystemClock()
        self._closed = False
        self._failed: tuple[float, str] | None = None
        """When the last append failed (monotonic) and why; None once one worked."""

    def __repr__(self) -> str:
        return f"CmqInbox({self.client.url!r}, queue={self.queue!r})"

    def describe(self) -> str:
        """``cmq:`` and the queue's name at its API address."""
        return f"cmq:{self.queue} at {self.client.url}"

    async def append(self, body: bytes) -> bool:
        """Send ``body`` to the queue; True once CMQ accepted it, False when it is full."""
        if self._closed:
            raise InboxUnavailable(f"inbox {self.describe()} is closed")
        try:
            await self.client.send(self.queue, body)
        except CmqQueueFullError:
            return False
        except CmqMessageTooLargeError as exc:
            raise InboxRefusedBody(
                f"a {len(body)}-byte notification is larger than the maxMsgSize of CMQ queue"
                f" {self.queue}: raise it (CMQ allows up to 1 MB); it is kept as a dead letter"
            ) from exc
        except CmqError as exc:
            reason = f"inbox {self.describe()} failed: {exc}"
            self._failed = (self._clock.monotonic(), reason)
            raise InboxUnavailable(reason) from exc
        self._failed = None
        return True

    async def size(self) -> int | None:
        """None: unknown here (the queue's counts are in its console, ``activeMsgNum``).
        Raises ``InboxUnavailable`` while the last append's failure is recent."""
        failed = self._failed
        if failed is not None and self._clock.monotonic() - failed[0] < self.unavailable_for:
            raise InboxUnavailable(failed[1])
        return None

    def consumer(
        self, *, name: str = "inbox", max_in_flight: int = 64, lease_seconds: float = 60.0
    ) -> CmqSource:
        """A :class:`~mpsflow.sources.cmq.CmqSource` of admitted deliveries; the queue's
        visibility timeout is the lease, so ``lease_seconds`` is not used."""
        return CmqSource(
            self.client,
            self.queue,
            name=name,
            max_in_flight=max_in_flight,
            pollers=self.pollers,
            batch_size=self.batch_size,
            wait_seconds=self.wait_seconds,
            admitted=True,
        )

    async def close(self) -> None:
        """Close the client's HTTP session; later appends raise ``InboxUnavailable``."""
        self._closed = True
        await self.client.aclose()
