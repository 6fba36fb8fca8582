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
dead letter and answers 413, with what to change.
"""

from __future__ import annotations

import logging

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
    """

    def __init__(
        self,
        client: CmqClient,
        queue: str,
        *,
        pollers: int = 2,
        batch_size: int = MAX_BATCH,
        wait_seconds: int = 30,
    ) -> None:
        self.client = client
        self.queue = queue
        self.pollers = pollers
        self.batch_size = batch_size
        self.wait_seconds = wait_seconds
        self._closed = False

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
            raise InboxUnavailable(f"inbox {self.describe()} failed: {exc}") from exc
        return True

    async def size(self) -> int | None:
        """None: unknown here (the queue's counts are in its console, ``activeMsgNum``)."""
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
