"""The raw notification envelope: every look at a notification short of its full decode.

This is the one module that knows how a notification is carried and which of its fields can
be read straight from the raw payload:

* the ``{"Response": {...}}`` wrapper of the ParseNotification API. One rule decides it
  everywhere: a document is *wrapped* when its top level has neither ``EventType`` nor
  ``NotificationType`` (absent or null) and its ``Response`` is an object;
* a CMQ message object (no discriminator either) whose ``msgBody`` is the notification's JSON;
* a body that is not a JSON object: a JSON string, percent-encoded JSON, or a form field
  whose value is the JSON.

On top of that it reads ``Timestamp``/``Sign`` (exactly, and by a fast scan), a
notification's identity (event type, task, session, status) and its unwrapped document.
Every reader fails only with :class:`~mpsflow.errors.DecodeError`, whose message never
contains the JSON path: the path is in ``DecodeError.path`` alone.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec

from mpsflow.errors import DecodeError
from mpsflow.events._tables import EVENT_TYPES

__all__ = [
    "EVENT_FIELDS",
    "Carried",
    "EventView",
    "Identity",
    "Peek",
    "as_decode_error",
    "carried",
    "carried_text",
    "document",
    "extract_timestamp_sign",
    "identify",
    "kind_of",
    "load",
    "notification_of",
    "peek",
    "scan_timestamp_sign",
    "within",
    "wrapped_json",
]

_RESPONSE = "Response"
_RESPONSE_PATH = "$.Response"
_RESPONSE_PREFIX = re.compile(rb'^\s*\{\s*"Response"\s*:')
_PATH_SUFFIX = re.compile(r" - at (`key` in )?`(\$[^`]*)`$")  # msgspec's " - at `$.X`"
EVENT_FIELDS: Mapping[str, str] = {event: wire for event, (_attr, wire) in EVENT_TYPES.items()}
"""``EventType`` -> the top-level field holding its event (``WorkflowTask`` ->
``WorkflowTaskEvent``...), in document order."""


# --- errors ------------------------------------------------------------------------------------


def as_decode_error(exc: BaseException, at: str = "$") -> DecodeError:
    """The :class:`DecodeError` for a failed read of the JSON found at path ``at``.

    A msgspec validation error keeps its JSON path (moved from its message into ``path``,
    below ``at``); every other failure is reported at ``at``.
    """
    if isinstance(exc, DecodeError):
        return exc if at == "$" else type(exc)(str(exc), within(at, exc.path))
    if isinstance(exc, msgspec.ValidationError):
        message = str(exc)
        match = _PATH_SUFFIX.search(message)
        if match is None:
            return DecodeError(message, at)
        key, path = match.groups()
        text = message[: match.start()] + (" for an object key" if key else "")
        return DecodeError(text, within(at, path))
    if isinstance(exc, msgspec.DecodeError):
        return DecodeError(f"not valid JSON: {exc}", at)
    if isinstance(exc, UnicodeDecodeError):
        return DecodeError("not valid JSON: invalid UTF-8", at)
    if isinstance(exc, RecursionError):
        return DecodeError("payload is nested too deeply", at)
    return DecodeError(f"payload could not be decoded ({type(exc).__name__})", at)


def within(at: str, path: str) -> str:
    """``path`` (relative to the JSON found at ``at``) as a path from the document root."""
    return path if at == "$" else at + path[1:]


_READ_ERRORS = (msgspec.MsgspecError, ValueError, TypeError, RecursionError)


# --- carriers ----------------------------------------------------------------------------------


class Carried(NamedTuple):
    """A notification found inside a carrier, and where: ``at`` prefixes its JSON paths.

    ``at`` is ``"$.Response"`` for the wrapper's object and ``"$"`` for JSON text carried as
    a string (``msgBody``, a form field), which is a document of its own.
    """

    value: Mapping[str, Any] | str | bytes
    at: str


def _unwrapped(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The wrapper's object when ``doc`` is wrapped (the one rule, see the module docstring)."""
    if doc.get("EventType") is not None or doc.get("NotificationType") is not None:
        return None
    inner = doc.get(_RESPONSE)
    return inner if isinstance(inner, Mapping) else None


def notification_of(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """The notification a parsed document holds: the wrapper's object, else ``doc`` itself."""
    inner = _unwrapped(doc)
    return doc if inner is None else inner


def carried(doc: object) -> Carried | None:
    """The notification inside a carrier document: a ``Response`` wrapper's object or a CMQ
    message's ``msgBody`` text; None when ``doc`` carries none (it may be one itself)."""
    if not isinstance(doc, Mapping):
        return None
    inner = _unwrapped(doc)
    if inner is not None:
        return Carried(inner, _RESPONSE_PATH)
    if doc.get("EventType") is not None or doc.get("NotificationType") is not None:
        return None
    body = doc.get("msgBody")
    return Carried(body, "$") if isinstance(body, str) else None


def carried_text(buf: bytes) -> bytes | str | None:
    """The JSON inside a body that is not a JSON object, else None.

    A JSON string's text, percent-encoded JSON decoded (``+`` is a space unless the sender
    used ``%20``), or the first form field whose value starts with ``{``.
    """
    text = buf.strip()
    if not text:
        return None
    try:
        if text[:1] == b'"':
            inner = msgspec.json.decode(text)
            return inner if isinstance(inner, str) else None
        if text[:3].upper() == b"%7B":
            if b"%20" in text:
                return urllib.parse.unquote_to_bytes(text)
            return urllib.parse.unquote_to_bytes(text.replace(b"+", b" "))
        if b"=" in text:
            form = urllib.parse.parse_qsl(text.decode(), keep_blank_values=True)
            return next((v for _k, v in form if v.lstrip().startswith("{")), None)
    except _READ_ERRORS as exc:
        raise as_decode_error(exc) from None
    return None


# --- the top level: discriminators, wrapper and signature fields --------------------------------


class _Top(msgspec.Struct):
    """The top level as the wrapper rule and the signature read need it; the rest is skipped."""

    EventType: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    NotificationType: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    Response: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    Timestamp: Any = None
    Sign: Any = None


_TOP_DECODER = msgspec.json.Decoder(_Top)
_NULL = b"null"


def _read(decoder: msgspec.json.Decoder[Any], data: bytes, at: str = "$") -> Any:
    try:
        return decoder.decode(data)
    except _READ_ERRORS as exc:
        raise as_decode_error(exc, at) from None


def _wrapped(top: _Top) -> bytes | None:
    """The wrapper's object as JSON when ``top`` is wrapped, else None."""
    for field in (top.EventType, top.NotificationType):
        if field is not msgspec.UNSET and bytes(field) != _NULL:
            return None
    response = top.Response
    if response is msgspec.UNSET:
        return None
    text = bytes(response)
    return text if text[:1] == b"{" else None


def wrapped_json(buf: bytes) -> Carried | None:
    """The notification JSON inside a ``{"Response": {...}}`` body, else None.

    Cheap for anything else: only a body whose first key is ``Response`` is read. (A wrapper
    with other keys first is found by :func:`carried` on the parsed document instead.)
    """
    if _RESPONSE_PREFIX.match(buf) is None:
        return None
    inner = _wrapped(_read(_TOP_DECODER, buf))
    return None if inner is None else Carried(inner, _RESPONSE_PATH)


def extract_timestamp_sign(raw: bytes | Mapping[str, Any]) -> tuple[object, object]:
    """``(Timestamp, Sign)`` of a notification, as sent (``None`` when absent).

    Bytes are decoded into a small struct, so msgspec skips everything else without building
    it; a wrapped notification's fields are read from the wrapper's object. Raises
    :class:`DecodeError` for non-JSON or a non-object.
    """
    if isinstance(raw, Mapping):
        doc = notification_of(raw)
        return doc.get("Timestamp"), doc.get("Sign")
    top: _Top = _read(_TOP_DECODER, raw)
    inner = _wrapped(top)
    if inner is not None:
        top = _read(_TOP_DECODER, inner, _RESPONSE_PATH)
    return top.Timestamp, top.Sign


_SCANNED_TIMESTAMP = re.compile(
    rb'"Timestamp"\s*:\s*(?:(-?[0-9]{1,20})(?![0-9.eE])|"([^"\\]{0,64})")'
)
_SCANNED_SIGN = re.compile(rb'"Sign"\s*:\s*"([^"\\]{0,256})"')


def scan_timestamp_sign(raw: bytes) -> tuple[int | str, str] | None:
    """A fast read of ``(Timestamp, Sign)``: the last plain ``"Timestamp"``/``"Sign"`` in ``raw``.

    About ten times cheaper than :func:`extract_timestamp_sign` on a large notification (MPS
    puts both fields last), but it does not track nesting, so the pair it finds is only a
    candidate: a caller that acts on it must confirm it against the decoded notification.
    None when either field is not found in a plain form (escapes, ``null``, a float, …).
    """
    at = raw.rfind(b'"Sign"')
    sign = _SCANNED_SIGN.match(raw, at) if at >= 0 else None
    if sign is None:
        return None
    at = raw.rfind(b'"Timestamp"')
    stamp = _SCANNED_TIMESTAMP.match(raw, at) if at >= 0 else None
    if stamp is None:
        return None
    digits, text = stamp.groups()
    timestamp: int | str = int(digits) if digits is not None else text.decode("utf-8", "replace")
    return timestamp, sign.group(1).decode("utf-8", "replace")


# --- identity ----------------------------------------------------------------------------------


class EventView(msgspec.Struct):
    """A task event object (``WorkflowTaskEvent``, …) reduced to ``TaskId`` and ``Status``.

    Subclass it to read more of the event object in the same pass (see :func:`peek`).
    """

    TaskId: str | None = None
    Status: str | None = None


_E = TypeVar("_E", bound=EventView)


class Peek(msgspec.Struct, Generic[_E]):
    """A notification's identity fields and event objects (as the view type); the rest skipped."""

    EventType: str | None = None
    NotificationType: str | None = None
    SessionId: str | None = None
    TaskId: str | None = None
    WorkflowTaskEvent: _E | None = None
    EditMediaTaskEvent: _E | None = None
    ScheduleTaskEvent: _E | None = None
    BatchTaskEvent: _E | None = None
    ExtractBlindWatermarkTask: _E | None = None

    @property
    def live(self) -> bool:
        """A live-stream notification: ``NotificationType`` and no ``EventType``."""
        return self.EventType is None and self.NotificationType is not None

    def event(self) -> _E | None:
        """The event object ``EventType`` names (None for an unknown or missing type)."""
        field = EVENT_FIELDS.get(self.EventType or "")
        found: _E | None = getattr(self, field) if field is not None else None
        return found

    def any_event(self) -> _E | None:
        """The named event object, else the first one present (for unknown event types)."""
        named = self.event()
        if named is not None:
            return named
        for field in EVENT_FIELDS.values():
            found: _E | None = getattr(self, field)
            if found is not None:
                return found
        return None


_PEEK: Any = Peek  # subscripted with a view type only known at run time
_PEEK_DECODERS: dict[type[EventView], msgspec.json.Decoder[Any]] = {}


def peek(raw: bytes | Mapping[str, Any], view: type[_E]) -> Peek[_E]:
    """Read a notification's identity (event objects read as ``view``), wrapper unwrapped.

    Raises :class:`DecodeError` for non-JSON, a non-object, or a field of the wrong type.
    """
    spec = _PEEK[view]
    if isinstance(raw, Mapping):
        inner = _unwrapped(raw)
        doc, at = (raw, "$") if inner is None else (inner, _RESPONSE_PATH)
        try:
            fields: Peek[_E] = msgspec.convert(doc if isinstance(doc, dict) else dict(doc), spec)
        except _READ_ERRORS as exc:
            raise as_decode_error(exc, at) from None
        return fields
    decoder = _PEEK_DECODERS.get(view)
    if decoder is None:
        decoder = _PEEK_DECODERS.setdefault(view, msgspec.json.Decoder(spec))
    fields = _read(decoder, raw)
    if fields.EventType is None and fields.NotificationType is None:
        wrapped = _wrapped(_read(_TOP_DECODER, raw))
        if wrapped is not None:
            fields = _read(decoder, wrapped, _RESPONSE_PATH)
    return fields


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a notification is about; ``""`` where a field is missing.

    ``event_type`` is ``EventType``, or ``NotificationType`` for a live-stream notification
    (then ``live`` is true and ``status`` is empty). ``task_id`` and ``status`` come from the
    event object ``EventType`` names, else the first one present.
    """

    event_type: str = ""
    task_id: str = ""
    session_id: str = ""
    status: str = ""
    live: bool = False


def identify(raw: bytes | Mapping[str, Any]) -> Identity:
    """The :class:`Identity` of a raw notification; raises :class:`DecodeError` (see
    :func:`peek`) when it cannot be read."""
    fields = peek(raw, EventView)
    session = fields.SessionId or ""
    if fields.live:
        return Identity(fields.NotificationType or "", fields.TaskId or "", session, live=True)
    event = fields.any_event()
    if event is None:
        return Identity(fields.EventType or "", session_id=session)
    return Identity(fields.EventType or "", event.TaskId or "", session, event.Status or "")


def kind_of(doc: Mapping[str, Any]) -> str:
    """``EventType``, else ``NotificationType``, of a notification document, when it is a
    non-empty string; else ``""``. Never raises."""
    kind = doc.get("EventType") or doc.get("NotificationType")
    return kind if isinstance(kind, str) else ""


# --- the whole document ------------------------------------------------------------------------


_ANY_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


def load(raw: bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    """The JSON object ``raw`` holds, carrier and all (a mapping is returned as it is).

    Raises :class:`DecodeError` for non-JSON or a non-object.
    """
    if isinstance(raw, Mapping):
        return raw
    doc = _read(_ANY_DECODER, raw)
    if not isinstance(doc, Mapping):
        raise DecodeError("not valid JSON: payload is not a JSON object")
    return doc


def document(raw: bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    """The notification as a mapping, wrapper unwrapped (see :func:`load`)."""
    return notification_of(load(raw))
