"""WeCom (企业微信) group-robot alerts: a markdown formatter for notifications, and its sink.

``wecom_markdown`` is the useful version of Tencent's "MPS Webhook" SCF template: instead of
assuming a successful WorkflowTask whose first result is a transcode, it reports any
notification (workflow, edit, schedule, watermark, live) with its task, status, the failed
subtasks with their error codes and messages, the output paths with bucket and region, and
the session context. Null outputs and unknown parts are fine; the content is capped at the
robot's 4096-byte markdown limit, most important lines first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import aiohttp
import msgspec

from mpsflow._json import identify
from mpsflow.clock import Clock
from mpsflow.codec import decode_any
from mpsflow.errors import DecodeError, SinkError
from mpsflow.events import LiveStreamNotification, Notification
from mpsflow.events.locations import InputLocation, OutputPath
from mpsflow.events.subtasks import CONTAINER_KEYS, Subtask
from mpsflow.sinks.webhook import Template, WebhookSink, redact_url

__all__ = ["WECOM_MARKDOWN_LIMIT", "WeComRobotSink", "wecom_markdown"]

WECOM_MARKDOWN_LIMIT = 4096
"""Largest ``markdown.content`` a WeCom robot accepts, in UTF-8 bytes."""

_MAX_OUTPUTS = 10
_MAX_TEXT = 300
_TRUNCATED = "\n…(truncated)"
_TRANSIENT_ERRCODES = frozenset({-1, 45009})  # system busy; "api freq out of limit"
_COLORS = {"failed": "warning", "succeeded": "info", "processing": "comment", "received": "info"}


def _clean(value: object, limit: int = _MAX_TEXT) -> str:
    """One line of text, safe inside markdown inline code, at most ``limit`` characters."""
    text = " ".join(str(value).split()).replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _code(value: object) -> str:
    return f"`{_clean(value)}`"


def _storage(bucket: str | None, region: str | None) -> str:
    parts = [part for part in (bucket, region) if part]
    return f" ({' · '.join(_clean(p, 80) for p in parts)})" if parts else ""


def _input_line(location: InputLocation | None) -> str | None:
    if location is None:
        return None
    if location.url:
        return f"> Input: URL {_code(redact_url(location.url))}"
    where = location.object or location.file_id or ""
    kind = location.kind or "unknown"
    return f"> Input: {kind} {_code(where)}{_storage(location.bucket, location.region)}"


def _message_of(subtask: Subtask) -> str:
    message = getattr(subtask.result, "message", None)
    return _clean(message) if message and message != subtask.error else ""


def _most_specific(failed: list[Subtask]) -> Iterator[Subtask]:
    """Drop a failed container when a failed task inside it is listed too."""
    for subtask in failed:
        prefix = subtask.where
        if not any(
            other.where.startswith((prefix + ".", prefix + "["))
            for other in failed
            if other is not subtask
        ):
            yield subtask


def _failure_lines(subtasks: Iterable[Subtask]) -> list[str]:
    failed = list(_most_specific([s for s in subtasks if s.failed]))
    if not failed:
        return []
    lines = [f"**Failed subtasks ({len(failed)})**"]
    for subtask in failed:
        error = f" {_code(subtask.error)}" if subtask.error else ""
        message = _message_of(subtask)
        lines.append(f"- {subtask.key}{error}{' ' + message if message else ''}")
    return lines


def _output_lines(paths: list[OutputPath]) -> list[str]:
    if not paths:
        return []
    lines = [f"**Outputs ({len(paths)})**"]
    for path in paths[:_MAX_OUTPUTS]:
        lines.append(f"- {path.key}: {_code(path.path)}{_storage(path.bucket, path.region)}")
    if len(paths) > _MAX_OUTPUTS:
        lines.append(f"- … and {len(paths) - _MAX_OUTPUTS} more")
    return lines


def _verdict(status: str | None, task_failed: bool, subtasks: list[Subtask]) -> str:
    if task_failed or any(s.failed for s in subtasks):
        return "failed"
    if status and status != "FINISH":
        return "processing"
    return "succeeded"


def _header(kind: str, verdict: str) -> str:
    return f'### MPS {kind} <font color="{_COLORS[verdict]}">{verdict}</font>'


def _task_lines(notification: Notification) -> list[str]:
    event = notification.event
    subtasks = list(notification.subtasks())
    err_code = getattr(event, "err_code", None)
    message = getattr(event, "message", None)
    task_failed = bool(err_code)
    status = notification.status
    verdict = _verdict(status, task_failed, subtasks)
    lines = [
        _header(notification.event_type or "notification", verdict),
        f"> Task: {_code(notification.task_id or 'unknown')}",
        f"> Status: {_clean(status or 'unknown')}",
    ]
    if task_failed or message:
        lines.append(f"> Error: {_code(err_code or 0)} {_clean(message or '')}".rstrip())
    detected = getattr(event, "is_detected", None)
    if detected is not None:
        result = getattr(event, "result", None)
        found = f"detected {_code(result)}" if detected and result else str(bool(detected))
        lines.append(f"> Watermark: {found}")
    input_line = _input_line(notification.input)
    if input_line:
        lines.append(input_line)
    if notification.session_context:
        lines.append(f"> Session: {_code(notification.session_context)}")
    tasks = sum(1 for s in subtasks if s.key not in CONTAINER_KEYS)
    if tasks and verdict != "failed":
        lines.append(f"> Subtasks: {tasks} reported, none failed")
    return [*lines, *_failure_lines(subtasks), *_output_lines(notification.output_paths())]


def _live_lines(notification: LiveStreamNotification) -> list[str]:
    subtasks = list(notification.subtasks())
    verdict = "failed" if any(s.failed for s in subtasks) else "received"
    lines = [
        _header(f"live {notification.notification_type or 'notification'}", verdict),
        f"> Task: {_code(notification.task_id or 'unknown')}",
    ]
    if notification.session_context:
        lines.append(f"> Session: {_code(notification.session_context)}")
    return [*lines, *_failure_lines(subtasks)]


def _fallback_lines(record: object) -> list[str]:
    identity = identify(record)
    return [
        f"### MPS {_clean(identity.event_type, 60)} (not a readable notification)",
        f"> Task: {_code(identity.task_id)}",
        f"> Status: {_clean(identity.status)}",
    ]


def _cap(lines: list[str], limit: int = WECOM_MARKDOWN_LIMIT) -> str:
    """Join ``lines``, dropping the tail (and saying so) to stay within ``limit`` bytes."""
    content = "\n".join(lines)
    if len(content.encode()) <= limit:
        return content
    budget = limit - len(_TRUNCATED.encode())
    kept: list[str] = []
    used = 0
    for line in lines:
        size = len(line.encode()) + (1 if kept else 0)
        if used + size > budget:
            if not kept:  # a single huge first line: cut it on a character boundary
                kept.append(line.encode()[:budget].decode("utf-8", "ignore"))
            break
        kept.append(line)
        used += size
    return "\n".join(kept) + _TRUNCATED


def wecom_markdown(notification: object) -> dict[str, Any]:
    """The WeCom robot message (``msgtype: markdown``) describing ``notification``.

    Accepts a decoded ``Notification`` / ``LiveStreamNotification``, or the raw JSON bytes /
    ``dict`` of one (decoded here). Anything unreadable still yields a short message.
    """
    decoded: object = notification
    if isinstance(notification, bytes | bytearray | memoryview | str | Mapping):
        try:
            decoded = decode_any(notification)
        except DecodeError:
            decoded = notification
    if isinstance(decoded, Notification):
        lines = _task_lines(decoded)
    elif isinstance(decoded, LiveStreamNotification):
        lines = _live_lines(decoded)
    else:
        lines = _fallback_lines(notification)
    return {"msgtype": "markdown", "markdown": {"content": _cap(lines)}}


class _RobotReply(msgspec.Struct):
    errcode: int = 0
    errmsg: str = ""


_robot_reply = msgspec.json.Decoder(_RobotReply)


class WeComRobotSink(WebhookSink):
    """Posts one markdown message per record to a WeCom group robot.

    ``webhook_url`` is the robot's ``https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…``
    address; the key is never logged. Robots take 20 messages a minute, so requests are
    spaced out accordingly (``rate_limit``); a robot error inside a 200 reply is mapped
    onto ``SinkError`` (rate limiting and "system busy" are transient).

    Idempotency: robots ignore request headers and have no dedup of their own, so no
    ``Idempotency-Key`` is sent. The sink still skips a record whose key it already delivered
    (a batch retried after it was half sent, a handler re-run in the same process), but a
    re-run after a crash posts its alert again: alerts are at least once.
    """

    def __init__(
        self,
        webhook_url: str,
        *,
        template: Template = wecom_markdown,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        rate_limit: tuple[int, float] | None = (20, 60.0),
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            webhook_url,
            template=template,
            timeout=timeout,
            session=session,
            rate_limit=rate_limit,
            clock=clock,
            idempotency_header=None,
        )

    def check_response(self, status: int, body: bytes) -> None:
        try:
            reply = _robot_reply.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise SinkError(
                f"robot {self.safe_url} sent an unreadable reply", transient=True
            ) from None
        if reply.errcode == 0:
            return
        reason = f"{reply.errcode} {_clean(reply.errmsg, 200)}"
        raise SinkError(
            f"robot {self.safe_url} refused the message: {reason}",
            transient=reply.errcode in _TRANSIENT_ERRCODES,
        )
