"""What refusals cost: an excerpt of the body with its size and digest, so many records a minute
per sender and in all, a rotating default file, and disk use that stays bounded under a flood
of forged requests. Processed notifications keep their whole body, unlimited."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from mpsflow import App, Context, Reject, RetryPolicy
from mpsflow.clock import FakeClock
from mpsflow.deadletter import (
    DEFAULT_EXCERPT_BYTES,
    DeadLetter,
    DeadLetterLimits,
    RefusalLimiter,
    make_dead_letter,
    refusal_peer,
)
from mpsflow.delivery import Cause, Delivery, Settlement
from mpsflow.observability.metrics import InMemoryMetrics
from mpsflow.signing import sign_notification
from mpsflow.sinks.jsonl import JsonlSink, jsonl_files, read_jsonl
from mpsflow.sinks.memory import MemorySink
from mpsflow.testing import build_notification, media_result

KEY = "the-real-notify-key"
FORGED_KEY = "a-key-the-attacker-guessed"
NOW = 1_700_000_000
MIB = 1024 * 1024


def notification(task_id: str = "task-1") -> dict[str, Any]:
    return build_notification(
        task_id=task_id, media_results=[media_result("Transcode", output={"Path": "/o.mp4"})]
    )


def signed(payload: dict[str, Any], key: str, *, pad: int = 0) -> bytes:
    """``payload`` signed with ``key`` (valid for an hour), with ``pad`` bytes of padding."""
    if pad:
        payload = {**payload, "Pad": "x" * pad}
    return sign_notification(json.dumps(payload).encode(), key, expires_at=NOW + 3600)


def forged(pad: int, task_id: str = "forged") -> bytes:
    """A body signed with a key the app does not know, ``pad`` bytes of padding long."""
    return signed(notification(task_id), FORGED_KEY, pad=pad)


def app_with(dead: Any, clock: FakeClock, **options: Any) -> App:
    options.setdefault("retry", RetryPolicy(max_attempts=1))
    return App(dead_letters=dead, notify_keys=[KEY], clock=clock, **options)


def letters(sink: MemorySink) -> list[DeadLetter]:
    return [r for r in sink.records if isinstance(r, DeadLetter)]


def http(body: bytes, peer: str = "203.0.113.7") -> Delivery:
    return Delivery(body, source="http", meta={"remote": peer})


# -- the record ---------------------------------------------------------------------------------


def test_a_refusal_keeps_an_excerpt_with_the_size_and_digest_of_the_whole_body() -> None:
    body = b'{"a": "' + "é".encode() * 5000 + b'"}'
    record = make_dead_letter(
        kind="signature", reason="signature mismatch", body=body, now=1.0, excerpt=100
    )
    assert record.body_truncated
    assert record.body_size == len(body)
    assert record.body_sha256 == hashlib.sha256(body).hexdigest()
    kept = record.raw_body()
    assert body.startswith(kept)
    assert 97 <= len(kept) <= 100  # cut back to a whole character: "é" is two bytes
    assert record.body_encoding == "utf-8"
    kept.decode()  # valid UTF-8


def test_a_binary_excerpt_keeps_its_exact_bytes_in_base64() -> None:
    body = b"\xff\xfe" * 10_000
    record = make_dead_letter(kind="poison", reason="not JSON", body=body, now=1.0, excerpt=64)
    assert record.body_encoding == "base64"
    assert base64.b64decode(record.body) == body[:64] == record.raw_body()
    assert (record.body_size, record.body_truncated) == (len(body), True)


def test_a_short_refused_body_is_kept_whole() -> None:
    record = make_dead_letter(kind="poison", reason="x", body=b"{not json", now=1.0, excerpt=2048)
    assert not record.body_truncated
    assert record.raw_body() == b"{not json"
    assert record.body_size == 9


def test_fields_read_from_a_forged_body_are_bounded() -> None:
    record = make_dead_letter(
        kind="signature",
        reason="r" * 10_000,
        body=b"{}",
        now=1.0,
        task_id="t" * 100_000,
        event_type="e" * 100_000,
        delivery_id="d" * 100_000,
        excerpt=2048,
    )
    assert len(record.task_id) == len(record.event_type) == len(record.delivery_id) == 256
    assert len(record.reason) == 1000


def test_records_without_the_new_fields_still_read() -> None:
    import msgspec

    old = b'{"id":"x","time":1.0,"kind":"exhausted","reason":"r","body":"{}"}'
    record = msgspec.json.decode(old, type=DeadLetter)
    assert (record.body_size, record.body_sha256, record.body_truncated) == (0, "", False)
    assert record.raw_body() == b"{}"


# -- what the pipeline records ------------------------------------------------------------------


async def test_a_forged_signature_is_recorded_with_an_excerpt_and_answered_401() -> None:
    dead, clock = MemorySink(), FakeClock(NOW)
    body = forged(pad=3 * MIB)
    async with app_with(dead, clock) as app:
        outcome = await app.process(http(body))
    assert outcome.settlement is Settlement.REJECTED
    assert outcome.cause is Cause.UNAUTHENTICATED
    [record] = letters(dead)
    assert record.kind == "signature"
    assert record.body_truncated
    assert len(record.raw_body()) <= DEFAULT_EXCERPT_BYTES
    assert body.startswith(record.raw_body())
    assert record.body_size == len(body)
    assert record.body_sha256 == hashlib.sha256(body).hexdigest()
    assert record.task_id == "forged"


async def test_a_large_poison_body_is_recorded_once_with_an_excerpt() -> None:
    dead, clock = MemorySink(), FakeClock(NOW)
    body = b'{"EventType": "WorkflowTask", "Pad": "' + b"y" * MIB  # never closed
    async with App(dead_letters=dead, clock=clock) as app:
        outcome = await app.process(http(body))
    assert outcome.settlement is Settlement.DEAD_LETTERED
    assert outcome.cause is Cause.MALFORMED
    [record] = letters(dead)
    assert (record.kind, record.body_truncated, record.body_size) == ("poison", True, len(body))
    assert len(record.raw_body()) == DEFAULT_EXCERPT_BYTES


async def test_processed_notifications_keep_their_whole_body_unlimited() -> None:
    """Exhausted, unmatched and a handler's Reject: real, signed notifications, replayable."""
    dead, clock = MemorySink(), FakeClock(NOW)
    app = app_with(dead, clock, unmatched="dead_letter")

    @app.on("WorkflowTask")
    async def handle(event: Any, ctx: Context) -> None:
        if ctx.task_id.startswith("reject"):
            raise Reject("unusable input")
        raise RuntimeError("bug")

    limits = DeadLetterLimits().per_peer_per_minute
    assert limits is not None
    count = int(limits) + 5  # more than a sender may have refusals recorded
    bodies = [signed(notification(f"task-{n}"), KEY, pad=10_000) for n in range(count)]
    bodies += [signed(notification(f"reject-{n}"), KEY, pad=10_000) for n in range(count)]
    live = {"NotificationType": "LiveStreamProcessCompleted", "LiveStreamProcessEvent": {}}
    bodies.append(signed(live, KEY, pad=10_000))
    async with app:
        for body in bodies:
            outcome = await app.process(http(body))
            assert outcome.settlement is Settlement.DEAD_LETTERED
    records = letters(dead)
    assert len(records) == len(bodies)
    assert {r.kind for r in records} == {"exhausted", "rejected", "unmatched"}
    for record, body in zip(records, bodies, strict=True):
        assert record.raw_body() == body
        assert not record.body_truncated
        assert record.body_size == len(body)
        assert record.body_sha256 == hashlib.sha256(body).hexdigest()


# -- limits -------------------------------------------------------------------------------------


async def test_refusal_records_are_limited_per_sender_and_refill_on_the_app_clock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead, clock, metrics = MemorySink(), FakeClock(NOW), InMemoryMetrics()
    limits = DeadLetterLimits(per_peer_per_minute=5, total_per_minute=None)
    app = app_with(dead, clock, dead_letter_limits=limits, metrics=metrics)
    caplog.set_level(logging.WARNING, logger="mpsflow.deadletter")
    async with app:
        for _ in range(8):
            outcome = await app.process(http(forged(100), peer="198.51.100.1"))
            assert outcome.settlement is Settlement.REJECTED  # answered the same: 401
        assert len(letters(dead)) == 5
        for _ in range(3):  # another sender has its own bucket
            await app.process(http(forged(100), peer="198.51.100.2"))
        assert len(letters(dead)) == 8
        clock.advance(24.0)  # 5 a minute: two tokens back
        for _ in range(3):
            await app.process(http(forged(100), peer="198.51.100.1"))
        assert len(letters(dead)) == 10
        assert app._pipeline is not None
        assert app._pipeline.refusals.unrecorded == {"signature": 4}
    assert metrics.signature_rejections["mismatch"] == 14  # every refusal still counted
    assert metrics.dead_letters["signature"] == 10
    lines = [r.getMessage() for r in caplog.records if r.name == "mpsflow.deadletter"]
    assert len(lines) == 2  # the first, then one per 10 s of the app's clock
    assert lines[0].startswith("not recording a signature dead letter from 198.51.100.1")
    assert "over 5 refusal records a minute from one sender; counted only" in lines[0]
    assert lines[1].endswith("; 2 more not recorded since the last such line (signature 2)")


async def test_sources_without_a_peer_address_are_limited_per_source() -> None:
    dead, clock = MemorySink(), FakeClock(NOW)
    limits = DeadLetterLimits(per_peer_per_minute=3, total_per_minute=None)
    async with App(dead_letters=dead, clock=clock, dead_letter_limits=limits) as app:
        for source in ("cmq", "cmq", "cmq", "cmq", "file", "file"):
            await app.process(Delivery(b"{bad json", source=source))
    assert [r.source for r in letters(dead)] == ["cmq"] * 3 + ["file"] * 2
    assert refusal_peer(Delivery(b"", source="cmq")) == "source cmq"
    assert refusal_peer(http(b"", peer="192.0.2.1")) == "192.0.2.1"


async def test_the_total_limit_bounds_many_senders() -> None:
    dead, clock = MemorySink(), FakeClock(NOW)
    limits = DeadLetterLimits(per_peer_per_minute=2, total_per_minute=10, max_peers=4)
    async with app_with(dead, clock, dead_letter_limits=limits) as app:
        for n in range(100):
            await app.process(http(forged(10), peer=f"192.0.2.{n}"))
        assert len(letters(dead)) == 10
        assert app._pipeline is not None
        assert len(app._pipeline.refusals._peers) == 4  # bounded memory


async def test_limits_can_be_turned_off_and_are_checked() -> None:
    dead, clock = MemorySink(), FakeClock(NOW)
    limits = DeadLetterLimits(excerpt_bytes=None, per_peer_per_minute=None, total_per_minute=None)
    body = forged(5000)
    async with app_with(dead, clock, dead_letter_limits=limits) as app:
        for _ in range(200):
            await app.process(http(body))
    records = letters(dead)
    assert len(records) == 200
    assert all(r.raw_body() == body and not r.body_truncated for r in records)
    for name, bad in (
        ("excerpt_bytes", -1),
        ("per_peer_per_minute", 0),
        ("total_per_minute", -5),
        ("max_peers", 0),
        ("rotate_bytes", 0),
        ("keep_files", -1),
    ):
        with pytest.raises(ValueError, match=name):
            DeadLetterLimits(**{name: bad})


def test_a_refusal_over_the_total_gives_the_sender_its_token_back() -> None:
    clock = FakeClock(NOW)
    limiter = RefusalLimiter(DeadLetterLimits(per_peer_per_minute=3, total_per_minute=1), clock)
    assert limiter.admit(http(b"", peer="a"), "signature")
    assert not limiter.admit(http(b"", peer="b"), "signature")  # the total is used up
    clock.advance(60.0)
    assert limiter.admit(http(b"", peer="b"), "signature")  # b did not lose a token
    assert limiter._peers["b"].tokens == pytest.approx(2.0)


# -- the default file rotates -------------------------------------------------------------------


def test_a_dead_letter_path_becomes_a_rotating_jsonl_sink(tmp_path: Path) -> None:
    sink = App(dead_letters=tmp_path / "dead.jsonl").dead_letter_sink
    assert isinstance(sink, JsonlSink)
    assert (sink.rotate_bytes, sink.keep) == (64 * MIB, 5)
    limits = DeadLetterLimits(rotate_bytes=MIB, keep_files=2)
    sink = App(dead_letters=str(tmp_path / "d.jsonl"), dead_letter_limits=limits).dead_letter_sink
    assert isinstance(sink, JsonlSink)
    assert (sink.rotate_bytes, sink.keep) == (MIB, 2)
    never = App(
        dead_letters=tmp_path / "n.jsonl", dead_letter_limits=DeadLetterLimits(rotate_bytes=None)
    )
    assert isinstance(never.dead_letter_sink, JsonlSink)
    assert never.dead_letter_sink.rotate_bytes is None


# -- a 401 flood --------------------------------------------------------------------------------

FLOOD = 2000
SIZES = (1 * MIB, 2 * MIB, 4 * MIB, 8 * MIB)
RECORD_BOUND = 8 * 1024
"""Bytes one refusal's line may take at most (a 2 KiB excerpt, JSON-escaped, and its fields)."""


def flood_body(pads: dict[int, bytes], n: int) -> bytes:
    """The ``n``-th forged body: 1 to 8 MiB, signed with a wrong key, each one different."""
    pad = pads[list(pads)[n % len(pads)]]
    head = b'{"EventType":"WorkflowTask","WorkflowTaskEvent":{"TaskId":"forged-%d"},"Pad":"' % n
    sign = hashlib.md5(f"{NOW + 3600}{FORGED_KEY}-{n}".encode()).hexdigest().encode()
    return b"".join([head, pad, b'","Timestamp":%d,"Sign":"%s"}' % (NOW + 3600, sign)])


@pytest.mark.slow
async def test_disk_use_stays_bounded_under_a_flood_of_large_forged_requests(
    tmp_path: Path,
) -> None:
    """2000 forged bodies of 1 to 8 MiB (7.5 GB) from 200 senders over 100 s of the app's
    clock: 401 each, and the dead-letter files grow by a few hundred KiB."""
    clock = FakeClock(NOW)
    path = tmp_path / "dead.jsonl"
    pads = {size: b"p" * size for size in SIZES}
    received = 0
    async with app_with(path, clock) as app:
        for n in range(FLOOD):
            body = flood_body(pads, n)
            received += len(body)
            outcome = await app.process(http(body, peer=f"198.51.100.{n % 200}"))
            assert outcome.settlement is Settlement.REJECTED
            clock.advance(0.05)
    files = jsonl_files(path)
    written = sum(file.stat().st_size for file in files)
    records = [r for file in files for r in read_jsonl(file)]
    # 120 at once, then 2 a second for 100 s: about 320 of the 2000 are recorded
    assert 300 <= len(records) <= 330
    assert all(r["body_truncated"] and r["kind"] == "signature" for r in records)
    assert written <= len(records) * RECORD_BOUND
    assert written < 3 * MIB < received / 2000


async def test_rotation_caps_the_files_when_nothing_else_does(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    path = tmp_path / "dead.jsonl"
    limits = DeadLetterLimits(
        per_peer_per_minute=None, total_per_minute=None, rotate_bytes=256 * 1024, keep_files=2
    )
    pads = {size: b"p" * size for size in (64 * 1024, MIB)}
    async with app_with(path, clock, dead_letter_limits=limits) as app:
        for n in range(400):  # 400 records of about 2.5 KiB: 1 MB
            await app.process(http(flood_body(pads, n)))
    files = jsonl_files(path)
    assert [f.name for f in files] == ["dead.jsonl.2", "dead.jsonl.1", "dead.jsonl"]
    assert sum(f.stat().st_size for f in files) <= 3 * 256 * 1024


async def test_a_401_flood_over_http_records_a_few_per_sender(tmp_path: Path) -> None:
    """Forged 1 MiB bodies POSTed over loopback: every one answered 401, the sender's first
    20 recorded (an excerpt each), the rest counted only."""
    import aiohttp

    from tests.sources.http_app import serve

    path = tmp_path / "dead.jsonl"
    app = App(dead_letters=path, notify_keys=[KEY], shutdown_timeout=5.0)
    pads = {MIB: b"p" * MIB}
    async with serve(app) as source, aiohttp.ClientSession() as session:
        for n in range(60):
            body = io.BytesIO(flood_body(pads, n))
            async with session.post(source.url, data=body) as response:
                assert response.status == 401
    records = list(read_jsonl(path))
    assert 20 <= len(records) <= 25  # 20 at once, then one per 3 s
    assert {r["kind"] for r in records} == {"signature"}
    assert path.stat().st_size <= len(records) * RECORD_BOUND
