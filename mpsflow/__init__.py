"""mpsflow: typed, fast, never-lose-one handling of Tencent Cloud MPS event notifications.

``@app.on("Transcode")`` handlers receive typed msgspec results; sources (HTTP, CMQ, SCF,
files, memory) feed one pipeline with signature checks, dedup, retries and dead letters.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_LAZY: dict[str, str] = {
    "App": "mpsflow.app",
    "Call": "mpsflow.middleware.base",
    "CallNext": "mpsflow.middleware.base",
    "Cause": "mpsflow.delivery",
    "Clock": "mpsflow.clock",
    "ConfigurationError": "mpsflow.errors",
    "Context": "mpsflow.context",
    "DecodeError": "mpsflow.errors",
    "Delivery": "mpsflow.delivery",
    "FakeClock": "mpsflow.clock",
    "HandlerInfo": "mpsflow.middleware.base",
    "LiveStreamNotification": "mpsflow.events",
    "Middleware": "mpsflow.middleware.base",
    "MpsflowError": "mpsflow.errors",
    "Notification": "mpsflow.events",
    "Outcome": "mpsflow.delivery",
    "PullSource": "mpsflow.sources.base",
    "Reject": "mpsflow.errors",
    "Retry": "mpsflow.errors",
    "RetryPolicy": "mpsflow.retry",
    "Router": "mpsflow.router",
    "Settlement": "mpsflow.delivery",
    "Sink": "mpsflow.sinks.base",
    "SinkError": "mpsflow.errors",
    "Source": "mpsflow.sources.base",
    "SourceRuntime": "mpsflow.sources.runtime",
    "StartupError": "mpsflow.errors",
    "StoreUnavailable": "mpsflow.errors",
    "SystemClock": "mpsflow.clock",
    "current_context": "mpsflow.context",
    "decode": "mpsflow.codec",
    "decode_any": "mpsflow.codec",
    "decode_live": "mpsflow.codec",
    "encode": "mpsflow.codec",
}
"""Public name → the module that owns it, imported on first use: ``import mpsflow`` (and so
every ``mpsflow`` command) starts without loading the whole framework, and a Ctrl-C while a
command starts ends it quietly instead of interrupting an import outside its handler."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif name.startswith("_"):
        raise AttributeError(f"module 'mpsflow' has no attribute {name!r}")
    else:  # a subpackage or module: ``import mpsflow; mpsflow.events``
        try:
            value = importlib.import_module(f"mpsflow.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"mpsflow.{name}":
                raise
            raise AttributeError(f"module 'mpsflow' has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
