"""The reference model of the guarantee, the app under test, and the checks.

The model says which effects must happen from the generated notices alone, without mpsflow:

* an event handler's effect is one notification content (a re-signed copy is the same one);
* a subtask handler's effect is one subtask result (its stable slot in the task) in one state
  (status, progress, error, whether it has output), for every result its key and filter match.

The app registers one recording handler per kind of key. A handler records its effect only
when it returns successfully, so the ledger holds exactly the effects that took place; it also
records ``ctx.effect_key``, so the checks can tell that the framework hands every effect a
stable key of its own.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mpsflow import App, Context
from mpsflow.clock import Clock
from mpsflow.deadletter import DeadLetter
from mpsflow.dedup.stores.base import IdempotencyStore
from mpsflow.delivery import Outcome, Settlement
from mpsflow.events import (
    AiAnalysisTaskClassificationResult,
    AiContentReviewResult,
    AiRecognitionTaskFaceResult,
    AiRecognitionTaskOcrWordsResult,
    AiReviewTaskPornResult,
    MediaProcessTaskSnapshotByTimeOffsetResult,
    MediaProcessTaskTranscodeResult,
    ScheduleTask,
    WorkflowTask,
)
from mpsflow.retry import RetryPolicy
from mpsflow.sinks.memory import MemorySink
from tests.guarantee.traffic import NOTIFY_KEY, Notice, content_digest

__all__ = ["DOOMED_KEY", "HANDLERS", "Effect", "Ledger", "Verdicts", "build_app", "expected"]

Effect = tuple[str, str, str, tuple[Any, ...]]
"""(handler, task id, slot or notification digest, state)."""


@dataclass(frozen=True)
class Handler:
    name: str
    key: str
    status: str | None = None


HANDLERS = (
    Handler("rendition_done", "Transcode", status="SUCCESS"),
    Handler("transcode_seen", "Transcode"),
    Handler("snapshot_done", "SnapshotByTimeOffset", status="SUCCESS"),
    Handler("porn_review", "AiContentReview.Porn"),
    Handler("review_item", "AiContentReview"),
    Handler("classification", "AiAnalysis.Classification"),
    Handler("face", "AiRecognition.FaceRecognition"),
    Handler("workflow_finished", "WorkflowTask", status="FINISH"),
    Handler("schedule_notification", "ScheduleTask"),
)

DOOMED_KEY = "AiRecognition.OcrWordsRecognition"
"""With ``doomed=True`` a handler on this key always fails: its deliveries are dead-lettered."""

_EVENT_KEYS = {"WorkflowTask", "ScheduleTask"}


def expected(notices: Iterable[Notice]) -> set[Effect]:
    """Every effect the handlers must produce for these notices (each exactly once)."""
    effects: set[Effect] = set()
    for notice in notices:
        for handler in HANDLERS:
            if handler.key in _EVENT_KEYS:
                if notice.event_type == handler.key and handler.status in (None, notice.status):
                    effects.add((handler.name, notice.task_id, notice.digest, ()))
                continue
            for sub in notice.subs:
                if handler.key in sub.keys and handler.status in (None, sub.status):
                    effects.add((handler.name, notice.task_id, sub.slot, sub.state))
    return effects


def doomed(notice: Notice) -> bool:
    """True when ``notice`` carries a result of the always-failing handler's key."""
    return any(DOOMED_KEY in sub.keys for sub in notice.subs)


@dataclass
class Ledger:
    """What the handlers did: effects with their count, and the key each effect was given."""

    effects: Counter[Effect] = field(default_factory=Counter)
    keys: dict[Effect, set[str]] = field(default_factory=dict)
    failed_once: set[Effect] = field(default_factory=set)
    attempts: Counter[str] = field(default_factory=Counter)

    def record(self, effect: Effect, ctx: Context) -> None:
        self.effects[effect] += 1
        self.keys.setdefault(effect, set()).add(ctx.effect_key)


def _state(task: Any, *, progress: bool = False) -> tuple[Any, ...]:
    output = task.output
    has_output = output is not None and output != []
    return (task.status, task.progress if progress else None, task.err_code_ext, has_output)


def _digest(ctx: Context) -> str:
    body = ctx.delivery.body
    document = json.loads(body) if isinstance(body, bytes | str) else dict(body)
    return content_digest(document)


def build_app(
    store: IdempotencyStore,
    ledger: Ledger,
    *,
    flaky: bool = False,
    doomed: bool = False,
    max_attempts: int = 4,
    signed: bool = True,
    clock: Clock | None = None,
) -> App:
    """The app under test: the recording handlers over ``store``.

    ``flaky``: every handler fails the first time it meets each effect, then succeeds.
    ``doomed``: one more handler (on :data:`DOOMED_KEY`) always fails.
    """
    app = App(
        notify_keys=[NOTIFY_KEY] if signed else (),
        # The traffic expires in 2100 so that no clock (fake or real) reaches it; the bound on
        # how far ahead an expiry may be is tested in tests/signing.
        max_signature_lifetime=None,
        idempotency=store,
        retry=RetryPolicy(max_attempts=max_attempts, base_delay=0.5, max_delay=2.0),
        dead_letters=MemorySink(),
        clock=clock,
    )

    def done(effect: Effect, ctx: Context) -> None:
        ledger.attempts[effect[0]] += 1
        if flaky and effect not in ledger.failed_once:
            ledger.failed_once.add(effect)
            raise RuntimeError(f"flaky failure of {effect[0]} (first try)")
        ledger.record(effect, ctx)

    @app.on("Transcode", status="SUCCESS", name="rendition_done")
    async def rendition_done(task: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        assert task.input is not None
        assert task.input.output_object_path is not None
        slot = task.input.output_object_path.rsplit("/", 1)[1]
        done(("rendition_done", ctx.task_id, slot, _state(task, progress=True)), ctx)

    @app.on("Transcode", name="transcode_seen")
    async def transcode_seen(task: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        assert task.input is not None
        assert task.input.output_object_path is not None
        slot = task.input.output_object_path.rsplit("/", 1)[1]
        done(("transcode_seen", ctx.task_id, slot, _state(task, progress=True)), ctx)

    @app.on("SnapshotByTimeOffset", status="SUCCESS", name="snapshot_done")
    async def snapshot_done(task: MediaProcessTaskSnapshotByTimeOffsetResult, ctx: Context) -> None:
        done(("snapshot_done", ctx.task_id, "snapshot", _state(task)), ctx)

    @app.on("AiContentReview.Porn", name="porn_review")
    async def porn_review(task: AiReviewTaskPornResult, ctx: Context) -> None:
        done(("porn_review", ctx.task_id, "AiContentReview.Porn", _state(task)), ctx)

    @app.on("AiContentReview", name="review_item")
    async def review_item(item: AiContentReviewResult, ctx: Context) -> None:
        task = {
            "Porn": item.porn_task,
            "Terrorism": item.terrorism_task,
            "Political": item.political_task,
        }[str(item.type)]
        done(("review_item", ctx.task_id, f"AiContentReview.{item.type}", _state(task)), ctx)

    @app.on("AiAnalysis.Classification", name="classification")
    async def classification(task: AiAnalysisTaskClassificationResult, ctx: Context) -> None:
        done(("classification", ctx.task_id, "AiAnalysis.Classification", _state(task)), ctx)

    @app.on("AiRecognition.FaceRecognition", name="face")
    async def face(task: AiRecognitionTaskFaceResult, ctx: Context) -> None:
        done(("face", ctx.task_id, "AiRecognition.FaceRecognition", _state(task)), ctx)

    @app.on("WorkflowTask", status="FINISH", name="workflow_finished")
    async def workflow_finished(event: WorkflowTask, ctx: Context) -> None:
        done(("workflow_finished", ctx.task_id, _digest(ctx), ()), ctx)

    @app.on("ScheduleTask", name="schedule_notification")
    async def schedule_notification(event: ScheduleTask, ctx: Context) -> None:
        done(("schedule_notification", ctx.task_id, _digest(ctx), ()), ctx)

    if doomed:

        @app.on(DOOMED_KEY, name="doomed")
        async def always_fails(task: AiRecognitionTaskOcrWordsResult, ctx: Context) -> None:
            ledger.attempts["doomed"] += 1
            raise RuntimeError("this handler always fails")

    return app


@dataclass
class Verdicts:
    """How each delivery ended, and what the handlers had done by then."""

    acked: int = 0
    dead_lettered: int = 0
    unsettled: list[str] = field(default_factory=list)
    acked_early: list[str] = field(default_factory=list)

    def settle(
        self, notice: Notice, outcome: Outcome, ledger: Ledger, *, doomed_handler: bool
    ) -> None:
        """Record one delivery's final outcome, checking nothing was acked too early."""
        if outcome.settlement is Settlement.ACK:
            self.acked += 1
            missing = [e for e in expected([notice]) if ledger.effects[e] == 0]
            if missing:
                self.acked_early.append(f"{notice.task_id} acked without {missing[:3]}")
            if doomed_handler and doomed(notice):
                self.acked_early.append(
                    f"{notice.task_id} acked although its doomed handler failed"
                )
        elif outcome.settlement is Settlement.DEAD_LETTERED:
            self.dead_lettered += 1
        else:
            self.unsettled.append(f"{notice.task_id}: {outcome.settlement.value} {outcome.reason}")


def assert_exactly_once(
    ledger: Ledger, want: set[Effect], verdicts: Verdicts, dead: list[DeadLetter] | None = None
) -> dict[str, int]:
    """The guarantee: every expected effect once, nothing else, every delivery settled.

    Returns the counts for the report: expected, observed, lost, doubled, unexpected.
    """
    observed = ledger.effects
    lost = sorted(e for e in want if observed[e] == 0)
    doubled = sorted(e for e, n in observed.items() if n > 1)
    unexpected = sorted(e for e in observed if e not in want)
    shared = [e for e, keys in ledger.keys.items() if len(keys) != 1]
    counts = {
        "expected": len(want),
        "observed": sum(observed.values()),
        "lost": len(lost),
        "doubled": len(doubled),
        "unexpected": len(unexpected),
        "acked": verdicts.acked,
        "dead_lettered": verdicts.dead_lettered,
    }
    assert not lost, f"{counts}: lost {lost[:5]}"
    assert not doubled, f"{counts}: doubled {doubled[:5]}"
    assert not unexpected, f"{counts}: unexpected {unexpected[:5]}"
    assert not verdicts.unsettled, f"{counts}: unsettled {verdicts.unsettled[:5]}"
    assert not verdicts.acked_early, f"{counts}: {verdicts.acked_early[:5]}"
    assert not shared, f"an effect ran under several effect keys: {shared[:3]}"
    by_key = Counter(next(iter(keys)) for keys in ledger.keys.values())
    assert all(n == 1 for n in by_key.values()), "two effects shared one effect key"
    if dead is not None:
        assert len(dead) >= verdicts.dead_lettered
    return counts
