"""The local MPS server itself: in-memory tasks behind the Tencent Cloud API 3.0 ``POST /``.

:class:`MpsServer` checks each request's TC3-HMAC-SHA256 signature against the SecretKey of
its SecretId (the Authorization it expects is computed by :mod:`mpsflow.tencentcloud.tc3`, as
the official SDK's ``AbstractClient._build_req_with_tc3_signature`` signs: ``content-type``
and ``host``, the SHA-256 of the JSON body, service ``mps``), hands the JSON body to an action
(:mod:`mpsflow.devservers.mps.actions`) and holds the tasks
(:mod:`mpsflow.devservers.mps.tasks`), loaded through :meth:`MpsServer.add_task`,
:meth:`MpsServer.add_from_notification` or :meth:`MpsServer.load`.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
from aiohttp import web

from mpsflow.clock import Clock, SystemClock
from mpsflow.devservers._serving import start_runner
from mpsflow.devservers.mps.actions import (
    ACTIONS,
    AUTH_INVALID_AUTHORIZATION,
    AUTH_SECRET_ID_NOT_FOUND,
    AUTH_SIGNATURE_EXPIRE,
    AUTH_SIGNATURE_FAILURE,
    AUTH_TOKEN_FAILURE,
    INVALID_ACTION,
    INVALID_PARAMETER,
    MISSING_PARAMETER,
    NO_SUCH_VERSION,
    REQUEST_LIMIT_EXCEEDED,
    TASK_NOT_FOUND,
    ActionOptions,
    ApiError,
)
from mpsflow.devservers.mps.tasks import (
    LocalTask,
    TaskStore,
    TimeField,
    TimeLike,
    build_task,
    task_from_notification,
)
from mpsflow.sources.file import iter_notification_files
from mpsflow.tencentcloud.cmq.credentials import Credential
from mpsflow.tencentcloud.tc3 import tc3_authorization

__all__ = ["DEFAULT_MAX_CLOCK_SKEW", "SERVICE", "VERSION", "MpsServer"]

SERVICE: Final = "mps"
"""The service name of the signature's credential scope."""
VERSION: Final = "2019-06-12"
"""The only ``X-TC-Version`` answered (``MpsClient._apiVersion``)."""
DEFAULT_MAX_CLOCK_SKEW: Final = 300.0
"""How far ``X-TC-Timestamp`` may be from the server's clock, in seconds: Tencent Cloud
API 3.0 rejects a request more than five minutes off with ``AuthFailure.SignatureExpire``."""

_MAX_REQUEST_BYTES: Final = 1 << 20
_UNSIGNED_PAYLOAD: Final = "UNSIGNED-PAYLOAD"
_AUTHORIZATION = re.compile(
    r"TC3-HMAC-SHA256 Credential=(?P<id>[^/\s,]+)/[^,\s]*, "
    r"SignedHeaders=(?P<headers>[^,\s]+), Signature=[0-9a-fA-F]+"
)
_LINE_SUFFIXES: Final = (".jsonl", ".ndjson")
_ENCODER = msgspec.json.Encoder()
_log = logging.getLogger("mpsflow.devservers.mps")
_S = TypeVar("_S", bound="MpsServer")


class MpsServer:
    """A development and test MPS API server: ``DescribeTasks``, ``DescribeTaskDetail`` and
    ``DescribeBatchTaskDetail`` over tasks held in memory.

    ``credentials`` maps SecretId to SecretKey (or is a list of :class:`Credential`; one with
    a ``token`` requires that ``X-TC-Token``, one with ``expires_at`` stops working then).
    ``max_clock_skew`` (seconds; None accepts any) rejects a request whose ``X-TC-Timestamp``
    is further from ``clock``. ``time_field`` says which time ``StartTime``/``EndTime`` bound
    (``"create"`` or ``"finish"``, see :class:`~mpsflow.devservers.mps.tasks.TaskStore`);
    ``not_found_code`` is the error code of an unknown ``TaskId``.
    """

    def __init__(
        self,
        credentials: Mapping[str, str] | Iterable[Credential],
        *,
        clock: Clock | None = None,
        max_clock_skew: float | None = DEFAULT_MAX_CLOCK_SKEW,
        time_field: TimeField = "create",
        not_found_code: str = TASK_NOT_FOUND,
    ) -> None:
        if time_field not in ("create", "finish"):
            raise ValueError(f"time_field must be 'create' or 'finish', not {time_field!r}")
        self._clock = clock or SystemClock()
        self._credentials: dict[str, Credential] = {}
        if isinstance(credentials, Mapping):
            for secret_id, secret_key in credentials.items():
                self.set_credential(Credential(secret_id, secret_key))
        else:
            for credential in credentials:
                self.set_credential(credential)
        self._max_clock_skew = max_clock_skew
        self._options = ActionOptions(time_field=time_field, not_found_code=not_found_code)
        self._tasks = TaskStore()
        self._failures: list[ApiError] = []
        self._runner: web.AppRunner | None = None
        self._address: tuple[str, int] | None = None
        self.calls: Counter[str] = Counter()
        """Requests that passed the signature check, by ``X-TC-Action`` (API cost in tests)."""

    def __repr__(self) -> str:
        url = self.url if self._address else None
        return f"MpsServer(url={url!r}, tasks={len(self._tasks)})"

    # -- programmatic API (tests, embedding) -------------------------------------------------

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._address is None:
            raise RuntimeError("the server is not running")
        host, port = self._address
        return f"http://{host}:{port}"

    @property
    def endpoint(self) -> str:
        """``host:port``, the SDK's ``HttpProfile(protocol="http", endpoint=...)``."""
        return self.url.split("://", 1)[1]

    @property
    def port(self) -> int:
        """The TCP port it listens on (useful after asking for port 0)."""
        return int(self.url.rsplit(":", 1)[1])

    @property
    def tasks(self) -> TaskStore:
        """The tasks it answers about (``DescribeTasks`` order when iterated)."""
        return self._tasks

    @property
    def time_field(self) -> TimeField:
        """Which time ``DescribeTasks``' ``StartTime``/``EndTime`` bound."""
        return self._options.time_field

    def task(self, task_id: str) -> LocalTask:
        """The task ``task_id``; KeyError if there is none."""
        task = self._tasks.get(task_id)
        if task is None:
            raise KeyError(task_id)
        return task

    def add_task(
        self,
        task_type: str,
        result: Mapping[str, Any],
        *,
        task_id: str | None = None,
        status: str | None = None,
        create_time: TimeLike | None = None,
        begin_process_time: TimeLike | None = None,
        finish_time: TimeLike | None = None,
        sub_task_types: Sequence[str] | None = None,
        sub_task_has_failed: bool | None = None,
        notify_config: Mapping[str, Any] | None = None,
        session_id: str = "",
        session_context: str = "",
        ext_info: str = "",
        tasks_priority: int = 0,
    ) -> LocalTask:
        """Add (or replace, by TaskId) a task whose detail field holds ``result`` verbatim.

        ``task_type`` is the detail's ``TaskType``: ``WorkflowTask``, ``EditMediaTask``,
        ``ScheduleTask``, ``ExtractBlindWatermark``, ``LiveStreamProcessTask``,
        ``LiveScheduleTask`` or ``BatchTask`` (shown by ``DescribeBatchTaskDetail`` only).
        ``task_id``/``status`` default to the result's ``TaskId``/``Status``; times (a
        datetime, ISO 8601 text or Unix seconds) default to now, a replaced task keeping its
        creation and start times; ``SubTaskTypes`` and the failed flag ``DescribeTasks``
        filters on are read from the result unless given. ValueError for what MPS cannot
        show (an unknown type or status, a finish time on an unfinished task).
        """
        task = build_task(
            task_type,
            result,
            now=self._clock.time(),
            task_id=task_id,
            status=status,
            create_time=create_time,
            begin_process_time=begin_process_time,
            finish_time=finish_time,
            sub_task_types=sub_task_types,
            sub_task_has_failed=sub_task_has_failed,
            notify_config=notify_config,
            session_id=session_id,
            session_context=session_context,
            ext_info=ext_info,
            tasks_priority=tasks_priority,
        )
        return self._put(task, create_time, begin_process_time)

    def add_from_notification(
        self,
        notification: Mapping[str, Any] | bytes | str,
        *,
        task_id: str | None = None,
        create_time: TimeLike | None = None,
        begin_process_time: TimeLike | None = None,
        finish_time: TimeLike | None = None,
        notify_config: Mapping[str, Any] | None = None,
    ) -> LocalTask:
        """Add (or update, by TaskId) the task a notification reports, as MPS shows it.

        The event object becomes the detail's result field verbatim (``WorkflowTaskEvent`` ->
        ``WorkflowTask``, …; see :func:`~mpsflow.devservers.mps.tasks.task_from_notification`),
        with the notification's ``SessionId`` and ``SessionContext``; a FINISH task finished
        now unless ``finish_time`` says when. A later notification of the same task (Change
        mode: PROCESSING, then FINISH) updates it. A ``BatchTask`` notification carries no
        TaskId: pass ``task_id``, or one is made up (see the returned task). ValueError
        (:class:`~mpsflow.errors.DecodeError` for bad JSON) when it reports no task.
        """
        task = task_from_notification(
            notification,
            now=self._clock.time(),
            task_id=task_id,
            create_time=create_time,
            begin_process_time=begin_process_time,
            finish_time=finish_time,
            notify_config=notify_config,
        )
        return self._put(task, create_time, begin_process_time)

    def load(self, *paths: str | os.PathLike[str]) -> list[LocalTask]:
        """Add the task of every notification in ``paths`` (files; folders' ``*.json``,
        ``*.jsonl`` and ``*.ndjson``, one notification per line in the last two).

        Raises ValueError naming the file (and line) of one that reports no task, and
        FileNotFoundError for a path that does not exist.
        """
        added: list[LocalTask] = []
        for path in iter_notification_files(paths):
            for name, raw in _notifications_in(path):
                try:
                    added.append(self.add_from_notification(raw))
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        return added

    def remove_task(self, task_id: str) -> bool:
        """Forget ``task_id`` (it answers not found from then on); whether it was there."""
        return self._tasks.remove(task_id)

    def set_credential(self, credential: Credential) -> None:
        """Accept requests signed with ``credential`` (replacing one with the same SecretId)."""
        self._credentials[credential.secret_id] = credential

    def remove_credential(self, secret_id: str) -> None:
        """Stop accepting ``secret_id`` (its requests answer ``AuthFailure.SecretIdNotFound``)."""
        self._credentials.pop(secret_id, None)

    def fail_next(self, code: str, message: str = "injected by the test", count: int = 1) -> None:
        """Answer the next ``count`` signed requests with the error ``code`` (then as usual)."""
        self._failures.extend(ApiError(code, message) for _ in range(count))

    def throttle(self, requests: int) -> None:
        """Answer the next ``requests`` signed requests with ``RequestLimitExceeded``."""
        self.fail_next(REQUEST_LIMIT_EXCEEDED, "Your request frequency is too high.", requests)

    def _put(
        self, task: LocalTask, create_time: TimeLike | None, begin: TimeLike | None
    ) -> LocalTask:
        old = self._tasks.get(task.task_id)
        if old is not None:
            if create_time is None:
                task.create_time = old.create_time
            if begin is None and task.begin_process_time is not None:
                task.begin_process_time = old.begin_process_time or task.create_time
        return self._tasks.put(task)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0 picks a free port; see :attr:`url`)."""
        if self._runner is not None:
            raise RuntimeError("the server is already running")
        self._runner, self._address = await start_runner(
            self._handle, host, port, max_request_bytes=_MAX_REQUEST_BYTES
        )
        _log.debug("local MPS server listening on %s", self.url)

    async def stop(self) -> None:
        """Stop listening (the tasks stay, for a later :meth:`start`)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._address = None

    async def __aenter__(self: _S) -> _S:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- HTTP --------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        if request.path != "/":
            return web.Response(status=404, text="not found: the API answers POST /\n")
        if request.method != "POST":
            return web.Response(status=405, text="only POST\n", headers={"Allow": "POST"})
        body = await request.read()
        request_id = str(uuid.uuid4())
        action = request.headers.get("X-TC-Action", "")
        try:
            response = self._answer(action, request.headers, body)
        except ApiError as error:
            _log.debug("%s answered %s: %s", action or "?", error.code, error.message)
            response = {"Error": {"Code": error.code, "Message": error.message}}
        data = _ENCODER.encode({"Response": {**response, "RequestId": request_id}})
        # Exactly "application/json": the SDK reads an error only from that content type
        # (AbstractClient._check_error), so no "; charset=…" here.
        return web.Response(body=data, headers={"Content-Type": "application/json"})

    def _answer(self, action: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        if not action:
            raise ApiError(MISSING_PARAMETER, "The header `X-TC-Action` is missing.")
        self._authenticate(headers, body)
        self.calls[action] += 1
        handler = ACTIONS.get(action)
        if handler is None:
            raise ApiError(INVALID_ACTION, f"The action `{action[:60]}` is not supported.")
        version = headers.get("X-TC-Version", "")
        if version != VERSION:
            if not version:
                raise ApiError(MISSING_PARAMETER, "The header `X-TC-Version` is missing.")
            raise ApiError(NO_SUCH_VERSION, f"The version `{version[:20]}` does not exist.")
        if self._failures:
            raise self._failures.pop(0)
        try:
            params = msgspec.json.decode(body) if body.strip() else {}
        except msgspec.DecodeError:
            raise ApiError(INVALID_PARAMETER, "The request body is not valid JSON.") from None
        if not isinstance(params, dict):
            raise ApiError(INVALID_PARAMETER, "The request body must be a JSON object.")
        return handler(self._tasks, params, self._options)

    def _authenticate(self, headers: Mapping[str, str], body: bytes) -> None:
        authorization = headers.get("Authorization", "")
        match = _AUTHORIZATION.fullmatch(authorization)
        if match is None:
            raise ApiError(
                AUTH_INVALID_AUTHORIZATION,
                "The Authorization header is missing or not a TC3-HMAC-SHA256 signature.",
            )
        credential = self._credentials.get(match["id"])
        if credential is None:
            raise ApiError(
                AUTH_SECRET_ID_NOT_FOUND,
                "The SecretId is not found, please ensure that your SecretId is correct.",
            )
        text = headers.get("X-TC-Timestamp", "")
        if not text.isdigit():
            raise ApiError(MISSING_PARAMETER, "The header `X-TC-Timestamp` is missing or invalid.")
        timestamp = int(text)
        now = self._clock.time()
        if self._max_clock_skew is not None and abs(now - timestamp) > self._max_clock_skew:
            raise ApiError(
                AUTH_SIGNATURE_EXPIRE,
                f"Signature expired: X-TC-Timestamp {timestamp} is {now - timestamp:+.0f}s from "
                f"the server time {int(now)}, more than {self._max_clock_skew:g}s.",
            )
        if match["headers"] != "content-type;host":
            raise ApiError(
                AUTH_SIGNATURE_FAILURE, "Only SignedHeaders=content-type;host is checked."
            )
        unsigned = headers.get("X-TC-Content-SHA256") == _UNSIGNED_PAYLOAD
        expected = tc3_authorization(
            credential.secret_id,
            credential.secret_key,
            service=SERVICE,
            timestamp=timestamp,
            method="POST",
            host=headers.get("Host", ""),
            content_type=headers.get("Content-Type", ""),
            payload=_UNSIGNED_PAYLOAD.encode() if unsigned else body,
        )
        if not hmac.compare_digest(expected.encode(), authorization.encode()):
            raise ApiError(
                AUTH_SIGNATURE_FAILURE,
                "The provided credentials could not be validated. "
                "Please check your signature is correct.",
            )
        if credential.token and not hmac.compare_digest(
            credential.token.encode(), headers.get("X-TC-Token", "").encode()
        ):
            raise ApiError(AUTH_TOKEN_FAILURE, "The X-TC-Token is missing or invalid.")
        if credential.expires_at is not None and now >= credential.expires_at:
            raise ApiError(AUTH_TOKEN_FAILURE, "The temporary credential has expired.")


def _notifications_in(path: Path) -> list[tuple[str, bytes]]:
    """``(name, raw)`` of each notification in a file: the whole file, or each JSONL line."""
    if path.suffix not in _LINE_SUFFIXES:
        return [(str(path), path.read_bytes())]
    lines = path.read_bytes().splitlines()
    return [(f"{path}:{n}", line) for n, line in enumerate(lines, 1) if line.strip()]
