"""Hostile bodies at the HTTP door: any input, at any depth or size, gets a 4xx with a JSON
body or a 200, never a 5xx; every malformed body is dead-lettered once, as poison; a signature
whose expiry lies far ahead, or whose Timestamp is a string, is refused at the door.

Bounded: a few hundred generated bodies per case, from a fixed seed, over loopback.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from mpsflow import App, Context
from mpsflow.deadletter import DeadLetter, DeadLetterLimits
from mpsflow.events import WorkflowTask
from mpsflow.inbox import SQLiteInbox
from mpsflow.signing import sign
from mpsflow.sinks.memory import MemorySink
from mpsflow.testing import build_notification, media_result, sign_payload
from tests.sources.http_app import serve

KEY = "hostile-notify-key"
SEED = 1701


def signed(task_id: str, **fields: Any) -> dict[str, Any]:
    note = build_notification(
        task_id=task_id, media_results=[media_result("Transcode", output={"Path": "/o.mp4"})]
    )
    note.update(fields)
    return sign_payload(note, KEY)


def deep(opening: str, depth: int, *, inside: bool) -> bytes:
    """``depth`` nested openings, alone or as the value of a signed notification's field."""
    nest = opening * depth
    if not inside:
        return nest.encode()
    text = json.dumps(signed("deep"))
    return (text[:-1] + ', "Pad": ' + nest).encode()


def mutations(rng: random.Random, count: int) -> Iterator[bytes]:
    """Byte flips, cuts, splices and repeats of a signed notification, and oddities."""
    base = json.dumps(signed("mutated")).encode()
    for n in range(count):
        data = bytearray(base)
        kind = n % 5
        if kind == 0:  # flip a few bytes
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 1:  # cut it short
            del data[rng.randrange(1, len(data)) :]
        elif kind == 2:  # splice in structural characters
            at = rng.randrange(len(data))
            data[at:at] = rng.choice([b"[" * 300, b"{" * 300, b'"', b"\\u", b"\xff\xfe", b"\x00"])
        elif kind == 3:  # a field of an odd type
            note = json.loads(base)
            field = rng.choice(["WorkflowTaskEvent", "EventType", "Timestamp", "Sign"])
            note[field] = rng.choice([None, 1e308, -1, [], {}, "x" * 10_000, True])
            data = bytearray(json.dumps(note).encode())
        else:  # a large repeated value
            data = bytearray(b'{"EventType": "WorkflowTask", "Pad": "' + b"a" * 500_000 + b'"}')
        yield bytes(data)


async def post_all(url: str, bodies: list[bytes]) -> Counter[int]:
    """POST every body; the statuses; every non-200 answer must be a JSON error."""
    statuses: Counter[int] = Counter()
    async with aiohttp.ClientSession() as session:
        for body in bodies:
            async with session.post(url, data=body) as response:
                statuses[response.status] += 1
                if response.status != 200:
                    answer = await response.json(content_type=None)
                    assert answer["code"] == response.status
                    assert isinstance(answer["error"], str)
                    assert answer["error"]
    return statuses


def bodies() -> list[bytes]:
    rng = random.Random(SEED)
    found = [
        deep(opening, depth, inside=inside)
        for opening in ("[", '{"a":')
        for depth in (64, 5_000, 100_000)
        for inside in (False, True)
    ]
    found += list(mutations(rng, 300))
    found += [b"", b"null", b"[]", b'"text"', b"\xff" * 100, b"{" * 1_000_000]
    return found


@pytest.mark.parametrize("inbox", [False, True], ids=["processed", "inbox"])
async def test_no_input_gets_a_5xx_and_each_malformed_body_is_dead_lettered_once(
    inbox: bool, tmp_path: Any
) -> None:
    dead = MemorySink()
    unlimited = DeadLetterLimits(per_peer_per_minute=None, total_per_minute=None)  # count all
    app = App(
        notify_keys=[KEY], dead_letters=dead, shutdown_timeout=5.0, dead_letter_limits=unlimited
    )
    ran: list[str] = []
    failed_once: set[str] = set()

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        if ctx.task_id == "fails-once" and ctx.task_id not in failed_once:
            failed_once.add(ctx.task_id)  # a failure the redelivery counter remembers
            raise RuntimeError("first try")
        ran.append(ctx.task_id)

    options: dict[str, Any] = {"inbox": SQLiteInbox(tmp_path / "inbox.sqlite3")} if inbox else {}
    sent = bodies()
    async with serve(app, **options) as source:
        first = await post_all(source.url, [json.dumps(signed("fails-once")).encode()])
        statuses = await post_all(source.url, sent)
    assert not [status for status in statuses if status >= 500], statuses
    assert set(statuses) <= {200, 400, 401, 413}, statuses
    records = [r for r in dead.records if isinstance(r, DeadLetter)]
    kinds = Counter(r.kind for r in records)
    assert kinds["poison"] == statuses[400] + statuses[413]  # each once, as poison
    assert kinds["signature"] == statuses[401]
    assert all(r.body_size <= 2048 or r.body_truncated for r in records)  # excerpts only
    assert first[200 if inbox else 500] == 1


async def test_an_expiry_far_ahead_and_a_string_timestamp_are_refused_at_the_door() -> None:
    dead = MemorySink()
    app = App(notify_keys=[KEY], dead_letters=dead, shutdown_timeout=5.0)
    ran: list[str] = []

    @app.on("WorkflowTask")
    async def handler(event: WorkflowTask, ctx: Context) -> None:
        ran.append(ctx.task_id)

    now = int(time.time())
    far = build_notification(task_id="far")
    far.update(Timestamp=now + 10 * 365 * 86400, Sign=sign(now + 10 * 365 * 86400, KEY))
    forever = build_notification(task_id="forever")
    forever.update(Timestamp=999_999_999_999_999, Sign=sign(999_999_999_999_999, KEY))
    text = build_notification(task_id="text")
    text.update(Timestamp=str(now + 600), Sign=sign(now + 600, KEY))
    good = signed("good")
    async with serve(app) as source:
        statuses = await post_all(
            source.url, [json.dumps(n).encode() for n in (far, forever, text, good)]
        )
    assert statuses == Counter({401: 3, 200: 1})
    assert ran == ["good"]
    reasons = [r.reason for r in dead.records if isinstance(r, DeadLetter)]
    assert len(reasons) == 3
    assert sum("too_far_ahead" in reason for reason in reasons) == 2
    assert sum("malformed" in reason for reason in reasons) == 1
