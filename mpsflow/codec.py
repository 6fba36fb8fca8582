"""Decode MPS notifications from whatever carried them, and encode them back to wire JSON.

One entry point per root: ``decode`` (``ParseNotification`` output), ``decode_live``
(``ParseLiveStreamProcessNotification`` output) and ``decode_any`` (either). Each accepts:

* ``bytes``/``str`` JSON: an HTTP body or a CMQ ``msgBody`` string;
* the ParseNotification API's wrapper, or a CMQ message object whose ``msgBody`` is the
  notification string;
* a URL-encoded body (a ``k=v`` form with the JSON in a field, or percent-encoded JSON);
* an already-parsed ``Mapping`` (the SCF trigger's ``event``), converted without a JSON trip.

Which carriers exist and how to open them is :mod:`mpsflow.events.envelope`'s business; this
module asks it. The hot path is one reused typed ``msgspec.json.Decoder``; the untyped
document is decoded only on the slow path (a carrier, a missing discriminator, or a part of
unknown type, whose raw JSON is then kept on ``.raw``). Every bad input raises
``DecodeError``: ``path`` names the offending JSON value (from the root of what was passed
in, carriers included), the message says what is wrong without repeating the path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from mpsflow.errors import DecodeError, PayloadTooLarge
from mpsflow.events import LiveStreamNotification, MpsStruct, Notification
from mpsflow.events._base import attach_raw
from mpsflow.events.envelope import as_decode_error, carried, carried_text, wrapped_json
from mpsflow.events.subtasks import find_unknown_parts, has_unknown_parts

__all__ = ["DEFAULT_MAX_SIZE", "decode", "decode_any", "decode_live", "encode"]

DEFAULT_MAX_SIZE = 16 * 1024 * 1024
"""Largest payload (bytes, or characters for ``str``) accepted by default: 16 MiB."""

_T = TypeVar("_T", Notification, LiveStreamNotification)
_Data = bytes | bytearray | memoryview | str | Mapping[str, Any]

_NOTIFICATION_DECODER = msgspec.json.Decoder(Notification)
_LIVE_DECODER = msgspec.json.Decoder(LiveStreamNotification)
_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {
    Notification: _NOTIFICATION_DECODER,
    LiveStreamNotification: _LIVE_DECODER,
}
_DISCRIMINATOR = {Notification: "EventType", LiveStreamNotification: "NotificationType"}
_ANY_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()

_FAILURES = (msgspec.MsgspecError, ValueError, TypeError, RecursionError)
_MISSING = "missing "
_NOT_OBJECT = "not valid JSON: payload is not a JSON object"
_MAX_NESTING = 3  # carriers inside carriers (form -> msgBody -> wrapper) before giving up


def encode(obj: MpsStruct) -> bytes:
    """Wire JSON of a notification (or any part of one): PascalCase names, nulls left out."""
    return _ENCODER.encode(obj)


def decode(data: _Data, *, max_size: int = DEFAULT_MAX_SIZE) -> Notification:
    """Decode a task notification (``EventType`` + one event object).

    Raises ``DecodeError`` (a ``ValueError``) whose ``path`` names the offending JSON value.
    """
    fast = _fast(_NOTIFICATION_DECODER, data, max_size)
    return fast if fast is not None else _decode_root(data, Notification, max_size)


def decode_live(data: _Data, *, max_size: int = DEFAULT_MAX_SIZE) -> LiveStreamNotification:
    """Decode a live-stream processing notification (``NotificationType`` + one result)."""
    fast = _fast(_LIVE_DECODER, data, max_size)
    return fast if fast is not None else _decode_root(data, LiveStreamNotification, max_size)


def decode_any(
    data: _Data, *, max_size: int = DEFAULT_MAX_SIZE
) -> Notification | LiveStreamNotification:
    """Decode either kind: live when ``NotificationType`` is present and ``EventType`` is not."""
    fast = _fast(_NOTIFICATION_DECODER, data, max_size)
    if fast is not None:
        return fast
    try:
        return _decode_root(data, Notification, max_size)
    except DecodeError as exc:
        # EventType is the notification's own field only (no nested struct has one), so a
        # path ending in it names the discriminator, at the root or inside a carrier.
        if not exc.path.endswith(".EventType"):
            raise
        try:
            return _decode_root(data, LiveStreamNotification, max_size)
        except DecodeError as live_exc:
            if str(live_exc).startswith(_MISSING):
                raise exc from None  # neither discriminator: report the task one
            raise


# --- internals --------------------------------------------------------------------------------


def _fast(decoder: msgspec.json.Decoder[_T], data: _Data, max_size: int) -> _T | None:
    """The hot path: plain JSON bytes of known types, decoded once; None means "slow path".

    Anything else (other inputs, errors, unknown types, a missing discriminator) returns None
    so the slow path can unwrap it, keep raw JSON or report the error with its JSON path.
    """
    if type(data) is not bytes or len(data) > max_size:
        return None
    try:
        obj = decoder.decode(data)
    except (ValueError, RecursionError):
        return None
    return None if has_unknown_parts(obj) else obj


def _decode_root(data: _Data, root: type[_T], max_size: int) -> _T:
    return _dispatch(data, root, max_size, 0, "$")


def _dispatch(data: _Data, root: type[_T], max_size: int, depth: int, at: str) -> _T:
    """Decode ``data``, found at JSON path ``at`` of its carrier; errors name paths from there."""
    try:
        return _decode_level(data, root, max_size, depth)
    except _FAILURES as exc:
        raise as_decode_error(exc, at) from None


def _decode_level(data: _Data, root: type[_T], max_size: int, depth: int) -> _T:
    if isinstance(data, Mapping):
        return _from_mapping(data, root, max_size, depth)
    if isinstance(data, (bytes, bytearray, memoryview, str)):
        if len(data) > max_size:
            raise PayloadTooLarge(
                f"payload of {len(data)} bytes is over the size limit of {max_size} bytes", "$"
            )
        return _from_text(data, root, max_size, depth)
    raise DecodeError(f"cannot decode a {type(data).__name__}; expected bytes, str or a mapping")


def _from_text(
    data: bytes | bytearray | memoryview | str, root: type[_T], max_size: int, depth: int
) -> _T:
    buf = data.encode() if isinstance(data, str) else bytes(data)
    if buf.startswith(b"\xef\xbb\xbf"):
        buf = buf[3:]
    head = buf[:1] if buf[:1] == b"{" else buf.lstrip()[:1]
    if head != b"{":
        inner = carried_text(buf) if depth < _MAX_NESTING else None
        if inner is None:
            raise DecodeError(_NOT_OBJECT)
        return _dispatch(inner, root, max_size, depth + 1, "$")
    wrapped = wrapped_json(buf) if depth < _MAX_NESTING else None
    if wrapped is not None:
        return _dispatch(wrapped.value, root, max_size, depth + 1, wrapped.at)
    obj: _T = _DECODERS[root].decode(buf)
    return _finish(obj, root, buf=buf, doc=None, max_size=max_size, depth=depth)


def _finish(
    obj: _T, root: type[_T], *, buf: bytes | None, doc: Any, max_size: int, depth: int
) -> _T:
    """Check the discriminator and unknown types after a successful typed decode."""
    discriminator = obj.event_type if isinstance(obj, Notification) else obj.notification_type
    if discriminator is None:
        if doc is None and buf is not None:
            doc = _ANY_DECODER.decode(buf)
        inner = carried(doc)
        if inner is not None and depth < _MAX_NESTING:
            return _dispatch(inner.value, root, max_size, depth + 1, inner.at)
        raise DecodeError(f"{_MISSING}{_DISCRIMINATOR[root]}", f"$.{_DISCRIMINATOR[root]}")
    unknown = find_unknown_parts(obj)
    if unknown:
        if doc is None and buf is not None:
            doc = _ANY_DECODER.decode(buf)
        for part, keys in unknown:
            attach_raw(part, _follow(doc, keys))
        attach_raw(obj, doc)
    return obj


def _follow(doc: Any, keys: tuple[str | int, ...]) -> Any:
    for key in keys:
        try:
            doc = doc[key]
        except (KeyError, IndexError, TypeError):
            return None
    return doc


def _from_mapping(data: Mapping[str, Any], root: type[_T], max_size: int, depth: int) -> _T:
    inner = carried(data) if depth < _MAX_NESTING else None
    if inner is not None:
        return _dispatch(inner.value, root, max_size, depth + 1, inner.at)
    obj = msgspec.convert(data if isinstance(data, dict) else dict(data), root)
    return _finish(obj, root, buf=None, doc=data, max_size=max_size, depth=depth)
