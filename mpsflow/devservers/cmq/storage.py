"""The data file of the local CMQ server: its queues and messages as JSON, written atomically.

``CmqServer(data_path=...)`` loads it at construction and saves it while running and at stop,
so a development queue survives a restart.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from mpsflow._sqlite_connections import names_directory

__all__ = ["Snapshot", "StoredMessage", "StoredQueue", "data_path_problem", "write_atomically"]


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


def data_path_problem(path: str | os.PathLike[str], option: str) -> str | None:
    """The one line saying why ``path`` cannot be the data file (``option``: how it was given,
    ``--data`` or ``data_path``) and what to give instead; None when it can.

    Its folder is made when missing, so a path that cannot be saved to fails at the start,
    not at the first save, and a path written as a folder (``sub/``), missing or not, is
    refused rather than saved to as a file named ``sub``.
    """
    text = os.fspath(path)
    if names_directory(text):
        return (
            f"{option} {text}: it is a directory, not a file: give {option} a file path (the"
            f" queues are kept there as JSON), e.g. {os.path.join(text, 'queues.json')}"
        )
    folder = Path(text).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        in_the_way = isinstance(exc, FileExistsError | NotADirectoryError)
        reason = "a file is in the way" if in_the_way else exc.strerror or str(exc)
        return (
            f"{option} {text}: cannot make its folder {folder} ({reason}): give {option} a file"
            " path in a folder this user can write"
        )
    return None
