"""CmqSink: publish records as messages of a CMQ / TDMQ-CMQ queue.

Each record becomes one ``msgBody``: bytes are sent as they are (they must be UTF-8 text, as the
form API carries text), anything else is encoded with ``msgspec.json.encode`` unless an
``encoder`` is given. A batch goes out as BatchSendMessage calls of at most 16 messages and
64 KB each. Every record is encoded and size-checked before the first call, so a record that can
never be sent fails the batch without publishing part of it; a failure after some chunks went
out fails the batch, and the channel's retry sends those again (at least once).

Idempotency: CMQ's SendMessage / BatchSendMessage take only ``msgBody`` and a delay; there is no
deduplication id and no message attribute to carry one. So the records' idempotency keys
(from ``ctx.effect_key``) are not sent, and a handler re-run after a crash publishes its
messages again: delivery to the queue is at least once, and consumers dedup on the content
(an mpsflow app reading the queue does, with its dedup store). To hand the key to consumers,
put ``ctx.effect_key`` into the record itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from mpsflow.errors import SinkError
from mpsflow.tencentcloud.cmq.client import MAX_BATCH, CmqClient
from mpsflow.tencentcloud.cmq.errors import CmqError, CmqQueueFullError

__all__ = ["CmqSink", "Encoder"]

Encoder = Callable[[object], bytes]
"""Turns a record into the bytes of its ``msgBody``."""

_MAX_BATCH_BYTES = 65536


def _default_encoder(record: object) -> bytes:
    if isinstance(record, (bytes, bytearray, memoryview)):
        return bytes(record)
    return msgspec.json.encode(record)


class CmqSink:
    """Send records to the queue ``queue_name`` through ``client``.

    ``max_msg_size`` is the queue's limit (64 KB unless the queue was created with another);
    a larger record fails with a permanent ``SinkError`` before anything is sent. Throttling,
    a full queue (4410: it drains as consumers delete) and network failures that outlast the
    client's own retries are transient; everything else the server refuses (too large, unknown
    queue, bad credentials) is permanent.
    ``close_client`` makes :meth:`close` close the client too.
    """

    def __init__(
        self,
        client: CmqClient,
        queue_name: str,
        *,
        encoder: Encoder | None = None,
        delay_seconds: int = 0,
        max_msg_size: int = 65536,
        close_client: bool = False,
    ) -> None:
        self._client = client
        self._queue = queue_name
        self._encode = encoder or _default_encoder
        self._delay = delay_seconds
        self._max_msg_size = max_msg_size
        self._close_client = close_client

    def __repr__(self) -> str:
        return f"CmqSink({self._client!r}, {self._queue!r})"

    async def start(self) -> None:
        """Nothing to open: the client connects on first use."""

    async def send(self, batch: Sequence[object]) -> None:
        """Publish every record of ``batch`` or raise ``SinkError``."""
        bodies = [self._body(record) for record in batch]
        for chunk in _chunks(bodies):
            try:
                await self._client.batch_send(self._queue, chunk, delay_seconds=self._delay)
            except CmqError as exc:
                transient = exc.retryable or isinstance(exc, CmqQueueFullError)
                raise SinkError(f"CMQ queue {self._queue}: {exc}", transient=transient) from exc

    async def close(self) -> None:
        """Close the client if this sink was told to own it."""
        if self._close_client:
            await self._client.aclose()

    def _body(self, record: object) -> str:
        try:
            encoded = self._encode(record)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise SinkError(
                f"cannot encode a {type(record).__name__}: {exc}", transient=False
            ) from exc
        try:
            text = encoded.decode("utf-8")
        except UnicodeDecodeError:
            raise SinkError("a CMQ message body must be UTF-8 text", transient=False) from None
        if not text:
            raise SinkError("a CMQ message body must not be empty", transient=False)
        if len(encoded) > self._max_msg_size:
            raise SinkError(
                f"a record of {len(encoded)} bytes exceeds the queue's {self._max_msg_size}",
                transient=False,
            )
        return text


def _chunks(bodies: list[str]) -> list[list[str]]:
    """Split into runs of at most 16 bodies and 64 KB of UTF-8."""
    chunks: list[list[str]] = []
    current: list[str] = []
    size = 0
    for body in bodies:
        length = len(body.encode("utf-8"))
        if current and (len(current) == MAX_BATCH or size + length > _MAX_BATCH_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(body)
        size += length
    if current:
        chunks.append(current)
    return chunks
