"""API error codes to exceptions: which are which, and which are retried."""

from __future__ import annotations

import pytest

from mpsflow.errors import MpsflowError
from mpsflow.tencentcloud.mps.errors import (
    MpsApiError,
    MpsAuthError,
    MpsNetworkError,
    MpsPermissionError,
    MpsResponseError,
    MpsTaskNotFoundError,
    MpsThrottledError,
    api_error,
)


@pytest.mark.parametrize(
    ("code", "error_type", "retryable"),
    [
        ("AuthFailure", MpsAuthError, False),
        ("AuthFailure.SecretIdNotFound", MpsAuthError, False),
        ("AuthFailure.TokenFailure", MpsAuthError, False),
        ("UnauthorizedOperation", MpsPermissionError, False),
        ("ResourceNotFound.TaskNotFound", MpsTaskNotFoundError, False),
        ("FailedOperation.TaskNotFound", MpsTaskNotFoundError, False),
        ("InvalidParameterValue.TaskId", MpsTaskNotFoundError, False),
        ("RequestLimitExceeded", MpsThrottledError, True),
        ("RequestLimitExceeded.GlobalRegionUinLimitExceeded", MpsThrottledError, True),
        ("InternalError.DbError", MpsApiError, True),
        ("ResourceNotFound", MpsApiError, False),
        ("AuthFailureX", MpsApiError, False),
        ("InvalidParameterValue", MpsApiError, False),
    ],
)
def test_codes_map_to_the_most_specific_exception(
    code: str, error_type: type[MpsApiError], retryable: bool
) -> None:
    error = api_error(code, "message", "req-1", "DescribeTasks")
    assert type(error) is error_type
    assert error.retryable is retryable
    assert (error.code, error.api_message, error.request_id, error.action) == (
        code,
        "message",
        "req-1",
        "DescribeTasks",
    )
    assert isinstance(error, MpsflowError)
    assert code in str(error)
    assert "req-1" in str(error)


def test_a_permission_error_is_an_auth_error() -> None:
    assert issubclass(MpsPermissionError, MpsAuthError)


def test_network_and_response_errors_use_the_sdks_codes() -> None:
    no_answer = MpsNetworkError("DescribeTasks", "connection reset")
    assert no_answer.code == "ClientNetworkError"
    assert (no_answer.status, no_answer.retryable) == (None, True)
    bad_status = MpsNetworkError("DescribeTasks", "HTTP 502", status=502)
    assert bad_status.code == "ServerNetworkError"
    unreadable = MpsResponseError("DescribeTasks", "not JSON")
    assert unreadable.code == "InvalidResponse"
    assert (unreadable.retryable, unreadable.request_id) == (False, "")
