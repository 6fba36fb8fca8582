"""The message API of the local CMQ server: its six actions, their parameters, limits and
CMQ-shaped errors, as Tencent documents them for the CMQ message API (SendMessage,
BatchReceiveMessage, BatchDeleteMessage, …: cloud.tencent.com/document/product/406/5837 onwards;
error codes: /406/5903).

Each action takes the queue, the request's form parameters and its request id, and answers a
:class:`~mpsflow.tencentcloud.cmq.models.CmqResponse`; a business error is raised as
:class:`ActionFailure` and answered with HTTP 200 and its code.

The sends enforce the queue's ``maxMsgSize`` (4400) and ``maxMsgHeapNum`` (4410, the queue
already holds that many messages, counting those in flight and delayed; see
:data:`~mpsflow.devservers.cmq.queue.DEFAULT_MAX_MSG_HEAP_NUM`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Final
from urllib.parse import parse_qsl

from mpsflow.devservers.cmq.queue import LocalQueue, QueuedMessage
from mpsflow.tencentcloud.cmq.client import MAX_BATCH, MAX_POLLING_WAIT
from mpsflow.tencentcloud.cmq.errors import (
    CODE_BATCH_DELETE_ALL_FAILED,
    CODE_BATCH_DELETE_PARTIAL,
    CODE_INVALID_PARAMETER,
    CODE_MESSAGE_TOO_LARGE,
    CODE_NO_MESSAGE,
    CODE_QUEUE_FULL,
    CODE_RECEIPT_HANDLE_INVALID,
)
from mpsflow.tencentcloud.cmq.models import (
    BatchDeleteMessageResponse,
    BatchReceiveMessageResponse,
    BatchSendMessageResponse,
    CmqResponse,
    DeleteFailure,
    Message,
    MessageId,
    ReceiveMessageResponse,
    SendMessageResponse,
)

__all__ = [
    "ACTIONS",
    "MAX_BATCH_BYTES",
    "Action",
    "ActionFailure",
    "int_param",
    "invalid_parameter",
    "parse_form",
]

MAX_BATCH_BYTES: Final = 65536
"""Total size of the bodies of one BatchSendMessage (§A.4)."""

_MAX_DELAY: Final = 1_296_000

Action = Callable[[LocalQueue, Mapping[str, str], str], Awaitable[CmqResponse]]
"""An action: ``(queue, params, request_id)`` to its response."""


class ActionFailure(Exception):
    """A CMQ business error: answered with HTTP 200 and this code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid_parameter(module: int, text: str) -> ActionFailure:
    """The CMQ "invalid parameter" error; ``module`` is the detail number shown in the message."""
    return ActionFailure(CODE_INVALID_PARAMETER, f"({module}){text}")


def parse_form(raw: bytes | str) -> dict[str, str]:
    """Decode a form body or query string; names and values are UTF-8 percent-encoded."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return dict(parse_qsl(text, keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError:
        raise invalid_parameter(10000, "the request is not UTF-8") from None


def int_param(
    params: Mapping[str, str], name: str, default: int | None, low: int, high: int
) -> int:
    """Parameter ``name`` as an integer in ``low..high`` (``default`` when absent or empty)."""
    raw = params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise invalid_parameter(10000, f"missing parameter {name}")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_parameter(10000, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise invalid_parameter(10000, f"{name} must be between {low} and {high}")
    return value


def _numbered(params: Mapping[str, str], prefix: str) -> list[str]:
    """Values of ``prefix.N`` parameters, checked: at most 16, N consecutive from 0 or 1."""
    found: dict[int, str] = {}
    for key, value in params.items():
        if key.startswith(prefix):
            suffix = key[len(prefix) :]
            if not suffix.isdigit():
                raise invalid_parameter(10000, f"bad parameter name {key[:40]}")
            found[int(suffix)] = value
    if not found:
        raise invalid_parameter(10000, f"missing parameter {prefix}n")
    if len(found) > MAX_BATCH:
        raise invalid_parameter(10370, f"at most {MAX_BATCH} items per batch")
    start = min(found)
    if start not in (0, 1) or sorted(found) != list(range(start, start + len(found))):
        raise invalid_parameter(10380, f"{prefix}n must be consecutive from 0 or 1")
    return [found[i] for i in sorted(found)]


def _queue_full(queue: LocalQueue, count: int) -> ActionFailure:
    """4410, CMQ's "queue heap full": ``count`` more messages do not fit in ``queue``."""
    room, limit = queue.room(), queue.max_msg_heap_num
    if room:  # only a batch is refused while there is some room
        text = f"queue {queue.name} has room for {room} more messages, not {count}"
    else:
        text = f"queue {queue.name} is full: it holds {len(queue)} messages"
    return ActionFailure(CODE_QUEUE_FULL, f"{text} (maxMsgHeapNum {limit})")


def _as_message(message: QueuedMessage) -> Message:
    assert message.handle is not None
    return Message(
        msg_id=message.msg_id,
        receipt_handle=message.handle,
        msg_body=message.body,
        enqueue_time=int(message.enqueue_time),
        first_dequeue_time=int(message.first_dequeue_time),
        next_visible_time=int(message.visible_at),
        dequeue_count=message.dequeue_count,
    )


async def _send(queue: LocalQueue, params: Mapping[str, str], request_id: str) -> CmqResponse:
    body = params.get("msgBody", "")
    if not body:
        raise invalid_parameter(10000, "msgBody must not be empty")
    delay = int_param(params, "delaySeconds", 0, 0, _MAX_DELAY)
    size = len(body.encode("utf-8"))
    if size > queue.max_msg_size:
        raise ActionFailure(
            CODE_MESSAGE_TOO_LARGE, f"message larger than {queue.max_msg_size} bytes"
        )
    if not queue.room():
        raise _queue_full(queue, 1)
    msg_id = queue.put(body, delay)
    return SendMessageResponse(0, "", request_id, msg_id=msg_id)


async def _batch_send(queue: LocalQueue, params: Mapping[str, str], request_id: str) -> CmqResponse:
    """BatchSendMessage: all the bodies are enqueued, or none.

    A batch that does not fit in the queue's remaining ``maxMsgHeapNum`` room is refused as a
    whole with 4410, even if some of its messages would fit. The CMQ docs do not say what a
    batch that would overflow the queue gets (the whole batch refused, or a partial success);
    all or nothing is our choice, the same as for a batch with one message too large (4400).
    """
    bodies = _numbered(params, "msgBody.")
    delay = int_param(params, "delaySeconds", 0, 0, _MAX_DELAY)
    sizes = [len(body.encode("utf-8")) for body in bodies]
    if any(not body for body in bodies):
        raise invalid_parameter(10000, "msgBody must not be empty")
    if max(sizes) > queue.max_msg_size:
        raise ActionFailure(
            CODE_MESSAGE_TOO_LARGE, f"message larger than {queue.max_msg_size} bytes"
        )
    if sum(sizes) > MAX_BATCH_BYTES:
        raise ActionFailure(CODE_MESSAGE_TOO_LARGE, f"batch larger than {MAX_BATCH_BYTES} bytes")
    if len(bodies) > queue.room():
        raise _queue_full(queue, len(bodies))
    ids = [MessageId(queue.put(body, delay)) for body in bodies]
    return BatchSendMessageResponse(0, "", request_id, msg_list=ids)


async def _receive(queue: LocalQueue, params: Mapping[str, str], request_id: str) -> CmqResponse:
    wait = int_param(params, "pollingWaitSeconds", queue.polling_wait_seconds, 0, MAX_POLLING_WAIT)
    taken = await queue.poll(1, wait)
    if not taken:
        return CmqResponse(CODE_NO_MESSAGE, "no message", request_id)
    return ReceiveMessageResponse.from_message(_as_message(taken[0]), request_id)


async def _batch_receive(
    queue: LocalQueue, params: Mapping[str, str], request_id: str
) -> CmqResponse:
    count = int_param(params, "numOfMsg", None, 1, MAX_BATCH)
    wait = int_param(params, "pollingWaitSeconds", queue.polling_wait_seconds, 0, MAX_POLLING_WAIT)
    taken = await queue.poll(count, wait)
    if not taken:
        return CmqResponse(CODE_NO_MESSAGE, "no message", request_id)
    messages = [_as_message(m) for m in taken]
    return BatchReceiveMessageResponse(0, "", request_id, msg_info_list=messages)


async def _delete(queue: LocalQueue, params: Mapping[str, str], request_id: str) -> CmqResponse:
    handle = params.get("receiptHandle", "")
    if not handle:
        raise invalid_parameter(10000, "missing parameter receiptHandle")
    if not queue.delete(handle):
        raise ActionFailure(CODE_RECEIPT_HANDLE_INVALID, "receipt handle invalid or expired")
    return CmqResponse(0, "", request_id)


async def _batch_delete(
    queue: LocalQueue, params: Mapping[str, str], request_id: str
) -> CmqResponse:
    handles = _numbered(params, "receiptHandle.")
    failures = [
        DeleteFailure(CODE_RECEIPT_HANDLE_INVALID, "receipt handle invalid or expired", h)
        for h in handles
        if not queue.delete(h)
    ]
    if not failures:
        return CmqResponse(0, "", request_id)
    if len(failures) == len(handles):
        code, text = CODE_BATCH_DELETE_ALL_FAILED, "all receipt handles failed"
    else:
        code, text = CODE_BATCH_DELETE_PARTIAL, "some receipt handles failed"
    return BatchDeleteMessageResponse(code, text, request_id, error_list=failures)


ACTIONS: Final[Mapping[str, Action]] = {
    "SendMessage": _send,
    "BatchSendMessage": _batch_send,
    "ReceiveMessage": _receive,
    "BatchReceiveMessage": _batch_receive,
    "DeleteMessage": _delete,
    "BatchDeleteMessage": _batch_delete,
}
"""The actions the server answers, by ``Action`` parameter."""
