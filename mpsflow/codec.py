"""Decode MPS notifications from whatever carried them, and encode them back to wire JSON.

One entry point per root: ``decode`` (``ParseNotification`` output), ``decode_live``
(``ParseLiveStreamProcessNotification`` output) and ``decode_any`` (either). Each accepts:

* ``bytes``/``str`` JSON: an HTTP body or a CMQ ``msgBody`` string;
* the ``{"Response": {...}}`` wrapper of the ParseNotification API, or a CMQ message object
  whose ``msgBody`` is the notification string;
* a URL-encoded body (a ``k=v`` form with the JSON in a field, or percent-encoded JSON);
* an already-parsed ``Mapping`` (the SCF trigger's ``event``), converted without a JSON trip.

The hot path is one reused typed ``msgspec.json.Decoder``; the untyped document is decoded
only on the slow path (a wrapper, a missing discriminator, or a part of unknown type, whose
raw JSON is then kept on ``.raw``). Every bad input raises ``DecodeError`` with a JSON path.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from mpsflow.errors import DecodeError, PayloadTooLarge
from mpsflow.events import LiveStreamNotification, MpsStruct, Notification
from mpsflow.events.subtasks import find_unknown_parts, has_unknown_parts

__all__ = ["DEFAULT_MAX_SIZE", "decode", "decode_any", "decode_live", "encode"]

DEFAULT_MAX_SIZE = 16 * 1024 * 1024
"""Largest payload (bytes, or characters for ``str``) accepted by default: 16 MiB."""

_T = TypeVar("_T", Notification, LiveStreamNotification)
_Data = bytes | bytearray | memoryview | str | Mapping[str, Any]


class _Envelope(msgspec.Struct, gc=False):
    """The ``{"Response": {...}}`` wrapper of the ParseNotification API."""

    Response: Notification


class _LiveEnvelope(msgspec.Struct, gc=False):
    """The ``{"Response": {...}}`` wrapper of the ParseLiveStreamProcessNotification API."""

    Response: LiveStreamNotification


_NOTIFICATION_DECODER = msgspec.json.Decoder(Notification)
_LIVE_DECODER = msgspec.json.Decoder(LiveStreamNotification)
_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {
    Notification: _NOTIFICATION_DECODER,
    LiveStreamNotification: _LIVE_DECODER,
}
_ENVELOPES: dict[type, msgspec.json.Decoder[Any]] = {
    Notification: msgspec.json.Decoder(_Envelope),
    LiveStreamNotification: msgspec.json.Decoder(_LiveEnvelope),
}
_DISCRIMINATOR = {Notification: "EventType", LiveStreamNotification: "NotificationType"}
_ANY_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()

_RESPONSE_PREFIX = re.compile(rb'^\s*\{\s*"Response"\s*:')
_PATH_SUFFIX = re.compile(r" - at `(\$[^`]*)`$")
_MISSING = "missing "
_MAX_NESTING = 3  # wrappers inside wrappers (form -> msgBody -> Response) before giving up


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
        if exc.path != "$.EventType":
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
    try:
        return _dispatch(data, root, max_size, 0)
    except DecodeError:
        raise
    except RecursionError:
        raise _error("payload is nested too deeply") from None
    except (ValueError, TypeError, UnicodeError) as exc:
        raise _error(f"payload could not be decoded ({type(exc).__name__})") from None


def _dispatch(data: _Data, root: type[_T], max_size: int, depth: int) -> _T:
    if isinstance(data, Mapping):
        return _from_mapping(data, root, max_size, depth)
    if isinstance(data, (bytes, bytearray, memoryview, str)):
        if len(data) > max_size:
            message = f"payload of {len(data)} bytes is over the size limit of {max_size} bytes"
            raise PayloadTooLarge(f"{message} - at `$`", "$")
        return _from_text(data, root, max_size, depth)
    raise _error(f"cannot decode a {type(data).__name__}; expected bytes, str or a mapping")


def _from_text(
    data: bytes | bytearray | memoryview | str, root: type[_T], max_size: int, depth: int
) -> _T:
    buf = data.encode() if isinstance(data, str) else bytes(data)
    if buf.startswith(b"\xef\xbb\xbf"):
        buf = buf[3:]
    head = buf[:1] if buf[:1] == b"{" else buf.lstrip()[:1]
    if head != b"{":
        return _from_other_text(buf, root, max_size, depth)
    if _RESPONSE_PREFIX.match(buf):
        try:
            obj: _T = _ENVELOPES[root].decode(buf).Response
        except msgspec.ValidationError as exc:
            raise _validation_error(exc) from None
        except msgspec.DecodeError as exc:
            raise _error(f"not valid JSON: {exc}") from None
        except UnicodeDecodeError:
            raise _error("not valid JSON: invalid UTF-8") from None
        return _finish(obj, root, buf=buf, doc=None, max_size=max_size, depth=depth)
    try:
        obj = _DECODERS[root].decode(buf)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc) from None
    except msgspec.DecodeError as exc:
        raise _error(f"not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise _error("not valid JSON: invalid UTF-8") from None
    return _finish(obj, root, buf=buf, doc=None, max_size=max_size, depth=depth)


def _finish(
    obj: _T, root: type[_T], *, buf: bytes | None, doc: Any, max_size: int, depth: int
) -> _T:
    """Check the discriminator and unknown types after a successful typed decode."""
    discriminator = obj.event_type if isinstance(obj, Notification) else obj.notification_type
    if discriminator is None:
        if doc is None and buf is not None:
            doc = _ANY_DECODER.decode(buf)
        inner = _unwrap(doc)
        if inner is not None and depth < _MAX_NESTING:
            return _dispatch(inner, root, max_size, depth + 1)
        raise _error(f"{_MISSING}{_DISCRIMINATOR[root]}", f"$.{_DISCRIMINATOR[root]}")
    unknown = find_unknown_parts(obj)
    if unknown:
        if doc is None and buf is not None:
            doc = _ANY_DECODER.decode(buf)
        if isinstance(doc, Mapping) and isinstance(doc.get("Response"), Mapping):
            doc = doc["Response"]
        for part, keys in unknown:
            part._set_raw(_follow(doc, keys))
        obj._set_raw(doc)
    return obj


def _unwrap(doc: Any) -> Any:
    """The notification inside a ``Response`` wrapper or a CMQ message's ``msgBody``."""
    if not isinstance(doc, Mapping):
        return None
    response = doc.get("Response")
    if isinstance(response, Mapping):
        return response
    body = doc.get("msgBody")
    if isinstance(body, str):
        return body
    return None


def _follow(doc: Any, keys: tuple[str | int, ...]) -> Any:
    for key in keys:
        try:
            doc = doc[key]
        except (KeyError, IndexError, TypeError):
            return None
    return doc


def _from_mapping(data: Mapping[str, Any], root: type[_T], max_size: int, depth: int) -> _T:
    if _DISCRIMINATOR[root] not in data:
        inner = _unwrap(data)
        if inner is not None and depth < _MAX_NESTING:
            return _dispatch(inner, root, max_size, depth + 1)
    try:
        obj = msgspec.convert(data if isinstance(data, dict) else dict(data), root)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc) from None
    return _finish(obj, root, buf=None, doc=data, max_size=max_size, depth=depth)


def _from_other_text(buf: bytes, root: type[_T], max_size: int, depth: int) -> _T:
    """A body that does not start with ``{``: percent-encoded JSON, a form, a JSON string."""
    text = buf.strip()
    if depth >= _MAX_NESTING or not text:
        raise _error("not valid JSON: payload is not a JSON object")
    if text[:1] == b'"':
        try:
            inner = _ANY_DECODER.decode(text)
        except msgspec.DecodeError as exc:
            raise _error(f"not valid JSON: {exc}") from None
        if isinstance(inner, str):
            return _dispatch(inner, root, max_size, depth + 1)
    elif text[:3].upper() == b"%7B":
        return _dispatch(_unquote(text), root, max_size, depth + 1)
    elif b"=" in text:
        form = urllib.parse.parse_qsl(text.decode(), keep_blank_values=True)
        value = next((v for _k, v in form if v.lstrip().startswith("{")), None)
        if value is not None:
            return _dispatch(value, root, max_size, depth + 1)
    raise _error("not valid JSON: payload is not a JSON object")


def _unquote(text: bytes) -> bytes:
    """Percent-decode a body; ``+`` means space unless the sender used ``%20`` for spaces."""
    if b"%20" in text:
        return urllib.parse.unquote_to_bytes(text)
    return urllib.parse.unquote_to_bytes(text.replace(b"+", b" "))


def _error(message: str, path: str = "$") -> DecodeError:
    return DecodeError(f"{message} - at `{path}`", path)


def _validation_error(exc: msgspec.ValidationError) -> DecodeError:
    message = str(exc)
    match = _PATH_SUFFIX.search(message)
    if match is None:
        return _error(message)
    return DecodeError(message, match.group(1))
