"""TDMQ-CMQ: an asyncio client for the queue message API, its signing, credentials and errors.

The local CMQ-compatible server for development and tests lives in :mod:`mpsflow.cmq.server`
(imported on its own so that ``python -m mpsflow.cmq.server`` runs cleanly).
"""

from __future__ import annotations

from mpsflow.cmq.client import CmqClient, legacy_endpoint, tdmq_endpoint
from mpsflow.cmq.credentials import (
    Credential,
    CredentialProvider,
    EnvironmentCredentials,
    RefreshingCredentials,
    StaticCredentials,
)
from mpsflow.cmq.errors import (
    CmqAuthError,
    CmqError,
    CmqMessageTooLargeError,
    CmqNetworkError,
    CmqQueueNotFoundError,
    CmqReceiptHandleError,
    CmqServerError,
    CmqThrottledError,
)
from mpsflow.cmq.models import DeleteFailure, Message

__all__ = [
    "CmqAuthError",
    "CmqClient",
    "CmqError",
    "CmqMessageTooLargeError",
    "CmqNetworkError",
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
