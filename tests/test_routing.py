"""Routing across every shared sample, filters, registration errors, shipped middleware."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from mpsflow import App, ConfigurationError, Context, Router
from mpsflow.codec import decode_any
from mpsflow.events import EVENT_KEYS, LIVE_KEYS, SUBTASK_KEYS, MediaProcessTaskTranscodeResult
from mpsflow.events.subtasks import media_routes
from mpsflow.middleware import LoggingMiddleware, TimingMiddleware
from mpsflow.routing import (
    HandlerSpec,
    RouteTable,
    Work,
    key_kind,
    normalise_status,
    plan,
    planned_subtask,
)
from mpsflow.sinks.memory import MemorySink
from mpsflow.testing import TestClient, build_notification, media_result
from tests.plugins.samples import LIVE_SAMPLE_PATHS, SAMPLE_PATHS

ALL_SAMPLES = [*SAMPLE_PATHS, *LIVE_SAMPLE_PATHS]


def catch_all_app() -> tuple[App, list[tuple[str, Any]]]:
    """An app with one handler on every routing key, recording (key, payload) in start order."""
    app = App(dead_letters=MemorySink())
    seen: list[tuple[str, Any]] = []
    for key in [*EVENT_KEYS, *SUBTASK_KEYS, *LIVE_KEYS]:

        async def handler(payload: Any, ctx: Context, key: str = key) -> None:
            seen.append((key, payload))

        app.on(key, name=f"on-{key}")(handler)
    return app, seen


@pytest.mark.parametrize("path", ALL_SAMPLES, ids=lambda p: p.name)
async def test_every_sample_reaches_exactly_its_keys(path: Path) -> None:
    app, seen = catch_all_app()
    notification = decode_any(path.read_bytes())
    expected_keys = [sub.key for sub in notification.subtasks()]
    event_type = getattr(notification, "event_type", None)
    if event_type is not None:
        expected_keys.insert(0, event_type)
    async with TestClient(app) as client:
        result = await client.send(path.read_bytes())
    assert result.acked
    # Handlers run concurrently; the client records them in start order.
    assert [c.key for c in result.calls] == expected_keys
    assert sorted(key for key, _ in seen) == sorted(expected_keys)
    payload_types = {key: type(payload) for key, payload in seen}
    for key, payload_type in payload_types.items():
        registry = {**EVENT_KEYS, **SUBTASK_KEYS, **LIVE_KEYS}
        assert issubclass(payload_type, registry[key]), key


async def test_seed_sample_routes_each_media_type() -> None:
    seed = next(p for p in SAMPLE_PATHS if p.name.startswith("01_"))
    app, _ = catch_all_app()
    async with TestClient(app) as client:
        result = await client.send(seed.read_bytes())
    assert [c.key for c in result.calls] == [
        "WorkflowTask",
        "Transcode",
        "AnimatedGraphics",
        "SnapshotByTimeOffset",
        "ImageSprites",
    ]


async def test_a_subtask_key_matches_in_schedules_too() -> None:
    schedule = next(p for p in SAMPLE_PATHS if p.name.startswith("08_"))
    app = App(dead_letters=MemorySink())
    got: list[str] = []

    @app.on("Transcode")
    async def transcode(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        got.append(ctx.event_type)

    async with TestClient(app) as client:
        await client.send(schedule.read_bytes())
    assert got == ["ScheduleTask"]


def two_transcodes() -> dict[str, Any]:
    return build_notification(
        media_results=[
            media_result("Transcode", output={"Path": "/a.mp4", "Definition": 10}),
            media_result("Transcode", status="FAIL", err_code_ext="InternalError"),
        ]
    )


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["ok", "fail"]),
        ({"status": "SUCCESS"}, ["ok"]),
        ({"status": {"SUCCESS", "FAIL"}}, ["ok", "fail"]),
        ({"failed": True}, ["fail"]),
        ({"ok": True}, ["ok"]),
        ({"ok": False}, ["fail"]),
        ({"when": lambda r: r.output is not None and r.output.definition == 10}, ["ok"]),
    ],
)
async def test_subtask_filters(filters: dict[str, Any], expected: list[str]) -> None:
    app = App(dead_letters=MemorySink())
    got: list[str] = []

    @app.on("Transcode", **filters)
    async def handler(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        got.append("ok" if result.ok else "fail")

    async with TestClient(app) as client:
        await client.send(two_transcodes())
    assert got == expected


@pytest.mark.parametrize(
    ("payload", "failed"),
    [
        (build_notification(media_results=[media_result("Transcode")]), False),
        (build_notification(media_results=[media_result("Transcode", status="FAIL")]), True),
        (build_notification(err_code=30009, message="source error"), True),
    ],
)
async def test_event_filters_see_the_whole_task(payload: dict[str, Any], failed: bool) -> None:
    app = App(dead_letters=MemorySink())
    hits: list[str] = []

    @app.on("WorkflowTask", failed=True, name="failed")
    async def on_failed(task: Any, ctx: Context) -> None:
        hits.append("failed")

    @app.on("WorkflowTask", ok=True, status="FINISH", name="ok")
    async def on_ok(task: Any, ctx: Context) -> None:
        hits.append("ok")

    async with TestClient(app) as client:
        await client.send(payload)
    assert hits == (["failed"] if failed else ["ok"])


def test_registration_errors_are_immediate() -> None:
    app = App(dead_letters=MemorySink())
    with pytest.raises(ConfigurationError, match="did you mean 'Transcode'"):
        app.on("Trancode")
    with pytest.raises(ConfigurationError, match="never match"):
        app.on("Transcode", failed=True, ok=True)
    with pytest.raises(ConfigurationError, match="timeout"):

        @app.on("Transcode", timeout=0)
        async def zero(result: object, ctx: Context) -> None: ...

    @app.on("Transcode", name="same")
    async def first(result: object, ctx: Context) -> None: ...

    with pytest.raises(ConfigurationError, match="named 'same'"):

        @app.on("Transcode", name="same")
        async def second(result: object, ctx: Context) -> None: ...


def test_included_routers_keep_names_unique_and_apply_defaults() -> None:
    app = App(dead_letters=MemorySink())
    router = Router(timeout=5.0)

    @router.on("Transcode", name="dup")
    async def one(result: object, ctx: Context) -> None: ...

    @app.on("Transcode", name="dup")
    async def two(result: object, ctx: Context) -> None: ...

    app.include_router(router)
    with pytest.raises(ConfigurationError, match="named 'dup'"):
        _ = app.handlers
    other = Router()
    other.include_router(router)
    with pytest.raises(ConfigurationError, match="cycle"):
        router.include_router(other)
    assert [s.timeout for s in other.handlers] == [5.0]


async def test_logging_and_timing_middleware(caplog: pytest.LogCaptureFixture) -> None:
    ticks = iter(range(0, 1000, 2))
    timing = TimingMiddleware(timer=lambda: float(next(ticks)))
    app = App(dead_letters=MemorySink(), middleware=[LoggingMiddleware(), timing])
    app.add_middleware(timing)

    @app.on("Transcode", name="t")
    async def handler(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        pass

    caplog.set_level(logging.INFO, logger="mpsflow.access")
    async with TestClient(app) as client:
        await client.send(two_transcodes())
    assert timing.stats["t"].count == 2
    assert timing.stats["delivery"].count == 1
    assert timing.stats["t"].mean == 2.0
    [line] = [r.getMessage() for r in caplog.records if r.name == "mpsflow.access"]
    assert "ack (ok)" in line
    assert "mps-test" not in line  # no payload data in access logs


def _specs(keys: list[str], filters: dict[str, Any]) -> list[HandlerSpec]:
    async def handler(payload: Any, ctx: Context) -> None:
        return None

    return [
        HandlerSpec(handler, key, key_kind(key), f"{key}-{n}", **filters)
        for n, key in enumerate(keys)
    ]


MEDIA_KEYS = sorted({route[0] for route in media_routes().values()})
FILTERS: list[dict[str, Any]] = [
    {},
    {"status": normalise_status("SUCCESS")},
    {"failed": True},
    {"ok": True},
    {"when": lambda result: getattr(result, "output", None) is not None},
]
MIXED_MEDIA = decode_any(
    json.dumps(
        build_notification(
            media_results=[
                media_result("Transcode", output={"Path": "/a.mp4", "Definition": 10}),
                media_result("Transcode", status="FAIL", err_code_ext="InternalError"),
                media_result("CoverBySnapshot"),
                {"Type": "Transcode"},  # no TranscodeTask: no subtask at all
                media_result("ImageSprites", status="PROCESSING"),
                media_result("AdaptiveDynamicStreaming"),
            ]
        )
    ).encode()
)


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f) or "none")
@pytest.mark.parametrize("keys", [[k] for k in MEDIA_KEYS] + [MEDIA_KEYS, ["Transcode"] * 2])
def test_media_fast_path_plans_what_the_general_walk_plans(
    keys: list[str], filters: dict[str, Any]
) -> None:
    specs = _specs(keys, filters)
    fast, general = RouteTable(specs), RouteTable(specs, media_fast_path=False)
    assert fast.media is not None
    assert general.media is None
    notifications = [decode_any(p.read_bytes()) for p in ALL_SAMPLES] + [MIXED_MEDIA]
    reached = 0
    for notification in notifications:
        planned = _comparable(plan(notification, fast))
        assert planned == _comparable(plan(notification, general))
        reached += len(planned)
    if not filters:  # the notifications exercise every media key
        assert reached > 0


def _comparable(work: list[Work]) -> list[tuple[HandlerSpec, Any, str | None]]:
    """Planned work with each subtask named by its identity (Subtask objects are new each time)."""
    subtasks = [(spec, payload, planned_subtask(sub)) for spec, payload, sub in work]
    return [
        (spec, payload, None if sub is None else sub.identity) for spec, payload, sub in subtasks
    ]


def test_media_fast_path_is_off_when_other_subtask_keys_are_routed() -> None:
    assert RouteTable(_specs(["Transcode", "AiAnalysis"], {})).media is None
    assert RouteTable(_specs(["Transcode", "Unknown"], {})).media is None
    assert RouteTable(_specs(["Transcode", "WorkflowTask"], {})).media is not None
