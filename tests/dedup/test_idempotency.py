"""Idempotency: the per-handler claim protocol (alone and through the real
``DedupMiddleware``) and the default notification key."""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import anyio
import pytest

from mpsflow.clock import FakeClock
from mpsflow.dedup.idempotency import (
    Decision,
    Idempotency,
    default_notification_key,
    payload_hash,
)
from mpsflow.dedup.middleware import DedupMiddleware
from mpsflow.dedup.stores import MemoryStore, SQLiteStore
from mpsflow.dedup.stores.base import ClaimState
from mpsflow.delivery import Delivery, Outcome, Settlement
from mpsflow.errors import ConfigurationError, DecodeError, StoreUnavailable
from mpsflow.middleware.base import Call, CallNext, HandlerInfo
from tests.plugins.samples import LIVE_SAMPLE_PATHS, SAMPLE_PATHS, SAMPLES_DIR

SAMPLES = SAMPLES_DIR
CHANGE_MODE = SAMPLES / "04_workflow_task_processing_change_mode.json"
DAY = 24 * 3600.0


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_bytes())
    return data


def _bytes(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document).encode()


@pytest.fixture
def idem(store: MemoryStore, clock: FakeClock) -> Idempotency:
    return Idempotency(store, clock=clock, lease_seconds=60, key_function=_always_n1)


# --- the claim protocol -------------------------------------------------------------------

BODY = b'{"EventType": "WorkflowTask", "WorkflowTaskEvent": {"TaskId": "t1", "Status": "FINISH"}}'
BODY_HASH = payload_hash(BODY)
_ACK = Outcome(Settlement.ACK)


def _always_n1(_notification: Mapping[str, Any]) -> str:
    """Every notification is "n1", so the middleware's records are ``n1:<handler>``."""
    return "n1"


async def _deliver(idem: Idempotency, handler: str, run: CallNext) -> Outcome:
    """One handler run of ``BODY`` through the real dedup middleware (handler scope)."""
    call = Call(Delivery(BODY), scope="handler", handler=HandlerInfo(handler, "WorkflowTask"))
    return await DedupMiddleware(idem)(call, run)


async def _never_runs(_call: Call) -> Outcome:
    pytest.fail("the handler must not run")


async def test_a_duplicate_delivery_in_sequence_is_skipped(idem: Idempotency) -> None:
    first = await idem.begin("n1", "catalogue", "h")
    assert first.state is ClaimState.CLAIMED
    assert first.record_key == "n1:catalogue"
    assert await idem.succeeded(first)

    duplicate = await idem.begin("n1", "catalogue", "h")
    assert duplicate == Decision(ClaimState.COMPLETED, "n1:catalogue")


async def test_completed_records_expire_after_the_ttl(store: MemoryStore, clock: FakeClock) -> None:
    idem = Idempotency(store, clock=clock, completed_ttl=DAY)
    assert await idem.succeeded(await idem.begin("n1", "h", "x"))
    clock.advance(DAY - 1)
    assert (await idem.begin("n1", "h", "x")).state is ClaimState.COMPLETED
    clock.advance(1)
    assert (await idem.begin("n1", "h", "x")).state is ClaimState.CLAIMED


async def test_default_completed_ttl_is_seven_days(store: MemoryStore) -> None:
    assert Idempotency(store).completed_ttl == 7 * DAY


async def test_concurrent_duplicates_one_runs_one_is_busy(
    store: MemoryStore, clock: FakeClock
) -> None:
    worker_a = Idempotency(store, clock=clock, lease_seconds=60, key_function=_always_n1)
    worker_b = Idempotency(store, clock=clock, lease_seconds=60, key_function=_always_n1)
    started, finish = anyio.Event(), anyio.Event()
    outcomes: dict[str, Outcome] = {}
    runs: list[str] = []

    async def deliver(name: str, idem: Idempotency) -> None:
        async def handler(_call: Call) -> Outcome:
            runs.append(name)
            started.set()
            await finish.wait()
            return _ACK

        outcomes[name] = await _deliver(idem, "handler", handler)

    async with anyio.create_task_group() as tg:
        tg.start_soon(deliver, "a", worker_a)
        await started.wait()
        await deliver("b", worker_b)
        finish.set()

    assert runs == ["a"]
    assert outcomes["a"] is _ACK
    # b found a's live claim (BUSY): not run, retried later
    assert outcomes["b"].settlement is Settlement.RETRY
    assert "in progress" in outcomes["b"].reason
    assert (await worker_b.begin("n1", "handler", BODY_HASH)).state is ClaimState.COMPLETED


async def test_busy_reports_when_the_lease_ends(idem: Idempotency, clock: FakeClock) -> None:
    await idem.begin("n1", "h", "x")
    clock.advance(20)
    busy = await idem.begin("n1", "h", "x")
    assert busy.state is ClaimState.IN_PROGRESS
    assert busy.retry_after == pytest.approx(40)
    assert busy.token == ""


async def test_busy_says_when_this_process_holds_the_claim(
    idem: Idempotency, store: MemoryStore, clock: FakeClock
) -> None:
    other = Idempotency(store, clock=clock, lease_seconds=60)  # another worker's, on one store
    mine = await idem.begin("n1", "h", "x")
    assert (await idem.begin("n1", "h", "x")).held_here  # a concurrent duplicate here
    assert not (await other.begin("n1", "h", "x")).held_here  # it cannot tell whose
    assert await idem.failed(mine)
    theirs = await other.begin("n1", "h", "x")
    assert theirs.state is ClaimState.CLAIMED
    assert not (await idem.begin("n1", "h", "x")).held_here  # released here, held there
    assert await other.succeeded(theirs)

    crashed = await idem.begin("n1", "h2", "x")  # its run never settles ...
    clock.advance(60)  # ... and its lease ends: another worker takes it over
    assert (await other.begin("n1", "h2", "x")).state is ClaimState.CLAIMED
    busy = await idem.begin("n1", "h2", "x")
    assert (busy.state, busy.held_here) == (ClaimState.IN_PROGRESS, False)
    assert crashed.state is ClaimState.CLAIMED


async def test_a_crash_midway_is_recovered_after_the_lease(
    idem: Idempotency, clock: FakeClock
) -> None:
    crashed = await idem.begin("n1", "h", "x")
    assert crashed.state is ClaimState.CLAIMED  # ... and the worker dies without settling
    assert (await idem.begin("n1", "h", "x")).state is ClaimState.IN_PROGRESS
    clock.advance(60)
    redelivery = await idem.begin("n1", "h", "x")
    assert redelivery.state is ClaimState.CLAIMED
    assert await idem.succeeded(redelivery)


async def test_only_the_failed_handler_runs_again(idem: Idempotency) -> None:
    ran: list[str] = []

    async def deliver(fail: set[str]) -> None:
        for handler in ("catalogue", "notify", "archive"):
            decision = await idem.begin("n1", handler, "h")
            if decision.state is not ClaimState.CLAIMED:
                continue
            ran.append(handler)
            if handler in fail:
                assert await idem.failed(decision)
            else:
                assert await idem.succeeded(decision)

    await deliver(fail={"notify"})
    assert ran == ["catalogue", "notify", "archive"]
    ran.clear()
    await deliver(fail=set())
    assert ran == ["notify"]
    ran.clear()
    await deliver(fail=set())
    assert ran == []


async def test_the_middleware_settles_success_and_failure(idem: Idempotency) -> None:
    async def ok(_call: Call) -> Outcome:
        return _ACK

    async def bad(_call: Call) -> Outcome:
        raise RuntimeError("boom")

    assert await _deliver(idem, "ok", ok) is _ACK
    with pytest.raises(RuntimeError, match="boom"):
        await _deliver(idem, "bad", bad)

    assert (await idem.begin("n1", "ok", BODY_HASH)).state is ClaimState.COMPLETED
    assert (await idem.begin("n1", "bad", BODY_HASH)).state is ClaimState.CLAIMED


async def test_the_middleware_releases_on_cancellation(idem: Idempotency) -> None:
    entered = anyio.Event()

    async def slow(_call: Call) -> Outcome:
        entered.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with anyio.create_task_group() as tg:
        tg.start_soon(_deliver, idem, "slow", slow)
        await entered.wait()
        tg.cancel_scope.cancel()

    assert (await idem.begin("n1", "slow", BODY_HASH)).state is ClaimState.CLAIMED


async def test_the_middleware_skips_a_completed_run_without_settling(idem: Idempotency) -> None:
    assert await idem.succeeded(await idem.begin("n1", "h", BODY_HASH))
    outcome = await _deliver(idem, "h", _never_runs)
    assert (outcome.settlement, outcome.duplicates_skipped) == (Settlement.ACK, 1)
    assert (await idem.begin("n1", "h", BODY_HASH)).state is ClaimState.COMPLETED  # still completed


async def test_conflicting_payload_is_logged_and_skipped(
    idem: Idempotency, caplog: pytest.LogCaptureFixture
) -> None:
    assert await idem.succeeded(await idem.begin("n1", "h", "hash-1"))
    with caplog.at_level(logging.WARNING, logger="mpsflow.dedup.idempotency"):
        same = await idem.begin("n1", "h", "hash-1")
        other = await idem.begin("n1", "h", "hash-2")
    assert (same.state, same.conflict) == (ClaimState.COMPLETED, False)
    assert (other.state, other.conflict) == (ClaimState.COMPLETED, True)
    [record] = caplog.records
    assert record.name == "mpsflow.dedup.idempotency"
    assert record.levelno == logging.WARNING
    assert "conflict" in record.getMessage()
    assert "n1" in record.getMessage()


async def test_lease_follows_the_deadline(
    idem: Idempotency, store: MemoryStore, clock: FakeClock
) -> None:
    await idem.begin("n1", "h", "x", deadline=clock.monotonic() + 10)
    held = await store.claim("n1:h", lease_seconds=1, payload_hash="")
    assert held.state is ClaimState.IN_PROGRESS
    assert held.expires_at == pytest.approx(clock.time() + 10 + idem.lease_margin)

    await idem.begin("n2", "h", "x", deadline=clock.monotonic() - 5)  # already past
    late = await store.claim("n2:h", lease_seconds=1, payload_hash="")
    assert late.expires_at == pytest.approx(clock.time() + idem.lease_margin)

    await idem.begin("n3", "h", "x")
    default = await store.claim("n3:h", lease_seconds=1, payload_hash="")
    assert default.expires_at == pytest.approx(clock.time() + 60)


async def test_waiting_for_in_progress_sees_it_complete(
    store: MemoryStore, clock: FakeClock
) -> None:
    holder = Idempotency(store, clock=clock)
    waiter = Idempotency(store, clock=clock, wait_for_in_progress=5, poll_interval=0.5)
    running = await holder.begin("n1", "h", "x")

    async def finish_soon() -> None:
        while clock.monotonic() < 2:
            await anyio.lowlevel.checkpoint()
        assert await holder.succeeded(running)

    async with anyio.create_task_group() as tg:
        tg.start_soon(finish_soon)
        decision = await waiter.begin("n1", "h", "x")
    assert decision.state is ClaimState.COMPLETED
    assert 2 <= clock.monotonic() < 5
    assert set(clock.sleeps) == {0.5}


async def test_waiting_for_in_progress_gives_up_with_busy(
    store: MemoryStore, clock: FakeClock
) -> None:
    await Idempotency(store, clock=clock).begin("n1", "h", "x")
    waiter = Idempotency(store, clock=clock, wait_for_in_progress=1.2, poll_interval=0.5)
    decision = await waiter.begin("n1", "h", "x")
    assert decision.state is ClaimState.IN_PROGRESS
    assert clock.sleeps == pytest.approx([0.5, 0.5, 0.2])


async def test_a_lost_lease_is_reported_not_raised(
    idem: Idempotency, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    decision = await idem.begin("n1", "h", "x")
    clock.advance(61)
    with caplog.at_level(logging.WARNING, logger="mpsflow.dedup.idempotency"):
        assert not await idem.succeeded(decision)
    assert "ended before" in caplog.text


async def test_store_down_never_runs_without_a_claim(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / "missing").write_text("a file where the folder should be")
    store = SQLiteStore(tmp_path / "missing" / "idem.db", clock=clock)
    idem = Idempotency(store, clock=clock)
    with pytest.raises(StoreUnavailable):
        await idem.begin("n1", "h", "x")
    # Through the middleware: retried later, never run without a claim.
    outcome = await _deliver(Idempotency(store, clock=clock), "h", _never_runs)
    assert outcome.settlement is Settlement.RETRY


async def test_settling_when_the_store_went_down_is_logged(
    store: MemoryStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    idem = Idempotency(store, clock=clock)
    ok, bad = await idem.begin("n1", "a", "x"), await idem.begin("n1", "b", "x")
    await store.close()
    with caplog.at_level(logging.WARNING, logger="mpsflow.dedup.idempotency"):
        assert not await idem.succeeded(ok)
        assert not await idem.failed(bad)
    assert len(caplog.records) == 2


async def test_only_claimed_decisions_can_be_settled(idem: Idempotency) -> None:
    assert await idem.succeeded(await idem.begin("n1", "h", "x"))
    skip = await idem.begin("n1", "h", "x")
    with pytest.raises(ValueError, match="CLAIMED"):
        await idem.succeeded(skip)
    with pytest.raises(ValueError, match="CLAIMED"):
        await idem.failed(skip)


def test_bad_settings_are_configuration_errors(store: MemoryStore) -> None:
    with pytest.raises(ConfigurationError):
        Idempotency(store, completed_ttl=0)
    with pytest.raises(ConfigurationError):
        Idempotency(store, wait_for_in_progress=-1)
    assert "MemoryStore" in repr(Idempotency(store))


# --- notification keys --------------------------------------------------------------------


@pytest.mark.parametrize("path", SAMPLE_PATHS + LIVE_SAMPLE_PATHS, ids=lambda p: p.stem)
def test_bytes_mapping_and_wrapper_give_one_key_and_hash(path: Path) -> None:
    raw = path.read_bytes()
    document = _load(path)
    key = default_notification_key(raw)
    assert key == default_notification_key(document)
    assert key == default_notification_key(_bytes({"Response": document}))
    assert key == default_notification_key(MappingProxyType(document))
    assert payload_hash(raw) == payload_hash(document)
    assert payload_hash(raw) == payload_hash({"Response": document})
    assert len(payload_hash(raw)) == 32


def test_task_keys_name_event_task_and_status() -> None:
    key = default_notification_key((SAMPLES / "08_schedule_task_multi_activity.json").read_bytes())
    event, task_id, status, digest = key.split(":")
    assert (event, status) == ("ScheduleTask", "FINISH")
    assert task_id == "1300123456-ScheduleTask-774f101a2b3c4d5e6f708192a3b4c5d6t0"
    assert len(digest) == 16
    blind = _load(SAMPLES / "12_extract_blind_watermark_task.json")
    assert default_notification_key(blind).startswith(
        "ExtractBlindWatermark:1300123456-ExtractBlindWatermark-c3d4e5f60718293a4b5c6d7e8f901234t0:"
        "FINISH:"
    )


def test_all_sample_keys_are_distinct() -> None:
    keys = {default_notification_key(p.read_bytes()) for p in SAMPLE_PATHS + LIVE_SAMPLE_PATHS}
    assert len(keys) == len(SAMPLE_PATHS + LIVE_SAMPLE_PATHS)


def _finish(processing: dict[str, Any]) -> dict[str, Any]:
    """Sample 04 as its FINISH notification: every sub-task done."""
    finished = copy.deepcopy(processing)
    event = finished["WorkflowTaskEvent"]
    event["Status"] = "FINISH"
    for item in event["MediaProcessResultSet"]:
        for value in item.values():
            if isinstance(value, dict) and "Status" in value:
                value["Status"] = "SUCCESS"
                if "Progress" in value:
                    value["Progress"] = 100
    return finished


def test_change_mode_notifications_of_one_task_get_different_keys() -> None:
    processing = _load(CHANGE_MODE)
    finished = _finish(processing)
    assert default_notification_key(processing) != default_notification_key(finished)

    # Another PROCESSING notification: same task status, one more sub-task done.
    later = copy.deepcopy(processing)
    transcode = later["WorkflowTaskEvent"]["MediaProcessResultSet"][1]["TranscodeTask"]
    assert transcode["Status"] == "PROCESSING"
    transcode["Status"] = "SUCCESS"
    assert default_notification_key(processing) != default_notification_key(later)

    # Progress alone also moves the key; a redelivery of the same notification does not.
    progressed = copy.deepcopy(processing)
    progressed["WorkflowTaskEvent"]["MediaProcessResultSet"][1]["TranscodeTask"]["Progress"] = 80
    assert default_notification_key(processing) != default_notification_key(progressed)


def test_a_resigned_redelivery_is_the_same_notification() -> None:
    original = _load(CHANGE_MODE)
    resent = dict(original, Timestamp=original["Timestamp"] + 600, Sign="0" * 32, RequestId="r")
    assert default_notification_key(original) == default_notification_key(resent)
    assert payload_hash(original) == payload_hash(resent)
    # Key order and whitespace do not matter either.
    reordered = json.dumps(dict(reversed(list(original.items()))), indent=2).encode()
    assert payload_hash(reordered) == payload_hash(original)


def test_schedule_activity_statuses_are_in_the_key() -> None:
    schedule = _load(SAMPLES / "08_schedule_task_multi_activity.json")
    changed = copy.deepcopy(schedule)
    item = changed["ScheduleTaskEvent"]["ActivityResultSet"][-1]["ActivityResItem"]
    item["AdaptiveDynamicStreamingTask"]["Status"] = "SUCCESS"
    assert default_notification_key(schedule) != default_notification_key(changed)


def test_ai_result_statuses_are_in_the_key() -> None:
    ai = _load(SAMPLES / "05_workflow_task_ai_review_analysis_recognition.json")
    changed = copy.deepcopy(ai)
    review = changed["WorkflowTaskEvent"]["AiContentReviewResultSet"][0]
    task = next(v for v in review.values() if isinstance(v, dict))
    task["Status"] = "FAIL" if task["Status"] != "FAIL" else "SUCCESS"
    assert default_notification_key(ai) != default_notification_key(changed)


def test_session_id_does_not_change_a_task_key() -> None:
    document = _load(CHANGE_MODE)
    assert default_notification_key(document) == default_notification_key(
        dict(document, SessionId="another-request-id")
    )


def test_batch_task_without_task_id_uses_the_session_id() -> None:
    batch: dict[str, Any] = {
        "EventType": "BatchTask",
        "SessionId": "batch-1",
        "BatchTaskEvent": {
            "SmartSubtitlesTaskResult": {"Outputs": [{"Status": "PROCESSING", "Progress": 10}]}
        },
    }
    key = default_notification_key(batch)
    assert key.startswith("BatchTask:sid=batch-1:-:")
    batch["BatchTaskEvent"]["SmartSubtitlesTaskResult"]["Outputs"][0]["Status"] = "SUCCESS"
    assert default_notification_key(batch) != key
    anonymous = dict(batch, SessionId="")
    assert default_notification_key(anonymous) == f"BatchTask:payload:{payload_hash(anonymous)}"


def test_live_keys_use_type_task_and_payload_digest() -> None:
    for path in LIVE_SAMPLE_PATHS:
        document = _load(path)
        assert default_notification_key(document) == (
            f"{document['NotificationType']}:{document['TaskId']}:{payload_hash(document)}"
        )


def test_unknown_or_odd_notifications_fall_back_to_the_payload() -> None:
    unknown = {"EventType": "FutureTask", "FutureTaskEvent": {"TaskId": "t", "Status": "FINISH"}}
    assert default_notification_key(unknown) == f"FutureTask:payload:{payload_hash(unknown)}"
    odd = {"EventType": "WorkflowTask", "WorkflowTaskEvent": {"TaskId": 42}}
    assert default_notification_key(_bytes(odd)) == f"WorkflowTask:payload:{payload_hash(odd)}"


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"'])
def test_non_objects_are_decode_errors(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        default_notification_key(raw)
    with pytest.raises(DecodeError):
        payload_hash(raw)


def test_a_key_function_overrides_the_default(store: MemoryStore) -> None:
    seen: list[Mapping[str, Any]] = []

    def by_session(notification: Mapping[str, Any]) -> str:
        seen.append(notification)
        return f"session:{notification['SessionId']}"

    idem = Idempotency(store, key_function=by_session)
    document = _load(SAMPLES / "06_edit_media_task_success.json")
    assert idem.notification_key(_bytes({"Response": document})) == "session:edit-0001"
    assert idem.notification_key(document) == "session:edit-0001"
    assert seen[0] == document
    assert idem.payload_hash(document) == payload_hash(document)

    with pytest.raises(ConfigurationError):
        Idempotency(store, key_function=lambda _: "").notification_key(document)
    assert Idempotency(store).notification_key(document) == default_notification_key(document)


def test_a_forked_child_makes_tokens_of_its_own(store: MemoryStore) -> None:
    """An app built at import and forked into workers (``mpsflow run --workers N``) must not
    give two workers the same owner tokens: one could then complete or release the other's
    claim."""
    idem = Idempotency(store)
    parent = idem.begin_now("k1", "h", "")
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        decision = idem.begin_now("k2", "h", "")
        os.write(writer, (decision.token if decision is not None else "").encode())
        os._exit(0)
    os.close(writer)
    try:
        token = os.read(reader, 200).decode()
    finally:
        os.close(reader)
        os.waitpid(child, 0)
    assert parent is not None
    assert token
    assert token.rsplit("-", 1)[0] != parent.token.rsplit("-", 1)[0]
