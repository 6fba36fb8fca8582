"""MpsApiClient against the fake MPS API over real loopback HTTP, on a FakeClock (no sleeps)."""

from __future__ import annotations

import logging
import socket
from datetime import datetime, timedelta, timezone

import pytest

from mpsflow.clock import FakeClock
from mpsflow.errors import ConfigurationError
from mpsflow.retry import RetryPolicy
from mpsflow.tencentcloud.cmq.credentials import Credential, EnvironmentCredentials
from mpsflow.tencentcloud.mps import (
    MpsApiClient,
    MpsApiError,
    MpsAuthError,
    MpsNetworkError,
    MpsResponseError,
    MpsTaskNotFoundError,
    MpsThrottledError,
    TokenBucket,
)
from tests.tencentcloud.mps.fake_mps import SECRET_ID, SECRET_KEY, ClientFactory, FakeMps

_ONCE = RetryPolicy(max_attempts=1)


def _detail(task_id: str) -> dict[str, object]:
    return {
        "TaskType": "WorkflowTask",
        "Status": "FINISH",
        "WorkflowTask": {"TaskId": task_id, "Status": "FINISH", "ErrCode": 0},
    }


# -- DescribeTasks ---------------------------------------------------------------------------


async def test_iter_tasks_follows_the_scroll_token(fake_mps: FakeMps, client: MpsApiClient) -> None:
    for n in range(5):
        fake_mps.add_task(f"task-{n}")
    fake_mps.add_task("still-running", status="PROCESSING")
    ids = [task.task_id async for task in client.iter_tasks(limit=2)]
    assert ids == [f"task-{n}" for n in range(5)]
    assert fake_mps.actions() == ["DescribeTasks"] * 3
    assert [r.params for r in fake_mps.requests] == [
        {"Status": "FINISH", "Limit": 2},
        {"Status": "FINISH", "Limit": 2, "ScrollToken": "2"},
        {"Status": "FINISH", "Limit": 2, "ScrollToken": "4"},
    ]


async def test_iter_pages_reports_the_total_and_the_last_page(
    fake_mps: FakeMps, client: MpsApiClient
) -> None:
    for n in range(3):
        fake_mps.add_task(f"task-{n}")
    pages = [page async for page in client.iter_pages(limit=2)]
    assert [len(p.task_set) for p in pages] == [2, 1]
    assert [p.total_count for p in pages] == [3, 3]
    assert [p.has_more for p in pages] == [True, False]
    assert pages[-1].scroll_token == ""
    assert pages[0].request_id == "req-1"
    assert pages[0].error is None


async def test_an_empty_listing_is_one_call(fake_mps: FakeMps, client: MpsApiClient) -> None:
    assert [t async for t in client.iter_tasks()] == []
    assert fake_mps.requests[0].params == {"Status": "FINISH", "Limit": 100}


async def test_a_scroll_token_that_does_not_advance_stops_the_scan(
    fake_mps: FakeMps, client: MpsApiClient
) -> None:
    for n in range(3):
        fake_mps.add_task(f"task-{n}")
    fake_mps.stuck_scroll_token = "1"
    seen: list[str] = []

    async def scan() -> None:
        async for task in client.iter_tasks(limit=1):
            seen.append(task.task_id)

    with pytest.raises(MpsResponseError) as caught:
        await scan()
    assert caught.value.action == "DescribeTasks"
    assert len(fake_mps.requests) == 2
    assert seen == ["task-0", "task-1"]


async def test_filters_and_the_time_window_are_sent_as_the_api_spells_them(
    fake_mps: FakeMps, client: MpsApiClient
) -> None:
    cst = timezone(timedelta(hours=8))
    await client.describe_tasks(
        "PROCESSING",
        start_time=datetime(2024, 5, 1, 8, 0, 0, 999_999, tzinfo=cst),
        end_time="2024-05-02T00:00:00Z",
        limit=7,
        sub_task_has_failed=False,
    )
    assert fake_mps.requests[0].params == {
        "Status": "PROCESSING",
        "SubTaskHasFailed": False,
        "Limit": 7,
        "StartTime": "2024-05-01T00:00:00Z",
        "EndTime": "2024-05-02T00:00:00Z",
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": 0},
        {"limit": 101},
        {"status": "DONE"},
        {"start_time": datetime(2024, 5, 1)},  # naive: which zone?
    ],
)
async def test_bad_arguments_are_refused_before_any_request(
    fake_mps: FakeMps, client: MpsApiClient, kwargs: dict[str, object]
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is ours, the type is the contract
        await client.describe_tasks(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # noqa: PT011
        await client.describe_task_detail("")
    assert fake_mps.requests == []


async def test_finish_time_unset_is_none(fake_mps: FakeMps, client: MpsApiClient) -> None:
    unset = "0000-00-00T00:00:00Z"
    fake_mps.add_task("queued", status="WAITING", BeginProcessTime=unset, FinishTime=unset)
    fake_mps.add_task("done", status="WAITING")
    queued, done = (await client.describe_tasks("WAITING")).task_set
    assert queued.begin_process_time is None
    assert queued.finish_time is None
    assert queued.finished_at is None
    assert queued.create_time == "2024-05-01T00:00:00Z"
    assert done.finish_time == "2024-05-01T00:01:00Z"
    assert done.finished_at == datetime(2024, 5, 1, 0, 1, tzinfo=timezone.utc)
    assert done.created_at == datetime(2024, 5, 1, tzinfo=timezone.utc)
    assert done.sub_task_types == ["Transcode"]


# -- details and errors ----------------------------------------------------------------------


async def test_task_detail_and_not_found(fake_mps: FakeMps, client: MpsApiClient) -> None:
    fake_mps.details["t-1"] = _detail("t-1")
    detail = await client.describe_task_detail("t-1")
    assert detail.task_id == "t-1"
    assert detail.request_id == "req-1"
    with pytest.raises(MpsTaskNotFoundError) as caught:
        await client.describe_task_detail("t-2")
    assert caught.value.code == "ResourceNotFound.TaskNotFound"
    assert caught.value.request_id == "req-2"
    assert caught.value.action == "DescribeTaskDetail"
    assert len(fake_mps.requests) == 2  # not found is an answer, never retried


@pytest.mark.parametrize(
    ("code", "error_type", "retryable"),
    [
        ("AuthFailure.SignatureExpire", MpsAuthError, False),
        ("ResourceNotFound.TaskNotFound", MpsTaskNotFoundError, False),
        ("FailedOperation.TaskNotFound", MpsTaskNotFoundError, False),
        ("InvalidParameterValue.TaskId", MpsTaskNotFoundError, False),
        ("RequestLimitExceeded", MpsThrottledError, True),
        ("RequestLimitExceeded.UinLimitExceeded", MpsThrottledError, True),
        ("InternalError", MpsApiError, True),
        ("InvalidParameter", MpsApiError, False),
    ],
)
async def test_error_codes_map_to_exceptions(
    fake_mps: FakeMps,
    make_client: ClientFactory,
    code: str,
    error_type: type[MpsApiError],
    retryable: bool,
) -> None:
    client = make_client(retry=_ONCE)
    fake_mps.fail(code, "what the server said")
    with pytest.raises(MpsApiError) as caught:
        await client.describe_batch_task_detail("t-1")
    error = caught.value
    assert type(error) is error_type
    assert (error.code, error.request_id) == (code, "req-1")
    assert error.api_message == "what the server said"
    assert error.action == "DescribeBatchTaskDetail"
    assert error.retryable is retryable


async def test_throttling_is_retried_with_backoff_on_the_clock(
    fake_mps: FakeMps, client: MpsApiClient, clock: FakeClock
) -> None:
    fake_mps.details["t-1"] = _detail("t-1")
    fake_mps.fail("RequestLimitExceeded", times=2)
    detail = await client.describe_task_detail("t-1")
    assert detail.task_id == "t-1"
    assert clock.sleeps == [0.5, 1.0]
    assert len(fake_mps.requests) == 3


async def test_throttling_gives_up_after_the_last_attempt(
    fake_mps: FakeMps, client: MpsApiClient, clock: FakeClock
) -> None:
    fake_mps.fail("RequestLimitExceeded", times=10)
    with pytest.raises(MpsThrottledError):
        await client.describe_tasks()
    assert clock.sleeps == [0.5, 1.0, 2.0]
    assert len(fake_mps.requests) == 4


async def test_backoff_has_jitter_by_default(
    fake_mps: FakeMps, make_client: ClientFactory, clock: FakeClock
) -> None:
    client = make_client(retry=None)  # the client's default policy
    fake_mps.fail("RequestLimitExceeded", times=2)
    await client.describe_tasks()
    first, second = clock.sleeps
    assert 0.25 <= first <= 0.5
    assert 0.5 <= second <= 1.0


@pytest.mark.parametrize(
    ("credentials", "code"),
    [
        (Credential(SECRET_ID, "not-the-secret-key"), "AuthFailure.SignatureFailure"),
        (Credential("AKIDunknown", SECRET_KEY), "AuthFailure.SecretIdNotFound"),
    ],
)
async def test_bad_credentials_raise_auth_error_without_retry(
    fake_mps: FakeMps,
    make_client: ClientFactory,
    clock: FakeClock,
    credentials: Credential,
    code: str,
) -> None:
    client = make_client(credentials=credentials)
    with pytest.raises(MpsAuthError) as caught:
        await client.verify_credentials()
    assert caught.value.code == code
    assert not caught.value.retryable
    assert clock.sleeps == []
    assert len(fake_mps.requests) == 1
    assert credentials.secret_key not in str(caught.value)
    assert credentials.secret_key not in repr(client)


async def test_verify_credentials_passes_with_good_keys(
    fake_mps: FakeMps, client: MpsApiClient
) -> None:
    await client.verify_credentials()
    assert fake_mps.requests[0].params == {"Status": "FINISH", "Limit": 1}


async def test_keys_come_from_the_environment_by_default(
    fake_mps: FakeMps, make_client: ClientFactory
) -> None:
    environ = {
        "TENCENTCLOUD_SECRETID": SECRET_ID,
        "TENCENTCLOUD_SECRETKEY": SECRET_KEY,
        "TENCENTCLOUD_SESSIONTOKEN": "role-session-token",
    }
    client = make_client(credentials=EnvironmentCredentials(environ), region="ap-shanghai")
    await client.describe_tasks()
    headers = fake_mps.requests[0].headers
    assert headers["X-TC-Token"] == "role-session-token"
    assert headers["X-TC-Region"] == "ap-shanghai"
    assert headers["X-TC-Version"] == "2019-06-12"


async def test_missing_environment_keys_fail_before_any_request(
    fake_mps: FakeMps, make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TENCENTCLOUD_SECRETID", "TENCENTCLOUD_SECRETKEY"):
        monkeypatch.delenv(name, raising=False)
    client = make_client(credentials=None)
    with pytest.raises(ConfigurationError):
        await client.verify_credentials()
    assert fake_mps.requests == []


# -- transport failures ----------------------------------------------------------------------


async def test_server_errors_are_retried_and_4xx_are_not(
    fake_mps: FakeMps, client: MpsApiClient, clock: FakeClock
) -> None:
    fake_mps.fail_http(503, times=2)
    await client.describe_tasks()
    assert clock.sleeps == [0.5, 1.0]
    fake_mps.fail_http(404)
    with pytest.raises(MpsNetworkError) as caught:
        await client.describe_tasks()
    assert (caught.value.status, caught.value.code) == (404, "ServerNetworkError")
    assert not caught.value.retryable
    assert clock.sleeps == [0.5, 1.0]
    assert len(fake_mps.requests) == 4


async def test_an_unreachable_endpoint_is_retried_then_raised(
    make_client: ClientFactory, clock: FakeClock
) -> None:
    with socket.socket() as probe:  # a port nothing listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client(endpoint=f"http://127.0.0.1:{port}")
    with pytest.raises(MpsNetworkError) as caught:
        await client.describe_tasks()
    assert caught.value.code == "ClientNetworkError"
    assert caught.value.unreachable == "connection refused"
    assert caught.value.api_message == f"cannot connect to 127.0.0.1:{port} (connection refused)"
    assert caught.value.status is None
    assert clock.sleeps == [0.5, 1.0, 2.0]


async def test_a_timeout_is_a_network_error(fake_mps: FakeMps, make_client: ClientFactory) -> None:
    client = make_client(request_timeout=0.05, retry=_ONCE)
    fake_mps.hang()
    with pytest.raises(MpsNetworkError) as caught:
        await client.describe_tasks()
    assert caught.value.retryable
    assert caught.value.code == "ClientNetworkError"


@pytest.mark.parametrize(
    "body",
    [
        b"<html>gateway</html>",
        b'{"Response": {"TotalCount": "many", "RequestId": "r"}}',
        b'{"NoResponse": {}}',
    ],
)
async def test_an_unreadable_answer_is_a_response_error_not_retried(
    fake_mps: FakeMps, client: MpsApiClient, clock: FakeClock, body: bytes
) -> None:
    fake_mps.answer_raw(body)
    with pytest.raises(MpsResponseError) as caught:
        await client.describe_tasks()
    assert caught.value.code == "InvalidResponse"
    assert clock.sleeps == []


async def test_an_oversized_answer_is_refused(
    fake_mps: FakeMps, make_client: ClientFactory
) -> None:
    fake_mps.details["big"] = {**_detail("big"), "ExtInfo": "x" * 10_000}
    client = make_client(max_response_size=4096)
    with pytest.raises(MpsResponseError):
        await client.describe_task_detail("big")


@pytest.mark.parametrize(
    "endpoint",
    [
        "mps.tencentcloudapi.com",
        "ftp://mps.tencentcloudapi.com",
        "https://u:p@host",
        "https://h/v2",
    ],
)
def test_bad_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        MpsApiClient(Credential(SECRET_ID, SECRET_KEY), endpoint=endpoint)


def test_repr_names_the_endpoint_only() -> None:
    client = MpsApiClient(Credential(SECRET_ID, SECRET_KEY), region="ap-guangzhou")
    expected = "MpsApiClient('https://mps.tencentcloudapi.com/', region='ap-guangzhou')"
    assert repr(client) == expected
    assert client.url == "https://mps.tencentcloudapi.com/"


# -- rate limit and logs ---------------------------------------------------------------------


async def test_the_rate_limit_spaces_requests_on_the_clock(
    fake_mps: FakeMps, make_client: ClientFactory, clock: FakeClock
) -> None:
    client = make_client(rate_limit=10.0)
    start = clock.monotonic()
    for _ in range(5):
        await client.describe_tasks()
    assert clock.sleeps == pytest.approx([0.1] * 4)
    assert clock.monotonic() - start == pytest.approx(0.4)
    assert len(fake_mps.requests) == 5


async def test_clients_can_share_one_bucket(
    fake_mps: FakeMps, make_client: ClientFactory, clock: FakeClock
) -> None:
    bucket = TokenBucket(5.0, burst=2, clock=clock)
    first, second = make_client(rate_limit=bucket), make_client(rate_limit=bucket)
    for client in (first, second, first, second):
        await client.describe_tasks()
    assert clock.sleeps == pytest.approx([0.2, 0.2])


async def test_logs_and_errors_never_show_keys_or_signatures(
    fake_mps: FakeMps,
    make_client: ClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = "session-token-must-stay-secret"
    client = make_client(credentials=Credential(SECRET_ID, SECRET_KEY, token))
    fake_mps.fail("RequestLimitExceeded", times=2)
    fake_mps.fail("InvalidParameter", "bad")
    with caplog.at_level(logging.DEBUG), pytest.raises(MpsApiError) as caught:
        await client.describe_tasks()
    signatures = [r.headers["Authorization"].rsplit("=", 1)[1] for r in fake_mps.requests]
    shown = caplog.text + str(caught.value) + repr(caught.value)
    assert "retrying" in caplog.text
    for secret in (SECRET_KEY, token, *signatures):
        assert secret not in shown
