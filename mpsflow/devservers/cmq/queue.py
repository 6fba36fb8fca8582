"""One in-memory queue of the local CMQ server: send, receive with visibility timeouts and fresh
receipt handles, delete, delayed messages, long polls woken by sends, and a bound on the
messages it holds (CMQ's ``maxMsgHeapNum``).

A long poll that is cancelled while it waits (the server cancels it when its client goes away)
takes nothing: messages are marked received only by the poll that returns them.

Time comes from an injectable :class:`~mpsflow.clock.Clock`, so tests expire visibility with a
:class:`~mpsflow.clock.FakeClock` instead of sleeping.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import anyio

from mpsflow.clock import Clock
from mpsflow.devservers.cmq.storage import StoredMessage, StoredQueue

__all__ = [
    "DEFAULT_MAX_MSG_HEAP_NUM",
    "DEFAULT_MAX_MSG_SIZE",
    "DEFAULT_VISIBILITY_TIMEOUT",
    "LocalQueue",
    "QueuedMessage",
    "check_max_msg_heap_num",
]

DEFAULT_VISIBILITY_TIMEOUT: Final = 30
DEFAULT_MAX_MSG_SIZE: Final = 65536
DEFAULT_MAX_MSG_HEAP_NUM: Final = 10_000_000
"""Default ``maxMsgHeapNum``, the most messages a queue holds ("最大堆积消息数").

Tencent's CMQ CreateQueue and SetQueueAttributes docs
(cloud.tencent.com/document/product/406/5832 and /406/5835; the same text in the
``CreateQueue`` model of the ``cmq`` API 3.0 SDKs) give its range as 1,000,000-10,000,000 during
the public beta and up to 1,000,000-1,000,000,000 after general availability, and its default
as 10,000,000 during the beta and 100,000,000 after; they never say which phase applies now. We
take 10,000,000. A send to a queue that holds that many messages answers 4410 ("queue heap
(``maxMsgHeapNum``) full": shared/protocol/cmq-and-scf.md §A.4, from the CMQ error codes,
/406/5903). Unlike real CMQ, this development server accepts any value from 1, so that tests
can fill a queue with a few messages.
"""


def check_max_msg_heap_num(value: int) -> int:
    """``value`` if it is a valid ``maxMsgHeapNum`` here (at least 1); ValueError otherwise."""
    if value < 1:
        raise ValueError(f"maxMsgHeapNum must be at least 1, not {value}")
    return value


@dataclass(slots=True)
class QueuedMessage:
    """A message in a :class:`LocalQueue`; ``handle`` is its latest receipt handle."""

    msg_id: str
    body: str
    seq: int
    enqueue_time: float
    visible_at: float
    first_dequeue_time: float = 0.0
    dequeue_count: int = 0
    handle: str | None = None
    generation: int = 0


class LocalQueue:
    """One in-memory queue: ready messages ordered by the time they become visible.

    ``max_msg_heap_num`` is CMQ's ``maxMsgHeapNum``; :meth:`room` is how many more messages
    the queue accepts. Every message not yet deleted counts against it, whether visible,
    received and in flight, or delayed: the bound is on ``len(queue)``, not on
    :meth:`visible_count`.

    A heap holds ``(visible_at, seq, generation, msg_id)``; entries of deleted or re-received
    messages go stale and are skipped when they surface, which keeps receive and delete cheap.
    """

    def __init__(
        self,
        name: str,
        clock: Clock,
        *,
        visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT,
        max_msg_size: int = DEFAULT_MAX_MSG_SIZE,
        polling_wait_seconds: int = 0,
        max_msg_heap_num: int = DEFAULT_MAX_MSG_HEAP_NUM,
    ) -> None:
        self.name = name
        self.visibility_timeout = visibility_timeout
        self.max_msg_size = max_msg_size
        self.polling_wait_seconds = polling_wait_seconds
        self.max_msg_heap_num = check_max_msg_heap_num(max_msg_heap_num)
        self._clock = clock
        self._messages: dict[str, QueuedMessage] = {}
        self._handles: dict[str, str] = {}
        self._heap: list[tuple[float, int, int, str]] = []
        self._seq = itertools.count()
        self._handle_prefix = secrets.token_hex(4)
        self._handle_seq = itertools.count(1)
        self._arrival: anyio.Event | None = None
        self._waiting = 0
        self._waiting_changed: anyio.Event | None = None
        self.closed = False
        """Set while the server shuts down: long polls return at once."""
        self.dirty = False

    def __len__(self) -> int:
        return len(self._messages)

    def room(self) -> int:
        """How many more messages the queue accepts before ``max_msg_heap_num`` (0 when full).

        Every message not yet deleted counts: visible, in flight and delayed.
        """
        return max(self.max_msg_heap_num - len(self._messages), 0)

    def visible_count(self) -> int:
        """Messages a receive would get now."""
        now = self._clock.time()
        return sum(1 for m in self._messages.values() if m.visible_at <= now)

    def inflight_count(self) -> int:
        """Messages received and not deleted, still inside their visibility timeout."""
        now = self._clock.time()
        return sum(1 for m in self._messages.values() if m.dequeue_count and m.visible_at > now)

    def delayed_count(self) -> int:
        """Messages sent with a delay that has not passed yet."""
        now = self._clock.time()
        return sum(1 for m in self._messages.values() if not m.dequeue_count and m.visible_at > now)

    def waiting_count(self) -> int:
        """Long polls currently parked on this queue."""
        return self._waiting

    async def wait_for_waiting(self, count: int) -> None:
        """Return once exactly ``count`` long polls are parked on this queue (for tests)."""
        while self._waiting != count:
            if self._waiting_changed is None:
                self._waiting_changed = anyio.Event()
            await self._waiting_changed.wait()

    def _set_waiting(self, delta: int) -> None:
        self._waiting += delta
        if self._waiting_changed is not None:
            self._waiting_changed.set()
            self._waiting_changed = None

    def put(self, body: str, delay: int = 0) -> str:
        """Enqueue ``body``; it becomes receivable after ``delay`` seconds."""
        now = self._clock.time()
        msg_id = uuid.uuid4().hex
        message = QueuedMessage(msg_id, body, next(self._seq), now, now + delay)
        self._insert(message)
        self._wake()
        return msg_id

    def take(self, limit: int) -> list[QueuedMessage]:
        """Receive up to ``limit`` visible messages, hiding each for the visibility timeout."""
        now = self._clock.time()
        heap = self._heap
        taken: list[QueuedMessage] = []
        while heap and len(taken) < limit:
            visible_at, _, generation, msg_id = heap[0]
            if visible_at > now:
                break
            heapq.heappop(heap)
            message = self._messages.get(msg_id)
            if message is None or message.generation != generation:
                continue
            if message.handle is not None:
                self._handles.pop(message.handle, None)
            message.handle = f"{self._handle_prefix}{next(self._handle_seq):x}"
            self._handles[message.handle] = msg_id
            message.generation += 1
            message.dequeue_count += 1
            if not message.first_dequeue_time:
                message.first_dequeue_time = now
            message.visible_at = now + self.visibility_timeout
            heapq.heappush(heap, (message.visible_at, message.seq, message.generation, msg_id))
            taken.append(message)
        if taken:
            self.dirty = True
        return taken

    async def poll(self, limit: int, wait: float) -> list[QueuedMessage]:
        """Take now, or long-poll until a send, a message turning visible, or ``wait`` ends.

        Waiting is on the clock, so a fake clock ends an empty long poll at once (having moved
        time forward by the wait) and real time is never spent in tests.
        """
        deadline = self._clock.time() + wait
        while True:
            arrival = self.arrival()
            taken = self.take(limit)
            if taken or self.closed:
                return taken
            now = self._clock.time()
            remaining = deadline - now
            if remaining <= 0:
                return []
            upcoming = self.next_visible_at()
            if upcoming is not None:
                remaining = min(remaining, max(upcoming - now, 0.0))
            self._set_waiting(1)
            try:
                await _wait(arrival, self._clock, remaining)
            finally:
                self._set_waiting(-1)

    def close(self) -> None:
        """Release every parked long poll (they answer "no message")."""
        self.closed = True
        self._wake()

    def delete(self, receipt_handle: str) -> bool:
        """Delete by the latest receipt handle; False if it is unknown, stale or expired."""
        msg_id = self._handles.pop(receipt_handle, None)
        if msg_id is None:
            return False
        message = self._messages[msg_id]
        message.handle = None
        if self._clock.time() >= message.visible_at:
            return False
        del self._messages[msg_id]
        self.dirty = True
        return True

    def next_visible_at(self) -> float | None:
        """When the earliest hidden message may become visible (None if the queue is empty)."""
        return self._heap[0][0] if self._heap else None

    def arrival(self) -> anyio.Event:
        """An event set by the next send, for long polls to wait on."""
        if self._arrival is None:
            self._arrival = anyio.Event()
        return self._arrival

    def _wake(self) -> None:
        if self._arrival is not None:
            self._arrival.set()
            self._arrival = None

    def _insert(self, message: QueuedMessage) -> None:
        self._messages[message.msg_id] = message
        heapq.heappush(
            self._heap, (message.visible_at, message.seq, message.generation, message.msg_id)
        )
        self.dirty = True

    def snapshot(self) -> StoredQueue:
        """The queue as saved in the data file."""
        ordered = sorted(self._messages.values(), key=lambda m: m.seq)
        return StoredQueue(
            name=self.name,
            visibility_timeout=self.visibility_timeout,
            max_msg_size=self.max_msg_size,
            polling_wait_seconds=self.polling_wait_seconds,
            max_msg_heap_num=self.max_msg_heap_num,
            messages=[
                StoredMessage(
                    msg_id=m.msg_id,
                    msg_body=m.body,
                    enqueue_time=m.enqueue_time,
                    visible_at=m.visible_at,
                    first_dequeue_time=m.first_dequeue_time,
                    dequeue_count=m.dequeue_count,
                )
                for m in ordered
            ],
        )

    def restore(self, stored: Iterable[StoredMessage]) -> None:
        """Add the messages of a saved queue (see :meth:`snapshot`).

        All of them, even beyond ``max_msg_heap_num``: a queue restored over its bound refuses
        sends until consumers have deleted enough.
        """
        for item in stored:
            message = QueuedMessage(
                msg_id=item.msg_id,
                body=item.msg_body,
                seq=next(self._seq),
                enqueue_time=item.enqueue_time,
                visible_at=item.visible_at,
                first_dequeue_time=item.first_dequeue_time,
                dequeue_count=item.dequeue_count,
            )
            self._insert(message)


async def _wait(event: anyio.Event, clock: Clock, seconds: float) -> None:
    """Return when ``event`` is set or ``clock`` has slept ``seconds``, whichever comes first."""
    async with anyio.create_task_group() as group:

        async def _timer() -> None:
            await clock.sleep(seconds)
            group.cancel_scope.cancel()

        group.start_soon(_timer)
        await event.wait()
        group.cancel_scope.cancel()
