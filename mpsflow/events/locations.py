"""Where a task's media came from and where its outputs went, as small secret-free values.

MPS spreads locations over four storage shapes (COS, URL, AWS-S3, VOD) and dozens of output
fields (``Path``, ``ImagePathSet``, ``CoverPath``, ``SubtitlePath``...). ``InputLocation`` and
``OutputPath`` flatten them; neither ever carries the S3 secret id/key MPS may echo back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from ._generated import MediaInputInfo, TaskOutputStorage

__all__ = ["InputLocation", "OutputPath", "input_location", "iter_output_paths"]


class InputLocation(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A task's input: ``kind`` is ``COS``, ``URL``, ``AWS-S3`` or ``VOD`` (None if unknown)."""

    kind: str | None = None
    bucket: str | None = None
    region: str | None = None
    object: str | None = None
    url: str | None = None
    file_id: str | None = None
    sub_app_id: int | None = None


class OutputPath(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One output object: its ``path`` (an object key, not a URL) and the storage it is in.

    ``key`` is the routing key of the subtask that produced it (``Transcode``,
    ``AiAnalysis.Cover``...), ``kind`` the storage type (``COS``, ``AWS-S3``, ``VOD``).
    """

    path: str
    key: str
    kind: str | None = None
    bucket: str | None = None
    region: str | None = None
    sub_app_id: int | None = None


def input_location(info: MediaInputInfo | None) -> InputLocation | None:
    """Flatten a ``MediaInputInfo`` into an ``InputLocation`` (never with S3 secrets)."""
    if info is None:
        return None
    kind = info.type
    if (kind == "COS" or kind is None) and info.cos_input_info is not None:
        cos = info.cos_input_info
        return InputLocation(kind="COS", bucket=cos.bucket, region=cos.region, object=cos.object)
    if (kind == "URL" or kind is None) and info.url_input_info is not None:
        return InputLocation(kind="URL", url=info.url_input_info.url)
    if (kind == "AWS-S3" or kind is None) and info.s3_input_info is not None:
        s3 = info.s3_input_info
        return InputLocation(
            kind="AWS-S3", bucket=s3.s3_bucket, region=s3.s3_region, object=s3.s3_object
        )
    if (kind == "VOD" or kind is None) and info.vod_input_info is not None:
        vod = info.vod_input_info
        return InputLocation(
            kind="VOD",
            bucket=vod.bucket,
            region=vod.region,
            object=vod.object,
            file_id=vod.file_id,
            sub_app_id=vod.sub_app_id,
        )
    return InputLocation(kind=kind)


def _storage_fields(storage: TaskOutputStorage | None) -> dict[str, Any]:
    """The secret-free ``kind``/``bucket``/``region``/``sub_app_id`` of an output storage."""
    if storage is None:
        return {}
    kind = storage.type
    if (kind == "COS" or kind is None) and storage.cos_output_storage is not None:
        cos = storage.cos_output_storage
        return {"kind": "COS", "bucket": cos.bucket, "region": cos.region}
    if (kind == "AWS-S3" or kind is None) and storage.s3_output_storage is not None:
        s3 = storage.s3_output_storage
        return {"kind": "AWS-S3", "bucket": s3.s3_bucket, "region": s3.s3_region}
    if (kind == "VOD" or kind is None) and storage.vod_output_storage is not None:
        vod = storage.vod_output_storage
        return {
            "kind": "VOD",
            "bucket": vod.bucket,
            "region": vod.region,
            "sub_app_id": vod.sub_app_id,
        }
    return {"kind": kind}


def _is_path_field(name: str) -> bool:
    return name.endswith(("_path", "_paths", "_path_set")) or name == "path"


def _walk(obj: Any, key: str, storage: TaskOutputStorage | None) -> Iterator[OutputPath]:
    fields: tuple[str, ...] = obj.__struct_fields__
    for name in ("output_storage", "storage"):
        if name in fields:
            own = getattr(obj, name)
            if isinstance(own, TaskOutputStorage):
                storage = own
    for name in fields:
        value = getattr(obj, name)
        if value is None:
            continue
        if _is_path_field(name):
            paths = [value] if isinstance(value, str) else value
            for p in paths:
                if isinstance(p, str) and p:
                    yield OutputPath(path=p, key=key, **_storage_fields(storage))
        elif isinstance(value, msgspec.Struct) and not isinstance(value, TaskOutputStorage):
            yield from _walk(value, key, storage)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, msgspec.Struct):
                    yield from _walk(item, key, storage)


def iter_output_paths(result: Any, key: str) -> Iterator[OutputPath]:
    """Every output object key under ``result.Output`` / ``result.Outputs``, with its storage.

    The storage is the nearest ``OutputStorage``/``Storage`` at or above the path; when the
    output does not say, the task's configured ``Input.OutputStorage`` is used. Input echoes
    (templates such as ``OutputObjectPath``) are not outputs and are skipped.
    """
    fields: tuple[str, ...] = getattr(result, "__struct_fields__", ())
    default: TaskOutputStorage | None = None
    task_input = getattr(result, "input", None) if "input" in fields else None
    if task_input is not None and "output_storage" in task_input.__struct_fields__:
        candidate = task_input.output_storage
        if isinstance(candidate, TaskOutputStorage):
            default = candidate
    for name in ("output", "outputs"):
        if name not in fields:
            continue
        value = getattr(result, name)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, msgspec.Struct):
                yield from _walk(item, key, default)
