"""The data file of the local CMQ server: its queues and messages as JSON, written atomically.

``CmqServer(data_path=...)`` loads it at construction and saves it while running and at stop,
so a development queue survives a restart.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

__all__ = ["Snapshot", "StoredMessage", "StoredQueue", "write_atomically"]


class StoredMessage(msgspec.Struct, rename="camel"):
    """One message as saved: its id, body, timing and delivery count (not its handle)."""

    msg_id: str
    msg_body: str
    enqueue_time: float
    visible_at: float
    first_dequeue_time: float = 0.0
    dequeue_count: int = 0


class StoredQueue(msgspec.Struct, rename="camel"):
    """One queue as saved: its settings and its messages in the order they were sent.

    ``max_msg_heap_num`` (saved as ``maxMsgHeapNum``, CMQ's name) is None in files written
    before the server bounded its queues; such a queue loads with the server's default.
    """

    name: str
    visibility_timeout: int
    max_msg_size: int
    polling_wait_seconds: int
    messages: list[StoredMessage]
    max_msg_heap_num: int | None = None


class Snapshot(msgspec.Struct):
    """The whole data file."""

    version: int
    queues: list[StoredQueue]


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` through a temporary file, so readers never see half."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
