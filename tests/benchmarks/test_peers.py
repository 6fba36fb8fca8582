"""benchmarks/peers.py: the hand-written peers do the checks the benchmark says they do.

No timing here, only behaviour: a signed sample is answered ``{"code":0}`` and handled once per
``TaskId``; a bad or expired signature is refused with 401, a body that is not JSON with 400
(FastAPI: its own 422). The FastAPI peer needs the ``bench`` extra and is skipped without it.
The mpsflow rows' counting (``scrape_metrics`` of ``mpsflow run``) is checked without wrk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from benchmarks._process import free_port
from benchmarks.http_callback import (
    KEY,
    PATH,
    TASK_MARK,
    WrkRun,
    body_template,
    running_server,
)
from benchmarks.peers import (
    DurableChecks,
    Row,
    apps,
    floor_lines,
    make_fastapi_app,
    make_orjson_app,
    make_sdk_app,
    paired_ratios,
    scrape_metrics,
    target_lines,
)
from mpsflow.dedup.stores.memory import MemoryStore
from mpsflow.signing import sign_notification


@dataclass
class Peer:
    """A peer under test: its name, how to post a body to it, the events its handler got."""

    name: str
    post: Callable[[bytes], Awaitable[tuple[int, bytes]]]
    handled: list[Any] = field(default_factory=list)


def _body(task_id: str, *, key: str = KEY, expires: int = 4_000_000_000) -> bytes:
    doc = json.loads(body_template().replace(TASK_MARK, task_id))
    sign_notification(doc, key, expires_at=expires)
    return json.dumps(doc).encode()


async def _asgi_post(app: Any, body: bytes) -> tuple[int, bytes]:
    """POST ``body`` to ``PATH`` of an ASGI ``app``; its status and body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
    }
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.fixture(params=["orjson", "orjson-durable", "sdk", "fastapi"])
async def peer(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Peer]:
    name: str = request.param
    handled: list[Any] = []

    async def handler(event: Any) -> None:
        handled.append(event)

    if name == "fastapi":
        app = make_fastapi_app(handler=handler)

        async def post_asgi(body: bytes) -> tuple[int, bytes]:
            return await _asgi_post(app, body)

        yield Peer(name, post_asgi, handled)
        return
    if name == "orjson-durable":
        durable = DurableChecks(KEY, handler, tmp_path, journal_bytes=1024 * 1024)
        try:
            async with _aiohttp_peer(name, make_orjson_app(durable=durable), handled) as found:
                yield found
        finally:
            durable.close()
        return
    factory = make_orjson_app if name == "orjson" else make_sdk_app
    async with _aiohttp_peer(name, factory(handler=handler), handled) as found:
        yield found


@contextlib.asynccontextmanager
async def _aiohttp_peer(name: str, app: web.Application, handled: list[Any]) -> AsyncIterator[Peer]:
    async with TestClient(TestServer(app)) as client:

        async def post(body: bytes) -> tuple[int, bytes]:
            headers = {"Content-Type": "application/json"}
            async with client.post(PATH, data=body, headers=headers) as response:
                return response.status, await response.read()

        yield Peer(name, post, handled)


async def test_the_durable_floor_journals_bodies_and_remembers_ids_across_a_restart(
    tmp_path: Path,
) -> None:
    handled: list[Any] = []

    async def handler(event: Any) -> None:
        handled.append(event)

    bodies = [_body("kept-1"), _body("kept-2")]
    for restart in range(2):
        durable = DurableChecks(KEY, handler, tmp_path, journal_bytes=1024 * 1024)
        try:
            async with _aiohttp_peer("durable", make_orjson_app(durable=durable), []) as peer:
                answers = await asyncio.gather(*(peer.post(body) for body in bodies * 2))
        finally:
            durable.close()
        assert [status for status, _ in answers] == [200] * 4
        assert durable.duplicates == (2 if restart == 0 else 4)  # at once, then every one
    sent = {json.loads(body)["WorkflowTaskEvent"]["TaskId"] for body in bodies}
    assert len(handled) == 2
    assert {event["TaskId"] for event in handled} == sent
    journal = (tmp_path / "journal").read_bytes()
    assert all(body in journal for body in bodies)


async def test_signed_sample_is_handled_once_per_task_id(peer: Peer) -> None:
    status, body = await peer.post(_body("task-1"))
    assert (status, json.loads(body)) == (200, {"code": 0})
    assert (await peer.post(_body("task-1")))[0] == 200  # a duplicate: answered, not handled
    assert len(peer.handled) == 1
    assert (await peer.post(_body("task-2")))[0] == 200
    assert len(peer.handled) == 2


@pytest.mark.parametrize(
    "body",
    [_body("task-1", key="another-key"), _body("task-1", expires=1_000_000_000)],
    ids=["wrong-key", "expired"],
)
async def test_bad_signature_is_refused(peer: Peer, body: bytes) -> None:
    assert (await peer.post(body))[0] == 401
    assert peer.handled == []


async def test_bad_json_is_refused(peer: Peer) -> None:
    status, _ = await peer.post(b'{"EventType": "WorkflowTask",')
    assert status == (422 if peer.name == "fastapi" else 400)
    assert peer.handled == []


def test_mpsflow_apps_configure_their_dedup() -> None:
    assert apps.default.idempotency is None  # `mpsflow run` adds its SQLite store
    assert isinstance(apps.memory.idempotency, MemoryStore)


def test_the_mpsflow_rows_count_completed_handlers_and_duplicates(tmp_path: Path) -> None:
    """What the mpsflow rows measure, without wrk: ``mpsflow run`` in its default
    configuration (the SQLite inbox and dedup) and ``scrape_metrics`` on its ``/metrics``."""
    port = free_port()
    command = [sys.executable, "-m", "mpsflow", "run", "benchmarks.peers:apps.default"]
    command += ["--http", f"127.0.0.1:{port}", "--log-level", "warning"]
    expires = int(time.time()) + 3000  # within the app's max_signature_lifetime
    bodies = [_body(f"smoke-{n}", expires=expires) for n in range(20)]
    with running_server(command, port, core=None, cwd=tmp_path):
        before = scrape_metrics(port)
        for body in [*bodies, bodies[0]]:  # the last one is a duplicate
            request = urllib.request.Request(f"http://127.0.0.1:{port}{PATH}", data=body)
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
        for _ in range(600):  # answered once in the inbox: handled right after, in the server
            after = scrape_metrics(port)
            if after.completed - before.completed >= 20 and after.duplicates > before.duplicates:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"not all handled after 30 s: {after}")
    assert (after.completed - before.completed, after.failed - before.failed) == (20, 0)
    assert after.duplicates - before.duplicates == 1


def test_paired_ratios_compare_each_round_with_its_own_peer_row() -> None:
    def row(name: str, rate: float) -> Row:
        return Row(name, rate, WrkRun(rate, int(rate), 0, "", 1.0))

    rounds = [
        {"orjson": row("orjson", 2000.0), "mpsflow": row("mpsflow", 1500.0)},
        {"orjson": row("orjson", 3000.0), "mpsflow": row("mpsflow", 1500.0)},
        {"orjson": row("orjson", 2500.0), "mpsflow": row("mpsflow", 1750.0)},
    ]
    assert paired_ratios(rounds) == [
        "- `mpsflow run` default / hand-written aiohttp+orjson, round by round:"
        " 0.75×, 0.50×, 0.70×; median 0.70× (target 0.8×)"
    ]
    assert paired_ratios(rounds[:1]) == []  # one round: nothing to pair beyond the table


def test_target_lines_give_the_ratio_by_rate_and_by_cpu_per_item() -> None:
    def row(name: str, rate: float, cpu_us: float | None) -> Row:
        return Row(name, rate, WrkRun(rate, int(rate), 0, "", 1.0), cpu_us=cpu_us)

    rows = {"orjson": row("orjson", 3000.0, 300.0), "mpsflow": row("mpsflow", 1500.0, 600.0)}
    lines = target_lines(rows)
    assert lines[0] == (
        "- `mpsflow run` default ≥ 0.8× hand-written aiohttp+orjson: measured 0.50×"
        " (missed by 38%); by server CPU per item 0.50× (600 µs against 300 µs)"
    )
    assert lines[1].endswith("measured n/a (not measured)")  # no FastAPI row
    rows["mpsflow"] = row("mpsflow", 2700.0, None)  # no /proc: the rate alone
    assert target_lines(rows)[0].endswith("measured 0.90× (met by 12%)")


def test_floor_lines_scale_the_durable_floor_and_the_default() -> None:
    def row(name: str, rate: float, cpu_us: float) -> Row:
        return Row(name, rate, WrkRun(rate, int(rate), 0, "", 1.0), cpu_us=cpu_us)

    rows = {
        "orjson": row("orjson", 4000.0, 250.0),
        "orjson-durable": row("orjson-durable", 3000.0, 333.0),
        "mpsflow": row("mpsflow", 1500.0, 666.0),
    }
    assert floor_lines(rows) == [
        "- for scale: the durable floor is 0.75× hand-written aiohttp+orjson; by server CPU per"
        " item 0.75× (333 µs against 250 µs)",
        "- for scale: `mpsflow run` default is 0.50× the durable floor; by server CPU per item"
        " 0.50× (666 µs against 333 µs)",
    ]
    del rows["orjson-durable"]
    assert floor_lines(rows) == []
