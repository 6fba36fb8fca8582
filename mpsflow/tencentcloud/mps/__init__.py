"""The MPS API: an asyncio client for the calls reconciliation needs (``DescribeTasks``,
``DescribeTaskDetail``, ``DescribeBatchTaskDetail``), its models and errors.

Named ``MpsApiClient`` so it is not confused with the official SDK's ``MpsClient``; it signs
and sends requests byte for byte as that one does. A task detail decodes into the same
:mod:`mpsflow.events` types as a notification, so :meth:`TaskDetail.to_notification` is the
notification MPS would have sent. Credentials are the CMQ client's
(:mod:`mpsflow.tencentcloud.cmq.credentials`).
"""

from __future__ import annotations

from mpsflow.tencentcloud.mps.client import (
    DEFAULT_ENDPOINT,
    DEFAULT_RATE_LIMIT,
    INTL_ENDPOINT,
    MPS_API_VERSION,
    MpsApiClient,
)
from mpsflow.tencentcloud.mps.errors import (
    MpsApiError,
    MpsAuthError,
    MpsNetworkError,
    MpsPermissionError,
    MpsResponseError,
    MpsTaskNotFoundError,
    MpsThrottledError,
)
from mpsflow.tencentcloud.mps.models import (
    BatchTaskDetail,
    DescribeTasksPage,
    TaskDetail,
    TaskNotifyConfig,
    TaskSimpleInfo,
    parse_time,
)
from mpsflow.tencentcloud.mps.ratelimit import TokenBucket

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_RATE_LIMIT",
    "INTL_ENDPOINT",
    "MPS_API_VERSION",
    "BatchTaskDetail",
    "DescribeTasksPage",
    "MpsApiClient",
    "MpsApiError",
    "MpsAuthError",
    "MpsNetworkError",
    "MpsPermissionError",
    "MpsResponseError",
    "MpsTaskNotFoundError",
    "MpsThrottledError",
    "TaskDetail",
    "TaskNotifyConfig",
    "TaskSimpleInfo",
    "TokenBucket",
    "parse_time",
]
