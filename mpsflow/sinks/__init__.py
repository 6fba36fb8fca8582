"""Sinks: where handlers' records go, and the channel that batches and retries for them.

Wrap any sink in a ``SinkChannel`` (the app does it for you) to get buffering, batching,
backpressure and retries; each sink itself only knows how to deliver one batch.
"""

from mpsflow.sinks.base import Sink
from mpsflow.sinks.channel import Receipt, SinkChannel
from mpsflow.sinks.cos import ObjectRef, S3Sink, cos_endpoint
from mpsflow.sinks.jsonl import JsonlSink, read_jsonl
from mpsflow.sinks.memory import MemorySink
from mpsflow.sinks.scf import Offloader, ScfInvokeSink
from mpsflow.sinks.webhook import WebhookSink, sign_body, verify_signature
from mpsflow.sinks.wecom import WeComRobotSink, wecom_markdown

__all__ = [
    "JsonlSink",
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
