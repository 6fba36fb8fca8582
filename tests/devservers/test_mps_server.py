"""The local MPS server through the official SDK's ``MpsClient`` and at the HTTP level.

The SDK is synchronous: each call runs in a worker thread (``anyio.to_thread``) while the
server runs in the test's event loop, so nothing sleeps and nothing else is started.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import anyio
import pytest
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
    TencentCloudSDKException,
)
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.mps.v20190612 import models
from tencentcloud.mps.v20190612.mps_client import MpsClient

from mpsflow.clock import FakeClock
from mpsflow.devservers.mps import UNSET_TIME, MpsServer
from mpsflow.devservers.mps.tasks import format_time
from mpsflow.tencentcloud.cmq.credentials import Credential
from mpsflow.tencentcloud.tc3 import tc3_headers
from tests.plugins.samples import SAMPLE_PATHS

SECRET_ID = "AKIDmpsflowMPSTEST00000000000001"
SECRET_KEY = "mpsflow-mps-test-secret-key-0001"
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "notifications"
DETAIL_FIELD = {
    "WorkflowTaskEvent": "WorkflowTask",
    "EditMediaTaskEvent": "EditMediaTask",
    "ScheduleTaskEvent": "ScheduleTask",
    "ExtractBlindWatermarkTask": "ExtractBlindWatermarkTask",
}
_T = TypeVar("_T")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK (requests) would send loopback calls through a proxy set in the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
async def server() -> AsyncIterator[MpsServer]:
    async with MpsServer({SECRET_ID: SECRET_KEY}) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sdk(
    server: MpsServer,
    secret_id: str = SECRET_ID,
    secret_key: str = SECRET_KEY,
    token: str | None = None,
) -> Any:
    """The official ``MpsClient``, over plain HTTP to the local server."""
    profile = ClientProfile(
        httpProfile=HttpProfile(protocol="http", endpoint=server.endpoint, reqTimeout=10)
    )
    return MpsClient(credential.Credential(secret_id, secret_key, token), "ap-guangzhou", profile)


async def in_thread(call: Callable[[], _T]) -> _T:
    """Run a blocking SDK call off the event loop the server answers on."""
    return await anyio.to_thread.run_sync(call)


def describe_tasks(client: Any, **params: Any) -> Any:
    request = models.DescribeTasksRequest()
    request._deserialize(params)
    return client.DescribeTasks(request)


def describe_task_detail(client: Any, task_id: str) -> Any:
    request = models.DescribeTaskDetailRequest()
    request.TaskId = task_id
    return client.DescribeTaskDetail(request)


def describe_batch_task_detail(client: Any, task_id: str) -> Any:
    request = models.DescribeBatchTaskDetailRequest()
    request.TaskId = task_id
    return client.DescribeBatchTaskDetail(request)


async def sdk_error(call: Callable[[], object]) -> TencentCloudSDKException:
    with pytest.raises(TencentCloudSDKException) as caught:
        await in_thread(call)
    return caught.value


def without_nulls(value: Any) -> Any:
    """``value`` with null members dropped, as the SDK's ``_serialize()`` leaves it."""
    if isinstance(value, Mapping):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def workflow(task_id: str, *, status: str = "FINISH", failed: bool = False) -> dict[str, Any]:
    """A small WorkflowTask result: one transcode, failed or not."""
    code = 30010 if failed else 0
    return {
        "TaskId": task_id,
        "Status": status,
        "ErrCode": 0,
        "Message": "",
        "MediaProcessResultSet": [
            {
                "Type": "Transcode",
                "TranscodeTask": {"Status": "FAIL" if failed else "SUCCESS", "ErrCode": code},
            }
        ],
    }


async def post(
    http: aiohttp.ClientSession,
    server: MpsServer,
    action: str,
    params: Mapping[str, Any] | bytes,
    *,
    key: str = SECRET_KEY,
    timestamp: int | None = None,
    change: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[dict[str, Any], aiohttp.ClientResponse]:
    """A request signed by mpsflow's TC3 signer; ``body`` replaces what was signed."""
    payload = params if isinstance(params, bytes) else json.dumps(params).encode()
    headers = tc3_headers(
        secret_id=SECRET_ID,
        secret_key=key,
        token=None,
        service="mps",
        host=server.endpoint,
        action=action,
        version="2019-06-12",
        payload=payload,
        timestamp=int(time.time()) if timestamp is None else timestamp,
        region="ap-guangzhou",
    )
    headers.update(change or {})
    async with http.post(
        f"{server.url}/", data=payload if body is None else body, headers=headers
    ) as reply:
        assert reply.status == 200
        answer: dict[str, Any] = json.loads(await reply.read())
        return answer["Response"], reply


# -- the official SDK ---------------------------------------------------------------------------


async def test_the_sdk_pages_through_more_than_a_hundred_tasks_by_scroll_token(
    server: MpsServer,
) -> None:
    start = 1_767_000_000
    for n in range(250):
        server.add_task("WorkflowTask", workflow(f"task-{n:03d}"), create_time=start + n)
    client = sdk(server)
    seen: list[str] = []
    sizes: list[int] = []
    token = ""

    def next_page() -> Any:
        more = {"ScrollToken": token} if token else {}
        return describe_tasks(client, Limit=100, Status="FINISH", **more)

    while True:
        page = await in_thread(next_page)
        assert page.TotalCount == 250
        sizes.append(len(page.TaskSet))
        seen += [info.TaskId for info in page.TaskSet]
        token = page.ScrollToken
        if token == "":
            break
    assert sizes == [100, 100, 50]
    assert seen == [f"task-{n:03d}" for n in reversed(range(250))]  # newest first, each once
    first = (await in_thread(lambda: describe_tasks(client))).TaskSet
    assert len(first) == 10  # the SDK's documented default Limit
    info = first[0]
    assert (info.TaskType, info.SubTaskTypes) == ("WorkflowTask", ["Transcode"])
    assert info.CreateTime == info.BeginProcessTime == format_time(start + 249)
    assert server.calls["DescribeTasks"] == 4


@pytest.mark.parametrize("limit", [0, 101])
async def test_the_sdk_gets_invalid_limit_outside_1_to_100(server: MpsServer, limit: int) -> None:
    client = sdk(server)
    error = await sdk_error(lambda: describe_tasks(client, Limit=limit))
    assert error.code == "InvalidParameterValue.Limit"
    assert error.requestId


def sample_notifications() -> list[Path]:
    """The repository's example notifications and the shared research samples."""
    return sorted(EXAMPLES.glob("*.json")) + list(SAMPLE_PATHS)


@pytest.mark.parametrize(
    "path", sample_notifications(), ids=lambda p: f"{p.parent.parent.name}/{p.stem}"
)
async def test_the_sdk_reads_back_a_loaded_notifications_event_as_the_task_detail(
    server: MpsServer, path: Path
) -> None:
    notification = json.loads(path.read_bytes())
    [wire] = [w for w in DETAIL_FIELD if isinstance(notification.get(w), dict)]
    task = server.add_from_notification(path.read_bytes(), create_time="2026-01-02T03:04:05Z")
    event = notification[wire]
    assert task.task_id == event["TaskId"]
    detail = await in_thread(lambda: describe_task_detail(sdk(server), task.task_id))
    field = DETAIL_FIELD[wire]
    assert getattr(detail, field)._serialize() == without_nulls(event)
    assert detail.TaskType == notification["EventType"]
    assert detail.Status == event["Status"]
    assert detail.CreateTime == "2026-01-02T03:04:05Z"
    assert detail.SessionId == notification.get("SessionId", "")
    assert detail.SessionContext == notification.get("SessionContext", "")
    assert detail.RequestId
    others = {"WorkflowTask", "EditMediaTask", "ScheduleTask", "ExtractBlindWatermarkTask"}
    assert all(getattr(detail, other) is None for other in others - {field})
    assert (detail.FinishTime == UNSET_TIME) == (event["Status"] != "FINISH")


async def test_the_sdk_gets_task_not_found_for_an_unknown_task(server: MpsServer) -> None:
    server.add_task("WorkflowTask", workflow("known"))
    client = sdk(server)
    error = await sdk_error(lambda: describe_task_detail(client, "1250000000-WorkflowTask-nope"))
    assert error.code == "ResourceNotFound.TaskNotFound"
    assert "1250000000-WorkflowTask-nope" in error.message
    error = await sdk_error(lambda: describe_batch_task_detail(client, "known"))
    assert error.code == "ResourceNotFound.TaskNotFound"  # not a batch task
    server.remove_task("known")
    error = await sdk_error(lambda: describe_task_detail(client, "known"))
    assert error.code == "ResourceNotFound.TaskNotFound"


async def test_the_not_found_code_can_be_another_documented_one() -> None:
    async with MpsServer(
        {SECRET_ID: SECRET_KEY}, not_found_code="FailedOperation.TaskNotFound"
    ) as server:
        error = await sdk_error(lambda: describe_task_detail(sdk(server), "nope"))
    assert error.code == "FailedOperation.TaskNotFound"


async def test_the_sdk_reads_a_batch_task_from_describe_batch_task_detail(
    server: MpsServer,
) -> None:
    result = {
        "InputInfos": [{"Type": "URL", "UrlInputInfo": {"Url": "https://example.com/a.mp4"}}],
        "SmartSubtitlesTaskResult": {"Outputs": [{"Progress": 100, "Status": "SUCCESS"}]},
    }
    notification = {"EventType": "BatchTask", "BatchTaskEvent": result, "SessionContext": "b-1"}
    task = server.add_from_notification(notification, task_id="1250000000-BatchTask-abc")
    client = sdk(server)
    detail = await in_thread(lambda: describe_batch_task_detail(client, task.task_id))
    assert (detail.TaskType, detail.TaskId, detail.Status) == ("BatchTask", task.task_id, "FINISH")
    assert detail.BatchTaskResult._serialize() == result
    assert detail.SessionContext == "b-1"
    error = await sdk_error(lambda: describe_task_detail(client, task.task_id))
    assert error.code == "ResourceNotFound.TaskNotFound"
    listed = await in_thread(lambda: describe_tasks(client))
    assert [info.TaskType for info in listed.TaskSet] == ["BatchTask"]


async def test_the_sdk_with_a_wrong_key_gets_auth_failures(server: MpsServer) -> None:
    error = await sdk_error(lambda: describe_tasks(sdk(server, secret_key="not-the-key")))
    assert error.code == "AuthFailure.SignatureFailure"
    error = await sdk_error(lambda: describe_tasks(sdk(server, secret_id="AKIDunknown")))
    assert error.code == "AuthFailure.SecretIdNotFound"
    server.remove_credential(SECRET_ID)
    error = await sdk_error(lambda: describe_tasks(sdk(server)))
    assert error.code == "AuthFailure.SecretIdNotFound"
    assert sum(server.calls.values()) == 0  # none of them reached an action


@pytest.mark.parametrize(("skew", "code"), [(-310, "AuthFailure.SignatureExpire"), (290, None)])
async def test_a_timestamp_more_than_five_minutes_off_is_signature_expire(
    skew: float, code: str | None
) -> None:
    clock = FakeClock(time.time() + skew)  # the server's clock is off, the SDK's is not
    async with MpsServer({SECRET_ID: SECRET_KEY}, clock=clock) as server:
        client = sdk(server)
        if code is None:
            assert (await in_thread(lambda: describe_tasks(client))).TotalCount == 0
        else:
            assert (await sdk_error(lambda: describe_tasks(client))).code == code


async def test_temporary_keys_need_their_token() -> None:
    temporary = Credential(SECRET_ID, SECRET_KEY, token="session-token-1")
    async with MpsServer([temporary]) as server:
        good = await in_thread(lambda: describe_tasks(sdk(server, token="session-token-1")))
        assert good.TotalCount == 0
        error = await sdk_error(lambda: describe_tasks(sdk(server, token="other-token")))
        assert error.code == "AuthFailure.TokenFailure"
        error = await sdk_error(lambda: describe_tasks(sdk(server)))
        assert error.code == "AuthFailure.TokenFailure"


async def test_the_sdk_filters_by_status_failed_subtasks_and_creation_time(
    server: MpsServer,
) -> None:
    base = 1_767_225_600  # 2026-01-01T00:00:00Z
    server.add_task("WorkflowTask", workflow("ok"), create_time=base)
    server.add_task("WorkflowTask", workflow("bad", failed=True), create_time=base + 60)
    server.add_task("WorkflowTask", workflow("busy", status="PROCESSING"), create_time=base + 120)
    server.add_task("WorkflowTask", {"TaskId": "queued"}, status="WAITING", create_time=base + 180)
    client = sdk(server)

    async def ids(**params: Any) -> list[str]:
        page = await in_thread(lambda: describe_tasks(client, **params))
        assert page.TotalCount == len(page.TaskSet)
        return [info.TaskId for info in page.TaskSet]

    assert await ids() == ["queued", "busy", "bad", "ok"]
    assert await ids(Status="FINISH") == ["bad", "ok"]
    assert await ids(Status="FINISH", SubTaskHasFailed=True) == ["bad"]
    assert await ids(Status="FINISH", SubTaskHasFailed=False) == ["ok"]
    assert await ids(Status="WAITING") == ["queued"]
    window = {"StartTime": "2026-01-01T00:01:00Z", "EndTime": "2026-01-01T00:03:00Z"}
    assert await ids(**window) == ["busy", "bad"]  # StartTime inclusive, EndTime exclusive
    assert await ids(StartTime="2026-01-01T08:02:00+08:00") == ["queued", "busy"]
    queued = (await in_thread(lambda: describe_task_detail(client, "queued"))).BeginProcessTime
    assert queued == UNSET_TIME
    busy = await in_thread(lambda: describe_tasks(client, Status="PROCESSING"))
    assert busy.TaskSet[0].FinishTime == UNSET_TIME


async def test_the_time_filter_can_bound_the_finish_time() -> None:
    async with MpsServer({SECRET_ID: SECRET_KEY}, time_field="finish") as server:
        base = 1_767_225_600
        # created before the window, finished inside it
        server.add_task("WorkflowTask", workflow("long"), create_time=base - 3600, finish_time=base)
        server.add_task("WorkflowTask", workflow("busy", status="PROCESSING"), create_time=base)
        client = sdk(server)
        page = await in_thread(lambda: describe_tasks(client, StartTime="2026-01-01T00:00:00Z"))
        assert [info.TaskId for info in page.TaskSet] == ["long"]  # unfinished ones never match
        everything = await in_thread(lambda: describe_tasks(client))
        assert everything.TotalCount == 2


async def test_a_throttled_server_answers_request_limit_exceeded(server: MpsServer) -> None:
    server.throttle(2)
    client = sdk(server)
    for _ in range(2):
        assert (await sdk_error(lambda: describe_tasks(client))).code == "RequestLimitExceeded"
    assert (await in_thread(lambda: describe_tasks(client))).TotalCount == 0
    server.fail_next("InternalError", "try again")
    error = await sdk_error(lambda: describe_task_detail(client, "x"))
    assert (error.code, error.message) == ("InternalError", "try again")


# -- the HTTP API -------------------------------------------------------------------------------


async def test_errors_are_api_shaped_with_http_200_and_exactly_application_json(
    http: aiohttp.ClientSession, server: MpsServer
) -> None:
    answer, reply = await post(http, server, "DescribeTaskDetail", {"TaskId": "nope"})
    assert reply.headers["Content-Type"] == "application/json"  # what the SDK parses errors from
    assert set(answer) == {"Error", "RequestId"}
    assert answer["Error"]["Code"] == "ResourceNotFound.TaskNotFound"
    assert set(answer["Error"]) == {"Code", "Message"}


@pytest.mark.parametrize(
    ("action", "params", "code"),
    [
        ("DescribeMediaMetaData", {}, "InvalidAction"),
        ("DescribeTasks", {"Limit": "10"}, "InvalidParameter"),
        ("DescribeTasks", {"Limit": True}, "InvalidParameter"),
        ("DescribeTasks", {"Status": "DONE"}, "InvalidParameterValue"),
        ("DescribeTasks", {"SubTaskHasFailed": "yes"}, "InvalidParameter"),
        ("DescribeTasks", {"ScrollToken": "page-2"}, "InvalidParameterValue"),
        ("DescribeTasks", {"StartTime": "yesterday"}, "InvalidParameter.StartTime"),
        ("DescribeTasks", {"EndTime": "2026-13-01T00:00:00Z"}, "InvalidParameter.EndTime"),
        ("DescribeTasks", {"Scrolltoken": ""}, "UnknownParameter"),
        ("DescribeTaskDetail", {}, "MissingParameter"),
        ("DescribeTaskDetail", {"TaskId": 7}, "InvalidParameter"),
        ("DescribeBatchTaskDetail", {"TaskId": "x", "Limit": 1}, "UnknownParameter"),
        ("DescribeTasks", b"[1, 2]", "InvalidParameter"),
        ("DescribeTasks", b"{not json", "InvalidParameter"),
    ],
)
async def test_bad_requests_get_the_api_error_codes(
    http: aiohttp.ClientSession,
    server: MpsServer,
    action: str,
    params: dict[str, Any] | bytes,
    code: str,
) -> None:
    answer, _ = await post(http, server, action, params)
    assert answer["Error"]["Code"] == code


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"Authorization": ""}, "AuthFailure.InvalidAuthorization"),
        ({"Authorization": "HmacSHA256 whatever"}, "AuthFailure.InvalidAuthorization"),
        ({"X-TC-Version": "2017-03-12"}, "NoSuchVersion"),  # signed or not: not signed
        ({"X-TC-Version": ""}, "MissingParameter"),
        ({"X-TC-Action": ""}, "MissingParameter"),
        ({"X-TC-Timestamp": "soon"}, "MissingParameter"),
        ({"Host": "mps.tencentcloudapi.com"}, "AuthFailure.SignatureFailure"),
        ({"Content-Type": "application/json; charset=utf-8"}, "AuthFailure.SignatureFailure"),
    ],
)
async def test_what_the_signature_covers_is_checked(
    http: aiohttp.ClientSession, server: MpsServer, change: dict[str, str], code: str
) -> None:
    answer, _ = await post(http, server, "DescribeTasks", {}, change=change)
    assert answer["Error"]["Code"] == code


async def test_a_body_changed_after_signing_fails_and_an_unsigned_payload_passes(
    http: aiohttp.ClientSession, server: MpsServer
) -> None:
    answer, _ = await post(http, server, "DescribeTasks", {"Limit": 5}, body=b'{"Limit": 6}')
    assert answer["Error"]["Code"] == "AuthFailure.SignatureFailure"
    # X-TC-Content-SHA256: UNSIGNED-PAYLOAD signs the literal instead of the body (the SDK's
    # ClientProfile.unsignedPayload); the signature here was made over the real body: refused.
    unsigned = {"X-TC-Content-SHA256": "UNSIGNED-PAYLOAD"}
    answer, _ = await post(http, server, "DescribeTasks", {}, change=unsigned)
    assert answer["Error"]["Code"] == "AuthFailure.SignatureFailure"
    answer, _ = await post(http, server, "DescribeTasks", b"UNSIGNED-PAYLOAD", change=unsigned)
    assert answer["Error"]["Code"] == "InvalidParameter"  # signed right, but not JSON


async def test_the_unsigned_payload_option_of_the_sdk_works(server: MpsServer) -> None:
    client = sdk(server)
    client.profile.unsignedPayload = True
    assert (await in_thread(lambda: describe_tasks(client))).TotalCount == 0


async def test_other_paths_and_methods_are_refused(
    http: aiohttp.ClientSession, server: MpsServer
) -> None:
    async with http.get(f"{server.url}/") as reply:
        assert reply.status == 405
    async with http.post(f"{server.url}/v2/index.php", data=b"{}") as reply:
        assert reply.status == 404


async def test_tasks_added_between_pages_are_neither_repeated_nor_skipped(
    http: aiohttp.ClientSession, server: MpsServer
) -> None:
    for n in range(5):
        server.add_task("WorkflowTask", workflow(f"old-{n}"), create_time=1_767_000_000 + n)
    first, _ = await post(http, server, "DescribeTasks", {"Limit": 2})
    server.add_task("WorkflowTask", workflow("new"), create_time=1_767_000_100)
    seen = [info["TaskId"] for info in first["TaskSet"]]
    token = first["ScrollToken"]
    while token:
        page, _ = await post(http, server, "DescribeTasks", {"Limit": 2, "ScrollToken": token})
        seen += [info["TaskId"] for info in page["TaskSet"]]
        token = page["ScrollToken"]
    assert seen == [f"old-{n}" for n in reversed(range(5))]
    assert page["TotalCount"] == 6


async def test_a_change_mode_task_is_updated_by_its_final_notification(
    http: aiohttp.ClientSession, server: MpsServer
) -> None:
    processing = json.loads(
        (EXAMPLES / "04_workflow_task_processing_change_mode.json").read_bytes()
    )
    task = server.add_from_notification(processing, create_time=1_767_000_000)
    assert (task.status, task.finish_time) == ("PROCESSING", None)
    finished = json.loads(json.dumps(processing))
    finished["WorkflowTaskEvent"]["Status"] = "FINISH"
    server.add_from_notification(finished, finish_time=1_767_000_300)
    [listed] = (await post(http, server, "DescribeTasks", {}))[0]["TaskSet"]
    assert listed["CreateTime"] == format_time(1_767_000_000)  # kept from the first one
    assert listed["FinishTime"] == format_time(1_767_000_300)
    detail, _ = await post(http, server, "DescribeTaskDetail", {"TaskId": task.task_id})
    assert detail["Status"] == "FINISH"
    assert detail["WorkflowTask"] == finished["WorkflowTaskEvent"]  # verbatim, nulls and all
    assert detail["TaskNotifyConfig"] is None


def _all_sdk_detail_fields() -> Iterator[str]:
    response = models.DescribeTaskDetailResponse()
    yield from (name[1:] for name in vars(response))


async def test_a_detail_has_every_field_of_the_sdk_response(
    http: aiohttp.ClientSession, server: MpsServer
) -> None:
    config = {"NotifyType": "URL", "NotifyUrl": "http://127.0.0.1:8080/mps/callback"}
    server.add_task("EditMediaTask", {"TaskId": "e", "Status": "FINISH"}, notify_config=config)
    detail, _ = await post(http, server, "DescribeTaskDetail", {"TaskId": "e"})
    assert set(detail) == set(_all_sdk_detail_fields())
    assert detail["TaskNotifyConfig"] == config
    batch = {name[1:] for name in vars(models.DescribeBatchTaskDetailResponse())}
    server.add_task("BatchTask", {}, task_id="b")
    detail, _ = await post(http, server, "DescribeBatchTaskDetail", {"TaskId": "b"})
    assert set(detail) == batch
