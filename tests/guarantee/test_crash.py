"""A process dies between its claim and its completion; another process takes over.

Process A claims the renditions of a notification and dies in the middle of one handler run
(its store calls stop arriving, its task is cancelled: nothing is released or completed).
Once A's lease ends, process B gets the redelivery and must run exactly what A did not finish.

Where A died *before* the effect, the effect happens once. Where A died *after* it (the one
window no framework can close for an arbitrary effect), the handler runs again, and
``ctx.effect_key`` is what makes the re-run harmless: it is the same key in both processes, so
an effect keyed on it (a sink, an API with an idempotency key) happens once.
"""

from __future__ import annotations

import json
from collections import Counter

import anyio
import pytest

from mpsflow import App, Context
from mpsflow.clock import FakeClock
from mpsflow.delivery import Delivery
from mpsflow.events import MediaProcessTaskTranscodeResult
from mpsflow.sinks.memory import MemorySink
from mpsflow.testing import TestClient, build_notification, media_result
from tests.guarantee.conftest import STORES, StoreFactory
from tests.guarantee.faults import FaultyStore

DEFINITIONS = (100010, 100020, 100030)
DYING = 100020


def notification() -> bytes:
    results = [
        media_result(
            "Transcode",
            input={"Definition": d, "OutputObjectPath": f"/out/{d}"},
            output={"Path": f"/out/{d}.mp4", "Definition": d},
        )
        for d in DEFINITIONS
    ]
    return json.dumps(build_notification(task_id="task-crash", media_results=results)).encode()


class External:
    """A downstream system: every call per process, and the effects it keeps by effect key."""

    def __init__(self) -> None:
        self.calls: dict[str, Counter[int]] = {"a": Counter(), "b": Counter()}
        self.keys: dict[int, set[str]] = {}
        self.by_key: dict[str, int] = {}

    def publish(self, process: str, definition: int, key: str) -> None:
        self.calls[process][definition] += 1
        self.keys.setdefault(definition, set()).add(key)
        self.by_key.setdefault(key, definition)


def make_app(
    process: str, store: FaultyStore, external: External, *, die: str | None, dying: anyio.Event
) -> App:
    app = App(idempotency=store, dead_letters=MemorySink())

    @app.on("Transcode", status="SUCCESS", name="publish")
    async def publish(task: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        assert task.input is not None
        assert task.input.definition is not None
        definition = task.input.definition
        if definition == DYING and die is not None:
            if die == "after-effect":
                external.publish(process, definition, ctx.effect_key)
            store.dead = True  # the process is gone: nothing it sends arrives any more
            dying.set()
            await anyio.sleep_forever()
        external.publish(process, definition, ctx.effect_key)

    return app


@pytest.mark.parametrize("die", ["before-effect", "after-effect"])
@pytest.mark.parametrize("kind", STORES)
async def test_a_dead_process_is_taken_over_once_its_lease_ends(
    kind: str, die: str, make_store: StoreFactory, clock: FakeClock
) -> None:
    backend = make_store(kind, clock)
    external = External()
    dying = anyio.Event()
    store_a = FaultyStore(backend, close_inner=False)
    app_a = make_app("a", store_a, external, die=die, dying=dying)
    app_a.clock = clock
    body = notification()
    async with app_a, anyio.create_task_group() as tg:
        tg.start_soon(app_a.process, Delivery(body, source="a"))
        await dying.wait()
        tg.cancel_scope.cancel()  # SIGKILL: the delivery never settles
    assert external.calls["a"][DYING] == (1 if die == "after-effect" else 0)
    clock.advance(400)  # past A's lease (300 s + margin)

    store_b = FaultyStore(backend, close_inner=False)
    app_b = make_app("b", store_b, external, die=None, dying=dying)
    async with TestClient(app_b, clock=clock, dedup_store="app") as client:  # A's backend
        first = await client.send(body)
        again = await client.send(body)
    assert first.acked
    assert again.acked
    assert again.calls == [] or all(c.result == "skipped" for c in again.calls)
    # Every rendition's effect exactly once where it is keyed on ctx.effect_key, under one
    # key in both processes ...
    assert sorted(external.by_key.values()) == sorted(DEFINITIONS)
    assert all(len(keys) == 1 for keys in external.keys.values())
    # ... B ran the dying rendition once, and re-ran only renditions A had done but not
    # recorded as completed before it died (its concurrent handlers' crash window).
    calls_a, calls_b = external.calls["a"], external.calls["b"]
    assert calls_b[DYING] == 1
    assert all(calls_a[d] + calls_b[d] >= 1 for d in DEFINITIONS)
    assert all(calls_b[d] <= 1 and calls_a[d] <= 1 for d in DEFINITIONS)
