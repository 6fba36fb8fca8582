"""The local CMQ server itself: in-memory queues behind the TDMQ-CMQ ``/v2/index.php`` HTTP API.

:class:`CmqServer` checks each request's signature against the SecretKey of its SecretId,
hands it to an action (:mod:`mpsflow.devservers.cmq.actions`), and runs, stops and persists
the queues (:mod:`mpsflow.devservers.cmq.queue`, :mod:`mpsflow.devservers.cmq.storage`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final, TypeVar

import anyio
import msgspec
from aiohttp import web

from mpsflow.clock import Clock, SystemClock
from mpsflow.devservers._serving import start_runner
from mpsflow.devservers.cmq.actions import (
    ACTIONS,
    ActionFailure,
    int_param,
    invalid_parameter,
    parse_form,
)
from mpsflow.devservers.cmq.queue import (
    DEFAULT_MAX_MSG_HEAP_NUM,
    DEFAULT_MAX_MSG_SIZE,
    DEFAULT_VISIBILITY_TIMEOUT,
    LocalQueue,
    check_max_msg_heap_num,
)
from mpsflow.devservers.cmq.storage import Snapshot, data_path_problem, write_atomically
from mpsflow.errors import ConfigurationError
from mpsflow.tencentcloud.cmq.credentials import Credential
from mpsflow.tencentcloud.cmq.errors import (
    CODE_AUTH_FAILED,
    CODE_QUEUE_NOT_FOUND,
    CODE_THROTTLED,
)
from mpsflow.tencentcloud.cmq.models import CmqResponse
from mpsflow.tencentcloud.cmq.signing import DEFAULT_PATH, string_to_sign, verify

__all__ = ["CmqServer"]

_MAX_REQUEST_BYTES: Final = 64 << 20
_QUEUE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_ENCODER = msgspec.json.Encoder()
_log = logging.getLogger("mpsflow.devservers.cmq")
_S = TypeVar("_S", bound="CmqServer")


class CmqServer:
    """A development and test CMQ server: the data-plane HTTP API over in-memory queues.

    ``credentials`` maps SecretId to SecretKey (or is a list of :class:`Credential`; one with
    a ``token`` requires that ``Token``, one with ``expires_at`` stops working then). Unknown
    queues are created on first use unless ``auto_create`` is False (then 4440).
    ``visibility_timeout``, ``max_msg_size``, ``polling_wait_seconds`` and ``max_msg_heap_num``
    (CMQ's ``maxMsgHeapNum``: a send to a queue holding that many messages answers 4410) are
    the settings of the queues it creates; :meth:`create_queue` can set them per queue. With
    ``data_path`` the queues are loaded at construction, with the settings they were saved
    with, saved by :meth:`stop` and every ``save_interval`` wall-clock seconds while running
    (its folder is made at construction; a path that cannot be saved to, or that names a
    directory, is a :class:`~mpsflow.errors.ConfigurationError` there).
    ``max_clock_skew`` (seconds) rejects requests whose ``Timestamp`` is that far from the
    clock; None accepts any.
    """

    def __init__(
        self,
        credentials: Mapping[str, str] | Iterable[Credential],
        *,
        clock: Clock | None = None,
        visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT,
        max_msg_size: int = DEFAULT_MAX_MSG_SIZE,
        polling_wait_seconds: int = 0,
        max_msg_heap_num: int = DEFAULT_MAX_MSG_HEAP_NUM,
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
        self._defaults = (
            visibility_timeout,
            max_msg_size,
            polling_wait_seconds,
            check_max_msg_heap_num(max_msg_heap_num),
        )
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
        if data_path is not None and (problem := data_path_problem(data_path, "data_path")):
            raise ConfigurationError(problem)
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

    @property
    def auto_create(self) -> bool:
        """Whether a request naming an unknown queue creates it (else it answers 4440)."""
        return self._auto_create

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
        max_msg_heap_num: int | None = None,
    ) -> LocalQueue:
        """Create (or return the existing) queue, with per-queue settings.

        A setting left None takes the server's default. ``max_msg_heap_num`` is CMQ's
        CreateQueue ``maxMsgHeapNum`` (any value from 1 here; ValueError below that).
        """
        if not _QUEUE_NAME.fullmatch(name):
            raise ValueError(f"invalid queue name {name!r}")
        existing = self._queues.get(name)
        if existing is not None:
            return existing
        vt, size, wait, heap = self._defaults
        queue = LocalQueue(
            name,
            self._clock,
            visibility_timeout=vt if visibility_timeout is None else visibility_timeout,
            max_msg_size=size if max_msg_size is None else max_msg_size,
            polling_wait_seconds=wait if polling_wait_seconds is None else polling_wait_seconds,
            max_msg_heap_num=heap if max_msg_heap_num is None else max_msg_heap_num,
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
        # handler_cancellation: a client that goes away during a long poll cancels it, so the
        # poll takes no message (aiohttp stopped cancelling handlers by default in 3.9).
        self._runner, self._address = await start_runner(
            self._handle,
            host,
            port,
            max_request_bytes=_MAX_REQUEST_BYTES,
            handler_cancellation=True,
        )
        if self._data_path is not None and self._save_interval > 0:
            self._saver = asyncio.create_task(self._save_periodically())
        _log.debug("local CMQ server listening on %s", self.url)

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

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- persistence -------------------------------------------------------------------------

    async def save(self) -> None:
        """Write every queue to the data file (atomically: a temporary file, then rename)."""
        if self._data_path is None:
            raise RuntimeError("no data file configured")
        snapshot = Snapshot(version=1, queues=[q.snapshot() for q in self._queues.values()])
        for queue in self._queues.values():
            queue.dirty = False
        data = msgspec.json.encode(snapshot)
        await anyio.to_thread.run_sync(write_atomically, self._data_path, data)
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
        snapshot = msgspec.json.decode(data, type=Snapshot)
        for stored in snapshot.queues:
            queue = self.create_queue(
                stored.name,
                visibility_timeout=stored.visibility_timeout,
                max_msg_size=stored.max_msg_size,
                polling_wait_seconds=stored.polling_wait_seconds,
                max_msg_heap_num=stored.max_msg_heap_num,  # None (an older file): the default
            )
            queue.restore(stored.messages)
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
            params = parse_form(raw)
            if self._throttle > 0:
                self._throttle -= 1
                raise ActionFailure(CODE_THROTTLED, "request frequency too high")
            self._authenticate(request.method, request.host, params)
            response = await self._dispatch(params, request_id)
        except asyncio.CancelledError:
            if request.transport is None or request.transport.is_closing():
                _log.info(
                    "%s on %s: the client went away; its long poll ended, no message taken",
                    params.get("Action", "?"),
                    params.get("queueName", "?"),
                )
            raise
        except ActionFailure as failure:
            response = CmqResponse(failure.code, failure.message, request_id)
        return web.Response(body=_ENCODER.encode(response), content_type="application/json")

    def _authenticate(self, method: str, host: str, params: Mapping[str, str]) -> None:
        secret_id = params.get("SecretId", "")
        signature = params.get("Signature", "")
        credential = self._credentials.get(secret_id)
        if credential is None or not signature:
            raise ActionFailure(
                CODE_AUTH_FAILED, "authentication failed: unknown SecretId or no Signature"
            )
        signature_method = params.get("SignatureMethod", "HmacSHA1")
        text = string_to_sign(method, host, self._path, params)
        valid = verify(credential.secret_key, text, signature_method, signature)
        if not valid and method == "POST" and any(v.startswith("@") for v in params.values()):
            legacy = string_to_sign(method, host, self._path, params, skip_at_values=True)
            valid = verify(credential.secret_key, legacy, signature_method, signature)
        if not valid:
            raise ActionFailure(CODE_AUTH_FAILED, "authentication failed: signature mismatch")
        if (credential.token or "") != params.get("Token", ""):
            raise ActionFailure(CODE_AUTH_FAILED, "authentication failed: Token missing or invalid")
        now = self._clock.time()
        if credential.expires_at is not None and now >= credential.expires_at:
            raise ActionFailure(CODE_AUTH_FAILED, "authentication failed: credential expired")
        if self._max_clock_skew is not None:
            timestamp = int_param(params, "Timestamp", None, 0, 2**63)
            if abs(now - timestamp) > self._max_clock_skew:
                raise ActionFailure(
                    CODE_AUTH_FAILED, "authentication failed: Timestamp out of range"
                )

    async def _dispatch(self, params: Mapping[str, str], request_id: str) -> CmqResponse:
        action = params.get("Action", "")
        handler = ACTIONS.get(action)
        if handler is None:
            raise invalid_parameter(10000, f"unknown Action {action[:40]!r}")
        queue = self._queue_for(params)
        return await handler(queue, params, request_id)

    def _queue_for(self, params: Mapping[str, str]) -> LocalQueue:
        name = params.get("queueName", "")
        queue = self._queues.get(name)
        if queue is not None:
            return queue
        if not _QUEUE_NAME.fullmatch(name):
            raise invalid_parameter(10020, "invalid queueName")
        if not self._auto_create:
            raise ActionFailure(CODE_QUEUE_NOT_FOUND, f"queue {name} does not exist")
        _log.info("created queue %s on first use", name)
        return self.create_queue(name)
