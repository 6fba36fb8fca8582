"""``make_scf_handler``: a synchronous ``main_handler`` called as the SCF runtime calls it."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from mpsflow import App, Cause, Context, Reject, RetryPolicy
from mpsflow.deadletter import DeadLetter
from mpsflow.errors import InvocationFailed
from mpsflow.sinks.memory import MemorySink
from mpsflow.sources.redelivery import RedeliveryCounter
from mpsflow.sources.scf import make_scf_handler
from mpsflow.testing import build_notification, media_result
from tests.plugins.samples import SAMPLE_KEY

CONTEXT = {"time_limit_in_ms": 3000, "request_id": "req-1", "function_name": "mps"}


def seed_event(seed_sample: bytes) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(seed_sample)
    return event


def dead_letters(sink: MemorySink) -> list[DeadLetter]:
    return [r for r in sink.records if isinstance(r, DeadLetter)]


def test_seed_event_runs_its_handlers_and_returns_a_summary(seed_sample: bytes) -> None:
    dead = MemorySink()
    app = App(dead_letters=dead)
    seen: list[tuple[str, str, int, float | None]] = []

    @app.on("Transcode")
    async def transcode(result: Any, ctx: Context) -> None:
        delivery = ctx.delivery
        seen.append((ctx.key, delivery.source, delivery.attempt, delivery.deadline))

    @app.on("WorkflowTask", status="FINISH")
    async def finished(event: Any, ctx: Context) -> None:
        assert isinstance(ctx.delivery.body, dict)  # handed over as is: no JSON round trip

    main_handler = make_scf_handler(app)
    before = time.monotonic()
    summary = main_handler(seed_event(seed_sample), CONTEXT)
    assert summary == {
        "status": "ok",
        "taskId": "245****654-WorkflowTask-f46dac7fe2436c47******d71946986t0",
        "handlers": 2,
    }
    json.dumps(summary)  # JSON-able, as the runtime requires
    [(key, source, attempt, deadline)] = seen
    assert (key, source, attempt) == ("Transcode", "scf", 1)
    assert deadline is not None
    assert before + 3.0 <= deadline <= time.monotonic() + 3.0
    assert dead_letters(dead) == []
    assert not app.started  # stopped again before returning


def test_each_call_runs_in_a_new_event_loop_with_module_state_reused(seed_sample: bytes) -> None:
    sink = MemorySink()
    app = App(dead_letters=MemorySink())
    app.sink("out", sink)
    loops: list[asyncio.AbstractEventLoop] = []

    @app.on("WorkflowTask", emits=["out"])
    async def handler(event: Any, ctx: Context) -> None:
        loops.append(asyncio.get_running_loop())
        await ctx.emit("out", {"task": ctx.task_id})

    main_handler = make_scf_handler(app)
    for n in range(3):
        event = build_notification(task_id=f"t-{n}")
        assert main_handler(event, CONTEXT)["status"] == "ok"
        # delivered to the sink before the invocation returned
        assert [r for r in sink.records if isinstance(r, dict)] == [
            {"task": f"t-{i}"} for i in range(n + 1)
        ]
    assert len({id(loop) for loop in loops}) == 3  # kept alive, so distinct ids: 3 loops
    assert all(loop.is_closed() for loop in loops)
    assert sink.closed  # the sink was opened and closed inside each invocation


def test_retryable_failure_raises_until_retries_run_out() -> None:
    dead = MemorySink()
    app = App(dead_letters=dead, retry=RetryPolicy(max_attempts=3))
    attempts: list[int] = []

    @app.on("Transcode")
    async def broken(result: Any, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        raise ConnectionError("catalogue database unreachable")

    main_handler = make_scf_handler(app)
    event = build_notification(
        task_id="t-broken", media_results=[media_result("Transcode", output={"Path": "/o.mp4"})]
    )
    for _ in range(2):  # the platform retries the invocation after each raise
        with pytest.raises(InvocationFailed) as failure:
            main_handler(dict(event), CONTEXT)
        assert failure.value.outcome.cause is Cause.ERROR  # a failure, not busy
    summary = main_handler(dict(event), CONTEXT)
    assert summary["status"] == "dead_lettered"
    assert summary["taskId"] == "t-broken"
    assert summary["reason"]
    assert attempts == [1, 2, 3]
    [record] = dead_letters(dead)
    assert record.kind == "exhausted"
    assert record.source == "scf"
    assert record.attempt == 3


def test_a_retry_that_succeeds_forgets_the_failure() -> None:
    app = App(dead_letters=MemorySink(), retry=RetryPolicy(max_attempts=2))
    attempts: list[int] = []

    @app.on("WorkflowTask")
    async def flaky(event: Any, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        if len(attempts) == 1:
            raise RuntimeError("first time unlucky")

    main_handler = make_scf_handler(app)
    event = build_notification(task_id="t-flaky")
    with pytest.raises(InvocationFailed):
        main_handler(event, CONTEXT)
    assert main_handler(event, CONTEXT)["status"] == "ok"
    assert main_handler(event, CONTEXT)["status"] == "ok"  # a later duplicate starts afresh
    assert attempts == [1, 2, 1]


def test_handler_reject_is_dead_lettered_and_returned() -> None:
    dead = MemorySink()
    app = App(dead_letters=dead)

    @app.on("WorkflowTask")
    async def refuse(event: Any, ctx: Context) -> None:
        raise Reject("unknown customer")

    summary = make_scf_handler(app)(build_notification(task_id="t-x"), CONTEXT)
    assert summary["status"] == "dead_lettered"
    assert "unknown customer" in summary["reason"]
    assert [r.kind for r in dead_letters(dead)] == ["rejected"]


def test_bad_signature_returns_rejected_without_raising() -> None:
    dead = MemorySink()
    app = App(dead_letters=dead, notify_keys=[SAMPLE_KEY])
    handled: list[str] = []

    @app.on("WorkflowTask")
    async def handler(event: Any, ctx: Context) -> None:
        handled.append(ctx.task_id)

    main_handler = make_scf_handler(app)
    expires = int(time.time()) + 600
    good = build_notification(task_id="t-good", sign_key=SAMPLE_KEY, expires_at=expires)
    bad = build_notification(task_id="t-bad", sign_key="not-the-key", expires_at=expires)
    assert main_handler(good, CONTEXT)["status"] == "ok"
    summary = main_handler(bad, CONTEXT)
    assert summary["status"] == "rejected"
    assert SAMPLE_KEY not in json.dumps(summary)
    assert handled == ["t-good"]
    assert [r.kind for r in dead_letters(dead)] == ["signature"]


def test_poison_event_is_dead_lettered() -> None:
    dead = MemorySink()
    app = App(dead_letters=dead)
    summary = make_scf_handler(app)({"EventType": "WorkflowTask", "WorkflowTaskEvent": 7}, {})
    assert summary["status"] == "dead_lettered"
    assert summary["taskId"] is None
    assert [r.kind for r in dead_letters(dead)] == ["poison"]


def test_app_scf_handler_is_the_same_handler(seed_sample: bytes) -> None:
    app = App(dead_letters=MemorySink())
    main_handler = app.scf_handler()
    assert main_handler.__name__ == "main_handler"
    assert main_handler(seed_event(seed_sample), CONTEXT)["status"] == "ok"


def test_redelivery_counter_matches_resigned_content_and_forgets() -> None:
    counter = RedeliveryCounter(capacity=2)
    first = build_notification(task_id="t-1", sign_key="k", expires_at=1000)
    resigned = build_notification(task_id="t-1", sign_key="k", expires_at=2000)
    assert counter.attempt(first) == (1, None)  # nothing failing: no hashing at all
    counter.record(first, None, failed=True)
    attempt, key = counter.attempt(resigned)
    assert attempt == 2
    counter.record(resigned, key, failed=False)
    assert len(counter) == 0
    for n in range(3):  # bounded: the oldest failure is forgotten
        counter.record(b"not json %d" % n, None, failed=True)
    assert len(counter) == 2
    assert counter.attempt(b"not json 0")[0] == 1
    assert counter.attempt(b"not json 2")[0] == 2
