"""TDMQ-CMQ: an asyncio client for the queue message API, its signing, credentials and errors.

The local CMQ-compatible server for development and tests lives in :mod:`mpsflow.devservers.cmq`
(imported on its own so that ``python -m mpsflow.devservers.cmq`` runs cleanly).
"""

from __future__ import annotations

from mpsflow.tencentcloud.cmq.client import CmqClient, legacy_endpoint, tdmq_endpoint
from mpsflow.tencentcloud.cmq.credentials import (
    Credential,
    CredentialProvider,
    EnvironmentCredentials,
    RefreshingCredentials,
    StaticCredentials,
)
from mpsflow.tencentcloud.cmq.errors import (
    CmqAuthError,
    CmqError,
    CmqMessageTooLargeError,
    CmqNetworkError,
    CmqQueueFullError,
    CmqQueueNotFoundError,
    CmqReceiptHandleError,
    CmqServerError,
    CmqThrottledError,
)
from mpsflow.tencentcloud.cmq.models import DeleteFailure, Message

__all__ = [
    "CmqAuthError",
    "CmqClient",
    "CmqError",
    "CmqMessageTooLargeError",
    "CmqNetworkError",
    "CmqQueueFullError",
    "CmqQueueNotFoundError",
    "CmqReceiptHandleError",
    "CmqServerError",
    "CmqThrottledError",
    "Credential",
    "CredentialProvider",
    "DeleteFailure",
    "EnvironmentCredentials",
    "Message",
    "RefreshingCredentials",
    "StaticCredentials",
    "legacy_endpoint",
    "tdmq_endpoint",
]
