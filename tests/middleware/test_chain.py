"""Middleware at delivery, app-handler, router and handler scope; Context and emit."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from mpsflow import (
    App,
    Call,
    CallNext,
    Cause,
    Context,
    Outcome,
    RetryPolicy,
    Router,
    Settlement,
    current_context,
)
from mpsflow.errors import ConfigurationError
from mpsflow.events import MediaProcessTaskTranscodeResult, WorkflowTask
from mpsflow.testing import TestClient, build_notification, media_result


def notification(**kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("session_id", "sess-1")
    kwargs.setdefault("session_context", "ctx-data")
    return build_notification(
        media_results=[media_result("Transcode", output={"Path": "/o.mp4"})], **kwargs
    )


class Tracer:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def __call__(self, call: Call, call_next: CallNext) -> Outcome:
        where = call.handler.name if call.handler else "delivery"
        self.log.append(f"{self.name}>{where}")
        outcome = await call_next(call)
        self.log.append(f"{self.name}<{where}:{outcome.settlement.value}")
        return outcome


async def test_scopes_nest_app_router_handler_in_that_order() -> None:
    log: list[str] = []
    app = App()
    app.add_middleware(Tracer("deliv", log), scope="delivery")
    app.add_middleware(Tracer("app", log))
    router = Router(middleware=[Tracer("router", log)])

    @router.on("Transcode", name="h", middleware=[Tracer("handler", log)])
    async def handler(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        log.append("run")

    app.include_router(router)
    async with TestClient(app) as client:
        await client.send(notification())
    assert log == [
        "deliv>delivery",
        "app>h",
        "router>h",
        "handler>h",
        "run",
        "handler<h:ack",
        "router<h:ack",
        "app<h:ack",
        "deliv<delivery:ack",
    ]


async def test_delivery_middleware_sees_raw_bytes_and_can_short_circuit() -> None:
    seen: list[bytes] = []

    async def gate(call: Call, call_next: CallNext) -> Outcome:
        assert call.notification is None  # not decoded yet
        assert isinstance(call.delivery.body, bytes)
        seen.append(call.delivery.body)
        if b"blocked" in call.delivery.body:
            return Outcome(
                Settlement.REJECTED, reason="blocked by gate", cause=Cause.UNAUTHENTICATED
            )
        return await call_next(call)

    app = App(middleware=[gate])

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        pass

    async with TestClient(app) as client:
        ok = await client.send(notification())
        blocked = await client.send(notification(session_context="blocked"))
    assert ok.acked
    assert blocked.outcome.settlement is Settlement.REJECTED
    assert blocked.outcome.cause is Cause.UNAUTHENTICATED
    assert blocked.calls == []
    [record] = blocked.dead_letters
    assert record.kind == "signature"
    assert len(seen) == 2


async def test_handler_middleware_observes_exceptions() -> None:
    errors: list[str] = []

    async def observe(call: Call, call_next: CallNext) -> Outcome:
        try:
            return await call_next(call)
        except Exception as exc:
            errors.append(type(exc).__name__)
            raise

    app = App(retry=RetryPolicy(max_attempts=1))
    app.add_middleware(observe)

    @app.on("Transcode")
    async def handler(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        raise LookupError("x")

    async with TestClient(app) as client:
        result = await client.send(notification())
    assert errors == ["LookupError"]
    assert result.dead_lettered


async def test_context_carries_the_notification_and_is_current() -> None:
    app = App()
    seen: dict[str, Any] = {}

    @app.on("Transcode", name="ctx-check")
    async def handler(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        assert current_context() is ctx
        seen.update(
            event_type=ctx.event_type,
            task_id=ctx.task_id,
            session_id=ctx.session_id,
            session_context=ctx.session_context,
            attempt=ctx.attempt,
            handler=ctx.handler,
            key=ctx.key,
        )
        ctx.log.info("processing")

    payload = notification()
    async with TestClient(app) as client:
        await client.send(payload)
    assert seen == {
        "event_type": "WorkflowTask",
        "task_id": payload["WorkflowTaskEvent"]["TaskId"],
        "session_id": "sess-1",
        "session_context": "ctx-data",
        "attempt": 1,
        "handler": "ctx-check",
        "key": "Transcode",
    }
    with pytest.raises(LookupError):
        current_context()


async def test_ctx_log_says_which_notification_and_handler_a_line_is_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()

    @app.on("Transcode", name="catalogue")
    async def handler(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        ctx.log.warning("asset %s missing", "a.mp4", extra={"asset": "a.mp4"})

    payload = notification()
    task_id = payload["WorkflowTaskEvent"]["TaskId"]
    with caplog.at_level(logging.WARNING, logger="mpsflow.handler"):
        async with TestClient(app) as client:
            await client.send(payload)
    [record] = [r for r in caplog.records if "asset" in r.getMessage()]
    # In the message, for any log format; as attributes, for structured ones.
    assert record.getMessage() == f"[WorkflowTask {task_id} catalogue] asset a.mp4 missing"
    assert (record.task_id, record.event_type, record.handler) == (  # type: ignore[attr-defined]
        task_id,
        "WorkflowTask",
        "catalogue",
    )
    assert record.asset == "a.mp4"  # type: ignore[attr-defined]


async def test_emit_reaches_the_named_sink() -> None:
    from mpsflow.sinks.memory import MemorySink

    app = App()
    app.sink("catalogue", MemorySink())

    @app.on("Transcode", emits=["catalogue"])
    async def handler(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        assert result.output is not None
        await ctx.emit("catalogue", {"task": ctx.task_id, "path": result.output.path})

    payload = notification()
    async with TestClient(app) as client:
        result = await client.send(payload)
        assert result.acked
        assert client.emitted("catalogue") == [
            {"task": payload["WorkflowTaskEvent"]["TaskId"], "path": "/o.mp4"}
        ]


async def test_emit_failure_fails_the_handler_then_dead_letters() -> None:
    from mpsflow.sinks.memory import MemorySink

    app = App(retry=RetryPolicy(max_attempts=2, base_delay=0, jitter=0))
    app.sink("alerts", MemorySink(), max_attempts=1)

    @app.on("Transcode")
    async def handler(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        await ctx.emit("alerts", {"x": 1})

    async with TestClient(app) as client:
        client.sinks["alerts"].fail_next(10, transient=False)
        result = await client.send(notification())
    assert [o.settlement for o in result.outcomes] == [
        Settlement.RETRY,
        Settlement.DEAD_LETTERED,
    ]
    assert result.dead_letters[0].failures[0].error_type == "SinkError"


async def test_emit_to_an_unknown_sink_fails_loudly() -> None:
    app = App(retry=RetryPolicy(max_attempts=1))

    @app.on("Transcode")
    async def handler(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        await ctx.emit("nowhere", {})

    async with TestClient(app) as client:
        result = await client.send(notification())
    assert result.dead_letters[0].failures[0].error_type == "ConfigurationError"


async def test_declared_emits_to_unknown_sinks_fail_at_startup() -> None:
    app = App()

    @app.on("Transcode", emits=["nowhere"])
    async def handler(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        pass

    with pytest.raises(ConfigurationError, match="nowhere"):
        async with app:
            pass
