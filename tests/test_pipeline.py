"""The delivery contract: outcomes, retries with backoff, dead letters, poison, unmatched."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import pytest

from mpsflow import (
    App,
    Call,
    CallNext,
    Cause,
    Context,
    Delivery,
    Outcome,
    Reject,
    Retry,
    RetryPolicy,
    Settlement,
)
from mpsflow.clock import FakeClock
from mpsflow.deadletter import DeadLetter
from mpsflow.events import MediaProcessTaskTranscodeResult, WorkflowTask
from mpsflow.observability.summaries import DeferralCounter
from mpsflow.sinks.memory import MemorySink
from mpsflow.testing import TestClient, build_notification, media_result
from tests.blocking import blocking_handler

NO_JITTER = RetryPolicy(max_attempts=4, base_delay=2.0, factor=3.0, max_delay=100.0, jitter=0.0)


def transcode_notification(status: str = "SUCCESS") -> dict[str, Any]:
    return build_notification(
        media_results=[
            media_result(
                "Transcode",
                status=status,
                output={"Path": "/out/a.mp4", "Definition": 100010},
                err_code_ext="" if status == "SUCCESS" else "InternalError",
            )
        ]
    )


async def test_success_acks_and_runs_every_matching_handler() -> None:
    app = App(retry=NO_JITTER)
    seen: list[str] = []

    @app.on("WorkflowTask")
    async def on_event(event: WorkflowTask, ctx: Context) -> None:
        seen.append(f"event:{event.task_id}")

    @app.on("Transcode")
    async def on_transcode(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        assert result.output is not None
        seen.append(f"transcode:{result.output.path}")

    payload = transcode_notification()
    async with TestClient(app) as client:
        result = await client.send(payload)
    assert result.acked
    assert result.outcome.handlers_run == 2
    task_id = payload["WorkflowTaskEvent"]["TaskId"]
    assert sorted(seen) == sorted([f"event:{task_id}", "transcode:/out/a.mp4"])


async def test_retries_with_exponential_backoff_then_succeeds() -> None:
    app = App(retry=NO_JITTER)
    attempts: list[int] = []

    @app.on("Transcode")
    async def flaky(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("catalogue down")

    clock = FakeClock()
    async with TestClient(app, clock=clock) as client:
        result = await client.send(transcode_notification())
    assert attempts == [1, 2, 3]
    assert [o.settlement for o in result.outcomes] == [
        Settlement.RETRY,
        Settlement.RETRY,
        Settlement.ACK,
    ]
    assert [o.cause for o in result.outcomes[:2]] == [Cause.ERROR, Cause.ERROR]  # HTTP 500
    # base 2, factor 3, no jitter: 2 s after attempt 1, 6 s after attempt 2.
    assert clock.sleeps[:2] == [2.0, 6.0]
    assert client.dead_letters == []


async def test_jitter_stays_within_the_documented_band() -> None:
    policy = RetryPolicy(base_delay=10.0, factor=2.0, max_delay=1000.0, jitter=0.5)
    for attempt in range(1, 6):
        raw = 10.0 * 2.0 ** (attempt - 1)
        assert raw * 0.5 <= policy.delay(attempt) <= raw


async def test_exhausted_retries_go_to_dead_letters_with_everything_needed() -> None:
    app = App(retry=NO_JITTER)

    @app.on("Transcode", name="always-fails")
    async def broken(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        raise KeyError("missing asset row")

    payload = transcode_notification()
    async with TestClient(app) as client:
        result = await client.send(payload)
    assert len(result.outcomes) == NO_JITTER.max_attempts
    assert result.outcome.settlement is Settlement.DEAD_LETTERED
    # dead-lettered deliveries are acked (HTTP 200): recorded, not malformed
    assert result.outcome.settled
    assert result.outcome.cause is Cause.ERROR
    [record] = result.dead_letters
    assert record.kind == "exhausted"
    assert record.attempt == NO_JITTER.max_attempts
    assert record.event_type == "WorkflowTask"
    assert record.task_id == payload["WorkflowTaskEvent"]["TaskId"]
    assert json.loads(record.raw_body()) == payload
    [failure] = record.failures
    assert failure.handler == "always-fails"
    assert failure.key == "Transcode"
    assert failure.error_type == "KeyError"
    assert "missing asset row" in failure.message
    assert "Traceback" in failure.traceback
    assert "broken" in failure.traceback


async def test_per_handler_retry_policy_overrides_the_app_default() -> None:
    app = App(retry=NO_JITTER)

    @app.on("Transcode", retry=RetryPolicy(max_attempts=2, base_delay=0, jitter=0))
    async def impatient(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        raise RuntimeError("nope")

    async with TestClient(app) as client:
        result = await client.send(transcode_notification())
    assert len(result.outcomes) == 2
    assert result.dead_lettered


async def test_retry_exception_sets_the_delay() -> None:
    app = App(retry=NO_JITTER)

    @app.on("Transcode")
    async def later(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        if ctx.attempt == 1:
            raise Retry("asset not indexed yet", delay=42.5)

    clock = FakeClock()
    async with TestClient(app, clock=clock) as client:
        result = await client.send(transcode_notification())
    assert result.outcomes[0].settlement is Settlement.RETRY
    assert result.outcomes[0].retry_after == 42.5
    assert result.outcomes[0].cause is Cause.RETRY  # HTTP 503: asked for, nothing broke
    assert clock.sleeps[0] == 42.5
    assert result.acked


async def test_reject_dead_letters_at_once_without_retrying() -> None:
    app = App(retry=NO_JITTER)

    @app.on("Transcode")
    async def refuse(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        raise Reject("unknown customer bucket")

    async with TestClient(app) as client:
        result = await client.send(transcode_notification())
    assert len(result.outcomes) == 1
    assert result.outcome.settlement is Settlement.DEAD_LETTERED
    [record] = result.dead_letters
    assert record.kind == "rejected"
    assert "unknown customer bucket" in record.reason


async def test_one_failing_handler_does_not_stop_the_others() -> None:
    app = App(retry=RetryPolicy(max_attempts=1))
    ran: list[str] = []

    @app.on("WorkflowTask")
    async def good(event: WorkflowTask, ctx: Context) -> None:
        ran.append("good")

    @app.on("Transcode")
    async def bad(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        raise ValueError("boom")

    async with TestClient(app) as client:
        result = await client.send(transcode_notification())
        second = await client.send(transcode_notification())
    assert ran == ["good", "good"]
    assert result.dead_lettered
    assert second.dead_lettered
    assert [f.handler for f in result.dead_letters[0].failures] == [
        "tests.test_pipeline.test_one_failing_handler_does_not_stop_the_others.<locals>.bad"
    ]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b"not json", "$"),
        (
            b'{"EventType": "WorkflowTask", "WorkflowTaskEvent": {"Status": 7}}',
            "$.WorkflowTaskEvent.Status",
        ),
        (b'{"WorkflowTaskEvent": {}}', "$.EventType"),
        (b"", "$"),
    ],
)
async def test_poison_is_dead_lettered_once_with_its_path(body: bytes, path: str) -> None:
    app = App(retry=NO_JITTER)

    @app.on("WorkflowTask")
    async def never(event: WorkflowTask, ctx: Context) -> None:
        raise AssertionError("must not run")

    async with TestClient(app) as client:
        result = await client.send(body)
    assert len(result.outcomes) == 1
    assert result.outcome.settlement is Settlement.DEAD_LETTERED
    assert result.outcome.cause is Cause.MALFORMED  # HTTP 400
    assert result.outcome.path == path
    [record] = result.dead_letters
    assert record.kind == "poison"
    assert record.raw_body() == body
    assert result.calls == []


async def test_poison_reason_names_the_json_path() -> None:
    app = App()
    body = b'{"EventType": "WorkflowTask", "WorkflowTaskEvent": {"Status": 7}}'
    async with TestClient(app) as client:
        result = await client.send(body)
    assert result.outcome.path == "$.WorkflowTaskEvent.Status"
    assert "$." not in result.outcome.reason  # the path is data, never inside the reason
    [record] = result.dead_letters
    # the record reads the message once and the path once
    assert record.reason == f"{result.outcome.reason} at $.WorkflowTaskEvent.Status"
    assert record.reason.count("WorkflowTaskEvent.Status") == 1


async def test_oversize_body_is_a_413_dead_letter() -> None:
    app = App(max_body_size=64)
    async with TestClient(app) as client:
        result = await client.send(json.dumps(transcode_notification()))
    assert result.outcome.cause is Cause.TOO_LARGE  # HTTP 413
    assert result.dead_letters[0].kind == "poison"


async def test_unmatched_is_acked_and_counted_by_default() -> None:
    app = App()

    @app.on("EditMediaTask")
    async def edits(event: object, ctx: Context) -> None:
        raise AssertionError("not for workflow tasks")

    async with TestClient(app) as client:
        result = await client.send(transcode_notification())
    assert result.acked
    assert result.outcome.reason == "unmatched"
    assert result.outcome.cause is Cause.UNMATCHED
    assert client.dead_letters == []
    assert app.metrics.snapshot()["unmatched"] == {"WorkflowTask": 1}  # type: ignore[attr-defined]


async def test_unmatched_policy_dead_letter() -> None:
    app = App(unmatched="dead_letter")
    async with TestClient(app) as client:
        result = await client.send(transcode_notification())
    assert result.outcome.settlement is Settlement.DEAD_LETTERED
    assert result.dead_letters[0].kind == "unmatched"


async def test_handler_timeout_is_a_retryable_failure() -> None:
    app = App(retry=RetryPolicy(max_attempts=2, base_delay=0, jitter=0))

    @app.on("Transcode", timeout=0.01)
    async def stuck(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        await anyio.sleep_forever()

    async with TestClient(app) as client:
        result = await client.send(transcode_notification())
    assert result.dead_lettered
    assert [c.result for c in result.calls] == ["error:TimeoutError", "error:TimeoutError"]
    assert result.dead_letters[0].failures[0].kind == "timeout"


async def test_dead_letter_sink_failure_means_retry_not_loss() -> None:
    app = App(retry=RetryPolicy(max_attempts=1))

    @app.on("Transcode")
    async def broken(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        raise RuntimeError("x")

    async with TestClient(app) as client:
        client.dead_letter_sink.fail_next(100, transient=False)
        outcome = await app.process(Delivery(json.dumps(transcode_notification()).encode()))
    assert outcome.settlement is Settlement.RETRY
    assert outcome.cause is Cause.DEFERRED  # HTTP 503: nothing failed, the sink is busy


async def test_a_cancelled_delivery_is_counted_and_leaves_nothing_in_flight() -> None:
    app = App(dead_letters=MemorySink())
    started = blocking_handler(app)

    body = json.dumps(build_notification()).encode()
    async with app, anyio.create_task_group() as tg:
        tg.start_soon(app.process, Delivery(body, source="memory"))
        await started.wait()
        assert app.metrics.in_flight_now == {"memory": 1}  # type: ignore[attr-defined]
        tg.cancel_scope.cancel()
    assert app.metrics.in_flight_now == {"memory": 0}  # type: ignore[attr-defined]
    assert app.metrics.deliveries == {("memory", "cancelled"): 1}  # type: ignore[attr-defined]


async def test_a_source_can_dead_letter_a_body_without_the_pipeline() -> None:
    """The runtime's dead-letter path: recorded once, with the kind its cause calls for."""
    app = App(dead_letters=MemorySink())
    dead = app.dead_letter_sink
    assert isinstance(dead, MemorySink)
    delivery = Delivery(b"\x00 not even text", source="door", id="d-1")
    async with app:
        runtime = app.source_runtime(anyio.Event())
        outcome = await runtime.dead_letter(delivery, "refused at the door")
        again = await runtime.dead_letter(delivery, "refused at the door")
    assert outcome.settlement is again.settlement is Settlement.DEAD_LETTERED
    assert outcome.cause is Cause.REJECTED
    assert delivery.dead_lettered
    [record] = [r for r in dead.records if isinstance(r, DeadLetter)]
    assert (record.kind, record.reason, record.source, record.delivery_id) == (
        "rejected",
        "refused at the door",
        "door",
        "d-1",
    )
    assert record.raw_body() == delivery.body


async def test_in_flight_counts_deliveries_by_source_while_they_run() -> None:
    app = App(dead_letters=MemorySink())
    release = anyio.Event()
    started = blocking_handler(app, release)

    body = json.dumps(build_notification()).encode()
    async with app, anyio.create_task_group() as tg:
        pipeline = app._pipeline
        assert pipeline is not None
        tg.start_soon(app.process, Delivery(body, source="http"))
        await started.wait()
        assert pipeline.in_flight == {"http": 1}
        release.set()
        await anyio.wait_all_tasks_blocked()
        assert pipeline.in_flight == {}


async def test_a_deferred_run_is_an_info_line_and_a_failed_one_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App(dead_letters=MemorySink(), retry=NO_JITTER)

    async def defer(call: Call, call_next: CallNext) -> Outcome:
        return Outcome(Settlement.RETRY, retry_after=5, reason="a duplicate is in progress")

    @app.on("WorkflowTask", middleware=[defer])
    async def deferred(event: WorkflowTask, ctx: Context) -> None:
        pass

    @app.on("Transcode")
    async def failing(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        raise ConnectionError("catalogue down")

    caplog.set_level(logging.INFO)
    body = json.dumps(transcode_notification()).encode()
    async with app:
        outcome = await app.process(Delivery(body))
        pipeline = app._pipeline
        assert pipeline is not None
        assert pipeline.deferrals.total == 1
    assert outcome.settlement is Settlement.RETRY
    lines = {r.getMessage().split(".")[-1]: r.levelname for r in caplog.records}
    assert lines["deferred deferred: a duplicate is in progress"] == "INFO"
    assert lines["failing failed (error): ConnectionError: catalogue down"] == "WARNING"


def test_deferral_summary_counts_by_reason_since_the_last_line() -> None:
    now = [100.0]
    counter = DeferralCounter(now=lambda: now[0])
    assert counter.summary() is None  # nothing deferred: no line
    for reason in [
        "a duplicate is in progress elsewhere or its worker stopped",
        "idempotency store unavailable: redis://db:6379/0 refused",
        "a duplicate is in progress elsewhere or its worker stopped",
        "idempotency store unavailable: timeout",
    ]:
        counter.add(reason)
    now[0] += 60.2
    assert counter.summary() == (
        "deferred 4 handler runs in the last 60s "
        "(a duplicate is in progress elsewhere or its worker stopped: 2, "
        "idempotency store unavailable: 2)"
    )
    assert counter.summary() is None  # a new count from the last line on
    counter.add("busy")
    now[0] += 30
    assert counter.summary() == "deferred 1 handler run in the last 30s (busy: 1)"


async def test_each_dead_letter_is_logged_once_then_summarised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dead letter says so in the log, not only in its file; a flood is one line per 10 s."""
    app = App(retry=RetryPolicy(max_attempts=1))

    @app.on("Transcode")
    async def broken(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        raise KeyError("missing asset row")

    caplog.set_level(logging.WARNING, logger="mpsflow.deadletter")
    clock = FakeClock()
    payload = transcode_notification()
    async with TestClient(app, clock=clock) as client:
        await client.send(payload)
        await client.send(b"not json")
        await client.send(b"{}")
        clock.advance(10.0)
        await client.send(b"still not json")
    lines = [r.getMessage() for r in caplog.records if r.name == "mpsflow.deadletter"]
    assert len(lines) == 2
    [record, *_] = client.dead_letters
    task_id = payload["WorkflowTaskEvent"]["TaskId"]
    assert lines[0].startswith(f"dead-lettered WorkflowTask {task_id} from test (exhausted): ")
    assert lines[0].endswith(f"; record {record.id}")
    assert lines[1].startswith("dead-lettered a notification from test (poison): ")
    assert lines[1].endswith("; 2 more dead-lettered since the last such line (poison 2)")


async def test_a_dead_letter_names_the_task_even_when_the_notification_was_not_decoded() -> None:
    """A bad signature or a body that does not decode still says which task it was about
    where the body shows it, so ``deadletters list --task`` finds it."""
    payload = transcode_notification()
    task_id = payload["WorkflowTaskEvent"]["TaskId"]
    broken = json.loads(json.dumps(payload))
    broken["WorkflowTaskEvent"]["MediaProcessResultSet"] = "not a list"
    async with TestClient(App(notify_keys=["the-key"])) as signed_only:
        await signed_only.send(payload)  # unsigned: rejected before any decode
    async with TestClient(App()) as client:
        await client.send(broken)  # does not decode
    records = [*signed_only.dead_letters, *client.dead_letters]
    assert [(r.kind, r.event_type, r.task_id) for r in records] == [
        ("signature", "WorkflowTask", task_id),
        ("poison", "WorkflowTask", task_id),
    ]
