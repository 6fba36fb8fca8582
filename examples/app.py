"""A small, realistic mpsflow app: catalogue transcodes, alert on failures, collect images.

Run it (HTTP on 127.0.0.1:8080, callback path /mps/callback):

    mpsflow run examples.app:app

then post a sample the way MPS would:

    mpsflow send http://127.0.0.1:8080/mps/callback examples/notifications \
        --sign-key mps-sample-notify-key

Records land in ``out/catalogue.jsonl``, ``out/alerts.jsonl`` and ``out/images.jsonl``;
failures that keep failing land in ``mpsflow-dead-letters.jsonl``, as do notifications without a
valid signature (set your NotifyKeys in ``MPS_NOTIFY_KEYS``).
"""

from __future__ import annotations

import os

from mpsflow import App, Context, RetryPolicy
from mpsflow.events import (
    MediaProcessTaskImageSpriteResult,
    MediaProcessTaskSnapshotByTimeOffsetResult,
    MediaProcessTaskTranscodeResult,
    WorkflowTask,
)
from mpsflow.sinks.jsonl import JsonlSink

OUT = os.environ.get("MPSFLOW_EXAMPLE_OUT", "out")
NOTIFY_KEYS = os.environ.get("MPS_NOTIFY_KEYS", "mps-sample-notify-key").split(",")
"""Your MPS NotifyKeys, comma-separated in ``MPS_NOTIFY_KEYS`` (the samples' key by default, to
try it out): a notification not signed with one of them is answered 401, never processed."""

app = App(
    notify_keys=[key for key in NOTIFY_KEYS if key],
    retry=RetryPolicy(max_attempts=5, base_delay=2.0),
)
app.sink("catalogue", JsonlSink(f"{OUT}/catalogue.jsonl"))
app.sink("alerts", JsonlSink(f"{OUT}/alerts.jsonl"))
app.sink("images", JsonlSink(f"{OUT}/images.jsonl"))


@app.on("Transcode", ok=True, emits=["catalogue"])
async def catalogue_transcode(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
    """Every finished rendition goes into the catalogue with its size and location."""
    output = result.output
    if output is None:
        return
    storage = output.output_storage
    cos = storage.cos_output_storage if storage is not None else None
    await ctx.emit(
        "catalogue",
        {
            "task_id": ctx.task_id,
            "definition": output.definition,
            "bucket": cos.bucket if cos is not None else None,
            "path": output.path,
            "width": output.width,
            "height": output.height,
            "duration": output.duration,
            "bytes": output.size,
        },
    )


@app.on("WorkflowTask", status="FINISH", failed=True, emits=["alerts"])
async def alert_on_failure(task: WorkflowTask, ctx: Context) -> None:
    """One alert per finished task that had any failure, listing what failed and why."""
    notification = ctx.notification
    failures = [
        {"key": sub.key, "error": sub.error, "where": sub.where}
        for sub in notification.subtasks()
        if sub.failed
    ]
    ctx.log.warning("task %s finished with %d failure(s)", ctx.task_id, len(failures))
    await ctx.emit(
        "alerts",
        {
            "task_id": ctx.task_id,
            "source_error": task.err_code or 0,
            "message": task.message,
            "failures": failures,
        },
    )


@app.on("SnapshotByTimeOffset", ok=True, emits=["images"])
async def collect_snapshots(
    result: MediaProcessTaskSnapshotByTimeOffsetResult, ctx: Context
) -> None:
    """Keep every snapshot picture path (for thumbnails pickers)."""
    if result.output is None:
        return
    for pic in result.output.pic_info_set or []:
        await ctx.emit(
            "images",
            {"task_id": ctx.task_id, "kind": "snapshot", "path": pic.path, "at": pic.time_offset},
        )


@app.on("ImageSprites", ok=True, emits=["images"])
async def collect_sprites(result: MediaProcessTaskImageSpriteResult, ctx: Context) -> None:
    """Keep sprite sheets and their WebVTT index (for scrubbing previews)."""
    if result.output is None:
        return
    await ctx.emit(
        "images",
        {
            "task_id": ctx.task_id,
            "kind": "sprite",
            "paths": list(result.output.image_path_set or []),
            "webvtt": result.output.web_vtt_path,
        },
    )
