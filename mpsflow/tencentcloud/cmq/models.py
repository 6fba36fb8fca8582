"""Typed CMQ responses as msgspec Structs, shared by the client (decode) and the server (encode).

Field names are the wire's lower-camel keys in snake case (``rename="camel"``), per the response
shapes Tencent documents for the CMQ message API (``msgInfoList``, ``receiptHandle``,
``dequeueCount``, ``errorList``, …: cloud.tencent.com/document/product/406/5837 onwards, and the
official SDKs' ``queue.py`` / ``Queue.java``). Every action field has a default so that one decode
handles both the success shape and the bare ``{code, message, requestId}`` error shape.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "BatchDeleteMessageResponse",
    "BatchReceiveMessageResponse",
    "BatchSendMessageResponse",
    "CmqResponse",
    "DeleteFailure",
    "Message",
    "MessageId",
    "ReceiveMessageResponse",
    "SendMessageResponse",
]


class Message(msgspec.Struct, rename="camel", frozen=True, gc=False):
    """One received message; ``receipt_handle`` is what deletes it, until ``next_visible_time``.

    Times are Unix seconds. ``dequeue_count`` is 1 on the first delivery; the docs call it and
    ``first_dequeue_time`` reserved fields, so treat them as hints, not as dedup keys.
    """

    msg_id: str
    receipt_handle: str
    msg_body: str
    enqueue_time: int = 0
    first_dequeue_time: int = 0
    next_visible_time: int = 0
    dequeue_count: int = 0


class MessageId(msgspec.Struct, rename="camel", frozen=True, gc=False):
    """One entry of BatchSendMessage's ``msgList``."""

    msg_id: str


class DeleteFailure(msgspec.Struct, rename="camel", frozen=True, gc=False):
    """One entry of BatchDeleteMessage's ``errorList``: which handle failed and why (4430)."""

    code: int
    message: str
    receipt_handle: str


class CmqResponse(msgspec.Struct, rename="camel", gc=False):
    """The envelope every action answers with; ``code`` 0 means success."""

    code: int
    message: str = ""
    request_id: str = ""


class SendMessageResponse(CmqResponse):
    """SendMessage: the new message's id."""

    msg_id: str = ""


class BatchSendMessageResponse(CmqResponse):
    """BatchSendMessage: one id per body, in order."""

    msg_list: list[MessageId] = []


class ReceiveMessageResponse(CmqResponse):
    """ReceiveMessage: the message fields sit next to the envelope's."""

    msg_id: str = ""
    receipt_handle: str = ""
    msg_body: str = ""
    enqueue_time: int = 0
    first_dequeue_time: int = 0
    next_visible_time: int = 0
    dequeue_count: int = 0

    @classmethod
    def from_message(cls, message: Message, request_id: str) -> ReceiveMessageResponse:
        """The successful answer carrying ``message`` (what a server sends)."""
        return cls(0, "", request_id, **msgspec.structs.asdict(message))

    def to_message(self) -> Message:
        """The message alone, without the envelope."""
        return Message(
            msg_id=self.msg_id,
            receipt_handle=self.receipt_handle,
            msg_body=self.msg_body,
            enqueue_time=self.enqueue_time,
            first_dequeue_time=self.first_dequeue_time,
            next_visible_time=self.next_visible_time,
            dequeue_count=self.dequeue_count,
        )


class BatchReceiveMessageResponse(CmqResponse):
    """BatchReceiveMessage: up to ``numOfMsg`` messages."""

    msg_info_list: list[Message] = []


class BatchDeleteMessageResponse(CmqResponse):
    """BatchDeleteMessage: ``code`` 6010/6020 lists the handles that failed."""

    error_list: list[DeleteFailure] = []
