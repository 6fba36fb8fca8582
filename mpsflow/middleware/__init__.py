"""Middleware: the protocol, and the logging and timing middleware that ship with mpsflow."""

from mpsflow.middleware.base import Call, CallNext, HandlerInfo, Middleware, chain
from mpsflow.middleware.logging import LoggingMiddleware
from mpsflow.middleware.timing import TimingMiddleware

__all__ = [
    "Call",
    "CallNext",
    "HandlerInfo",
    "LoggingMiddleware",
    "Middleware",
    "TimingMiddleware",
    "chain",
]
