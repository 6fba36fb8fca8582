"""Signature and dedup middleware wired into the app: the delivery contract end to end."""

from __future__ import annotations

import json
import logging
import urllib.parse
from pathlib import Path
from typing import Any

import anyio
import pytest

from mpsflow import App, Cause, Context, Delivery, RetryPolicy, Settlement, codec
from mpsflow.clock import FakeClock
from mpsflow.codec import decode
from mpsflow.dedup.idempotency import (
    Idempotency,
    default_notification_key,
    typed_notification_key,
    typed_payload_hash,
)
from mpsflow.dedup.stores.memory import MemoryStore
from mpsflow.events import MediaProcessTaskTranscodeResult, WorkflowTask
from mpsflow.sinks.memory import MemorySink
from mpsflow.testing import (
    NotSettledError,
    SendResult,
    TestClient,
    build_notification,
    media_result,
    sign_payload,
)
from tests.plugins.samples import SAMPLE_KEY, SAMPLES_DIR

NOW = 1_735_787_000.0  # the shared samples are signed to expire around 2025-01-02 03:10Z


def signed(key: str = "k1", *, expires_at: int | None = None, **kwargs: Any) -> dict[str, Any]:
    payload = build_notification(
        media_results=[media_result("Transcode", output={"Path": "/o.mp4"})], **kwargs
    )
    return sign_payload(payload, key, expires_at=expires_at or int(NOW) + 600)


def app_with(**kwargs: Any) -> App:
    kwargs.setdefault("dead_letters", MemorySink())
    kwargs.setdefault("clock", FakeClock(NOW))
    return App(**kwargs)


async def send_unhandled(body: dict[str, Any] | bytes) -> tuple[App, SendResult]:
    """Send ``body`` to an app that knows the key ``k1`` and whose handler must not run."""
    clock = FakeClock(NOW)
    app = app_with(notify_keys=["k1"], clock=clock)

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        raise AssertionError("must not run")

    async with TestClient(app, clock=clock) as client:
        return app, await client.send(body)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (signed("wrong-key"), "signature mismatch"),
        (signed("k1", expires_at=int(NOW) - 3600), "signature expired"),
        (build_notification(), "signature missing"),
    ],
)
async def test_bad_signatures_are_rejected_with_401(payload: dict[str, Any], reason: str) -> None:
    app, result = await send_unhandled(payload)
    assert result.outcome.settlement is Settlement.REJECTED
    assert result.outcome.cause is Cause.UNAUTHENTICATED  # HTTP 401
    assert result.outcome.reason == reason
    assert len(result.outcomes) == 1  # never retried
    assert result.dead_letters[0].kind == "signature"
    snapshot = app.metrics.snapshot()  # type: ignore[attr-defined]
    assert sum(snapshot["signature_rejections"].values()) == 1


@pytest.mark.parametrize(
    ("key", "cause", "kind"),
    [("k1", Cause.MALFORMED, "poison"), ("k2", Cause.UNAUTHENTICATED, "signature")],
)
async def test_bodies_the_model_rejects_are_still_checked_from_their_raw_fields(
    key: str, cause: Cause, kind: str
) -> None:
    """Signed right, a malformed body is poison (400); signed wrong, it is a 401 rejection."""
    payload = signed(key)
    payload["WorkflowTaskEvent"]["MediaProcessResultSet"] = "not a list"
    _, result = await send_unhandled(payload)
    assert result.outcome.cause is cause  # HTTP 400 / 401
    assert [d.kind for d in result.dead_letters] == [kind]


def _nested_pair_last(top: dict[str, Any] | None, nested: dict[str, Any]) -> bytes:
    """A body whose last Timestamp/Sign sit in a nested object, the top-level ones first."""
    payload = signed("k1")
    payload.pop("Timestamp")
    payload.pop("Sign")
    payload["WorkflowTaskEvent"]["Extra"] = nested
    return json.dumps({**(top or {}), **payload}).encode()


@pytest.mark.parametrize(
    ("top", "reason"),
    [
        (signed("stolen"), "signature mismatch"),
        (signed("k1", expires_at=int(NOW) - 3600), "signature expired"),
        (None, "signature missing"),
    ],
)
async def test_a_valid_pair_below_the_top_level_is_not_the_signature(
    top: dict[str, Any] | None, reason: str
) -> None:
    """The fast scan finds the nested pair last; only the top-level pair may admit the body."""
    good = signed("k1")
    top_fields = None if top is None else {"Timestamp": top["Timestamp"], "Sign": top["Sign"]}
    body = _nested_pair_last(top_fields, {"Timestamp": good["Timestamp"], "Sign": good["Sign"]})
    _, result = await send_unhandled(body)
    assert result.outcome.cause is Cause.UNAUTHENTICATED  # HTTP 401
    assert result.outcome.reason == reason


async def test_a_bad_nested_pair_does_not_hide_a_valid_top_level_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Signed right at the top level, the body passes and is decoded exactly once."""
    good = signed("k1")
    top = {"Timestamp": good["Timestamp"], "Sign": good["Sign"]}
    bad = signed("stolen")
    bodies = {
        "nested bad pair last": _nested_pair_last(top, {"Timestamp": 1, "Sign": bad["Sign"]}),
        "plain": json.dumps(signed("k1")).encode(),
    }
    calls: list[bytes] = []
    real_decode_any = codec.decode_any

    def counting(data: Any, **kwargs: Any) -> Any:
        calls.append(data)
        return real_decode_any(data, **kwargs)

    monkeypatch.setattr("mpsflow.signing.middleware.decode_any", counting)
    monkeypatch.setattr("mpsflow.pipeline.decode_any", counting)
    app = app_with(notify_keys=["k1"])
    ran: list[str] = []

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        ran.append(ctx.task_id)

    async with TestClient(app, clock=FakeClock(NOW)) as client:
        for name, body in bodies.items():
            calls.clear()
            result = await client.send(body)
            assert result.acked, name
            assert calls == [body], name
    assert len(ran) == 2


async def test_rotated_keys_and_url_encoded_bodies_are_checked_too() -> None:
    clock = FakeClock(NOW)
    app = app_with(notify_keys=["new-key", "old-key"], clock=clock)
    ran: list[str] = []

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        ran.append(ctx.task_id)

    good = signed("old-key", task_id="t-good")
    bad = signed("stolen", task_id="t-bad")
    async with TestClient(app, clock=clock) as client:
        ok = await client.send(good)
        form = urllib.parse.quote(json.dumps(bad)).encode()
        rejected = await client.send(form)
    assert ok.acked
    assert rejected.outcome.cause is Cause.UNAUTHENTICATED  # HTTP 401
    assert ran == ["t-good"]


async def test_real_samples_pass_with_the_sample_notify_key() -> None:
    clock = FakeClock(NOW)
    app = app_with(notify_keys=[SAMPLE_KEY], clock=clock, allow_unsigned=False)
    seen: list[str] = []

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        seen.append(ctx.task_id)

    body = (SAMPLES_DIR / "03_workflow_task_all_media_process_types.json").read_bytes()
    async with TestClient(app, clock=clock) as client:
        result = await client.send(body)
    assert result.acked
    assert len(seen) == 1


async def test_duplicates_run_each_handler_once_and_failures_rerun_alone() -> None:
    clock = FakeClock(NOW)
    store = MemoryStore(clock=clock)
    app = app_with(idempotency=store, clock=clock, retry=RetryPolicy(max_attempts=3))
    runs: dict[str, int] = {"event": 0, "transcode": 0}

    @app.on("WorkflowTask", name="event")
    async def on_event(event: WorkflowTask, ctx: Context) -> None:
        runs["event"] += 1

    @app.on("Transcode", name="transcode")
    async def on_transcode(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        runs["transcode"] += 1
        if runs["transcode"] == 1:
            raise ConnectionError("first try fails")

    payload = signed("k1", task_id="task-dup")
    async with TestClient(app, clock=clock) as client:
        first = await client.send(payload)
        again = await client.send(payload)
        resigned = await client.send(sign_payload(dict(payload), "k1", expires_at=int(NOW) + 999))
    assert first.acked  # attempt 1 failed for transcode, attempt 2 reran only transcode
    assert [c.handler for c in first.calls] == ["event", "transcode", "event", "transcode"]
    assert [c.result for c in first.calls] == ["ok", "error:ConnectionError", "skipped", "ok"]
    assert runs == {"event": 1, "transcode": 2}
    assert again.acked
    assert again.outcome.duplicates_skipped == 2
    assert resigned.outcome.duplicates_skipped == 2


async def test_a_concurrent_duplicate_is_retried_later_not_run_twice() -> None:
    clock = FakeClock(NOW)
    store = MemoryStore(clock=clock)
    started = anyio.Event()
    release = anyio.Event()
    runs = 0

    def build() -> App:
        app = app_with(idempotency=store, clock=clock)

        @app.on("WorkflowTask", name="slow")
        async def slow(event: WorkflowTask, ctx: Context) -> None:
            nonlocal runs
            runs += 1
            started.set()
            await release.wait()

        return app

    worker_a, worker_b = build(), build()
    body = json.dumps(signed("k1", task_id="task-race")).encode()
    outcomes: dict[str, Any] = {}
    async with worker_a, worker_b:

        async def deliver_a() -> None:
            outcomes["a"] = await worker_a.process(Delivery(body))

        async with anyio.create_task_group() as tg:
            tg.start_soon(deliver_a)
            await started.wait()
            outcomes["b"] = await worker_b.process(Delivery(body))
            release.set()
    assert runs == 1
    assert outcomes["a"].settlement is Settlement.ACK
    assert outcomes["b"].settlement is Settlement.RETRY
    assert outcomes["b"].cause is Cause.DEFERRED  # HTTP 503: busy elsewhere


async def test_store_down_means_retry_later_and_nothing_runs() -> None:
    store = MemoryStore()
    app = app_with(idempotency=store, retry=RetryPolicy(max_attempts=1))
    ran = False

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        nonlocal ran
        ran = True

    async with app:
        await store.close()
        outcome = await app.process(Delivery(json.dumps(signed()).encode()))
    assert outcome.settlement is Settlement.RETRY
    assert outcome.cause is Cause.DEFERRED  # HTTP 503: the store is down
    assert not ran


async def test_test_client_gives_up_on_a_delivery_deferred_for_good() -> None:
    """Store down: every run is deferred without using an attempt; send stops and says why."""
    store = MemoryStore()
    app = app_with(idempotency=store)

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        raise AssertionError("must not run")

    async with TestClient(app, dedup_store="app") as client:
        await store.close()
        with pytest.raises(NotSettledError, match=r"after 20 pipeline runs.*retry.*defer"):
            await client.send(signed(), max_runs=20)
        with pytest.raises(ValueError, match="max_runs"):
            await client.send(signed(), max_runs=0)


def test_typed_keys_follow_the_raw_key_rules() -> None:
    change = (SAMPLES_DIR / "04_workflow_task_processing_change_mode.json").read_bytes()
    doc = json.loads(change)
    finished = json.loads(change)
    finished["WorkflowTaskEvent"]["Status"] = "FINISH"
    progressed = json.loads(change)
    for item in progressed["WorkflowTaskEvent"]["MediaProcessResultSet"]:
        for value in item.values():
            if isinstance(value, dict) and value.get("Status") == "PROCESSING":
                value["Status"] = "SUCCESS"
    resigned = sign_payload(json.loads(change), "other", expires_at=1)
    keys = {
        name: typed_notification_key(decode(json.dumps(d).encode()))
        for name, d in {
            "change": doc,
            "finished": finished,
            "progressed": progressed,
            "resigned": resigned,
        }.items()
    }
    assert keys["change"] == keys["resigned"]
    assert len({keys["change"], keys["finished"], keys["progressed"]}) == 3
    assert keys["change"].startswith("WorkflowTask:")
    raw_keys = {default_notification_key(json.dumps(d).encode()) for d in (doc, resigned)}
    assert len(raw_keys) == 1  # the raw key function agrees on what is "the same"
    n1, n2 = decode(json.dumps(doc).encode()), decode(json.dumps(resigned).encode())
    assert typed_payload_hash(n1) == typed_payload_hash(n2)


def test_user_key_function_wins(tmp_path: Path) -> None:
    idem = Idempotency(MemoryStore(), key_function=lambda doc: f"custom:{doc['SessionId']}")
    payload = signed(session_id="s-1")
    key, _ = idem.keys_for(decode(json.dumps(payload).encode()), json.dumps(payload).encode())
    assert key == "custom:s-1"


# -- rejections are logged, rate-limited, without secrets -------------------------------------

SECRET_KEY = "the-notify-key-0123456789"


def _rejection_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mpsflow.signing"]


async def test_a_rejection_is_logged_with_reason_task_id_and_peer_never_a_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mpsflow.signing")
    app = app_with(notify_keys=[SECRET_KEY])
    forged = signed("stolen-key", task_id="1250000000-WorkflowTask-forged")
    body = json.dumps(forged).encode()
    async with app:
        outcome = await app.process(Delivery(body, source="http", meta={"remote": "203.0.113.7"}))
    assert outcome.cause is Cause.UNAUTHENTICATED  # HTTP 401
    [record] = [r for r in caplog.records if r.name == "mpsflow.signing"]
    assert record.levelno == logging.WARNING
    line = record.getMessage()
    assert line.startswith(
        "signature mismatch: rejected TaskId 1250000000-WorkflowTask-forged "
        "from 203.0.113.7 via http; "
    )
    assert "notify_keys" in line  # what to check
    for secret in (SECRET_KEY, "stolen-key", forged["Sign"], str(forged["Timestamp"])):
        assert secret not in line
    assert "/o.mp4" not in line  # nothing from the body but the TaskId
    assert record.__dict__["reason"] == "mismatch"
    assert record.__dict__["remote"] == "203.0.113.7"


@pytest.mark.parametrize(
    ("payload", "reason", "hint"),
    [
        (signed("k1", expires_at=int(NOW) - 3600), "expired", "signature_skew"),
        (build_notification(task_id="t-unsigned"), "missing", "allow_unsigned"),
    ],
)
async def test_each_reason_says_what_to_check(
    caplog: pytest.LogCaptureFixture, payload: dict[str, Any], reason: str, hint: str
) -> None:
    caplog.set_level(logging.WARNING, logger="mpsflow.signing")
    app = app_with(notify_keys=["k1"])
    async with app:
        await app.process(Delivery(json.dumps(payload).encode(), source="cmq"))
    [line] = _rejection_lines(caplog)
    task_id = payload["WorkflowTaskEvent"]["TaskId"]
    assert line.startswith(f"signature {reason}: rejected TaskId {task_id} from source cmq; ")
    assert hint in line


async def test_rejections_are_rate_limited_on_the_app_clock_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first rejection is logged; the rest of a 10 s window are counted into the next line."""
    caplog.set_level(logging.DEBUG, logger="mpsflow.signing")
    app = app_with(notify_keys=["k1"], clock=(clock := FakeClock(NOW)))
    burst = [
        signed("wrong"),
        signed("wrong"),
        signed("k1", expires_at=int(NOW) - 3600),
        build_notification(),
    ]
    async with app:
        for payload in [signed("wrong"), *burst]:
            await app.process(Delivery(json.dumps(payload).encode()))
            clock.advance(1.0)
        assert len(_rejection_lines(caplog)) == 1
        clock.advance(10.0)
        last = signed("wrong", task_id="t-after-the-window")
        await app.process(Delivery(json.dumps(last).encode()))
    first, second = _rejection_lines(caplog)
    assert first.startswith("signature mismatch: ")
    assert second.startswith("signature mismatch: rejected TaskId t-after-the-window ")
    assert second.endswith(
        "; 4 more rejected since the last such line (expired 1, mismatch 2, missing 1)"
    )
    snapshot = app.metrics.snapshot()  # type: ignore[attr-defined]
    assert sum(snapshot["signature_rejections"].values()) == 6  # every one is counted


async def test_rejections_held_back_at_the_end_of_a_burst_are_reported_when_the_app_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No line came after them to count them into: the app reports them itself."""
    caplog.set_level(logging.WARNING, logger="mpsflow.signing")
    app = app_with(notify_keys=["k1"], clock=(clock := FakeClock(NOW)))
    async with app:
        for payload in [signed("wrong"), signed("k1", expires_at=int(NOW) - 3600), signed("x")]:
            await app.process(Delivery(json.dumps(payload).encode()))
            clock.advance(1.0)
        assert len(caplog.records) == 1
    first, tail = (record.getMessage() for record in caplog.records)
    assert first.startswith("signature mismatch: ")
    assert (
        tail == "signature checks: 2 more rejected since the last such line (expired 1, mismatch 1)"
    )


async def test_unreadable_or_hostile_fields_cannot_forge_log_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mpsflow.signing")
    clock = FakeClock(NOW)
    app = app_with(notify_keys=["k1"], clock=clock)
    hostile = signed("wrong", task_id="t1\nERROR forged line")
    async with app:
        await app.process(Delivery(json.dumps(hostile).encode(), meta={"remote": "a\nb"}))
        clock.advance(60)
        await app.process(Delivery(b'{"Sign": "00", "Timestamp": 1}', source="file"))
    hostile_line, unreadable_line = _rejection_lines(caplog)
    assert "\n" not in hostile_line
    assert "'t1\\nERROR forged line'" in hostile_line
    assert "from 'a\\nb' via memory" in hostile_line
    assert unreadable_line.startswith(
        "signature malformed: rejected a notification (no readable TaskId) from source file; "
    )


async def test_a_url_encoded_rejection_still_names_its_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mpsflow.signing")
    app = app_with(notify_keys=["k1"])
    form = urllib.parse.quote(json.dumps(signed("wrong", task_id="t-form"))).encode()
    async with app:
        outcome = await app.process(Delivery(form))
    assert outcome.cause is Cause.UNAUTHENTICATED
    [line] = _rejection_lines(caplog)
    assert line.startswith("signature mismatch: rejected TaskId t-form from source memory; ")
