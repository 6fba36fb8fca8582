"""MpsApiClient sends, byte for byte, the request the official SDK's MpsClient builds.

The client's request is captured by the fake server; the SDK builds the same call with its own
models (``tencentcloud.mps.v20190612.models``) and its own signer
(``AbstractClient._build_req_with_tc3_signature``) at the same timestamp, for the same host.
Body, Authorization and every signed or protocol header must be equal.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from tencentcloud.common import credential
from tencentcloud.common.http.request import RequestInternal
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.mps.v20190612 import models as sdk
from tencentcloud.mps.v20190612 import mps_client

from mpsflow.clock import FakeClock
from mpsflow.tencentcloud.cmq.credentials import Credential
from mpsflow.tencentcloud.mps import MpsApiClient, MpsTaskNotFoundError
from mpsflow.tencentcloud.mps.client import DEFAULT_ENDPOINT, MPS_API_VERSION, MPS_SERVICE
from tests.tencentcloud.mps.fake_mps import SECRET_ID, SECRET_KEY, ClientFactory, FakeMps

_CST = timezone(timedelta(hours=8))
_HEADERS = ("Content-Type", "Host", "X-TC-Action", "X-TC-Timestamp", "X-TC-Version")

Call = Callable[[MpsApiClient], Awaitable[object]]


def _tasks_model() -> sdk.DescribeTasksRequest:
    model = sdk.DescribeTasksRequest()
    model.Status = "FINISH"
    model.SubTaskHasFailed = True
    model.Limit = 50
    model.ScrollToken = "40"
    model.StartTime = "2024-05-01T00:00:00Z"
    model.EndTime = "2024-05-01T16:30:15Z"
    return model


async def _describe_tasks(client: MpsApiClient) -> object:
    return await client.describe_tasks(
        "FINISH",
        start_time=datetime(2024, 5, 1, 8, 0, tzinfo=_CST),
        end_time="2024-05-01T16:30:15Z",
        limit=50,
        scroll_token="40",
        sub_task_has_failed=True,
    )


def _detail_model(cls: Any) -> Any:
    model = cls()
    model.TaskId = "2459-WorkflowTask-视频 a&b"
    return model


async def _describe_task_detail(client: MpsApiClient) -> object:
    with pytest.raises(MpsTaskNotFoundError):  # the fake knows no such task; the request counts
        await client.describe_task_detail("2459-WorkflowTask-视频 a&b")
    return None


async def _describe_batch_task_detail(client: MpsApiClient) -> object:
    with pytest.raises(MpsTaskNotFoundError):
        await client.describe_batch_task_detail("2459-WorkflowTask-视频 a&b")
    return None


_CALLS: list[tuple[str, Callable[[], Any], Call]] = [
    ("DescribeTasks", _tasks_model, _describe_tasks),
    (
        "DescribeTaskDetail",
        lambda: _detail_model(sdk.DescribeTaskDetailRequest),
        _describe_task_detail,
    ),
    (
        "DescribeBatchTaskDetail",
        lambda: _detail_model(sdk.DescribeBatchTaskDetailRequest),
        _describe_batch_task_detail,
    ),
]


def _sdk_request(
    monkeypatch: pytest.MonkeyPatch,
    action: str,
    model: Any,
    *,
    host: str,
    region: str | None,
    token: str | None,
    timestamp: int,
) -> tuple[dict[str, str], str]:
    """The headers and body the official MpsClient builds for ``model`` at ``timestamp``."""
    profile = ClientProfile(httpProfile=HttpProfile(endpoint=host))
    client = mps_client.MpsClient(
        credential.Credential(SECRET_ID, SECRET_KEY, token), region or "", profile
    )
    request = RequestInternal(host, "POST", "/", header={})
    with monkeypatch.context() as patch, warnings.catch_warnings():
        patch.setattr("tencentcloud.common.abstract_client.time.time", lambda: timestamp + 0.7)
        warnings.simplefilter("ignore", DeprecationWarning)  # utcfromtimestamp on 3.12+
        client._build_req_with_tc3_signature(action, model._serialize(), request)
    return request.header, request.data


@pytest.mark.parametrize("case", _CALLS, ids=[c[0] for c in _CALLS])
@pytest.mark.parametrize(
    "signer",
    [
        (1_551_113_065, None, None),
        (1_700_000_000, "ap-singapore", None),
        (1_735_689_599, "ap-guangzhou", "temporary-session-token"),
    ],
    ids=["plain", "region", "region-token"],
)
async def test_request_is_the_official_sdks(
    monkeypatch: pytest.MonkeyPatch,
    fake_mps: FakeMps,
    make_client: ClientFactory,
    case: tuple[str, Callable[[], Any], Call],
    signer: tuple[int, str | None, str | None],
) -> None:
    action, model, call = case
    timestamp, region, token = signer
    client = make_client(
        credentials=Credential(SECRET_ID, SECRET_KEY, token),
        region=region,
        clock=FakeClock(start=timestamp + 0.7),
    )
    await call(client)
    (sent,) = fake_mps.requests
    headers, body = _sdk_request(
        monkeypatch,
        action,
        model(),
        host=fake_mps.host,
        region=region,
        token=token,
        timestamp=timestamp,
    )
    assert sent.body == body.encode()
    assert sent.headers["Authorization"] == headers["Authorization"]
    for name in _HEADERS:
        assert sent.headers[name] == headers[name], name
    assert sent.headers.get("X-TC-Region") == headers.get("X-TC-Region")
    assert sent.headers.get("X-TC-Token") == headers.get("X-TC-Token")
    assert headers["Authorization"].startswith(
        f"TC3-HMAC-SHA256 Credential={SECRET_ID}/"
        f"{datetime.fromtimestamp(timestamp, timezone.utc):%Y-%m-%d}/mps/tc3_request, "
        "SignedHeaders=content-type;host, Signature="
    )


def test_default_endpoint_and_version_are_the_sdks() -> None:
    assert f"https://{mps_client.MpsClient._endpoint}" == DEFAULT_ENDPOINT
    assert mps_client.MpsClient._apiVersion == MPS_API_VERSION
    assert mps_client.MpsClient._service == MPS_SERVICE
