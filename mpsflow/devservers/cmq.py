"""A local CMQ-compatible server, for development and tests only (not for production).

It answers the same ``/v2/index.php`` form API as TDMQ-CMQ (``protocol/cmq-and-scf.md`` §A):
Send/BatchSend/Receive/BatchReceive/Delete/BatchDeleteMessage, signed requests checked against
the SecretKey of the SecretId (4100 on mismatch), CMQ-shaped JSON errors, long polling woken by
sends, per-queue visibility timeouts with fresh receipt handles on every receive (an old one
gives 4430), delayed messages, the batch limits (16 per batch, 64 KB per batch send) and
``maxMsgSize`` (4400). State lives in memory and can be saved to a JSON file.

Time comes from an injectable :class:`~mpsflow.clock.Clock`, so tests expire visibility with a
:class:`~mpsflow.clock.FakeClock` instead of sleeping. Run it with
``python -m mpsflow.devservers.cmq`` (or ``mpsflow cmq-server``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import re
import secrets
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, TypeVar
from urllib.parse import parse_qsl

import anyio
import msgspec
from aiohttp import web

from mpsflow.clock import Clock, SystemClock
from mpsflow.errors import ConfigurationError
from mpsflow.tencentcloud.cmq.credentials import Credential
from mpsflow.tencentcloud.cmq.errors import (
    CODE_AUTH_FAILED,
    CODE_BATCH_DELETE_ALL_FAILED,
    CODE_BATCH_DELETE_PARTIAL,
    CODE_INVALID_PARAMETER,
    CODE_MESSAGE_TOO_LARGE,
    CODE_NO_MESSAGE,
    CODE_QUEUE_NOT_FOUND,
    CODE_RECEIPT_HANDLE_INVALID,
    CODE_THROTTLED,
)
from mpsflow.tencentcloud.cmq.models import (
    BatchDeleteMessageResponse,
    BatchReceiveMessageResponse,
    BatchSendMessageResponse,
    CmqResponse,
    DeleteFailure,
    Message,
    MessageId,
    ReceiveMessageResponse,
    SendMessageResponse,
)
from mpsflow.tencentcloud.cmq.signing import DEFAULT_PATH, string_to_sign, verify

__all__ = [
    "DEFAULT_MAX_MSG_SIZE",
    "DEFAULT_VISIBILITY_TIMEOUT",
    "DESCRIPTION",
    "MAX_BATCH_BYTES",
    "CmqServer",
    "LocalQueue",
    "add_arguments",
    "build_parser",
    "main",
    "run_server",
]

DEFAULT_VISIBILITY_TIMEOUT: Final = 30
DEFAULT_MAX_MSG_SIZE: Final = 65536
MAX_BATCH_BYTES: Final = 65536
"""Total size of the bodies of one BatchSendMessage (§A.4)."""

_MAX_BATCH: Final = 16
_MAX_WAIT: Final = 30
_MAX_DELAY: Final = 1_296_000
_MAX_REQUEST_BYTES: Final = 64 << 20
_QUEUE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_ENCODER = msgspec.json.Encoder()
_log = logging.getLogger("mpsflow.devservers.cmq")
_S = TypeVar("_S", bound="CmqServer")
_Action = Callable[["LocalQueue", Mapping[str, str], str], Awaitable[CmqResponse]]


class _Fail(Exception):
    """A CMQ business error: answered with HTTP 200 and this code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(module: int, text: str) -> _Fail:
    return _Fail(CODE_INVALID_PARAMETER, f"({module}){text}")


@dataclass(slots=True)
class _Message:
    msg_id: str
    body: str
    seq: int
    enqueue_time: float
    visible_at: float
    first_dequeue_time: float = 0.0
    dequeue_count: int = 0
    handle: str | None = None
    generation: int = 0


class _StoredMessage(msgspec.Struct, rename="camel"):
    msg_id: str
    msg_body: str
    enqueue_time: float
    visible_at: float
    first_dequeue_time: float = 0.0
    dequeue_count: int = 0


class _StoredQueue(msgspec.Struct, rename="camel"):
    name: str
    visibility_timeout: int
    max_msg_size: int
    polling_wait_seconds: int
    messages: list[_StoredMessage]


class _Snapshot(msgspec.Struct):
    version: int
    queues: list[_StoredQueue]


class LocalQueue:
    """One in-memory queue: ready messages ordered by the time they become visible.

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
    ) -> None:
        self.name = name
        self.visibility_timeout = visibility_timeout
        self.max_msg_size = max_msg_size
        self.polling_wait_seconds = polling_wait_seconds
        self._clock = clock
        self._messages: dict[str, _Message] = {}
        self._handles: dict[str, str] = {}
        self._heap: list[tuple[float, int, int, str]] = []
        self._seq = itertools.count()
        self._handle_prefix = secrets.token_hex(4)
        self._handle_seq = itertools.count(1)
        self._arrival: anyio.Event | None = None
        self._waiting = 0
        self.closed = False
        """Set while the server shuts down: long polls return at once."""
        self.dirty = False

    def __len__(self) -> int:
        return len(self._messages)

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

    def put(self, body: str, delay: int = 0) -> str:
        """Enqueue ``body``; it becomes receivable after ``delay`` seconds."""
        now = self._clock.time()
        msg_id = uuid.uuid4().hex
        message = _Message(msg_id, body, next(self._seq), now, now + delay)
        self._insert(message)
        self._wake()
        return msg_id

    def take(self, limit: int) -> list[_Message]:
        """Receive up to ``limit`` visible messages, hiding each for the visibility timeout."""
        now = self._clock.time()
        heap = self._heap
        taken: list[_Message] = []
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

    async def poll(self, limit: int, wait: float) -> list[_Message]:
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
            self._waiting += 1
            try:
                await _wait(arrival, self._clock, remaining)
            finally:
                self._waiting -= 1

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

    def _insert(self, message: _Message) -> None:
        self._messages[message.msg_id] = message
        heapq.heappush(
            self._heap, (message.visible_at, message.seq, message.generation, message.msg_id)
        )
        self.dirty = True

    def _dump(self) -> _StoredQueue:
        ordered = sorted(self._messages.values(), key=lambda m: m.seq)
        return _StoredQueue(
            name=self.name,
            visibility_timeout=self.visibility_timeout,
            max_msg_size=self.max_msg_size,
            polling_wait_seconds=self.polling_wait_seconds,
            messages=[
                _StoredMessage(
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

    def _restore(self, stored: Iterable[_StoredMessage]) -> None:
        for item in stored:
            message = _Message(
                msg_id=item.msg_id,
                body=item.msg_body,
                seq=next(self._seq),
                enqueue_time=item.enqueue_time,
                visible_at=item.visible_at,
                first_dequeue_time=item.first_dequeue_time,
                dequeue_count=item.dequeue_count,
            )
            self._insert(message)


def _as_message(message: _Message) -> Message:
    assert message.handle is not None
    return Message(
        msg_id=message.msg_id,
        receipt_handle=message.handle,
        msg_body=message.body,
        enqueue_time=int(message.enqueue_time),
        first_dequeue_time=int(message.first_dequeue_time),
        next_visible_time=int(message.visible_at),
        dequeue_count=message.dequeue_count,
    )


def _int_param(
    params: Mapping[str, str], name: str, default: int | None, low: int, high: int
) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise _invalid(10000, f"missing parameter {name}")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(10000, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise _invalid(10000, f"{name} must be between {low} and {high}")
    return value


def _numbered(params: Mapping[str, str], prefix: str) -> list[str]:
    """Values of ``prefix.N`` parameters, checked: at most 16, N consecutive from 0 or 1."""
    found: dict[int, str] = {}
    for key, value in params.items():
        if key.startswith(prefix):
            suffix = key[len(prefix) :]
            if not suffix.isdigit():
                raise _invalid(10000, f"bad parameter name {key[:40]}")
            found[int(suffix)] = value
    if not found:
        raise _invalid(10000, f"missing parameter {prefix}n")
    if len(found) > _MAX_BATCH:
        raise _invalid(10370, f"at most {_MAX_BATCH} items per batch")
    start = min(found)
    if start not in (0, 1) or sorted(found) != list(range(start, start + len(found))):
        raise _invalid(10380, f"{prefix}n must be consecutive from 0 or 1")
    return [found[i] for i in sorted(found)]


async def _wait(event: anyio.Event, clock: Clock, seconds: float) -> None:
    """Return when ``event`` is set or ``clock`` has slept ``seconds``, whichever comes first."""
    async with anyio.create_task_group() as group:

        async def _timer() -> None:
            await clock.sleep(seconds)
            group.cancel_scope.cancel()

        group.start_soon(_timer)
        await event.wait()
        group.cancel_scope.cancel()


class CmqServer:
    """A development and test CMQ server: the data-plane HTTP API over in-memory queues.

    ``credentials`` maps SecretId to SecretKey (or is a list of :class:`Credential`; one with
    a ``token`` requires that ``Token``, one with ``expires_at`` stops working then). Unknown
    queues are created on first use unless ``auto_create`` is False (then 4440). With
    ``data_path`` the queues are loaded at construction, saved by :meth:`stop` and every
    ``save_interval`` wall-clock seconds while running. ``max_clock_skew`` (seconds) rejects
    requests whose ``Timestamp`` is that far from the clock; None accepts any.
    """

    def __init__(
        self,
        credentials: Mapping[str, str] | Iterable[Credential],
        *,
        clock: Clock | None = None,
        visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT,
        max_msg_size: int = DEFAULT_MAX_MSG_SIZE,
        polling_wait_seconds: int = 0,
        queues: Iterable[str] = (),
        auto_create: bool = True,
        data_path: str | os.PathLike[str] | None = None,
        save_interval: float = 5.0,
        max_clock_skew: float | None = None,
        path: str = DEFAULT_PATH,
    ) -> None:
        self._clock = clock or SystemClock()
        self._credentials: dict[str, Credential] = {}
        if isinstance(credentials, Mapping):
            for secret_id, secret_key in credentials.items():
                self.set_credential(Credential(secret_id, secret_key))
        else:
            for credential in credentials:
                self.set_credential(credential)
        self._defaults = (visibility_timeout, max_msg_size, polling_wait_seconds)
        self._queues: dict[str, LocalQueue] = {}
        self._auto_create = auto_create
        self._data_path = Path(data_path) if data_path is not None else None
        self._save_interval = save_interval
        self._max_clock_skew = max_clock_skew
        self._path = path
        self._throttle = 0
        self._runner: web.AppRunner | None = None
        self._saver: asyncio.Task[None] | None = None
        self._address: tuple[str, int] | None = None
        self._request_prefix = secrets.token_hex(4)
        self._request_seq = itertools.count(1)
        self._next_save: anyio.Event | None = None
        self._actions: dict[str, _Action] = {
            "SendMessage": self._send,
            "BatchSendMessage": self._batch_send,
            "ReceiveMessage": self._receive,
            "BatchReceiveMessage": self._batch_receive,
            "DeleteMessage": self._delete,
            "BatchDeleteMessage": self._batch_delete,
        }
        if self._data_path is not None and self._data_path.exists():
            self._load(self._data_path.read_bytes())
        for name in queues:
            if name not in self._queues:
                self.create_queue(name)

    def __repr__(self) -> str:
        return f"CmqServer(url={self.url if self._address else None!r}, queues={len(self._queues)})"

    # -- programmatic API (tests, embedding) -------------------------------------------------

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._address is None:
            raise RuntimeError("the server is not running")
        host, port = self._address
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        """The TCP port it listens on (useful after asking for port 0)."""
        return int(self.url.rsplit(":", 1)[1])

    @property
    def queue_names(self) -> list[str]:
        """Names of the existing queues."""
        return list(self._queues)

    def queue(self, name: str) -> LocalQueue:
        """The queue ``name``; KeyError if it does not exist."""
        return self._queues[name]

    def create_queue(
        self,
        name: str,
        *,
        visibility_timeout: int | None = None,
        max_msg_size: int | None = None,
        polling_wait_seconds: int | None = None,
    ) -> LocalQueue:
        """Create (or return the existing) queue, with per-queue settings."""
        if not _QUEUE_NAME.fullmatch(name):
            raise ValueError(f"invalid queue name {name!r}")
        existing = self._queues.get(name)
        if existing is not None:
            return existing
        vt, size, wait = self._defaults
        queue = LocalQueue(
            name,
            self._clock,
            visibility_timeout=vt if visibility_timeout is None else visibility_timeout,
            max_msg_size=size if max_msg_size is None else max_msg_size,
            polling_wait_seconds=wait if polling_wait_seconds is None else polling_wait_seconds,
        )
        queue.dirty = True
        self._queues[name] = queue
        return queue

    def set_credential(self, credential: Credential) -> None:
        """Accept requests signed with ``credential`` (replacing one with the same SecretId)."""
        self._credentials[credential.secret_id] = credential

    def remove_credential(self, secret_id: str) -> None:
        """Stop accepting ``secret_id``."""
        self._credentials.pop(secret_id, None)

    def throttle(self, requests: int) -> None:
        """Answer the next ``requests`` requests with 4420 (QPS throttled)."""
        self._throttle = requests

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0 picks a free port; see :attr:`url`)."""
        if self._runner is not None:
            raise RuntimeError("the server is already running")
        for queue in self._queues.values():
            queue.closed = False
        app = web.Application(client_max_size=_MAX_REQUEST_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0]
        self._address = (host, int(bound[1]))
        if self._data_path is not None and self._save_interval > 0:
            self._saver = asyncio.create_task(self._save_periodically())
        _log.info("local CMQ server listening on %s", self.url)

    async def stop(self) -> None:
        """Wake pending long polls, stop listening, and save if a data file is set."""
        for queue in self._queues.values():
            queue.close()
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
            self._saver = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._address = None
        if self._data_path is not None:
            await self.save()

    async def __aenter__(self: _S) -> _S:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- persistence -------------------------------------------------------------------------

    async def save(self) -> None:
        """Write every queue to the data file (atomically: a temporary file, then rename)."""
        if self._data_path is None:
            raise RuntimeError("no data file configured")
        snapshot = _Snapshot(version=1, queues=[q._dump() for q in self._queues.values()])
        for queue in self._queues.values():
            queue.dirty = False
        data = msgspec.json.encode(snapshot)
        await anyio.to_thread.run_sync(_write_atomically, self._data_path, data)
        if self._next_save is not None:
            self._next_save.set()
            self._next_save = None

    def next_save(self) -> anyio.Event:
        """An event set once the next save to the data file has completed."""
        if self._next_save is None:
            self._next_save = anyio.Event()
        return self._next_save

    async def _save_periodically(self) -> None:
        # Wall-clock sleep on purpose: a fake clock would make this loop spin.
        while True:
            await anyio.sleep(self._save_interval)
            if any(queue.dirty for queue in self._queues.values()):
                await self.save()

    def _load(self, data: bytes) -> None:
        snapshot = msgspec.json.decode(data, type=_Snapshot)
        for stored in snapshot.queues:
            queue = self.create_queue(
                stored.name,
                visibility_timeout=stored.visibility_timeout,
                max_msg_size=stored.max_msg_size,
                polling_wait_seconds=stored.polling_wait_seconds,
            )
            queue._restore(stored.messages)
            queue.dirty = False

    # -- HTTP --------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        if request.path != self._path:
            return web.Response(status=404, text="not found\n")
        if request.method == "POST":
            raw: bytes | str = await request.read()
        elif request.method == "GET":
            raw = request.rel_url.raw_query_string
        else:
            return web.Response(status=405, text="only GET and POST\n")
        request_id = f"{self._request_prefix}-{next(self._request_seq)}"
        response: CmqResponse
        try:
            params = _parse_form(raw)
            if self._throttle > 0:
                self._throttle -= 1
                raise _Fail(CODE_THROTTLED, "request frequency too high")
            self._authenticate(request.method, request.host, params)
            response = await self._dispatch(params, request_id)
        except _Fail as failure:
            response = CmqResponse(failure.code, failure.message, request_id)
        return web.Response(body=_ENCODER.encode(response), content_type="application/json")

    def _authenticate(self, method: str, host: str, params: Mapping[str, str]) -> None:
        secret_id = params.get("SecretId", "")
        signature = params.get("Signature", "")
        credential = self._credentials.get(secret_id)
        if credential is None or not signature:
            raise _Fail(CODE_AUTH_FAILED, "authentication failed: unknown SecretId or no Signature")
        signature_method = params.get("SignatureMethod", "HmacSHA1")
        text = string_to_sign(method, host, self._path, params)
        valid = verify(credential.secret_key, text, signature_method, signature)
        if not valid and method == "POST" and any(v.startswith("@") for v in params.values()):
            legacy = string_to_sign(method, host, self._path, params, skip_at_values=True)
            valid = verify(credential.secret_key, legacy, signature_method, signature)
        if not valid:
            raise _Fail(CODE_AUTH_FAILED, "authentication failed: signature mismatch")
        if (credential.token or "") != params.get("Token", ""):
            raise _Fail(CODE_AUTH_FAILED, "authentication failed: Token missing or invalid")
        now = self._clock.time()
        if credential.expires_at is not None and now >= credential.expires_at:
            raise _Fail(CODE_AUTH_FAILED, "authentication failed: credential expired")
        if self._max_clock_skew is not None:
            timestamp = _int_param(params, "Timestamp", None, 0, 2**63)
            if abs(now - timestamp) > self._max_clock_skew:
                raise _Fail(CODE_AUTH_FAILED, "authentication failed: Timestamp out of range")

    async def _dispatch(self, params: Mapping[str, str], request_id: str) -> CmqResponse:
        action = params.get("Action", "")
        handler = self._actions.get(action)
        if handler is None:
            raise _invalid(10000, f"unknown Action {action[:40]!r}")
        queue = self._queue_for(params)
        return await handler(queue, params, request_id)

    def _queue_for(self, params: Mapping[str, str]) -> LocalQueue:
        name = params.get("queueName", "")
        queue = self._queues.get(name)
        if queue is not None:
            return queue
        if not _QUEUE_NAME.fullmatch(name):
            raise _invalid(10020, "invalid queueName")
        if not self._auto_create:
            raise _Fail(CODE_QUEUE_NOT_FOUND, f"queue {name} does not exist")
        return self.create_queue(name)

    # -- actions -----------------------------------------------------------------------------

    async def _send(
        self, queue: LocalQueue, params: Mapping[str, str], request_id: str
    ) -> CmqResponse:
        body = params.get("msgBody", "")
        if not body:
            raise _invalid(10000, "msgBody must not be empty")
        delay = _int_param(params, "delaySeconds", 0, 0, _MAX_DELAY)
        size = len(body.encode("utf-8"))
        if size > queue.max_msg_size:
            raise _Fail(CODE_MESSAGE_TOO_LARGE, f"message larger than {queue.max_msg_size} bytes")
        msg_id = queue.put(body, delay)
        return SendMessageResponse(0, "", request_id, msg_id=msg_id)

    async def _batch_send(
        self, queue: LocalQueue, params: Mapping[str, str], request_id: str
    ) -> CmqResponse:
        bodies = _numbered(params, "msgBody.")
        delay = _int_param(params, "delaySeconds", 0, 0, _MAX_DELAY)
        sizes = [len(body.encode("utf-8")) for body in bodies]
        if any(not body for body in bodies):
            raise _invalid(10000, "msgBody must not be empty")
        if max(sizes) > queue.max_msg_size:
            raise _Fail(CODE_MESSAGE_TOO_LARGE, f"message larger than {queue.max_msg_size} bytes")
        if sum(sizes) > MAX_BATCH_BYTES:
            raise _Fail(CODE_MESSAGE_TOO_LARGE, f"batch larger than {MAX_BATCH_BYTES} bytes")
        ids = [MessageId(queue.put(body, delay)) for body in bodies]
        return BatchSendMessageResponse(0, "", request_id, msg_list=ids)

    async def _receive(
        self, queue: LocalQueue, params: Mapping[str, str], request_id: str
    ) -> CmqResponse:
        wait = _int_param(params, "pollingWaitSeconds", queue.polling_wait_seconds, 0, _MAX_WAIT)
        taken = await queue.poll(1, wait)
        if not taken:
            return CmqResponse(CODE_NO_MESSAGE, "no message", request_id)
        m = _as_message(taken[0])
        return ReceiveMessageResponse(
            0,
            "",
            request_id,
            msg_id=m.msg_id,
            receipt_handle=m.receipt_handle,
            msg_body=m.msg_body,
            enqueue_time=m.enqueue_time,
            first_dequeue_time=m.first_dequeue_time,
            next_visible_time=m.next_visible_time,
            dequeue_count=m.dequeue_count,
        )

    async def _batch_receive(
        self, queue: LocalQueue, params: Mapping[str, str], request_id: str
    ) -> CmqResponse:
        count = _int_param(params, "numOfMsg", None, 1, _MAX_BATCH)
        wait = _int_param(params, "pollingWaitSeconds", queue.polling_wait_seconds, 0, _MAX_WAIT)
        taken = await queue.poll(count, wait)
        if not taken:
            return CmqResponse(CODE_NO_MESSAGE, "no message", request_id)
        messages = [_as_message(m) for m in taken]
        return BatchReceiveMessageResponse(0, "", request_id, msg_info_list=messages)

    async def _delete(
        self, queue: LocalQueue, params: Mapping[str, str], request_id: str
    ) -> CmqResponse:
        handle = params.get("receiptHandle", "")
        if not handle:
            raise _invalid(10000, "missing parameter receiptHandle")
        if not queue.delete(handle):
            raise _Fail(CODE_RECEIPT_HANDLE_INVALID, "receipt handle invalid or expired")
        return CmqResponse(0, "", request_id)

    async def _batch_delete(
        self, queue: LocalQueue, params: Mapping[str, str], request_id: str
    ) -> CmqResponse:
        handles = _numbered(params, "receiptHandle.")
        failures = [
            DeleteFailure(CODE_RECEIPT_HANDLE_INVALID, "receipt handle invalid or expired", h)
            for h in handles
            if not queue.delete(h)
        ]
        if not failures:
            return CmqResponse(0, "", request_id)
        if len(failures) == len(handles):
            code, text = CODE_BATCH_DELETE_ALL_FAILED, "all receipt handles failed"
        else:
            code, text = CODE_BATCH_DELETE_PARTIAL, "some receipt handles failed"
        return BatchDeleteMessageResponse(code, text, request_id, error_list=failures)


def _parse_form(raw: bytes | str) -> dict[str, str]:
    """Decode a form body or query string; names and values are UTF-8 percent-encoded."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return dict(parse_qsl(text, keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError:
        raise _invalid(10000, "the request is not UTF-8") from None


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


# -- command line ----------------------------------------------------------------------------


DESCRIPTION: Final = (
    "A local CMQ-compatible server for development and tests (not for production): "
    "the TDMQ-CMQ /v2/index.php message API over in-memory queues, with signature "
    "checks, long polling, visibility timeouts and optional JSON persistence."
)
"""What the server is, as its ``--help`` says (shared with ``mpsflow cmq-server``)."""


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m mpsflow.devservers.cmq`` / ``mpsflow cmq-server``."""
    parser = argparse.ArgumentParser(prog="mpsflow cmq-server", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the server's options to ``parser`` (its own, or the ``mpsflow cmq-server`` one)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=9800, help="port; 0 picks a free one (9800)")
    parser.add_argument(
        "--secret-id",
        help="SecretId to accept (default: $MPSFLOW_CMQ_SECRET_ID, else $TENCENTCLOUD_SECRETID)",
    )
    parser.add_argument(
        "--secret-key",
        help="its SecretKey (default: $MPSFLOW_CMQ_SECRET_KEY or $TENCENTCLOUD_SECRETKEY)",
    )
    parser.add_argument(
        "--queue", action="append", default=[], metavar="NAME", help="create a queue (repeatable)"
    )
    parser.add_argument(
        "--no-auto-create",
        dest="auto_create",
        action="store_false",
        help="answer 4440 for unknown queues instead of creating them",
    )
    parser.add_argument(
        "--visibility-timeout",
        type=int,
        default=DEFAULT_VISIBILITY_TIMEOUT,
        help="seconds a received message stays hidden (30)",
    )
    parser.add_argument(
        "--max-msg-size",
        type=int,
        default=DEFAULT_MAX_MSG_SIZE,
        help="largest message in bytes (65536)",
    )
    parser.add_argument(
        "--polling-wait",
        type=int,
        default=0,
        help="long-poll seconds when a receive does not say (0)",
    )
    parser.add_argument("--data", metavar="FILE", help="load queues from FILE and save them back")
    parser.add_argument(
        "--save-interval", type=float, default=5.0, help="seconds between saves of --data (5)"
    )
    parser.add_argument(
        "--max-clock-skew",
        type=float,
        default=None,
        help="reject requests whose Timestamp is further off than this many seconds",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (INFO)")


def _resolve(value: str | None, *names: str) -> str:
    if value:
        return value
    for name in names:
        found = os.environ.get(name)
        if found:
            return found
    return ""


async def _serve(server: CmqServer, host: str, port: int) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        await server.start(host, port)
        try:
            print(f"mpsflow cmq-server listening on {server.url}", flush=True)
            async for _ in signals:
                break
        finally:
            with anyio.CancelScope(shield=True):
                await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGINT or SIGTERM; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run_server(args)
    except ConfigurationError as exc:
        parser.error(str(exc))


def run_server(args: argparse.Namespace) -> int:
    """Run the server from parsed :func:`add_arguments` options until SIGINT or SIGTERM.

    Raises ConfigurationError when no key pair is given; returns the exit status otherwise.
    """
    secret_id = _resolve(args.secret_id, "MPSFLOW_CMQ_SECRET_ID", "TENCENTCLOUD_SECRETID")
    secret_key = _resolve(args.secret_key, "MPSFLOW_CMQ_SECRET_KEY", "TENCENTCLOUD_SECRETKEY")
    if not secret_id or not secret_key:
        raise ConfigurationError(
            "a SecretId and a SecretKey are required (--secret-id/--secret-key)"
        )
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    try:
        server = CmqServer(
            {secret_id: secret_key},
            visibility_timeout=args.visibility_timeout,
            max_msg_size=args.max_msg_size,
            polling_wait_seconds=args.polling_wait,
            queues=args.queue,
            auto_create=args.auto_create,
            data_path=args.data,
            save_interval=args.save_interval,
            max_clock_skew=args.max_clock_skew,
        )
    except (ValueError, msgspec.DecodeError, OSError) as exc:
        print(f"mpsflow cmq-server: {exc}", file=sys.stderr)
        return 2
    anyio.run(_serve, server, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
