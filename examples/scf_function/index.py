"""An SCF function for the MPS trigger: catalogue finished workflows and edits, mpsflow-style.

Handler string ``index.main_handler``. The platform imports this module once per instance
(cold start) and then calls ``main_handler(event, context)`` for every invocation; each
call runs the notification through the app in its own event loop (see
``mpsflow.sources.scf``). A retryable failure raises, so the platform retries the async
invocation; ``RetryPolicy(max_attempts=3)`` matches SCF's default of two retries, so the
third failure is dead-lettered and returned instead.

``/tmp`` is the only writable folder on SCF and it does not outlive the instance: point
``MPSFLOW_DEAD_LETTERS`` / ``MPSFLOW_OUTPUTS`` at mounted storage (CFS), or swap the JSONL
sinks for durable ones (COS, CMQ), before relying on them.
"""

from __future__ import annotations

import os

from mpsflow import App, Context, Notification, RetryPolicy
from mpsflow.events import EditMediaTask, WorkflowTask
from mpsflow.sinks.jsonl import JsonlSink

__all__ = ["app", "main_handler"]

app = App(
    retry=RetryPolicy(max_attempts=3),
    dead_letters=os.environ.get("MPSFLOW_DEAD_LETTERS", "/tmp/mpsflow-dead-letters.jsonl"),
    # Configure the function's MPS trigger with a NotifyKey and list it here to verify events:
    notify_keys=[key for key in os.environ.get("MPS_NOTIFY_KEYS", "").split(",") if key],
)
app.sink("outputs", JsonlSink(os.environ.get("MPSFLOW_OUTPUTS", "/tmp/mpsflow-outputs.jsonl")))


@app.on("WorkflowTask", status="FINISH", emits=["outputs"])
async def workflow_finished(task: WorkflowTask, ctx: Context) -> None:
    """Record every output object of a finished workflow, and log its failed subtasks."""
    notification = ctx.notification
    assert isinstance(notification, Notification)  # a WorkflowTask key: never a live one
    for sub in notification.subtasks():
        if sub.failed:
            ctx.log.warning("task %s: %s failed (%s)", ctx.task_id, sub.key, sub.error)
    for out in notification.output_paths():
        await ctx.emit(
            "outputs",
            {"task_id": ctx.task_id, "key": out.key, "bucket": out.bucket, "path": out.path},
        )


@app.on("EditMediaTask", status="FINISH", emits=["outputs"])
async def edit_finished(task: EditMediaTask, ctx: Context) -> None:
    """Record the output of a finished edit (or log why it failed)."""
    if task.err_code:
        ctx.log.warning("edit %s failed: %s %s", ctx.task_id, task.err_code, task.message)
        return
    output = task.output
    if output is not None:
        record = {"task_id": ctx.task_id, "key": "EditMediaTask", "path": output.path}
        await ctx.emit("outputs", record)


main_handler = app.scf_handler()
