"""mpsflow: typed, fast, never-lose-one handling of Tencent Cloud MPS event notifications.

``@app.on("Transcode")`` handlers receive typed msgspec results; sources (HTTP, CMQ, SCF,
files, memory) feed one pipeline with signature checks, dedup, retries and dead letters.
"""

from mpsflow.app import App
from mpsflow.clock import Clock, FakeClock, SystemClock
from mpsflow.codec import decode, decode_any, decode_live, encode
from mpsflow.context import Context, current_context
from mpsflow.delivery import Cause, Delivery, Outcome, Settlement
from mpsflow.errors import (
    ConfigurationError,
    DecodeError,
    MpsflowError,
    Reject,
    Retry,
    SinkError,
    StartupError,
    StoreUnavailable,
)
from mpsflow.events import LiveStreamNotification, Notification
from mpsflow.middleware.base import Call, CallNext, HandlerInfo, Middleware
from mpsflow.retry import RetryPolicy
from mpsflow.router import Router
from mpsflow.sinks.base import Sink
from mpsflow.sources.base import PullSource, Source
from mpsflow.sources.runtime import SourceRuntime

__all__ = [
    "App",
    "Call",
    "CallNext",
    "Cause",
    "Clock",
    "ConfigurationError",
    "Context",
    "DecodeError",
    "Delivery",
    "FakeClock",
    "HandlerInfo",
    "LiveStreamNotification",
    "Middleware",
    "MpsflowError",
    "Notification",
    "Outcome",
    "PullSource",
    "Reject",
    "Retry",
    "RetryPolicy",
    "Router",
    "Settlement",
    "Sink",
    "SinkError",
    "Source",
    "SourceRuntime",
    "StartupError",
    "StoreUnavailable",
    "SystemClock",
    "current_context",
    "decode",
    "decode_any",
    "decode_live",
    "encode",
]

__version__ = "0.2.0"
