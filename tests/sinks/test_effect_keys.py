"""Effect keys from ``ctx.emit`` through ``SinkChannel`` to the sinks, end to end."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from mpsflow import App, Context, Reject
from mpsflow.clock import FakeClock
from mpsflow.errors import SinkError
from mpsflow.events import WorkflowTask
from mpsflow.sinks.base import KeyedSink, KeyedSinkBase, Sink, keyed_sender
from mpsflow.sinks.channel import SinkChannel
from mpsflow.sinks.jsonl import JsonlSink, read_jsonl
from mpsflow.sinks.memory import MemorySink
from mpsflow.testing import TestClient, build_notification, media_result, sign_payload

NOW = 1_735_787_000.0
NOTIFY_KEY = "k1"


class _PlainSink:
    """A third-party sink that knows nothing of keys."""

    def __init__(self) -> None:
        self.batches: list[list[object]] = []

    async def start(self) -> None:
        pass

    async def send(self, batch: Sequence[object]) -> None:
        self.batches.append(list(batch))

    async def close(self) -> None:
        pass


class _CountingSink(MemorySink):
    """A subclass wrapping ``send`` only: it must keep being called through ``send``."""

    def __init__(self) -> None:
        super().__init__()
        self.sends = 0

    async def send(self, batch: Sequence[object]) -> None:
        self.sends += 1
        await super().send(batch)


class _KeyedSubclass(_CountingSink):
    async def send_keyed(self, batch: Sequence[object], keys: Sequence[str | None]) -> None:
        await super().send_keyed(batch, keys)


def test_which_sinks_get_keys() -> None:
    memory = MemorySink()
    assert isinstance(memory, KeyedSink)
    assert keyed_sender(memory) is memory
    assert isinstance(_PlainSink(), Sink)
    assert keyed_sender(_PlainSink()) is None
    assert keyed_sender(_CountingSink()) is None
    sub = _KeyedSubclass()
    assert keyed_sender(sub) is sub


async def test_the_channel_hands_each_record_its_key() -> None:
    sink = MemorySink()
    async with SinkChannel(sink, batch_size=3, max_delay=3600.0, clock=FakeClock()) as channel:
        receipts = [
            await channel.submit("a", idempotency_key="k-0"),
            await channel.submit("b"),
            await channel.submit("c", idempotency_key="k-1"),
        ]
        for receipt in receipts:
            await receipt.wait()
    assert sink.batches == [["a", "b", "c"]]
    assert sink.keys == ["k-0", None, "k-1"]


async def test_records_retried_one_by_one_keep_their_keys() -> None:
    sink = MemorySink(poison=lambda record: record == "bad")
    async with SinkChannel(sink, batch_size=3, max_delay=3600.0, clock=FakeClock()) as channel:
        good1, bad, good2 = [
            await channel.submit(record, idempotency_key=f"k-{n}")
            for n, record in enumerate(["a", "bad", "c"])
        ]
        await good1.wait()
        await good2.wait()
        with pytest.raises(SinkError, match="poisoned"):
            await bad.wait()
    assert sink.records == ["a", "c"]
    assert sink.keys == ["k-0", "k-2"]


async def test_sinks_without_send_keyed_still_get_plain_batches() -> None:
    plain, counting = _PlainSink(), _CountingSink()
    for sink in (plain, counting):
        async with SinkChannel(sink, max_delay=0, clock=FakeClock()) as channel:
            await (await channel.submit("x", idempotency_key="k-0")).wait()
    assert plain.batches == [["x"]]
    assert counting.sends == 1
    assert counting.keys == [None]  # called through send: the key is not seen


# -- through the app -------------------------------------------------------------------------


def _notification(expires_at: int) -> dict[str, Any]:
    payload = build_notification(
        task_id="1250000000-WorkflowTask-keys0001t0",
        media_results=[media_result("Transcode", output={"Path": "/o.mp4"})],
    )
    return sign_payload(payload, NOTIFY_KEY, expires_at=expires_at)


def _app(**sinks: Sink) -> tuple[App, list[str]]:
    """An app without a dedup store (each send re-runs the handler, as after a crash)."""
    app = App(dead_letters=MemorySink(), clock=FakeClock(NOW), notify_keys=[NOTIFY_KEY])
    for name, sink in sinks.items():
        app.sink(name, sink, max_delay=0)
    effect_keys: list[str] = []

    @app.on("WorkflowTask", emits=list(sinks))
    async def catalogue(task: WorkflowTask, ctx: Context) -> None:
        effect_keys.append(ctx.effect_key)
        await ctx.emit("out", {"task": ctx.task_id, "n": 0})
        await ctx.emit("audit", {"task": ctx.task_id})
        await ctx.emit("out", {"task": ctx.task_id, "n": 1})

    return app, effect_keys


async def test_emitted_keys_come_from_the_effect_key_and_survive_a_resend() -> None:
    app, effect_keys = _app(out=MemorySink(), audit=MemorySink())
    async with TestClient(app, clock=FakeClock(NOW)) as client:
        first = await client.send(_notification(int(NOW) + 600))
        resigned = await client.send(_notification(int(NOW) + 900))  # a new Timestamp/Sign
    assert first.acked
    assert resigned.acked
    assert len(first.handlers()) == len(resigned.handlers()) == 1
    effect, again = effect_keys
    assert effect == again
    assert len(effect) == 32
    # Counted per sink: each record's key is the same on both runs.
    assert client.sinks["out"].keys == [f"{effect}-0", f"{effect}-1"] * 2
    assert client.sinks["audit"].keys == [f"{effect}-0"] * 2


async def test_a_rerun_through_the_app_writes_each_jsonl_line_once(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    audit = tmp_path / "audit.jsonl"
    app, effect_keys = _app(out=JsonlSink(out), audit=JsonlSink(audit))
    async with TestClient(app, clock=FakeClock(NOW), capture_sinks=False) as client:
        await client.send(_notification(int(NOW) + 600))
        await client.send(_notification(int(NOW) + 900))
    assert len(effect_keys) == 2  # the handler really ran twice
    task = "1250000000-WorkflowTask-keys0001t0"
    assert list(read_jsonl(out)) == [{"task": task, "n": 0}, {"task": task, "n": 1}]
    assert list(read_jsonl(audit)) == [{"task": task}]


async def test_explicit_keys_and_unkeyed_dead_letters() -> None:
    app = App(dead_letters=MemorySink(), clock=FakeClock(NOW), allow_unsigned=True)
    app.sink("out", MemorySink(), max_delay=0)

    @app.on("WorkflowTask", emits=["out"])
    async def chosen(task: WorkflowTask, ctx: Context) -> None:
        await ctx.emit("out", "mine", idempotency_key=f"{ctx.effect_key}:cover")
        await ctx.emit("out", "counted")
        raise Reject("dead-letter me")

    async with TestClient(app, clock=FakeClock(NOW)) as client:
        result = await client.send(build_notification())
        effect = client.sinks["out"].keys[0]
    assert effect is not None
    assert effect.endswith(":cover")
    assert client.sinks["out"].keys[1] == effect.replace(":cover", "-1")
    assert len(result.dead_letters) == 1
    assert client.dead_letter_sink.keys == [None]  # dead letters carry their own ids


def test_a_keyed_sink_base_without_send_keyed_cannot_be_made() -> None:
    """``KeyedSinkBase.send`` calls ``send_keyed``: a subclass must say what it does."""

    class Unfinished(KeyedSinkBase):
        pass

    assert Unfinished.__abstractmethods__ == frozenset({"send_keyed"})
    with pytest.raises(TypeError):
        Unfinished()  # type: ignore[abstract]
