"""Realistic MPS traffic for the guarantee suite, generated from a seed.

What real senders do, and the samples do not:

* workflows with 1-6 ``Transcode`` results (one per rendition template; now and then two
  renditions of one template, told apart by their output path) next to snapshots and AI
  review, analysis and recognition sets of several items;
* schedules with several activities of one type (``Transcode`` x2-3) and an AI review
  activity whose output holds several items;
* Change mode: a PROCESSING notification each time a subtask finishes, with the others still
  PROCESSING at some progress, then FINISH; Finish mode: FINISH only;
* exact redeliveries, re-signed redeliveries (new ``Timestamp``/``Sign``, same content),
  arrival out of order, and duplicates sent at the same moment.

Every notification is built from :class:`Notice` objects that know, independently of mpsflow,
which subtask results they carry and in what state: :mod:`tests.guarantee.model` computes the
expected effects from them.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "NOTIFY_KEY",
    "Notice",
    "Send",
    "Sub",
    "TaskScript",
    "content_digest",
    "generate",
    "sign",
    "traffic",
]

NOTIFY_KEY = "guarantee-notify-key"
EXPIRES_AT = 4_102_444_800  # 2100-01-01: the FakeClock never reaches it

_REVIEW_TYPES = ("Porn", "Terrorism", "Political")
_REVIEW_ATTR = {"Porn": "PornTask", "Terrorism": "TerrorismTask", "Political": "PoliticalTask"}
_ANALYSIS_TYPES = {"Classification": "ClassificationTask", "Tag": "TagTask"}
_RECOGNITION_TYPES = {"FaceRecognition": "FaceTask", "OcrWordsRecognition": "OcrWordsTask"}


@dataclass(frozen=True)
class Sub:
    """One subtask result as one notification shows it."""

    slot: str
    """Stable name of the subtask within its task (the model's identity, not mpsflow's)."""
    keys: tuple[str, ...]
    """Every routing key whose handlers get this result (a category item reaches two)."""
    status: str
    progress: int | None
    error: str
    has_output: bool

    @property
    def state(self) -> tuple[str, int | None, str, bool]:
        return (self.status, self.progress, self.error, self.has_output)


@dataclass
class Notice:
    """One notification's content (transport fields aside) and what it carries."""

    task_id: str
    event_type: str
    status: str
    subs: list[Sub]
    body: dict[str, Any]

    @property
    def digest(self) -> str:
        return content_digest(self.body)


@dataclass
class TaskScript:
    """Every notification one task sends, in the order MPS sends them."""

    task_id: str
    event_type: str
    change_mode: bool
    notices: list[Notice] = field(default_factory=list)


@dataclass(frozen=True)
class Send:
    """One delivery attempt: the wire bytes and the notice they carry."""

    body: bytes
    notice: Notice
    batch: int
    """Sends with the same batch number go out at the same moment (concurrent duplicates)."""


def content_digest(body: dict[str, Any]) -> str:
    """Digest of a notification without its transport fields (what a re-signed copy keeps)."""
    bare = {k: v for k, v in body.items() if k not in ("Timestamp", "Sign", "RequestId")}
    return hashlib.sha256(json.dumps(bare, sort_keys=True).encode()).hexdigest()[:24]


def sign(body: dict[str, Any], expires_at: int) -> bytes:
    """The wire bytes of ``body`` signed the MPS way: ``MD5(str(Timestamp) + NotifyKey)``."""
    signed = dict(body)
    signed["Timestamp"] = expires_at
    signed["Sign"] = hashlib.md5(f"{expires_at}{NOTIFY_KEY}".encode()).hexdigest()
    return json.dumps(signed).encode()


# -- one subtask over time -------------------------------------------------------------------


@dataclass
class _Plan:
    """A subtask's life: its final status and the wire builder for any state."""

    slot: str
    keys: tuple[str, ...]
    final: str  # SUCCESS or FAIL
    media: bool  # reports Progress
    wire: Any  # (status, progress, error, has_output) -> dict
    signature: tuple[str, str]  # (Type, Definition): what tells it from its siblings


def _task_state(status: str, progress: int | None, error: str, output: Any) -> dict[str, Any]:
    state: dict[str, Any] = {
        "Status": status,
        "ErrCodeExt": error,
        "ErrCode": 30010 if error else 0,
        "Message": error or ("SUCCESS" if status == "SUCCESS" else ""),
    }
    if progress is not None:
        state["Progress"] = progress
    state["Output"] = output
    return state


def _transcode(task_id: str, slot: str, definition: int, rng: random.Random) -> _Plan:
    path = f"/out/{task_id}/{slot}"
    final = "FAIL" if rng.random() < 0.1 else "SUCCESS"

    def wire(status: str, progress: int | None, error: str, has_output: bool) -> dict[str, Any]:
        output = {"Path": f"{path}.mp4", "Definition": definition} if has_output else None
        task = _task_state(status, progress, error, output)
        task["Input"] = {"Definition": definition, "OutputObjectPath": path}
        return {"Type": "Transcode", "TranscodeTask": task}

    return _Plan(slot, ("Transcode",), final, True, wire, ("Transcode", str(definition)))


def _snapshot(slot: str) -> _Plan:
    def wire(status: str, progress: int | None, error: str, has_output: bool) -> dict[str, Any]:
        output = {"Storage": {"Type": "COS"}, "PicInfoSet": []} if has_output else None
        task = _task_state(status, progress, error, output)
        task["Input"] = {"Definition": 10}
        return {"Type": "SnapshotByTimeOffset", "SnapshotByTimeOffsetTask": task}

    return _Plan(slot, ("SnapshotByTimeOffset",), "SUCCESS", False, wire, ("Snapshot", "10"))


def _ai_item(category: str, kind: str, attr: str, rng: random.Random) -> _Plan:
    key = f"{category}.{kind}"
    final = "FAIL" if rng.random() < 0.1 else "SUCCESS"

    def wire(status: str, progress: int | None, error: str, has_output: bool) -> dict[str, Any]:
        output = {"Confidence": 50.0, "Suggestion": "pass"} if has_output else None
        task = _task_state(status, None, error, output)
        task["Input"] = {"Definition": 10}
        return {"Type": kind, attr: task}

    return _Plan(key, (category, key), final, False, wire, (kind, "10"))


def _states(plan: _Plan, finish_at: int, steps: int, rng: random.Random) -> list[Sub]:
    """The subtask as each of ``steps`` notifications shows it (finished from ``finish_at``)."""
    out: list[Sub] = []
    progress = 0
    for step in range(steps):
        if step >= finish_at:
            success = plan.final == "SUCCESS"
            status, error = plan.final, ("" if success else "InternalError")
            out.append(
                Sub(plan.slot, plan.keys, status, 100 if plan.media else None, error, success)
            )
        else:
            progress = min(99, progress + rng.randint(5, 40))
            shown = progress if plan.media else None
            out.append(Sub(plan.slot, plan.keys, "PROCESSING", shown, "", False))
    return out


def _wire(plan: _Plan, sub: Sub) -> dict[str, Any]:
    result: dict[str, Any] = plan.wire(sub.status, sub.progress, sub.error, sub.has_output)
    return result


# -- tasks -----------------------------------------------------------------------------------


def _workflow(task_id: str, rng: random.Random) -> tuple[list[_Plan], Any]:
    plans: list[_Plan] = []
    definitions = rng.sample([100010, 100020, 100030, 100040, 100210, 100220], rng.randint(1, 6))
    if len(definitions) > 1 and rng.random() < 0.2:  # two renditions of one template
        definitions[-1] = definitions[0]
    for n, definition in enumerate(definitions):
        plans.append(_transcode(task_id, f"rendition-{n}", definition, rng))
    if rng.random() < 0.5:
        plans.insert(rng.randint(0, len(plans)), _snapshot("snapshot"))
    review = [_ai_item("AiContentReview", k, _REVIEW_ATTR[k], rng) for k in _REVIEW_TYPES]
    analysis = [_ai_item("AiAnalysis", k, a, rng) for k, a in _ANALYSIS_TYPES.items()]
    recognition = [_ai_item("AiRecognition", k, a, rng) for k, a in _RECOGNITION_TYPES.items()]
    sets = {
        "AiContentReviewResultSet": review[: rng.randint(0, 3)],
        "AiAnalysisResultSet": analysis[: rng.randint(0, 2)],
        "AiRecognitionResultSet": recognition[: rng.randint(0, 2)],
    }
    media = list(plans)
    for items in sets.values():
        plans.extend(items)

    def body(subs: dict[str, Sub], status: str) -> dict[str, Any]:
        event: dict[str, Any] = {
            "TaskId": task_id,
            "Status": status,
            "ErrCode": 0,
            "Message": "",
            "InputInfo": {
                "Type": "COS",
                "CosInputInfo": {"Bucket": "in-1250000000", "Region": "ap-guangzhou"},
            },
            "MediaProcessResultSet": [_wire(p, subs[p.slot]) for p in media if p.slot in subs],
        }
        for name, items in sets.items():
            event[name] = [_wire(p, subs[p.slot]) for p in items if p.slot in subs]
        return {"EventType": "WorkflowTask", "WorkflowTaskEvent": event, "SessionId": ""}

    return plans, body


def _schedule(task_id: str, rng: random.Random) -> tuple[list[_Plan], Any]:
    transcodes = [
        _transcode(task_id, f"activity-{n}", rng.choice([100010, 100030]), rng)
        for n in range(rng.randint(2, 3))
    ]
    review = [_ai_item("AiContentReview", k, _REVIEW_ATTR[k], rng) for k in _REVIEW_TYPES[:2]]
    plans = [*transcodes, *review]

    def body(subs: dict[str, Sub], status: str) -> dict[str, Any]:
        activities: list[dict[str, Any]] = []
        for plan in (p for p in transcodes if p.slot in subs):
            item = _wire(plan, subs[plan.slot])
            res_item = {"TranscodeTask": item["TranscodeTask"]}
            activities.append({"ActivityType": "Transcode", "ActivityResItem": res_item})
        shown = [p for p in review if p.slot in subs]
        review_status = (
            "SUCCESS" if all(subs[p.slot].status != "PROCESSING" for p in shown) else "PROCESSING"
        )
        review_task = _task_state(review_status, None, "", [_wire(p, subs[p.slot]) for p in shown])
        review_task["Input"] = {"Definition": 10}
        activities.append(
            {"ActivityType": "AiContentReview", "ActivityResItem": {"ReviewTask": review_task}}
        )
        event = {
            "TaskId": task_id,
            "Status": status,
            "ErrCode": 0,
            "Message": "",
            "ActivityResultSet": activities,
        }
        return {"EventType": "ScheduleTask", "ScheduleTaskEvent": event, "SessionId": ""}

    return plans, body


def generate(
    rng: random.Random, tasks: int, *, change_mode: float = 0.6, omit: float = 0.3
) -> list[TaskScript]:
    """``tasks`` task scripts: workflows and (one in four) schedules, some in Change mode.

    A PROCESSING notification leaves out a subtask still running with probability ``omit``
    (only one that its type and template tell apart from its siblings: a left-out sibling of
    the same template would change what the others are), so results move position between
    the notifications of one task.
    """
    scripts: list[TaskScript] = []
    for n in range(tasks):
        schedule = rng.random() < 0.25
        event_type = "ScheduleTask" if schedule else "WorkflowTask"
        task_id = f"1250000000-{event_type}-{rng.getrandbits(64):016x}-{n}"
        plans, build = (_schedule if schedule else _workflow)(task_id, rng)
        change = rng.random() < change_mode
        script = TaskScript(task_id, event_type, change)
        # Change mode: one PROCESSING notification as each subtask finishes, then FINISH.
        order = list(range(len(plans)))
        rng.shuffle(order)
        steps = len(plans) + 1 if change else 1
        finish_at = {plans[i].slot: (pos + 1 if change else 0) for pos, i in enumerate(order)}
        if change:  # the first notification is sent when the first subtask finishes
            finish_at = {slot: at - 1 for slot, at in finish_at.items()}
        timelines = {p.slot: _states(p, finish_at[p.slot], steps, rng) for p in plans}
        signatures = Counter(p.signature for p in plans)
        for step in range(steps):
            last = step == steps - 1
            status = "FINISH" if last else "PROCESSING"
            subs = {
                p.slot: timelines[p.slot][step]
                for p in plans
                if last
                or timelines[p.slot][step].status != "PROCESSING"
                or signatures[p.signature] > 1
                or rng.random() >= omit
            }
            script.notices.append(
                Notice(task_id, event_type, status, list(subs.values()), build(subs, status))
            )
        scripts.append(script)
    return scripts


def traffic(
    rng: random.Random,
    scripts: list[TaskScript],
    *,
    redeliver: float = 0.3,
    resign: float = 0.3,
    concurrent: float = 0.15,
    disorder: float = 3.0,
) -> list[Send]:
    """Every notice once, plus exact and re-signed redeliveries and concurrent duplicates.

    Tasks run interleaved; each notice is sent at its task's next moment, a redelivery some
    moments later, and every send's moment is jittered by up to ``disorder``, so notices of
    one task arrive out of order too. A concurrent duplicate goes out together with its
    original (same ``batch``).
    """
    groups: list[tuple[float, list[tuple[bytes, Notice]]]] = []
    for script in scripts:
        moment = rng.uniform(0, len(scripts))
        for notice in script.notices:
            moment += rng.uniform(0.5, 2.0)
            wire = sign(notice.body, EXPIRES_AT)
            group = [(wire, notice)]
            if rng.random() < concurrent:
                group.append((wire, notice))
            groups.append((moment, group))
            if rng.random() < redeliver:
                groups.append((moment + rng.uniform(0, 6), [(wire, notice)]))
            if rng.random() < resign:
                again = sign(notice.body, EXPIRES_AT - rng.randint(1, 10_000))
                groups.append((moment + rng.uniform(0, 6), [(again, notice)]))
    groups.sort(key=lambda g: g[0] + rng.uniform(0, disorder))
    return [
        Send(wire, notice, batch)
        for batch, (_moment, group) in enumerate(groups)
        for wire, notice in group
    ]
