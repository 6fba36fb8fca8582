"""A tiny stand-in for the MPS API (aiohttp.web on a free loopback port), for the client's tests.

It checks the TC3 signature of every request (with mpsflow's signer; ``test_signing`` proves
that one equal to the official SDK's), serves ``DescribeTasks`` from a list with a numeric
``ScrollToken``, and the two details from dicts. Faults queued with :meth:`FakeMps.fail`,
:meth:`FakeMps.fail_http`, :meth:`FakeMps.answer_raw` or :meth:`FakeMps.hang` are used up one
per request, before the signature is checked. Not the local MPS server of
``mpsflow/devservers/mps`` (that one is written separately); just enough for these tests.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from aiohttp import web

from mpsflow.retry import RetryPolicy
from mpsflow.tencentcloud.mps import MpsApiClient
from mpsflow.tencentcloud.tc3 import tc3_authorization

__all__ = ["NO_JITTER", "SECRET_ID", "SECRET_KEY", "ClientFactory", "FakeMps", "Received"]

SECRET_ID = "AKIDmpsflowMPSTEST000000000000001"
SECRET_KEY = "mpsflow-mps-test-secret-key-0001"
NO_JITTER = RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=10.0, jitter=0.0)
"""The retry policy of the test clients: delays 0.5, 1, 2 exactly."""


class ClientFactory(Protocol):
    """``make_client(**options)``: a client of the fake API on a ``FakeClock``.

    Defaults: the fake's key pair, no rate limit, ``NO_JITTER`` retries; ``options`` override
    any ``MpsApiClient`` argument (``credentials`` too). Closed at teardown.
    """

    def __call__(self, **options: Any) -> MpsApiClient: ...


_AUTH = re.compile(r"^TC3-HMAC-SHA256 Credential=([^/]+)/")


@dataclass
class Received:
    """One request as the server saw it."""

    action: str
    headers: dict[str, str]
    body: bytes

    @property
    def params(self) -> dict[str, Any]:
        """The JSON parameters."""
        params: dict[str, Any] = json.loads(self.body)
        return params


@dataclass
class _Fault:
    code: str = ""
    message: str = ""
    status: int = 200
    raw: bytes | None = None
    hang: bool = False


@dataclass
class FakeMps:
    """The server's state; ``keys`` maps SecretId to SecretKey."""

    keys: dict[str, str]
    tasks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(Status, TaskSimpleInfo JSON) in listing order."""
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    """TaskId -> DescribeTaskDetail ``Response`` fields."""
    batch_details: dict[str, dict[str, Any]] = field(default_factory=dict)
    """TaskId -> DescribeBatchTaskDetail ``Response`` fields."""
    stuck_scroll_token: str | None = None
    """When set, every DescribeTasks page hands back this token (a broken server)."""
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    host: str = ""
    _faults: list[_Fault] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _release: anyio.Event = field(default_factory=anyio.Event)

    # -- setup ---------------------------------------------------------------------------

    def fail(self, code: str, message: str = "scripted failure", times: int = 1) -> None:
        """Answer the next ``times`` requests with the API error ``code``."""
        self._faults.extend(_Fault(code=code, message=message) for _ in range(times))

    def fail_http(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` requests with HTTP ``status`` and no JSON."""
        self._faults.extend(_Fault(status=status) for _ in range(times))

    def answer_raw(self, body: bytes) -> None:
        """Answer the next request with ``body`` as is (status 200)."""
        self._faults.append(_Fault(raw=body))

    def hang(self) -> None:
        """Never answer the next request (until the server stops)."""
        self._faults.append(_Fault(hang=True))

    def add_task(self, task_id: str, status: str = "FINISH", **fields: Any) -> None:
        """List a task (``fields`` are more TaskSimpleInfo keys)."""
        info = {
            "TaskId": task_id,
            "TaskType": "WorkflowTask",
            "CreateTime": "2024-05-01T00:00:00Z",
            "BeginProcessTime": "2024-05-01T00:00:01Z",
            "FinishTime": "2024-05-01T00:01:00Z",
            "SubTaskTypes": ["Transcode"],
        }
        info.update(fields)
        self.tasks.append((status, info))

    def actions(self) -> list[str]:
        """The action of every request received, in order."""
        return [r.action for r in self.requests]

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.host = f"127.0.0.1:{port}"
        self.url = f"http://{self.host}"

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- serving -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        action = request.headers.get("X-TC-Action", "")
        self.requests.append(Received(action, dict(request.headers), body))
        request_id = f"req-{len(self.requests)}"
        if self._faults:
            fault = self._faults.pop(0)
            if fault.hang:
                await self._release.wait()
            if fault.raw is not None:
                return web.Response(body=fault.raw, content_type="application/json")
            if fault.status != 200:
                return web.Response(status=fault.status, text="upstream trouble")
            return _error(fault.code, fault.message, request_id)
        refused = self._check_signature(request, body)
        if refused is not None:
            return _error(*refused, request_id)
        params = json.loads(body)
        if action == "DescribeTasks":
            if not str(params.get("ScrollToken", "0")).isdigit():
                return _error("InvalidParameterValue.ScrollToken", "bad token", request_id)
            return _answer(self._describe_tasks(params), request_id)
        table = {"DescribeTaskDetail": self.details, "DescribeBatchTaskDetail": self.batch_details}
        if action in table:
            found = table[action].get(params.get("TaskId", ""))
            if found is None:
                return _error("ResourceNotFound.TaskNotFound", "no such task", request_id)
            return _answer(found, request_id)
        return _error("InvalidAction", "unknown action", request_id)

    def _check_signature(self, request: web.Request, body: bytes) -> tuple[str, str] | None:
        authorization = request.headers.get("Authorization", "")
        match = _AUTH.match(authorization)
        if match is None or match[1] not in self.keys:
            return "AuthFailure.SecretIdNotFound", "unknown SecretId"
        expected = tc3_authorization(
            match[1],
            self.keys[match[1]],
            service="mps",
            timestamp=int(request.headers["X-TC-Timestamp"]),
            method="POST",
            host=request.headers["Host"],
            content_type=request.headers["Content-Type"],
            payload=body,
        )
        if authorization != expected:
            return "AuthFailure.SignatureFailure", "signature mismatch"
        return None

    def _describe_tasks(self, params: dict[str, Any]) -> dict[str, Any]:
        matching = [info for status, info in self.tasks if status == params.get("Status")]
        start = int(params.get("ScrollToken") or 0)
        limit = int(params.get("Limit", 10))
        end = start + limit
        token = str(end) if end < len(matching) else ""
        if self.stuck_scroll_token is not None:
            token = self.stuck_scroll_token
        return {"TaskSet": matching[start:end], "ScrollToken": token, "TotalCount": len(matching)}


def _answer(fields: dict[str, Any], request_id: str) -> web.Response:
    return web.json_response({"Response": {**fields, "RequestId": request_id}})


def _error(code: str, message: str, request_id: str) -> web.Response:
    return _answer({"Error": {"Code": code, "Message": message}}, request_id)
