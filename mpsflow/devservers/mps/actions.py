"""The API of the local MPS server: its three actions, their parameters and MPS-shaped errors.

Each action takes the tasks, the request's JSON parameters and the server's
:class:`ActionOptions`, and returns the ``Response`` fields (without ``RequestId``); a
failure is raised as :class:`ApiError` and answered as
``{"Response": {"Error": {"Code", "Message"}, "RequestId"}}`` with HTTP 200, the way Tencent
Cloud API 3.0 answers errors (the SDK's ``AbstractClient._check_error`` reads them from a 200).

Parameters are those of the SDK's request models (``DescribeTasksRequest``,
``DescribeTaskDetailRequest``, ``DescribeBatchTaskDetailRequest``, ``models.py`` of
``tencentcloud-sdk-python-mps`` 3.1.194); any other name answers ``UnknownParameter``, a wrong
JSON type ``InvalidParameter``, a value out of range ``InvalidParameterValue`` (codes from the
API's common error codes and the SDK's ``errorcodes.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from mpsflow.devservers.mps.tasks import (
    STATUSES,
    TaskStore,
    TimeField,
    decode_cursor,
    encode_cursor,
    parse_time,
)

__all__ = [
    "ACTIONS",
    "AUTH_INVALID_AUTHORIZATION",
    "AUTH_SECRET_ID_NOT_FOUND",
    "AUTH_SIGNATURE_EXPIRE",
    "AUTH_SIGNATURE_FAILURE",
    "AUTH_TOKEN_FAILURE",
    "DEFAULT_LIMIT",
    "INVALID_ACTION",
    "INVALID_PARAMETER",
    "INVALID_PARAMETER_VALUE",
    "MAX_LIMIT",
    "MISSING_PARAMETER",
    "NO_SUCH_VERSION",
    "REQUEST_LIMIT_EXCEEDED",
    "TASK_NOT_FOUND",
    "UNKNOWN_PARAMETER",
    "Action",
    "ActionOptions",
    "ApiError",
]

AUTH_INVALID_AUTHORIZATION: Final = "AuthFailure.InvalidAuthorization"
AUTH_SECRET_ID_NOT_FOUND: Final = "AuthFailure.SecretIdNotFound"
AUTH_SIGNATURE_EXPIRE: Final = "AuthFailure.SignatureExpire"
AUTH_SIGNATURE_FAILURE: Final = "AuthFailure.SignatureFailure"
AUTH_TOKEN_FAILURE: Final = "AuthFailure.TokenFailure"
INVALID_ACTION: Final = "InvalidAction"
NO_SUCH_VERSION: Final = "NoSuchVersion"
MISSING_PARAMETER: Final = "MissingParameter"
UNKNOWN_PARAMETER: Final = "UnknownParameter"
INVALID_PARAMETER: Final = "InvalidParameter"
INVALID_PARAMETER_VALUE: Final = "InvalidParameterValue"
REQUEST_LIMIT_EXCEEDED: Final = "RequestLimitExceeded"
TASK_NOT_FOUND: Final = "ResourceNotFound.TaskNotFound"
"""What an unknown TaskId answers by default (MPS also documents
``FailedOperation.TaskNotFound`` and ``InvalidParameterValue.TaskId``; see
:class:`ActionOptions`)."""
_INVALID_LIMIT: Final = "InvalidParameterValue.Limit"
_INVALID_START_TIME: Final = "InvalidParameter.StartTime"
_INVALID_END_TIME: Final = "InvalidParameter.EndTime"

DEFAULT_LIMIT: Final = 10
"""``DescribeTasks``' page size when ``Limit`` is not given ("默认值：10", SDK docstring)."""
MAX_LIMIT: Final = 100
"""The largest ``Limit`` ("最大值：100", SDK docstring)."""

_T = TypeVar("_T")


class ApiError(Exception):
    """An API error: answered with HTTP 200 as ``Response.Error`` ``{Code, Message}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ActionOptions:
    """How the actions answer where real MPS is undocumented.

    ``time_field``: whether ``StartTime``/``EndTime`` bound the creation or the finish time
    (see :class:`~mpsflow.devservers.mps.tasks.TaskStore`). ``not_found_code``: the error
    code of an unknown ``TaskId``.
    """

    time_field: TimeField = "create"
    not_found_code: str = TASK_NOT_FOUND


Action = Callable[[TaskStore, Mapping[str, Any], ActionOptions], dict[str, Any]]
"""An action: ``(tasks, params, options)`` to its ``Response`` fields."""


def _check_names(params: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for name in params:
        if name not in known:
            raise ApiError(UNKNOWN_PARAMETER, f"The parameter `{name[:60]}` is not recognized.")


def _optional(params: Mapping[str, Any], name: str, kind: type[_T]) -> _T | None:
    """Parameter ``name`` of JSON type ``kind``; None when absent or null."""
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        wanted = {str: "a string", int: "an integer", bool: "a boolean"}.get(kind, kind.__name__)
        raise ApiError(INVALID_PARAMETER, f"The parameter `{name}` must be {wanted}.")
    return value


def _time(params: Mapping[str, Any], name: str, code: str) -> float | None:
    text = _optional(params, name, str)
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        raise ApiError(
            code, f"The parameter `{name}` must be an ISO 8601 time, like 2019-07-23T16:08:35Z."
        ) from None


def _task_id(params: Mapping[str, Any]) -> str:
    _check_names(params, ("TaskId",))
    task_id = _optional(params, "TaskId", str)
    if not task_id:
        raise ApiError(MISSING_PARAMETER, "The parameter `TaskId` is missing.")
    return task_id


def _describe_tasks(
    tasks: TaskStore, params: Mapping[str, Any], options: ActionOptions
) -> dict[str, Any]:
    """``DescribeTasks``: a page of ``TaskSimpleInfo``, newest first, by ``ScrollToken``.

    ``SubTaskHasFailed`` matches a task by whether a subtask has failed so far (whatever its
    status; the SDK says "任务结束时", at the end of the task, so ask with ``Status=FINISH``).
    """
    names = ("Status", "SubTaskHasFailed", "Limit", "ScrollToken", "StartTime", "EndTime")
    _check_names(params, names)
    status = _optional(params, "Status", str)
    if status is not None and status not in STATUSES:
        raise ApiError(
            INVALID_PARAMETER_VALUE, f"The parameter `Status` must be one of {', '.join(STATUSES)}."
        )
    failed = _optional(params, "SubTaskHasFailed", bool)
    limit = _optional(params, "Limit", int)
    if limit is None:
        limit = DEFAULT_LIMIT
    elif not 1 <= limit <= MAX_LIMIT:
        raise ApiError(_INVALID_LIMIT, f"The parameter `Limit` must be from 1 to {MAX_LIMIT}.")
    token = _optional(params, "ScrollToken", str) or ""
    try:
        start = decode_cursor(token) if token else None
    except ValueError:
        raise ApiError(INVALID_PARAMETER_VALUE, "The parameter `ScrollToken` is invalid.") from None
    page, following, total = tasks.page(
        limit=limit,
        start=start,
        status=status,
        failed=failed,
        since=_time(params, "StartTime", _INVALID_START_TIME),
        until=_time(params, "EndTime", _INVALID_END_TIME),
        time_field=options.time_field,
    )
    return {
        "TaskSet": [task.simple_info() for task in page],
        "ScrollToken": "" if following is None else encode_cursor(following),
        "TotalCount": total,
    }


def _describe_task_detail(
    tasks: TaskStore, params: Mapping[str, Any], options: ActionOptions
) -> dict[str, Any]:
    """``DescribeTaskDetail``: every task but a ``BatchTask`` (which answers not found)."""
    task_id = _task_id(params)
    task = tasks.get(task_id)
    if task is None or task.is_batch:
        raise ApiError(options.not_found_code, f"The task `{task_id}` does not exist.")
    return task.detail()


def _describe_batch_task_detail(
    tasks: TaskStore, params: Mapping[str, Any], options: ActionOptions
) -> dict[str, Any]:
    """``DescribeBatchTaskDetail``: ``BatchTask`` tasks only (others answer not found)."""
    task_id = _task_id(params)
    task = tasks.get(task_id)
    if task is None or not task.is_batch:
        raise ApiError(options.not_found_code, f"The batch task `{task_id}` does not exist.")
    return task.detail()


ACTIONS: Final[Mapping[str, Action]] = {
    "DescribeTasks": _describe_tasks,
    "DescribeTaskDetail": _describe_task_detail,
    "DescribeBatchTaskDetail": _describe_batch_task_detail,
}
"""The actions the server answers, by ``X-TC-Action``."""
