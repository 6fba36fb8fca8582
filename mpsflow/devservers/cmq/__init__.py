"""A local CMQ-compatible server, for development and tests only (not for production).

It answers the same ``/v2/index.php`` form API as the TDMQ-CMQ data-flow HTTP API (kept unchanged
from the legacy CMQ API 2.0: Tencent Cloud docs, TDMQ for CMQ "HTTP data-flow SDK" and CMQ "message
APIs", cloud.tencent.com/document/product/406/5837 onwards):
Send/BatchSend/Receive/BatchReceive/Delete/BatchDeleteMessage, signed requests checked against
the SecretKey of the SecretId (4100 on mismatch), CMQ-shaped JSON errors, long polling woken by
sends, per-queue visibility timeouts with fresh receipt handles on every receive (an old one
gives 4430), delayed messages, the batch limits (16 per batch, 64 KB per batch send),
``maxMsgSize`` (4400) and ``maxMsgHeapNum``, the most messages a queue holds (4410). State
lives in memory and can be saved to a JSON file. A long poll whose client goes away (a
consumer killed or restarted) ends at once and takes no message, so the consumer that
replaces it gets new messages without waiting for a visibility timeout.

Time comes from an injectable :class:`~mpsflow.clock.Clock`, so tests expire visibility with a
:class:`~mpsflow.clock.FakeClock` instead of sleeping. Run it with
``python -m mpsflow.devservers.cmq`` (or ``mpsflow cmq-server``).
"""

from __future__ import annotations

from mpsflow.devservers.cmq.actions import MAX_BATCH_BYTES
from mpsflow.devservers.cmq.command import (
    DESCRIPTION,
    add_arguments,
    build_parser,
    main,
    run_server,
)
from mpsflow.devservers.cmq.queue import (
    DEFAULT_MAX_MSG_HEAP_NUM,
    DEFAULT_MAX_MSG_SIZE,
    DEFAULT_VISIBILITY_TIMEOUT,
    LocalQueue,
)
from mpsflow.devservers.cmq.server import CmqServer

__all__ = [
    "DEFAULT_MAX_MSG_HEAP_NUM",
    "DEFAULT_MAX_MSG_SIZE",
    "DEFAULT_VISIBILITY_TIMEOUT",
    "DESCRIPTION",
    "MAX_BATCH_BYTES",
    "CmqServer",
    "LocalQueue",
    "add_arguments",
    "build_parser",
    "main",
    "run_server",
]
