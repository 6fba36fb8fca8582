"""``mpsflow send`` against a real HTTP source and the local CMQ server: fresh signatures,
repeats, rate, batches, a summary, and answers that say no."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from aiohttp import web

from mpsflow import App, Context
from mpsflow.cli import build_parser
from mpsflow.cli.send import Pacer, SendItem, signed_body
from mpsflow.clock import FakeClock
from mpsflow.devservers.cmq import CmqServer
from mpsflow.tencentcloud.cmq.client import CmqClient
from mpsflow.tencentcloud.cmq.credentials import Credential
from tests.plugins.cmq_server import (
    CMQ_SECRET_ID,
    CMQ_SECRET_KEY,
    CmqServerFactory,
    SilentEndpoint,
)
from tests.plugins.samples import LIVE_SAMPLE_PATHS, SAMPLE_KEY, SAMPLE_PATHS
from tests.process_output import Output
from tests.sinks.peers import serve as serve_peer
from tests.sources.http_app import make_app, seed_like, serve

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}


async def send(*args: str) -> tuple[int, str, str]:
    """Run ``python -m mpsflow send ARGS`` without blocking the server in this process."""
    result = await anyio.run_process(
        [sys.executable, "-m", "mpsflow", "send", *args], env=ENV, check=False
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def send_to(app: App, *args: str) -> tuple[int, str, str]:
    """``send`` to ``app``, served on loopback for the run (its URL the first argument)."""
    async with serve(app) as source:
        return await send(source.url, *args)


def task_ids(app: App, key: str) -> list[str]:
    """The task ids a handler on ``key``, registered on ``app`` now, will be called with."""
    seen: list[str] = []

    @app.on(key)
    async def handler(event: Any, ctx: Context) -> None:
        seen.append(ctx.task_id)

    return seen


def summary(stdout: str) -> dict[str, int]:
    """The status-code lines of the summary: ``{"200": 20, ...}``."""
    counts: dict[str, int] = {}
    for line in stdout.splitlines()[1:]:
        status, _, count = line.strip().rpartition(": ")
        counts[status] = int(count)
    return counts


def progress(stderr: str) -> list[str]:
    """The plain progress lines (``3/10 done: 2 sent, 1 failed``), not on a terminal."""
    return [line for line in stderr.splitlines() if re.fullmatch(r"\d+/\d+ done: .*", line)]


async def test_send_signs_afresh_and_summarises(samples_dir: Path) -> None:
    app, dead = make_app(notify_keys=[SAMPLE_KEY])
    seen = task_ids(app, "WorkflowTask")
    code, out, err = await send_to(
        app,
        str(samples_dir),
        str(samples_dir / "live"),
        "--sign-key",
        SAMPLE_KEY,
        "--repeat",
        "2",
        "--concurrency",
        "4",
    )
    total = 2 * (len(SAMPLE_PATHS) + len(LIVE_SAMPLE_PATHS))
    assert code == 0, out + err
    assert out.splitlines()[0].startswith(f"sent {total} notification(s) in ")
    assert summary(out) == {"200": total}
    assert progress(err)[-1] == f"{total}/{total} done: {total} sent, 0 failed"
    workflow_samples = [
        p
        for p in SAMPLE_PATHS
        if b'"EventType":"WorkflowTask"' in p.read_bytes().replace(b" ", b"")
    ]
    assert len(seen) == 2 * len(workflow_samples)
    assert SAMPLE_KEY not in out + err
    assert dead.records == []


async def test_send_reports_failures_and_exits_non_zero(samples_dir: Path) -> None:
    app, _ = make_app(notify_keys=[SAMPLE_KEY])
    # The samples' own signatures expired long ago: sent as they are, they are refused.
    code, out, err = await send_to(app, str(samples_dir / "07_edit_media_task_failure.json"))
    assert code == 1
    assert out.startswith("tried to send 1 notification(s) in ")
    assert summary(out) == {"401 (signature expired)": 1}
    assert "refused the signatures: send with --sign-key set to one of the app's" in err


@pytest.mark.parametrize("two_hours", ["7200", "2h", "120m"])
async def test_a_timestamp_too_far_ahead_is_not_blamed_on_the_key(
    samples_dir: Path, two_hours: str
) -> None:
    """Signed with the right key, but for two hours: the hint is about --expires-in."""
    app, _ = make_app(notify_keys=[SAMPLE_KEY])
    sample = str(samples_dir / "07_edit_media_task_failure.json")
    code, out, err = await send_to(app, sample, "--sign-key", SAMPLE_KEY, "--expires-in", two_hours)
    assert code == 1
    assert summary(out) == {"401 (signature too_far_ahead)": 1}
    assert "refused the signatures' Timestamp: keep --expires-in above 0 and within an hour" in err
    assert "send with --sign-key set to" not in err


async def test_a_signature_sent_already_expired_is_refused_as_expired(samples_dir: Path) -> None:
    app, _ = make_app(notify_keys=[SAMPLE_KEY])
    sample = str(samples_dir / "07_edit_media_task_failure.json")
    code, out, err = await send_to(app, sample, "--sign-key", SAMPLE_KEY, "--expires-in=-1m")
    assert code == 1
    assert summary(out) == {"401 (signature expired)": 1}
    assert "refused the signatures' Timestamp" in err  # the hint is about --expires-in


def test_expires_in_that_is_no_duration_is_a_wrong_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["send", "http://127.0.0.1:9/", "x.json", "--expires-in", "1y"])
    assert stopped.value.code == 2
    assert "expected a duration such as 600, 10m or 1h" in capsys.readouterr().err


async def test_a_wrong_key_gets_the_key_hint(samples_dir: Path) -> None:
    app, _ = make_app(notify_keys=[SAMPLE_KEY])
    sample = str(samples_dir / "07_edit_media_task_failure.json")
    code, out, err = await send_to(app, sample, "--sign-key", "not-the-key")
    assert code == 1
    assert summary(out) == {"401 (signature mismatch)": 1}
    assert "refused the signatures: send with --sign-key set to one of the app's" in err


async def test_options_may_come_between_the_url_and_the_files(samples_dir: Path) -> None:
    app, _ = make_app(notify_keys=[SAMPLE_KEY])
    handled = task_ids(app, "EditMediaTask")
    sample = str(samples_dir / "06_edit_media_task_success.json")
    async with serve(app) as source:
        code, out, err = await send(source.url, "--sign-key", SAMPLE_KEY, sample)
        assert code == 0, out + err
        code, out, err = await send(source.url, "--sign-key", SAMPLE_KEY, sample, "--bogus")
    assert code == 2
    assert "unrecognized arguments: --bogus" in err
    assert len(handled) == 1


async def test_a_wrong_path_says_where_the_app_takes_notifications(samples_dir: Path) -> None:
    app, _ = make_app()
    async with serve(app) as source:
        url = source.url.replace("/mps/callback", "/callback")
        code, out, err = await send(url, str(samples_dir / "06_edit_media_task_success.json"))
    assert code == 1
    assert summary(out) == {"404": 1}
    assert f"{url} has nothing at /callback: an mpsflow app takes notifications at" in err
    assert "/mps/callback" in err


async def test_send_with_a_rate_sends_them_all(samples_dir: Path) -> None:
    app, _ = make_app()
    handled = task_ids(app, "EditMediaTask")
    code, out, _ = await send_to(
        app,
        str(samples_dir / "06_edit_media_task_success.json"),
        "--repeat",
        "5",
        "--rate",
        "50",
        "--concurrency",
        "5",
    )
    assert code == 0, out
    assert summary(out) == {"200": 5}
    assert len(handled) == 5


async def test_pacer_spaces_requests_across_senders() -> None:
    clock = FakeClock()
    pacer = Pacer(20.0, clock)
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(pacer.wait)
    # the first goes at once; the others follow 1/20 s apart, whoever sends them
    assert clock.sleeps == pytest.approx([0.05] * 4)
    assert clock.monotonic() == pytest.approx(0.2)
    unlimited = Pacer(None, clock)
    await unlimited.wait()
    assert len(clock.sleeps) == 4


async def test_send_to_nothing_counts_connection_errors(tmp_path: Path, seed_sample: bytes) -> None:
    body = tmp_path / "seed.json"
    body.write_bytes(seed_sample)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # a port nobody listens on
    code, out, err = await send(f"http://127.0.0.1:{port}/mps/callback", str(body))
    assert code == 1
    [(status, count)] = summary(out).items()
    assert status.startswith("error (")
    assert count == 1
    assert (
        f"mpsflow send: cannot connect to 127.0.0.1:{port} (connection refused): is `mpsflow run "
        f"APP --http 127.0.0.1:{port}` running there" in err
    )


async def test_send_to_a_url_that_never_answers_stops_after_the_first_timeouts(
    silent_cmq: SilentEndpoint, tmp_path: Path, seed_sample: bytes
) -> None:
    """A port that takes connections and never answers costs one --timeout, not one per round
    of --concurrency: once the requests in flight go unanswered, with nothing answered before,
    no more are started, the rest are counted as not sent, and one line says what to check."""
    body = tmp_path / "seed.json"
    body.write_bytes(seed_sample)
    silent = silent_cmq  # nothing about it is CMQ's: it never answers anything
    code, out, err = await send(
        f"{silent.url}/mps/callback",
        *(str(body), "--repeat", "20", "--concurrency", "2", "--timeout", "0.5"),
    )
    assert code == 1
    counts = summary(out)
    errors = sum(n for status, n in counts.items() if status.startswith("error ("))
    assert (errors, counts.pop("not sent (the URL did not answer)", 0)) == (2, 18), out
    assert silent.connections() == 2  # the two in flight: none started after
    assert progress(err)[-1] == "20/20 done: 0 sent, 20 failed"
    where = silent.url.split("//", 1)[1]
    [line] = [line for line in err.splitlines() if "has answered no request" in line]
    assert line.startswith(f"mpsflow send: {where} did not answer within 0.5s")
    assert line.endswith("check that the app there is running and not stuck, or raise --timeout")


async def test_a_url_that_answered_once_gets_every_request_however_late(
    tmp_path: Path, seed_sample: bytes
) -> None:
    """No early stop once the URL has answered anything (here a 500): the requests that then
    get no answer in time do not stop the others."""
    body = tmp_path / "seed.json"
    body.write_bytes(seed_sample)
    received = 0
    released = anyio.Event()

    async def callback(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        received += 1
        if received > 1:
            await released.wait()  # too late: the sender's --timeout passes first
        return web.json_response({"code": 500, "error": "broken"}, status=500)

    server = web.Application()
    server.router.add_post("/cb", callback)
    async with serve_peer(server) as base:
        code, out, err = await send(
            f"{base}/cb",
            *(str(body), "--repeat", "4", "--concurrency", "1", "--timeout", "0.5"),
        )
        released.set()  # the server's shutdown waits for its handlers
    assert code == 1
    assert received == 4
    counts = summary(out)
    assert counts.pop("500 (broken)") == 1
    [(status, n)] = counts.items()
    assert (status.startswith("error ("), n) == (True, 3), out
    assert "has answered no request" not in err
    assert progress(err)[-1] == "4/4 done: 0 sent, 4 failed"


async def test_https_to_a_plain_http_app_says_to_send_to_http(samples_dir: Path) -> None:
    app, _ = make_app()
    sample = str(samples_dir / "07_edit_media_task_failure.json")
    async with serve(app) as source:
        url = source.url.replace("http://", "https://", 1)
        code, out, err = await send(url, sample)
    assert code == 1
    [(status, _)] = summary(out).items()
    assert status.startswith("error (")
    where = url.split("/")[2]
    assert f"cannot connect to {where} over TLS (" in err
    assert f"an app run with --http {where} and no --certfile serves plain HTTP;" in err
    assert f"send to {source.url}" in err


async def test_a_body_that_cannot_be_signed_says_what_it_is(tmp_path: Path) -> None:
    """With a key, each body that is not a JSON object is named, with what it is instead (not
    JSON at all, or JSON of another kind), and sent unsigned, as it is."""
    broken, array = tmp_path / "broken.json", tmp_path / "array.json"
    broken.write_bytes(b"{nope")
    array.write_bytes(b"[1, 2]")
    async with answering(b'{"code":0}') as url:
        code, out, err = await send(url, str(broken), str(array), "--sign-key", "k")
    assert code == 0, out + err
    assert summary(out) == {"200": 2}
    unsigned = "; sending it unsigned, as it is"
    lines = [line.removesuffix(unsigned) for line in err.splitlines() if line.endswith(unsigned)]
    assert len(lines) == 2, err
    assert lines[0].startswith(f"{broken} is not valid JSON (")
    assert lines[1] == f"{array} is JSON but not an object (an array)"


def test_signed_body_is_the_way_mps_signs(seed_sample: bytes) -> None:
    doc = json.loads(seed_sample)
    item = SendItem("seed", seed_sample, doc)
    before = int(time.time())
    signed = json.loads(signed_body(item, "secret", 600))
    assert before + 600 <= signed["Timestamp"] <= int(time.time()) + 600
    expected = hashlib.md5(f"{signed['Timestamp']}secret".encode()).hexdigest()
    assert signed["Sign"] == expected
    assert signed["WorkflowTaskEvent"] == doc["WorkflowTaskEvent"]
    assert signed_body(item, None, 600) == seed_sample  # no key: the bytes go as they are
    assert "Sign" not in doc  # the loaded document is not changed


def test_send_with_no_notifications(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mpsflow.cli import main

    assert main(["send", "http://127.0.0.1:9/x", str(tmp_path)]) == 2
    assert "no notifications found" in capsys.readouterr().err


def test_send_a_missing_file_is_a_wrong_command_line(
    tmp_path: Path, seed_sample: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 and one line, before anything is sent (the existing file is not sent either)."""
    from mpsflow.cli import main

    (tmp_path / "one.json").write_bytes(seed_sample)
    missing = tmp_path / "typo.json"
    argv = ["send", "http://127.0.0.1:9/x", str(tmp_path / "one.json"), str(missing)]
    assert main(argv) == 2
    assert (
        capsys.readouterr().err.strip() == f"mpsflow send: error: no such file or folder: {missing}"
    )


# -- answers that say no ----------------------------------------------------------------------


@asynccontextmanager
async def answering(body: bytes, status: int = 200) -> AsyncIterator[str]:
    """A callback URL on loopback that answers every POST with ``status`` and ``body``."""

    async def callback(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, body=body, content_type="application/json")

    server = web.Application()
    server.router.add_post("/cb", callback)
    async with serve_peer(server) as base:
        yield f"{base}/cb"


@pytest.mark.parametrize(
    ("answer", "key", "ok"),
    [
        (b'{"code":0}', "200", True),
        (b"OK", "200", True),  # not JSON: the status says it all
        (b'{"code":"0"}', "200", True),
        (b'{"code":1,"error":"not today"}', "200 code 1 (not today)", False),
        (b'{"code":4100,"message":"auth\\nfailed","requestId":"r-1"}', "200 code 4100", False),
    ],
    ids=["code 0", "not JSON", "not a number", "a refusal", "a CMQ error"],
)
async def test_a_2xx_whose_json_carries_a_non_zero_code_is_a_failure(
    tmp_path: Path, seed_sample: bytes, answer: bytes, key: str, ok: bool
) -> None:
    body = tmp_path / "seed.json"
    body.write_bytes(seed_sample)
    async with answering(answer) as url:
        code, out, err = await send(url, str(body))
    assert code == (0 if ok else 1), out + err
    [(status, count)] = summary(out).items()
    assert (status.startswith(key), count) == (True, 1), out
    assert "\n" not in status
    assert ("--cmq ENDPOINT --queue NAME" in err) == (b"requestId" in answer)


async def test_a_refusal_of_a_field_says_which_field(tmp_path: Path) -> None:
    """An mpsflow app answers a body it cannot decode 400 with the ``error`` and the ``path`` of
    the field: the summary names the field too, the same fault in two fields counted apart and
    each field's answers together."""
    app, _ = make_app()
    for field in ("Progress", "ErrCode"):
        doc = json.loads(seed_like())
        doc["WorkflowTaskEvent"]["MediaProcessResultSet"][0]["TranscodeTask"][field] = "half"
        (tmp_path / f"{field}.json").write_text(json.dumps(doc))
    code, out, err = await send_to(app, str(tmp_path), "--repeat", "2")
    assert code == 1, out + err
    counts = summary(out)
    assert all(answer.startswith("400 (") and answer.endswith(")") for answer in counts), out
    fields = {answer[:-1].rpartition(" at ")[2]: n for answer, n in counts.items()}
    where = "$.WorkflowTaskEvent.MediaProcessResultSet[0].TranscodeTask"
    assert fields == {f"{where}.Progress": 2, f"{where}.ErrCode": 2}


async def test_the_progress_lines_count_refusals_as_failed_not_sent(
    tmp_path: Path, seed_sample: bytes
) -> None:
    body = tmp_path / "seed.json"
    body.write_bytes(seed_sample)
    async with answering(b'{"code":1,"error":"not today"}') as url:
        code, out, err = await send(url, str(body), "--repeat", "3", "--concurrency", "1")
    assert code == 1
    assert summary(out) == {"200 code 1 (not today)": 3}
    assert progress(err) == [f"{n}/3 done: 0 sent, {n} failed" for n in (1, 2, 3)]


async def test_send_to_the_cmq_api_as_a_callback_is_a_failure_that_says_what_to_do(
    cmq_server: CmqServer, tmp_path: Path, seed_sample: bytes
) -> None:
    # The trap: the CMQ API answers every error with HTTP 200 and a code in the body.
    body = tmp_path / "seed.json"
    body.write_bytes(seed_sample)
    code, out, err = await send(f"{cmq_server.url}/v2/index.php", str(body))
    assert code == 1
    [(status, count)] = summary(out).items()
    assert status.startswith("200 code 4100 (")
    assert count == 1
    assert "mpsflow send: the answers come from a CMQ API, not a callback" in err
    assert "mpsflow send --cmq ENDPOINT --queue NAME" in err


# -- onto a CMQ queue -------------------------------------------------------------------------

QUEUE = "mps-events"


def cmq_env(secret_key: str = CMQ_SECRET_KEY) -> dict[str, str]:
    env = {k: v for k, v in ENV.items() if not k.startswith("TENCENTCLOUD_")}
    return {**env, "TENCENTCLOUD_SECRETID": CMQ_SECRET_ID, "TENCENTCLOUD_SECRETKEY": secret_key}


async def send_cmq(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = await anyio.run_process(
        [sys.executable, "-m", "mpsflow", "send", *args], env=env, check=False
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def drain(server: CmqServer, queue: str) -> list[str]:
    """Every message body on ``queue`` (received and deleted)."""
    bodies: list[str] = []
    async with CmqClient(server.url, Credential(CMQ_SECRET_ID, CMQ_SECRET_KEY)) as client:
        while messages := await client.batch_receive(queue, 16, 0):
            bodies += [m.msg_body for m in messages]
            await client.batch_delete(queue, [m.receipt_handle for m in messages])
    return bodies


async def test_send_puts_notifications_on_a_cmq_queue_freshly_signed(
    cmq_server: CmqServer, samples_dir: Path
) -> None:
    queue = cmq_server.create_queue(QUEUE)
    total = 2 * len(SAMPLE_PATHS)
    started = int(time.time())
    code, out, err = await send_cmq(
        cmq_env(),
        *("--cmq", cmq_server.url, "--queue", QUEUE, "--batch", "4", "--repeat", "2"),
        *("--sign-key", SAMPLE_KEY, str(samples_dir)),
    )
    assert code == 0, out + err
    assert out.splitlines()[0].startswith(f"sent {total} notification(s) to queue {QUEUE} in ")
    assert summary(out) == {"queued": total}
    assert len(queue) == total
    bodies = [json.loads(body) for body in await drain(cmq_server, QUEUE)]
    for body in bodies:  # each signed when it went, the way MPS signs
        assert body["Timestamp"] >= started + 600
        expected = hashlib.md5(f"{body['Timestamp']}{SAMPLE_KEY}".encode()).hexdigest()
        assert body["Sign"] == expected
    sent_types = sorted(b.get("EventType") for b in bodies)
    assert sent_types == sorted(2 * [json.loads(p.read_bytes())["EventType"] for p in SAMPLE_PATHS])
    assert CMQ_SECRET_KEY not in out + err
    assert SAMPLE_KEY not in out + err


async def test_send_to_cmq_splits_batches_at_64_kb(cmq_server: CmqServer, tmp_path: Path) -> None:
    # 20 notifications of 12 KB: 16 to a batch would be 192 KB, which CMQ refuses (4400).
    padding = "x" * 12_000
    lines = [json.dumps({"EventType": "WorkflowTask", "Pad": padding, "N": n}) for n in range(20)]
    (tmp_path / "big.jsonl").write_text("\n".join(lines) + "\n")
    code, out, err = await send_cmq(
        cmq_env(), "--cmq", cmq_server.url, "--queue", QUEUE, str(tmp_path / "big.jsonl")
    )
    assert code == 0, out + err
    assert summary(out) == {"queued": 20}
    assert sorted(json.loads(b)["N"] for b in await drain(cmq_server, QUEUE)) == list(range(20))


async def test_send_to_cmq_counts_what_was_queued_and_what_failed_as_it_goes(
    cmq_server: CmqServer, tmp_path: Path, seed_sample: bytes
) -> None:
    (tmp_path / "seed.json").write_bytes(seed_sample)
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe not text")
    code, out, err = await send_cmq(
        cmq_env(), "--cmq", cmq_server.url, "--queue", QUEUE, "--repeat", "2", str(tmp_path)
    )
    assert code == 1
    assert summary(out) == {"queued": 2, "not sent (not UTF-8 text; a CMQ message is text)": 2}
    assert progress(err) == ["4/4 done: 2 sent, 2 failed"]  # one batch, after the two left out


async def test_send_to_cmq_with_refused_keys_fails_and_says_which_keys(
    cmq_server: CmqServer, tmp_path: Path, seed_sample: bytes
) -> None:
    (tmp_path / "seed.json").write_bytes(seed_sample)
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe not text")
    code, out, err = await send_cmq(
        cmq_env("not-the-server-key"), "--cmq", cmq_server.url, "--queue", QUEUE, str(tmp_path)
    )
    assert code == 1
    counts = summary(out)
    [refused] = [key for key in counts if key.startswith("code 4100")]
    assert counts[refused] == 1
    assert counts["not sent (not UTF-8 text; a CMQ message is text)"] == 1
    assert "TENCENTCLOUD_SECRETID and TENCENTCLOUD_SECRETKEY" in err
    assert "not-the-server-key" not in out + err
    assert cmq_server.queue_names == []  # refused before any queue was made


async def test_send_to_an_unreachable_cmq_endpoint_fails(
    tmp_path: Path, seed_sample: bytes
) -> None:
    """The first batch fails after the client's retries; the second is not sent at all."""
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_bytes(seed_sample)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    code, out, err = await send_cmq(
        cmq_env(),
        *("--cmq", f"http://127.0.0.1:{port}", "--queue", QUEUE),
        *("--batch", "1", "--concurrency", "1", str(tmp_path)),
    )
    assert code == 1
    counts = summary(out)
    [error] = [status for status in counts if status.startswith("error (")]
    assert counts == {error: 1, "not sent (CMQ unreachable)": 1}
    assert f"cannot reach CMQ at http://127.0.0.1:{port} (connection refused)" in err


async def test_send_to_an_https_address_of_a_plain_http_cmq_server_says_what_to_give_cmq(
    cmq_server: CmqServer, tmp_path: Path, seed_sample: bytes
) -> None:
    (tmp_path / "seed.json").write_bytes(seed_sample)
    where = cmq_server.url.split("://", 1)[1].split("/", 1)[0]
    code, _, err = await send_cmq(
        cmq_env(), "--cmq", f"https://{where}", "--queue", QUEUE, str(tmp_path)
    )
    assert code == 1
    assert f"cannot reach CMQ at https://{where} (" in err
    assert f"use --cmq http://{where})" in err


async def test_send_to_a_cmq_endpoint_that_never_answers_gives_up_after_one_timeout(
    silent_cmq: SilentEndpoint, tmp_path: Path, seed_sample: bytes
) -> None:
    """One request, not tried again, and the other batch not sent: a silent endpoint costs one
    --timeout, not four (the client's attempts) for each batch."""
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_bytes(seed_sample)
    code, out, err = await send_cmq(
        cmq_env(),
        *("--cmq", silent_cmq.url, "--queue", QUEUE, "--batch", "1", "--concurrency", "1"),
        *("--timeout", "0.5", str(tmp_path)),
    )
    assert code == 1
    assert summary(out) == {
        "error (BatchSendMessage: no answer within 0.5s)": 1,
        "not sent (CMQ did not answer)": 1,
    }
    assert silent_cmq.connections() == 1
    assert progress(err) == ["1/2 done: 0 sent, 1 failed", "2/2 done: 0 sent, 2 failed"]
    assert f"mpsflow send: CMQ at {silent_cmq.url} did not answer (" in err


async def test_send_to_a_missing_cmq_queue_fails_and_says_to_check_its_name(
    cmq_server_factory: CmqServerFactory, tmp_path: Path, seed_sample: bytes
) -> None:
    server = await cmq_server_factory(queues=[QUEUE], auto_create=False)
    (tmp_path / "seed.json").write_bytes(seed_sample)
    code, out, err = await send_cmq(
        cmq_env(), "--cmq", server.url, "--queue", "mps-event", str(tmp_path)
    )
    assert code == 1
    [(status, count)] = summary(out).items()
    assert status.startswith("code 4440")
    assert count == 1
    assert f"there is no queue mps-event at {server.url}: check its name" in err
    assert server.queue_names == [QUEUE]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--queue", QUEUE, "{dir}"], "--queue goes with --cmq ENDPOINT"),
        (["http://127.0.0.1:8080/cb", "{dir}", "--batch", "2"], "--batch goes with --cmq"),
        (["--cmq", "http://127.0.0.1:9800", "{dir}"], "--cmq needs --queue NAME"),
        (
            [
                "--cmq",
                "http://127.0.0.1:9800",
                "--queue",
                QUEUE,
                "http://127.0.0.1:8080/cb",
                "{dir}",
            ],
            "give no callback URL",
        ),
        (["{dir}"], "expected the callback URL first"),
        (["http://127.0.0.1:8080/cb"], "give the files or folders to send after"),
        (["127.0.0.1:8080", "{dir}"], "expected the callback URL first"),
    ],
)
def test_send_says_what_is_missing(
    tmp_path: Path,
    argv: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mpsflow.cli import main

    monkeypatch.setenv("TENCENTCLOUD_SECRETID", CMQ_SECRET_ID)
    monkeypatch.setenv("TENCENTCLOUD_SECRETKEY", CMQ_SECRET_KEY)
    assert main(["send", *(a.format(dir=tmp_path) for a in argv)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("present", [(), ("TENCENTCLOUD_SECRETID",), ("TENCENTCLOUD_SECRETKEY",)])
def test_send_to_cmq_without_keys_in_the_environment_exits_2(
    tmp_path: Path,
    present: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mpsflow.cli import main

    for name in ("TENCENTCLOUD_SECRETID", "TENCENTCLOUD_SECRETKEY", "TENCENTCLOUD_SESSIONTOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name in present:
        monkeypatch.setenv(name, "value-that-must-not-be-shown")
    argv = ["send", "--cmq", "http://127.0.0.1:9800", "--queue", QUEUE, str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--cmq needs API keys in the environment" in err
    for name in ("TENCENTCLOUD_SECRETID", "TENCENTCLOUD_SECRETKEY"):
        assert (name in err) == (name not in present)
    assert "value-that-must-not-be-shown" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cmq", "ftp://127.0.0.1:9800", "--queue", QUEUE], "http(s)://HOST[:PORT]"),
        (["--cmq", "http://127.0.0.1:9800", "--queue", "9-lives"], "queue name"),
        (["--cmq", "http://127.0.0.1:9800", "--queue", QUEUE, "--batch", "17"], "1 to 16"),
    ],
)
def test_send_checks_the_cmq_options_as_run_does(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from mpsflow.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["send", *argv, str(tmp_path)])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("signum", "exit_code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
    ids=["Ctrl-C", "SIGTERM"],
)
async def test_ctrl_c_or_sigterm_still_says_what_was_answered(
    samples_dir: Path, signum: signal.Signals, exit_code: int
) -> None:
    """Interrupted, ``send`` prints its summary of what was answered so far, says that the
    rest were not sent or cut off waiting for their answer, and exits 130 (Ctrl-C) or 143
    (SIGTERM)."""
    answered = 0
    fourth, released = anyio.Event(), anyio.Event()

    async def callback(request: web.Request) -> web.Response:
        nonlocal answered
        await request.read()
        if answered == 3:
            fourth.set()
            await released.wait()  # held: the sender waits for this answer
        answered += 1
        return web.json_response({"code": 0})

    server = web.Application()
    server.router.add_post("/cb", callback)
    sample = str(samples_dir / "06_edit_media_task_success.json")
    async with serve_peer(server) as base:
        command = [sys.executable, "-m", "mpsflow", "send", f"{base}/cb", sample]
        args = ["--repeat", "6", "--concurrency", "1"]
        async with await anyio.open_process([*command, *args], env=ENV) as process:
            with anyio.fail_after(30):
                await fourth.wait()
            process.send_signal(signum)
            with anyio.fail_after(30):
                code = await process.wait()
            out, err = [await read_all(stream) for stream in (process.stdout, process.stderr)]
        released.set()  # the server's shutdown waits for its handlers
    assert code == exit_code
    assert summary(out) == {"200": 3}
    assert (
        "mpsflow send: interrupted: 3 of 6 answered, 0 failed with no answer, 2 not sent,"
        " 1 cut off waiting for an answer;" in err
    )


async def read_all(stream: anyio.abc.ByteReceiveStream | None) -> str:
    """What a finished process wrote to ``stream``."""
    assert stream is not None
    data = b""
    async for chunk in stream:
        data += chunk
    return data.decode()


@asynccontextmanager
async def sending(*args: str) -> AsyncIterator[tuple[anyio.abc.Process, Output, Output]]:
    """``python -m mpsflow send ARGS`` running, its stdout and stderr collected as they come;
    killed at the end if it is still running."""
    command = [sys.executable, "-m", "mpsflow", "send", *args]
    async with await anyio.open_process(command, env=ENV) as process:
        out, err = Output(), Output()
        async with anyio.create_task_group() as tg:
            for stream, output in ((process.stdout, out), (process.stderr, err)):
                assert stream is not None
                tg.start_soon(output.collect, stream)
            try:
                yield process, out, err
            finally:
                if process.returncode is None:
                    process.kill()


@pytest.mark.parametrize(
    ("signum", "exit_code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
    ids=["Ctrl-C", "SIGTERM"],
)
async def test_stopped_after_giving_up_on_a_silent_url_counts_the_not_sent_as_not_sent(
    silent_cmq: SilentEndpoint,
    tmp_path: Path,
    seed_sample: bytes,
    signum: signal.Signals,
    exit_code: int,
) -> None:
    """Given up on a URL that never answers (the rest counted as not sent) and then stopped
    while a sender still waits for its turn, the closing line counts what was answered (none),
    what failed with no answer (the one timeout) and what was not sent: none as answered."""
    body = tmp_path / "seed.json"
    body.write_bytes(seed_sample)
    args = ("--repeat", "20", "--concurrency", "2", "--timeout", "0.5", "--rate", "0.001")
    # the first request goes at once; the second sender waits its turn (1000 s) for the signal
    async with sending(f"{silent_cmq.url}/mps/callback", str(body), *args) as (process, out, err):
        await err.wait_for(re.compile(r"^19/20 done: 0 sent, 19 failed$"))
        process.send_signal(signum)
        with anyio.fail_after(30):
            code = await process.wait()
    assert code == exit_code
    counts = summary(out.text)
    errors = sum(n for status, n in counts.items() if status.startswith("error ("))
    assert (errors, counts.pop("not sent (the URL did not answer)", 0)) == (1, 18), out.text
    assert silent_cmq.connections() == 1
    [line] = [line for line in err.lines if line.startswith("mpsflow send: interrupted:")]
    assert line.startswith(
        "mpsflow send: interrupted: 0 of 20 answered, 1 failed with no answer, 19 not sent,"
        " 0 cut off waiting for an answer;"
    ), line


@pytest.mark.parametrize(
    ("signum", "exit_code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
    ids=["Ctrl-C", "SIGTERM"],
)
async def test_stopped_while_the_files_are_read_says_nothing_was_sent(
    silent_cmq: SilentEndpoint, tmp_path: Path, signum: signal.Signals, exit_code: int
) -> None:
    """Stopped before the first request, here while it reads the files, ``send`` says in one
    line that nothing was sent and exits 130 (Ctrl-C) or 143 (SIGTERM): SIGTERM does not
    kill it outright."""
    bodies = tmp_path / "arrays.jsonl"
    bodies.write_text("[]\n" * 30_000)  # a warning each, signed: far more than a pipe holds
    url = f"{silent_cmq.url}/mps/callback"
    command = [sys.executable, "-m", "mpsflow", "send", url, str(bodies), "--sign-key", "k"]
    async with await anyio.open_process(command, env=ENV) as process:
        assert process.stderr is not None
        seen = b""
        with anyio.fail_after(30):
            while b"sending it unsigned" not in seen:
                seen += await process.stderr.receive()
        # Standard error is not read again until the signal: the warnings still to come fill
        # the pipe and hold ``send`` where it reads the files.
        process.send_signal(signum)
        with anyio.fail_after(30):
            err = seen.decode() + await read_all(process.stderr)
            code = await process.wait()
        out = await read_all(process.stdout)
    assert code == exit_code
    assert out == ""
    assert err.splitlines()[-1] == "mpsflow send: interrupted before sending: nothing was sent"
    assert silent_cmq.connections() == 0
