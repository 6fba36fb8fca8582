"""The Struct base every notification model shares, and the small mixins the generator adds.

* ``MpsStruct``: every field optional, ``gc=False`` for speed, null fields left out when
  encoding (what the SDK's ``_serialize`` does). No ``rename``: each generated field names its
  SDK wire key (``msgspec.field(name="Stereo3dType")``), independent of msgspec's algorithms.
* ``TaskResult`` / ``ErrCodeResult`` / ``BatchOutcome``: one ``ok`` / ``failed`` / ``error``
  vocabulary over MPS's three error conventions (``ErrCodeExt``, deprecated ``ErrCode``, both).
* ``RawPayload``: the raw JSON of a part whose type mpsflow does not know.
* ``RedactedSecrets``: keeps S3 keys out of ``repr`` (and so out of logs).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec

if TYPE_CHECKING:
    from ._generated import SmartSubtitleTaskBatchOutput

__all__ = [
    "BatchOutcome",
    "ErrCodeResult",
    "HasOutcome",
    "MpsStruct",
    "OutcomeMixin",
    "RawPayload",
    "RedactedSecrets",
    "TaskResult",
    "attach_raw",
    "error_text",
]

_SECRET_FIELDS = frozenset({"s3_secret_id", "s3_secret_key"})
_REDACTED = "***"


class MpsStruct(
    msgspec.Struct,
    kw_only=True,
    gc=False,
    omit_defaults=True,
    repr_omit_defaults=True,
):
    """Base of every MPS notification Struct (unknown fields are ignored when decoding).

    A subclass names each field's wire key explicitly (``msgspec.field(name=...)``); a field
    without one is encoded under its Python name.
    """


def error_text(err_code_ext: str | None, err_code: int | None) -> str:
    """The error of a result: ``ErrCodeExt``, else ``str(ErrCode)`` unless it is 0 or missing."""
    if err_code_ext:
        return err_code_ext
    if err_code is None or err_code == 0:
        return ""
    return str(err_code)


@runtime_checkable
class HasOutcome(Protocol):
    """What every result with an outcome offers: ``ok``, ``failed`` and ``error``."""

    @property
    def ok(self) -> bool:
        """True when the task succeeded."""
        ...

    @property
    def failed(self) -> bool:
        """True when the task ended in failure (neither succeeded nor still running)."""
        ...

    @property
    def error(self) -> str:
        """The error code (``ErrCodeExt`` or the legacy ``ErrCode``); ``""`` when none."""
        ...


class OutcomeMixin:
    """Common base of the outcome mixins (a cheap ``isinstance`` check for iteration)."""

    __slots__ = ()


class TaskResult(OutcomeMixin):
    """Mixin for results with a ``Status`` (``SUCCESS`` / ``FAIL`` / ``PROCESSING`` / ...).

    ``ok`` is ``Status == "SUCCESS"``; ``failed`` is ``Status == "FAIL"``, or an error code with
    no Status at all. ``error`` hides whether this result type reports ``ErrCodeExt``,
    the deprecated integer ``ErrCode``, or both.
    """

    __slots__ = ()

    if TYPE_CHECKING:
        status: str | None

    @property
    def ok(self) -> bool:
        """True when ``Status`` is ``SUCCESS``."""
        return self.status == "SUCCESS"

    @property
    def failed(self) -> bool:
        """True when ``Status`` is ``FAIL`` (or absent while an error code is set)."""
        status = self.status
        return status == "FAIL" or (status is None and self.error != "")

    @property
    def error(self) -> str:
        """``ErrCodeExt``, else ``str(ErrCode)`` when it is not 0; ``""`` when none."""
        return error_text(getattr(self, "err_code_ext", None), getattr(self, "err_code", None))


class ErrCodeResult(OutcomeMixin):
    """Mixin for results that only carry an integer ``ErrCode`` (0 = success), e.g. live EOF."""

    __slots__ = ()

    if TYPE_CHECKING:
        err_code: int | None

    @property
    def ok(self) -> bool:
        """True when ``ErrCode`` is 0 or absent."""
        return self.err_code is None or self.err_code == 0

    @property
    def failed(self) -> bool:
        """True when ``ErrCode`` is set and not 0."""
        return not self.ok

    @property
    def error(self) -> str:
        """``str(ErrCode)`` when it is not 0; ``""`` otherwise."""
        return error_text(None, self.err_code)


class BatchOutcome(OutcomeMixin):
    """Mixin for a batch result whose outcome is the sum of its ``Outputs``' outcomes."""

    __slots__ = ()

    if TYPE_CHECKING:
        outputs: list[SmartSubtitleTaskBatchOutput] | None

    @property
    def ok(self) -> bool:
        """True when there is at least one output and every output succeeded."""
        outputs = self.outputs or []
        return bool(outputs) and all(o.ok for o in outputs)

    @property
    def failed(self) -> bool:
        """True when any output failed."""
        return any(o.failed for o in self.outputs or [])

    @property
    def error(self) -> str:
        """The error of the first failed output; ``""`` when none failed."""
        return next((o.error for o in self.outputs or [] if o.error), "")


class RawPayload:
    """Mixin: ``raw`` is the untyped JSON of this part when its type was unknown, else None."""

    __slots__ = ()

    @property
    def raw(self) -> Any:
        """The JSON object as received (only kept when mpsflow did not know its type)."""
        return getattr(self, "_raw", None)


def attach_raw(part: object, value: Any) -> None:
    """Keep the JSON ``value`` a part was decoded from, as its ``raw`` (the codec does this for
    parts whose type mpsflow does not know)."""
    setattr(part, "_raw", value)  # noqa: B010 - the Struct has a __dict__ for it


class RedactedSecrets:
    """Mixin: ``repr`` (and rich's pretty printer) never show ``S3SecretId``/``S3SecretKey``."""

    __slots__ = ()

    def _safe_items(self) -> Iterator[tuple[str, Any]]:
        for name in getattr(self, "__struct_fields__", ()):
            value = getattr(self, name)
            if value is None:
                continue
            yield name, (_REDACTED if name in _SECRET_FIELDS else value)

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self._safe_items())
        return f"{type(self).__name__}({body})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return list(self._safe_items())
