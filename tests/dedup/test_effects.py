"""What runs once: effect identity, ``ctx.effect_key``, and dedup under store faults."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from mpsflow import App, Cause, Context, Settlement
from mpsflow.clock import FakeClock
from mpsflow.codec import decode_any
from mpsflow.dedup.effects import effect_key, record_key, subtask_scope
from mpsflow.dedup.idempotency import Idempotency
from mpsflow.dedup.stores import MemoryStore, SQLiteStore
from mpsflow.dedup.stores.base import ClaimState
from mpsflow.errors import StoreUnavailable
from mpsflow.events import MediaProcessTaskTranscodeResult, Notification, collect_subtasks
from mpsflow.sinks.memory import MemorySink
from mpsflow.sources.memory import MemorySource
from mpsflow.testing import TestClient, build_notification, media_result, sign_payload
from tests.guarantee.faults import FaultyStore
from tests.plugins.samples import SAMPLE_KEY


def rendition(definition: int, **options: Any) -> dict[str, Any]:
    options.setdefault("output", {"Path": f"/out/{definition}.mp4"})
    return media_result("Transcode", input={"Definition": definition}, **options)


def workflow(results: list[dict[str, Any]], status: str = "FINISH") -> Notification:
    body = build_notification(task_id="task-1", status=status, media_results=results)
    notification = decode_any(json.dumps(body).encode())
    assert isinstance(notification, Notification)
    return notification


def identities(notification: Notification) -> list[str]:
    return [sub.identity for sub in collect_subtasks(notification, {"Transcode"})]


def test_a_rendition_keeps_its_identity_when_others_move() -> None:
    full = workflow([rendition(100010), rendition(100020), rendition(100030)])
    partial = workflow([rendition(100030), rendition(100020)], status="PROCESSING")
    base = "$.WorkflowTaskEvent.MediaProcessResultSet/Transcode"
    assert identities(full) == [f"{base}/100010/0", f"{base}/100020/0", f"{base}/100030/0"]
    assert identities(partial) == [f"{base}/100030/0", f"{base}/100020/0"]


def test_two_renditions_of_one_template_are_told_apart_by_ordinal() -> None:
    twice = workflow([rendition(100010), rendition(100020), rendition(100010)])
    assert [i.rsplit("/", 2)[1:] for i in identities(twice)] == [
        ["100010", "0"],
        ["100020", "0"],
        ["100010", "1"],
    ]


def test_the_scope_changes_with_the_state_and_only_with_it() -> None:
    def scope(**options: Any) -> str:
        notification = workflow([rendition(100040, **options)], status="PROCESSING")
        [sub] = collect_subtasks(notification, {"Transcode"})
        return subtask_scope(notification, sub)

    processing = scope(status="PROCESSING", progress=37)
    assert processing == scope(status="PROCESSING", progress=37)
    assert processing != scope(status="PROCESSING", progress=80)
    assert processing != scope(status="SUCCESS", progress=100)
    assert scope(status="SUCCESS") != scope(status="FAIL", err_code_ext="InternalError")
    assert processing.startswith("WorkflowTask:task-1:sub:")


def test_effect_keys_are_stable_and_distinct_per_handler() -> None:
    key = effect_key(record_key("WorkflowTask:task-1:sub:abc", "publish"))
    assert key == effect_key(record_key("WorkflowTask:task-1:sub:abc", "publish"))
    assert key != effect_key(record_key("WorkflowTask:task-1:sub:abc", "archive"))
    assert len(key) == 32
    assert int(key, 16) >= 0


def _sample_04(samples_dir: Path) -> bytes:
    return (samples_dir / "04_workflow_task_processing_change_mode.json").read_bytes()


async def test_sample_04_handles_both_renditions_once(samples_dir: Path, tmp_path: Path) -> None:
    """The issue's reproduction: three sends of sample 04, default SQLite dedup."""
    clock = FakeClock()
    app = App(idempotency=SQLiteStore(tmp_path / "dedup.sqlite3", clock=clock))
    seen: list[tuple[int | None, str | None]] = []

    @app.on("Transcode")
    async def transcode(task: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        assert task.input is not None
        seen.append((task.input.definition, task.status))

    async with TestClient(app, clock=clock, dedup_store="app") as client:  # the SQLite store
        results = [await client.send(_sample_04(samples_dir)) for _ in range(3)]
    assert [r.outcomes[0].settlement for r in results] == [Settlement.ACK] * 3  # HTTP 200
    assert [r.outcomes[0].cause for r in results] == [
        Cause.OK,
        Cause.ALREADY_DONE,
        Cause.ALREADY_DONE,
    ]
    assert all(len(r.outcomes) == 1 and r.acked for r in results)
    assert sorted(seen) == [(100010, "SUCCESS"), (100040, "PROCESSING")]


async def test_change_mode_handles_every_rendition_once(samples_dir: Path) -> None:
    """Sample 04's PROCESSING, then 100040 done, then FINISH (each also re-signed)."""
    processing = json.loads(_sample_04(samples_dir))
    done = copy.deepcopy(processing)
    task = done["WorkflowTaskEvent"]["MediaProcessResultSet"][1]["TranscodeTask"]
    task.update(Status="SUCCESS", Progress=100, Output={"Path": "/out/100040.mp4"})
    finish = copy.deepcopy(done)
    finish["WorkflowTaskEvent"]["Status"] = "FINISH"
    app = App(idempotency=MemoryStore())
    runs: list[tuple[int, str]] = []

    @app.on("Transcode", status="SUCCESS")
    async def published(task: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        assert task.input is not None
        assert task.input.definition is not None
        runs.append((task.input.definition, ctx.effect_key))

    async with TestClient(app) as client:
        for body in (processing, done, finish, processing, finish):
            assert (await client.send(body)).acked
            assert (await client.send(sign_payload(body, SAMPLE_KEY, expires_at=1))).acked
    assert sorted(d for d, _ in runs) == [100010, 100040]
    assert len({k for _, k in runs}) == 2


async def test_effect_key_is_the_same_for_a_resent_effect_without_dedup() -> None:
    app = App()
    keys: list[str] = []

    @app.on("Transcode")
    async def transcode(task: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        keys.append(ctx.effect_key)

    body = build_notification(task_id="t", media_results=[rendition(1), rendition(2)])
    async with TestClient(app) as client:
        await client.send(body)
        await client.send(sign_payload(dict(body), "k", expires_at=5))
    assert len(keys) == 4
    assert len(set(keys)) == 2


def test_a_subtask_key_function_replaces_the_subtask_scope() -> None:
    idem = Idempotency(MemoryStore(), subtask_key_function=lambda n, s: f"{n.task_id}/{s.key}")
    notification = workflow([rendition(1)])
    [sub] = collect_subtasks(notification, {"Transcode"})
    assert idem.subtask_keys_for(notification, sub)[0] == "task-1/Transcode"
    broken = Idempotency(MemoryStore(), subtask_key_function=lambda n, s: "")
    with pytest.raises(Exception, match="subtask_key_function"):
        broken.subtask_keys_for(notification, sub)


# -- store faults ------------------------------------------------------------------------------


def flaky(clock: FakeClock) -> FaultyStore:
    """A memory store whose next calls fail as ``store.script`` says."""
    return FaultyStore(MemoryStore(clock=clock))


async def test_an_unwritten_completion_counts_as_done_and_is_written_later() -> None:
    clock = FakeClock()
    store = flaky(clock)
    idem = Idempotency(store, clock=clock, retry_interval=1.0)
    decision = await idem.begin("n", "h", "p")
    store.script = ["down"]
    assert await idem.succeeded(decision) is False
    assert idem.unsettled == 1
    store.script = ["down"]  # the store is still down when the redelivery comes
    again = await idem.begin("n", "h", "p")
    assert again.state is ClaimState.COMPLETED
    assert idem.unsettled == 1
    assert (await idem.begin("n", "h", "p")).state is ClaimState.COMPLETED  # written now
    assert idem.unsettled == 0
    other = Idempotency(store, clock=clock)  # another process sees it completed
    assert (await other.begin("n", "h", "p")).state is ClaimState.COMPLETED


async def test_an_unwritten_completion_is_given_up_when_its_lease_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    store = flaky(clock)
    idem = Idempotency(store, clock=clock, lease_seconds=10)
    decision = await idem.begin("n", "h", "p")
    store.script = ["down"]
    await idem.succeeded(decision)
    clock.advance(11)
    assert (await idem.begin("n", "h", "p")).state is ClaimState.CLAIMED
    assert idem.unsettled == 0
    assert any(r.levelname == "ERROR" and "never written" in r.message for r in caplog.records)


async def test_a_claim_whose_answer_was_lost_is_released_on_the_next_try() -> None:
    clock = FakeClock()
    store = flaky(clock)
    idem = Idempotency(store, clock=clock)
    store.script = ["lost"]
    with pytest.raises(StoreUnavailable):
        await idem.begin("n", "h", "p")
    assert idem.unsettled == 1
    # Without the release the claim would answer BUSY for its whole lease (300 s).
    assert (await idem.begin("n", "h", "p")).state is ClaimState.CLAIMED
    assert idem.unsettled == 0


async def test_settle_pending_releases_and_completes_without_a_delivery() -> None:
    clock = FakeClock()
    store = flaky(clock)
    idem = Idempotency(store, clock=clock)
    done = await idem.begin("done", "h", "p")
    store.script = ["lost"]
    with pytest.raises(StoreUnavailable):
        await idem.begin("lost", "h", "p")
    store.script = ["down"]
    await idem.succeeded(done)
    assert idem.unsettled == 2
    assert await idem.settle_pending() == 0
    other = Idempotency(store, clock=clock)
    assert (await other.begin("done", "h", "p")).state is ClaimState.COMPLETED
    assert (await other.begin("lost", "h", "p")).state is ClaimState.CLAIMED


class Watched(FaultyStore):
    """A FaultyStore that says when a completion got written."""

    def __init__(self) -> None:
        super().__init__(MemoryStore(), close_inner=False)
        self.written = anyio.Event()

    async def complete(self, key: str, token: str, *, ttl_seconds: float) -> bool:
        done = await super().complete(key, token, ttl_seconds=ttl_seconds)
        self.written.set()
        return done


async def test_a_running_app_writes_an_unwritten_completion_without_more_deliveries() -> None:
    store = Watched()
    idem = Idempotency(store, retry_interval=0.01)
    app = App(idempotency=idem, dead_letters=MemorySink())

    @app.on("Transcode")
    async def transcode(task: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        store.script = ["down", "down"]  # its completion, and the first background retry

    source = MemorySource(close_when_done=False)
    source.add(json.dumps(build_notification(media_results=[rendition(1)])))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: app.run(source, handle_signals=False))
            await store.written.wait()
            app.stop()
    assert store.failures["complete:down"] == 2
    assert idem.unsettled == 0
    inner = store.inner
    assert isinstance(inner, MemoryStore)
    [key] = list(inner._records)
    scope, handler = key.rsplit(":", 1)
    assert (await Idempotency(inner).begin(scope, handler, "")).state is ClaimState.COMPLETED


async def test_only_another_output_for_the_same_result_is_a_conflict(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App(idempotency=MemoryStore())
    runs: list[str] = []

    @app.on("Transcode")
    async def transcode(task: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        runs.append(ctx.effect_key)

    def body(**options: Any) -> dict[str, Any]:
        return build_notification(task_id="t", media_results=[rendition(1, **options)])

    async with TestClient(app) as client:
        await client.send(body())
        await client.send(body(message="SUCCESS (retried)"))  # same result, other wording
        assert not [r for r in caplog.records if "conflict" in r.message]
        await client.send(body(output={"Path": "/elsewhere.mp4"}))
    assert len(runs) == 1
    assert [r.levelname for r in caplog.records if "conflict" in r.message] == ["WARNING"]
