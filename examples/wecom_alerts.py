"""Post a WeCom group-robot alert for every WorkflowTask that finished with a failure.

The alert (markdown) names the task, its failed subtasks with their error codes and
messages, the outputs that were produced, and the session context. Set the robot's address
and run it behind MPS's HTTP callback:

    export WECOM_WEBHOOK_URL='https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...'
    mpsflow run examples.wecom_alerts:app

The robot key lives in the URL's query string; mpsflow never logs it.
"""

from __future__ import annotations

import os

from mpsflow import App, Context
from mpsflow.events import WorkflowTask
from mpsflow.sinks.wecom import WeComRobotSink

app = App()
app.sink("wecom", WeComRobotSink(os.environ["WECOM_WEBHOOK_URL"]))


@app.on("WorkflowTask", failed=True, emits=["wecom"])
async def alert(event: WorkflowTask, ctx: Context) -> None:
    """One markdown alert per failed workflow (``wecom_markdown`` formats the notification)."""
    await ctx.emit("wecom", ctx.notification)
