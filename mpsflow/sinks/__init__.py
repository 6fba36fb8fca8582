"""Sinks: where handlers' records go, and the channel that batches and retries for them.

Wrap any sink in a ``SinkChannel`` (the app does it for you) to get buffering, batching,
backpressure and retries; each sink itself only knows how to deliver one batch. Shipped sinks
are ``KeyedSink``s: they also get each record's idempotency key (from ``ctx.effect_key``) and
use it so that a handler re-run after a crash repeats nothing (see each sink's docs).

The network sinks (webhook, WeCom, COS/S3, SCF, CMQ) are imported on first use, so importing
mpsflow stays fast where it matters (an SCF cold start) and ``mpsflow[cos]`` stays optional.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mpsflow.sinks.base import KeyedSink, Sink
from mpsflow.sinks.channel import Receipt, SinkChannel
from mpsflow.sinks.jsonl import JsonlSink, read_jsonl
from mpsflow.sinks.memory import MemorySink

if TYPE_CHECKING:
    from mpsflow.sinks.cmq import CmqSink
    from mpsflow.sinks.cos import ObjectRef, S3Sink, cos_endpoint
    from mpsflow.sinks.scf import Offloader, ScfInvokeSink
    from mpsflow.sinks.webhook import WebhookSink, sign_body, verify_signature
    from mpsflow.sinks.wecom import WeComRobotSink, wecom_markdown

__all__ = [
    "CmqSink",
    "JsonlSink",
    "KeyedSink",
    "MemorySink",
    "ObjectRef",
    "Offloader",
    "Receipt",
    "S3Sink",
    "ScfInvokeSink",
    "Sink",
    "SinkChannel",
    "WeComRobotSink",
    "WebhookSink",
    "cos_endpoint",
    "read_jsonl",
    "sign_body",
    "verify_signature",
    "wecom_markdown",
]

_LAZY = {
    "CmqSink": "mpsflow.sinks.cmq",
    "ObjectRef": "mpsflow.sinks.cos",
    "S3Sink": "mpsflow.sinks.cos",
    "cos_endpoint": "mpsflow.sinks.cos",
    "Offloader": "mpsflow.sinks.scf",
    "ScfInvokeSink": "mpsflow.sinks.scf",
    "WebhookSink": "mpsflow.sinks.webhook",
    "sign_body": "mpsflow.sinks.webhook",
    "verify_signature": "mpsflow.sinks.webhook",
    "WeComRobotSink": "mpsflow.sinks.wecom",
    "wecom_markdown": "mpsflow.sinks.wecom",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
