"""The HTTP callback source end to end: a real server on loopback, aiohttp as the client."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from mpsflow import App, Context, Delivery, Outcome, Reject, RetryPolicy, Settlement
from mpsflow._listen import listen
from mpsflow.errors import ConfigurationError, StartupError
from mpsflow.events.subtasks import EVENT_KEYS, LIVE_KEYS
from mpsflow.observability.health import Readiness
from mpsflow.observability.metrics import InMemoryMetrics
from mpsflow.observability.workers import WorkerMetrics
from mpsflow.sources.http import HttpSource
from mpsflow.sources.runtime import SourceRuntime
from mpsflow.testing import build_notification, sign_payload
from tests.plugins.samples import SAMPLE_KEY
from tests.sources.http_app import base_url, make_app, posted, records, seed_like, serve


def recording_app() -> tuple[App, list[str]]:
    """An app with a handler on every event and live key, recording what reached them."""
    app, _ = make_app()
    seen: list[str] = []

    async def record(event: Any, ctx: Context) -> None:
        seen.append(ctx.key)

    for key in (*EVENT_KEYS, *LIVE_KEYS):
        app.on(key, name=f"record_{key}")(record)
    return app, seen


# -- every sample ------------------------------------------------------------------------------


async def acked_keys(body: bytes) -> list[str]:
    """POST ``body`` to a ``recording_app``, check that it is acked, and return the keys run."""
    app, seen = recording_app()
    async with posted(app, body) as response:
        assert response.status == 200
        assert await response.json() == {"code": 0}
        assert response.headers["X-Request-Id"]
    return seen


async def test_every_task_sample_is_acked(sample_bytes: bytes) -> None:
    assert await acked_keys(sample_bytes) == [json.loads(sample_bytes)["EventType"]]


async def test_every_live_sample_is_acked(live_sample_bytes: bytes) -> None:
    keys = await acked_keys(live_sample_bytes)
    assert keys == [json.loads(live_sample_bytes)["NotificationType"]]


async def test_wrapped_and_url_encoded_bodies_are_accepted(seed_sample: bytes) -> None:
    app, seen = recording_app()
    wrapped = b'{"Response": ' + seed_sample + b"}"
    percent = urllib.parse.quote(seed_sample.decode()).encode()
    form = urllib.parse.urlencode({"notification": seed_sample.decode()}).encode()
    async with serve(app) as source, aiohttp.ClientSession() as session:
        for body, content_type in (
            (wrapped, "application/json"),
            (percent, "text/plain"),
            (form, "application/x-www-form-urlencoded"),
        ):
            headers = {"Content-Type": content_type}
            async with session.post(source.url, data=body, headers=headers) as response:
                assert response.status == 200, await response.text()
    assert seen == ["WorkflowTask"] * 3


async def test_request_id_and_remote_address_reach_the_delivery() -> None:
    app, _ = make_app()
    seen: list[tuple[str, str, float | None]] = []

    @app.on("WorkflowTask")
    async def handler(event: Any, ctx: Context) -> None:
        delivery = ctx.delivery
        seen.append((delivery.id, delivery.meta["remote"], delivery.deadline))

    async with serve(app, handler_budget=42.0) as source, aiohttp.ClientSession() as session:
        before = time.monotonic()
        headers = {"X-Request-Id": "req-123"}
        async with session.post(source.url, data=seed_like(), headers=headers) as response:
            assert response.status == 200
            assert response.headers["X-Request-Id"] == "req-123"
    [(request_id, remote, deadline)] = seen
    assert request_id == "req-123"
    assert remote == "127.0.0.1"
    assert deadline is not None
    assert before + 42.0 <= deadline <= time.monotonic() + 42.0


# -- malformed ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (
            b'{"EventType": "WorkflowTask", "WorkflowTaskEvent": {"TaskId": 5}}',
            "$.WorkflowTaskEvent.TaskId",
        ),
        (b'{"EventType": "WorkflowTask", ', "$"),
        (b"not json at all", "$"),
    ],
    ids=["wrong-type", "truncated", "garbage"],
)
async def test_malformed_body_is_400_with_path_and_dead_lettered(body: bytes, path: str) -> None:
    app, dead = make_app()
    async with posted(app, body) as response:
        assert response.status == 400
        error = await response.json()
    assert error["code"] == 400
    assert error["path"] == path
    assert error["error"]
    assert "Traceback" not in error["error"]
    [record] = records(dead)
    assert record.kind == "poison"
    assert record.raw_body() == body


async def test_unknown_paths_and_methods_get_json_errors() -> None:
    app, _ = make_app()
    async with serve(app) as source, aiohttp.ClientSession() as session:
        async with session.get(source.url) as response:
            assert response.status == 405
            assert response.headers["Allow"] == "POST"
            assert (await response.json())["code"] == 405
        async with session.post(base_url(source) + "/elsewhere", data=b"{}") as response:
            assert response.status == 404
            assert (await response.json())["code"] == 404


# -- failures, redelivery, dead letters ----------------------------------------------------------


async def test_handler_failure_is_5xx_then_redelivery_succeeds() -> None:
    app, dead = make_app()
    calls: list[int] = []

    @app.on("WorkflowTask")
    async def flaky(event: Any, ctx: Context) -> None:
        calls.append(ctx.delivery.attempt)
        if len(calls) == 1:
            raise RuntimeError("database is down")

    body = seed_like()
    async with serve(app) as source, aiohttp.ClientSession() as session:
        async with session.post(source.url, data=body) as response:
            assert response.status == 500
            error = await response.json()
            assert int(response.headers["Retry-After"]) >= 1
        assert "Traceback" not in json.dumps(error)
        async with session.post(source.url, data=body) as response:
            assert response.status == 200
            assert await response.json() == {"code": 0}
    assert calls == [1, 2]
    assert records(dead) == []
    assert len(source.redeliveries) == 0


async def test_resends_run_out_into_the_dead_letter_sink_then_200() -> None:
    app, dead = make_app(retry=RetryPolicy(max_attempts=3))
    attempts: list[int] = []

    @app.on("WorkflowTask")
    async def broken(event: Any, ctx: Context) -> None:
        attempts.append(ctx.delivery.attempt)
        raise RuntimeError("still broken")

    body = seed_like()
    statuses: list[int] = []
    async with serve(app) as source, aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.post(source.url, data=body) as response:
                statuses.append(response.status)
    assert statuses == [500, 500, 200]
    assert attempts == [1, 2, 3]
    [record] = records(dead)
    assert record.kind == "exhausted"
    assert record.attempt == 3
    assert record.source == "http"


async def test_resend_signed_afresh_counts_as_the_same_notification() -> None:
    app, dead = make_app(retry=RetryPolicy(max_attempts=2))

    @app.on("WorkflowTask")
    async def broken(event: Any, ctx: Context) -> None:
        raise RuntimeError("still broken")

    doc = build_notification(task_id="t-resigned")
    async with serve(app) as source, aiohttp.ClientSession() as session:
        for expires in (2_000_000_000, 2_000_000_600):
            body = json.dumps(sign_payload(dict(doc), "k", expires_at=expires)).encode()
            async with session.post(source.url, data=body) as response:
                last = response.status
    assert last == 200
    assert [r.kind for r in records(dead)] == ["exhausted"]


async def test_handler_reject_is_dead_lettered_and_acked() -> None:
    app, dead = make_app()

    @app.on("WorkflowTask")
    async def refuse(event: Any, ctx: Context) -> None:
        raise Reject("no such asset")

    async with posted(app, seed_like()) as response:
        assert response.status == 200
        assert await response.json() == {"code": 0}
    [record] = records(dead)
    assert record.kind == "rejected"


# -- signatures --------------------------------------------------------------------------------


async def test_signed_notification_is_accepted_and_bad_signature_is_401() -> None:
    app, dead = make_app(notify_keys=[SAMPLE_KEY])
    handled: list[str] = []

    @app.on("WorkflowTask")
    async def handler(event: Any, ctx: Context) -> None:
        handled.append(ctx.task_id)

    expires = int(time.time()) + 600
    good = build_notification(task_id="t-good", sign_key=SAMPLE_KEY, expires_at=expires)
    bad = build_notification(task_id="t-bad", sign_key="another-key", expires_at=expires)
    async with serve(app) as source, aiohttp.ClientSession() as session:
        async with session.post(source.url, data=json.dumps(good).encode()) as response:
            assert response.status == 200
        async with session.post(source.url, data=json.dumps(bad).encode()) as response:
            assert response.status == 401
            error = await response.json()
    assert handled == ["t-good"]
    assert error["code"] == 401
    assert SAMPLE_KEY not in json.dumps(error)
    assert [r.kind for r in records(dead)] == ["signature"]


# -- health, readiness, metrics ----------------------------------------------------------------


async def test_healthz_and_readyz() -> None:
    app, _ = make_app()
    healthy = True

    async def store_answers() -> bool:
        return healthy

    app.readiness_checks.append(store_answers)
    async with serve(app) as source, aiohttp.ClientSession() as session:
        async with session.get(base_url(source) + "/healthz") as response:
            assert response.status == 200
        async with session.get(base_url(source) + "/readyz") as response:
            assert response.status == 200
            assert (await response.json())["ready"] is True
        healthy = False
        async with session.get(base_url(source) + "/readyz") as response:
            assert response.status == 503
            assert "store_answers" in (await response.json())["reason"]


async def test_a_wrapped_consumer_keeps_the_apps_readiness_and_metrics() -> None:
    """The source knows the app only through its runtime, never through ``app.process``.

    A consumer that is not the app's bound method (here a wrapper noting each outcome) used
    to make ``/readyz`` answer 200 despite a failing check and ``/metrics`` answer 404.
    """
    app, _ = make_app()
    seen: list[Settlement] = []

    async def store_answers() -> bool:
        return False

    app.readiness_checks.append(store_answers)

    @app.on("WorkflowTask")
    async def handler(event: Any, ctx: Context) -> None:
        return None

    async def noting(delivery: Delivery) -> Outcome:
        outcome = await app.process(delivery)
        seen.append(outcome.settlement)
        return outcome

    source = HttpSource(port=0)
    stop = anyio.Event()
    async with app, aiohttp.ClientSession() as session, anyio.create_task_group() as tg:
        tg.start_soon(source.run, app.source_runtime(stop, consumer=noting))
        await source.wait_serving()
        async with session.post(source.url, data=seed_like()) as response:
            assert response.status == 200
        async with session.get(base_url(source) + "/readyz") as response:
            assert response.status == 503
            assert await response.json() == {
                "ready": False,
                "reason": "readiness check failed: "
                + "test_a_wrapped_consumer_keeps_the_apps_readiness_and_metrics"
                + ".<locals>.store_answers",
            }
        async with session.get(base_url(source) + "/metrics") as response:
            assert response.status == 200
            lines = set((await response.text()).splitlines())
        stop.set()
    assert seen == [Settlement.ACK]
    assert 'mpsflow_deliveries_total{source="http",outcome="ack"} 1' in lines
    assert 'mpsflow_http_callback_responses_total{code="200"} 1' in lines


async def test_a_hand_built_runtime_is_all_the_source_uses() -> None:
    """No app at all: the limit, readiness and metrics all come from the runtime."""
    metrics = InMemoryMetrics()
    metrics.delivery_started("http")
    metrics.delivery("http", "ack", 0.001)
    bodies: list[bytes | Any] = []

    async def consumer(delivery: Delivery) -> Outcome:
        bodies.append(delivery.body)
        return Outcome(Settlement.ACK)

    async def not_yet() -> Readiness:
        return Readiness(False, "warming up")

    stop = anyio.Event()
    runtime = SourceRuntime(
        consumer=consumer, stop=stop, max_body_size=64, metrics=metrics, readiness=not_yet
    )
    source = HttpSource(port=0)
    async with aiohttp.ClientSession() as session, anyio.create_task_group() as tg:
        tg.start_soon(source.run, runtime)
        await source.wait_serving()
        async with session.post(source.url, data=b"{}") as response:
            assert response.status == 200
        async with session.post(source.url, data=b"x" * 65) as response:
            assert response.status == 413
        async with session.get(base_url(source) + "/readyz") as response:
            assert response.status == 503
            assert await response.json() == {"ready": False, "reason": "warming up"}
        async with session.get(base_url(source) + "/metrics") as response:
            assert response.status == 200
            assert 'mpsflow_deliveries_total{source="http",outcome="ack"} 1' in (
                await response.text()
            )
        stop.set()
    assert bodies == [b"{}"]


async def test_metrics_count_what_was_sent() -> None:
    app, _ = make_app()

    @app.on("Transcode")
    async def transcoded(result: Any, ctx: Context) -> None:
        if ctx.task_id == "t-fail":
            raise RuntimeError("boom")

    async with serve(app) as source, aiohttp.ClientSession() as session:
        for n in range(5):
            async with session.post(source.url, data=seed_like(f"t-{n}")) as response:
                assert response.status == 200
        async with session.post(source.url, data=seed_like("t-fail")) as response:
            assert response.status == 500
        async with session.post(source.url, data=b"{broken") as response:
            assert response.status == 400
        async with session.get(base_url(source) + "/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await response.text()
    lines = set(text.splitlines())
    assert {
        'mpsflow_deliveries_total{source="http",outcome="ack"} 5',
        'mpsflow_deliveries_total{source="http",outcome="retry"} 1',
        'mpsflow_deliveries_total{source="http",outcome="dead_lettered"} 1',
        'mpsflow_handler_runs_total{key="Transcode",outcome="ok"} 5',
        'mpsflow_handler_runs_total{key="Transcode",outcome="error"} 1',
        'mpsflow_dead_letters_total{kind="poison"} 1',
        'mpsflow_http_callback_responses_total{code="200"} 5',
        'mpsflow_http_callback_responses_total{code="500"} 1',
        'mpsflow_http_callback_responses_total{code="400"} 1',
    } <= lines
    assert "mpsflow_delivery_duration_seconds_count 7" in lines


async def test_workers_sharing_a_metrics_dir_answer_with_the_combined_counts(
    tmp_path: Path,
) -> None:
    """A peer worker's published counters are added to this one's (``run --workers``)."""
    peer = WorkerMetrics(tmp_path, pid=os.getppid())  # a live process standing in for a peer
    published = InMemoryMetrics()
    for _ in range(3):
        published.delivery_started("http")
        published.delivery("http", "ack", 0.01)
    peer.publish(published, {200: 3, 503: 2})
    app, _ = make_app()

    @app.on("WorkflowTask")
    async def handler(event: Any, ctx: Context) -> None:
        return None

    async with serve(app, metrics_dir=tmp_path) as source, aiohttp.ClientSession() as session:
        for n in range(2):
            async with session.post(source.url, data=seed_like(f"t-{n}")) as response:
                assert response.status == 200
        async with session.get(base_url(source) + "/metrics") as response:
            lines = set((await response.text()).splitlines())
    assert 'mpsflow_deliveries_total{source="http",outcome="ack"} 5' in lines
    assert 'mpsflow_http_callback_responses_total{code="200"} 5' in lines
    assert 'mpsflow_http_callback_responses_total{code="503"} 2' in lines
    # on stop the source leaves its final counts for the workers still serving
    total, _ = WorkerMetrics(tmp_path, pid=1).combined(InMemoryMetrics(), {})
    assert total.deliveries == {("http", "ack"): 5}


async def test_with_other_metrics_a_metrics_dir_combines_the_answers_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The answers by status are the source's own, and combined across workers whatever the
    app's metrics; ``PrometheusMetrics`` outside multiprocess mode show this worker's counts,
    which is said once at the start."""
    from mpsflow.observability.prometheus import PrometheusMetrics

    peer = WorkerMetrics(tmp_path, pid=os.getppid())  # a live process standing in for a peer
    peer.publish(InMemoryMetrics(), {200: 3})
    app, _ = make_app(metrics=PrometheusMetrics())

    @app.on("WorkflowTask")
    async def handler(event: Any, ctx: Context) -> None:
        return None

    async with serve(app, metrics_dir=tmp_path) as source, aiohttp.ClientSession() as session:
        async with session.post(source.url, data=seed_like("t-1")) as response:
            assert response.status == 200
        async with session.get(base_url(source) + "/metrics") as response:
            lines = set((await response.text()).splitlines())
    assert 'mpsflow_http_callback_responses_total{code="200"} 4' in lines
    assert 'mpsflow_deliveries_total{outcome="ack",source="http"} 1.0' in lines  # its own
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "PrometheusMetrics" in warning.getMessage()
    assert "PROMETHEUS_MULTIPROC_DIR" in warning.getMessage()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"path": "mps"}, "must start with '/'"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_body_size": 0}, "max_body_size"),
        ({"read_timeout": 0}, "read_timeout"),
        ({"drain_delay": -1}, "drain_delay"),
        ({"metrics_interval": 0}, "metrics_interval"),
        ({"keyfile": "key.pem"}, "keyfile needs certfile"),
    ],
)
def test_bad_options_are_configuration_errors(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        HttpSource(**options)


async def test_metrics_with_prometheus_client() -> None:
    from mpsflow.observability.prometheus import PrometheusMetrics

    app, _ = make_app(metrics=PrometheusMetrics())

    @app.on("WorkflowTask")
    async def handler(event: Any, ctx: Context) -> None:
        return None

    async with serve(app) as source, aiohttp.ClientSession() as session:
        for n in range(3):
            async with session.post(source.url, data=seed_like(f"t-{n}")) as response:
                assert response.status == 200
        async with session.get(base_url(source) + "/metrics") as response:
            text = await response.text()
    lines = set(text.splitlines())
    assert 'mpsflow_deliveries_total{outcome="ack",source="http"} 3.0' in lines
    assert 'mpsflow_delivery_duration_seconds_count{source="http"} 3.0' in lines
    assert 'mpsflow_http_callback_responses_total{code="200"} 3' in lines


# -- startup failures --------------------------------------------------------------------------


async def test_a_port_in_use_is_a_startup_error_that_says_what_to_do() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(StartupError) as raised:
            listen("127.0.0.1", port)
        assert str(raised.value) == (
            f"cannot listen on 127.0.0.1:{port}: address already in use (is another mpsflow "
            "running? pick another port with --http HOST:PORT)"
        )
        assert isinstance(raised.value.__cause__, OSError)

        app, _ = make_app()
        source = HttpSource("127.0.0.1", port)
        with pytest.raises(StartupError) as ended:  # app.run ends: no restart loop
            await app.run(source, handle_signals=False)
        assert str(ended.value) == str(raised.value)


async def test_an_unknown_host_is_a_startup_error() -> None:
    with pytest.raises(StartupError, match=r"^cannot listen on no-such-host\.invalid:0: unknown"):
        listen("no-such-host.invalid", 0)
