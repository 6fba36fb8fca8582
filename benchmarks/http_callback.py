"""HTTP callbacks per second: mpsflow's full pipeline against a bare aiohttp handler.

Both servers run in turn in one invocation, each pinned to the same CPU core (``taskset``) and
loaded by ``wrk`` pinned to another one, with the seed sample as the body (every request
carries its own ``TaskId``, so dedup claims a new record each time)::

    python benchmarks/http_callback.py --duration 10 --connections 64

Every wrk run salts its ``TaskId``s with a random string of its own, so a warm-up run can never
turn the measured run's requests into duplicates: wrk's Lua request counter starts again at 1 in
every run (the earlier per-thread prefix never reached the requests, so every run sent the same
``TaskId`` sequence and the measured run began with the warm-up's duplicates).

``wrk`` is a native load generator: ``apt-get install wrk`` (Debian/Ubuntu) or
``brew install wrk`` (macOS). Without it the benchmark says so and exits with status 2.

* **bare**: ``aiohttp.web.Application`` with one route that answers 200 ``{"code":0}``
  without reading the body.
* **http-layer** and **http-decode**: ``HttpSource`` with a consumer that acks at once, and one
  that only decodes the body into the typed Structs first: the floors the full pipeline stands on.
* **pipeline**: ``App()`` with the no-op handler (decode, route, handler, metrics).
* **mpsflow**: ``App(notify_keys=[…], idempotency=MemoryStore())`` with one no-op handler on
  ``WorkflowTask``, behind ``HttpSource``: the body is read, the signature verified, a dedup
  record claimed and completed, the notification decoded into typed Structs and routed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._data import SAMPLES_DIR
from benchmarks._process import cpu_seconds, free_port, pinned
from mpsflow.signing import sign_notification

if TYPE_CHECKING:
    from mpsflow import App

__all__ = [
    "KEY",
    "PATH",
    "ROOT",
    "SERVERS",
    "TASK_MARK",
    "Result",
    "WrkRun",
    "body_template",
    "check_wrk",
    "main",
    "noop_app",
    "run_wrk",
    "running_server",
    "serve_bare",
    "serve_http_decode",
    "serve_http_layer",
    "serve_mpsflow",
    "write_wrk_script",
]

ROOT = Path(__file__).resolve().parents[1]
SEED = SAMPLES_DIR / "01_workflow_task_seed_verbatim.json"
KEY = "benchmark-notify-key"
PATH = "/mps/callback"
TASK_MARK = "@@TASK@@"
TARGET = 0.65

_LUA = """
-- TaskId = <salt>-<thread>-<counter>. The counter restarts in every run and every thread; the
-- salt (args[1], fresh per run from run_wrk) keeps runs apart, the thread number the threads.
local counter = 0
local prefix = ""
local threads = 0
local head = [==[{head}]==]
local tail = [==[{tail}]==]
local headers = {{["Content-Type"] = "application/json"}}

function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)  -- a global of the thread's own Lua state
end

function init(args)
  prefix = (args[1] or "") .. "-" .. thread_number
end

function request()
  counter = counter + 1
  return wrk.format("POST", "{path}", headers, head .. prefix .. "-" .. counter .. tail)
end
"""


SERVERS = {
    "bare": "aiohttp Application, 200 without reading the body",
    "http-layer": "HttpSource + a consumer that acks at once (no pipeline)",
    "http-decode": "HttpSource + a consumer that only decodes the body into typed Structs",
    "pipeline": "App: decode + route + one no-op handler (no signature, no dedup)",
    "mpsflow": "App(notify_keys, MemoryStore dedup): signature + dedup + decode + handler",
}
"""The servers measured, in order; the target compares ``mpsflow`` with ``bare``."""


@dataclass(frozen=True, slots=True)
class Result:
    """One wrk run: requests/s, the server's CPU time per request, answers that were not 2xx."""

    name: str
    requests_per_second: float
    requests: int
    cpu_us_per_request: float | None
    non_2xx: int
    socket_errors: str


class WrkRun(NamedTuple):
    """One wrk run: requests/s, requests, answers that were not 2xx/3xx, socket errors, and
    the 99th percentile of the answers' latency in milliseconds."""

    requests_per_second: float
    requests: int
    non_2xx: int
    socket_errors: str
    p99_ms: float | None


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def body_template() -> str:
    """The seed sample, signed to expire in 50 minutes (within the hour an app lets a
    signature's expiry lie ahead; a run takes minutes), its TaskId made a per-request
    placeholder."""
    doc: dict[str, Any] = json.loads(SEED.read_bytes())
    sign_notification(doc, KEY, expires_at=int(time.time()) + 3000)
    doc["WorkflowTaskEvent"]["TaskId"] = f"1250000000-WorkflowTask-{TASK_MARK}"
    return json.dumps(doc, indent=4)


def write_wrk_script(path: Path) -> int:
    """Write the wrk script posting the signed seed sample; return one body's size in bytes.

    Every request's ``TaskId`` is ``<salt>-<thread>-<counter>``: the salt is the script's
    first argument, a fresh one per run (see :func:`run_wrk`).
    """
    head, tail = body_template().split(TASK_MARK)
    path.write_text(_LUA.format(head=head, tail=tail, path=PATH))
    return len((head + "0123456789abcdef-1-10000" + tail).encode())


# -- the two servers (run in their own process) -----------------------------------------------


def serve_bare(port: int) -> None:
    """A bare aiohttp application: 200 ``{"code":0}`` without reading the body."""
    from aiohttp import web

    async def callback(request: web.Request) -> web.Response:
        return web.Response(body=b'{"code":0}', content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    application = web.Application()
    application.router.add_post(PATH, callback)
    application.router.add_get("/healthz", healthz)
    web.run_app(application, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_http_layer(port: int) -> None:
    """``HttpSource`` alone, with a consumer that acks at once: the cost of the HTTP layer."""
    _serve_http_source(port, decode=False)


def serve_http_decode(port: int) -> None:
    """``HttpSource`` and the typed decode, nothing else: the floor any typed pipeline stands on.

    Whatever ``mpsflow / bare`` can reach is below ``http-decode / bare``: signature, dedup,
    routing and the handler all come on top of this row.
    """
    _serve_http_source(port, decode=True)


def _serve_http_source(port: int, *, decode: bool) -> None:
    """Serve ``HttpSource`` with a consumer that acks at once, after a typed decode or not."""
    import anyio

    from mpsflow.codec import decode_any
    from mpsflow.delivery import Delivery, Outcome, Settlement
    from mpsflow.sources.http import HttpSource
    from mpsflow.sources.runtime import SourceRuntime

    acked = Outcome(Settlement.ACK)

    async def consumer(delivery: Delivery) -> Outcome:
        if decode:
            decode_any(delivery.body)
        return acked

    source = HttpSource("127.0.0.1", port, PATH, max_in_flight=1024)
    anyio.run(source.run, SourceRuntime(consumer=consumer, stop=anyio.Event()))


def noop_app(**options: Any) -> App:
    """``App(**options)`` with one no-op handler on ``WorkflowTask``."""
    from mpsflow import App, Context
    from mpsflow.events import WorkflowTask

    app = App(**options)

    @app.on("WorkflowTask")
    async def noop(event: WorkflowTask, ctx: Context) -> None:
        return None

    return app


def serve_mpsflow(port: int, dead_letters: str, *, full: bool = True) -> None:
    """The pipeline: decode, one no-op handler; with ``full``, signature and in-memory dedup."""
    from mpsflow.dedup.stores.memory import MemoryStore
    from mpsflow.sources.http import HttpSource

    if full:
        app = noop_app(notify_keys=[KEY], idempotency=MemoryStore(), dead_letters=dead_letters)
    else:
        app = noop_app(dead_letters=dead_letters)
    app.serve(HttpSource("127.0.0.1", port, PATH, max_in_flight=1024))


# -- driving a run -----------------------------------------------------------------------------


def _wait_until_up(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start listening within 30 s")


@contextmanager
def running_server(
    command: list[str],
    port: int,
    *,
    core: int | None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    output: IO[bytes] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (a server on ``port``) pinned to ``core`` until the block ends.

    The repository root is on its ``PYTHONPATH``, ``env`` is added to the environment; its
    stdout and stderr go to ``output`` when given. Waits until the port accepts connections.
    """
    environment = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        pinned(core, command), env=environment, cwd=cwd, stdout=output, stderr=output
    )
    try:
        _wait_until_up(port, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_wrk(url: str, script: Path, *, duration: int, connections: int, core: int | None) -> WrkRun:
    """Run wrk once with a fresh TaskId salt; what it measured."""
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "-s",
        str(script),
        "--latency",
        url,
        secrets.token_hex(8),  # the script's args[1]: this run's TaskIds are its own
    ]
    completed = subprocess.run(pinned(core, command), capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed: {completed.stdout.strip()} {completed.stderr.strip()}")
    output = completed.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    non_2xx_match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors_match = re.search(r"Socket errors: (.*)", output)
    p99_match = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.M)
    return WrkRun(
        rate,
        total,
        int(non_2xx_match.group(1)) if non_2xx_match else 0,
        errors_match.group(1).strip() if errors_match else "",
        float(p99_match.group(1)) * _UNIT_MS[p99_match.group(2)] if p99_match else None,
    )


def check_wrk() -> bool:
    """Whether ``wrk`` is on PATH; when it is not, say how to install it (on stderr)."""
    if shutil.which("wrk") is not None:
        return True
    print(
        "wrk is not installed: it is the load generator of this benchmark.\n"
        "Install it with `apt-get install wrk` (Debian/Ubuntu) or `brew install wrk` "
        "(macOS), then run this again.",
        file=sys.stderr,
    )
    return False


def _measure(name: str, args: argparse.Namespace, script: Path, tmp: Path) -> Result:
    port = free_port()
    command = [sys.executable, __file__, "--serve", name, "--port", str(port), "--tmp", str(tmp)]
    with running_server(command, port, core=args.server_core) as process:
        url = f"http://127.0.0.1:{port}{PATH}"
        run_wrk(url, script, duration=args.warmup, connections=args.connections, core=args.wrk_core)
        cpu_before = cpu_seconds(process.pid)
        run = run_wrk(
            url, script, duration=args.duration, connections=args.connections, core=args.wrk_core
        )
        cpu_after = cpu_seconds(process.pid)
        cpu = (
            (cpu_after - cpu_before) / run.requests * 1e6
            if cpu_before is not None and cpu_after is not None and run.requests
            else None
        )
        return Result(
            name, run.requests_per_second, run.requests, cpu, run.non_2xx, run.socket_errors
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per server")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="alternate the servers this often")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--wrk-core", type=int, default=1)
    parser.add_argument("--only", nargs="+", choices=tuple(SERVERS), help="measure only these")
    parser.add_argument("--serve", choices=tuple(SERVERS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        dead_letters = os.path.join(args.tmp, "dead-letters.jsonl")
        if args.serve == "bare":
            serve_bare(args.port)
        elif args.serve == "http-layer":
            serve_http_layer(args.port)
        elif args.serve == "http-decode":
            serve_http_decode(args.port)
        else:
            serve_mpsflow(args.port, dead_letters, full=args.serve == "mpsflow")
        return 0
    if not check_wrk():
        return 2
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        script = tmp / "post.lua"
        body_bytes = write_wrk_script(script)
        names = [name for name in SERVERS if not args.only or name in args.only]
        results: dict[str, list[Result]] = {name: [] for name in names}
        for _ in range(args.rounds):
            for name in names:
                result = _measure(name, args, script, tmp)
                results[name].append(result)
                print(
                    f"{name:10} {result.requests_per_second:8.0f} req/s  "
                    f"{_cpu_text(result.cpu_us_per_request)} CPU/request  "
                    f"({result.requests} requests, non-2xx {result.non_2xx}"
                    f"{', socket errors ' + result.socket_errors if result.socket_errors else ''})",
                    flush=True,
                )
    best = {name: max(runs, key=lambda r: r.requests_per_second) for name, runs in results.items()}
    print()
    print(
        f"body: seed sample, {body_bytes} bytes; {args.connections} connections; "
        f"best of {args.rounds} run(s) of {args.duration}s"
    )
    print("| server | what runs | requests/s | × bare | server CPU per request | non-2xx |")
    print("|---|---|---:|---:|---:|---:|")
    bare_rate = best["bare"].requests_per_second if "bare" in best else None
    for name, result in best.items():
        cpu = min((r.cpu_us_per_request or 0.0) for r in results[name]) or None
        ratio_text = f"{result.requests_per_second / bare_rate:.2f}" if bare_rate else "n/a"
        print(
            f"| {name} | {SERVERS[name]} | {result.requests_per_second:,.0f} | {ratio_text} | "
            f"{_cpu_text(cpu)} | {result.non_2xx} |"
        )
    if "bare" in best and "mpsflow" in best:
        ratio = best["mpsflow"].requests_per_second / best["bare"].requests_per_second
        verdict = "met" if ratio >= TARGET else f"missed by {(1 - ratio / TARGET) * 100:.0f}%"
        print(f"\nmpsflow / bare = {ratio:.2f}x (target >= {TARGET}x: {verdict})")
    bad = [r for runs in results.values() for r in runs if r.non_2xx]
    return 1 if bad else 0


def _cpu_text(micros: float | None) -> str:
    return f"{micros:6.1f} µs" if micros is not None else "     n/a"


if __name__ == "__main__":
    raise SystemExit(main())
