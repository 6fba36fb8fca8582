"""HTTP callbacks per second: mpsflow's full pipeline against a bare aiohttp handler.

Both servers run in turn in one invocation, each pinned to the same CPU core (``taskset``) and
loaded by ``wrk`` pinned to another one, with the seed sample as the body (every request
carries its own ``TaskId``, so dedup claims a new record each time)::

    python benchmarks/http_callback.py --duration 10 --connections 64

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
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._data import SHARED_DIR
from benchmarks._process import cpu_seconds, free_port, pinned

__all__ = [
    "SERVERS",
    "Result",
    "main",
    "run_wrk",
    "serve_bare",
    "serve_http_decode",
    "serve_http_layer",
    "serve_mpsflow",
]

ROOT = Path(__file__).resolve().parents[1]
SEED = SHARED_DIR / "samples" / "01_workflow_task_seed_verbatim.json"
KEY = "benchmark-notify-key"
PATH = "/mps/callback"
TASK_MARK = "@@TASK@@"
TARGET = 0.65

_LUA = """
local counter = 0
local prefix = ""
local head = [==[{head}]==]
local tail = [==[{tail}]==]
local headers = {{["Content-Type"] = "application/json"}}

function setup(thread)
  thread:set("prefix", tostring(thread))
end

function init(args)
  prefix = string.gsub(prefix, "%W", "")
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


def _body_template() -> str:
    """The seed sample, signed for the far future, its TaskId made a per-request placeholder."""
    doc: dict[str, Any] = json.loads(SEED.read_bytes())
    expires = 4_000_000_000
    doc["Timestamp"] = expires
    doc["Sign"] = hashlib.md5(f"{expires}{KEY}".encode()).hexdigest()
    doc["WorkflowTaskEvent"]["TaskId"] = f"1250000000-WorkflowTask-{TASK_MARK}"
    return json.dumps(doc, indent=4)


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


def serve_mpsflow(port: int, dead_letters: str, *, full: bool = True) -> None:
    """The pipeline: decode, one no-op handler; with ``full``, signature and in-memory dedup."""
    from mpsflow import App, Context
    from mpsflow.dedup.stores.memory import MemoryStore
    from mpsflow.events import WorkflowTask
    from mpsflow.sources.http import HttpSource

    if full:
        app = App(notify_keys=[KEY], idempotency=MemoryStore(), dead_letters=dead_letters)
    else:
        app = App(dead_letters=dead_letters)

    @app.on("WorkflowTask")
    async def noop(event: WorkflowTask, ctx: Context) -> None:
        return None

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


def run_wrk(
    url: str, script: Path, *, duration: int, connections: int, core: int | None
) -> tuple[float, int, int, str]:
    """Run wrk once; return requests/s, requests, non-2xx answers and socket errors."""
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "-s",
        str(script),
        "--latency",
        url,
    ]
    completed = subprocess.run(pinned(core, command), capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed: {completed.stdout.strip()} {completed.stderr.strip()}")
    output = completed.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    non_2xx_match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors_match = re.search(r"Socket errors: (.*)", output)
    return (
        rate,
        total,
        int(non_2xx_match.group(1)) if non_2xx_match else 0,
        errors_match.group(1).strip() if errors_match else "",
    )


def _measure(name: str, args: argparse.Namespace, script: Path, tmp: Path) -> Result:
    port = free_port()
    command = [sys.executable, __file__, "--serve", name, "--port", str(port), "--tmp", str(tmp)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(pinned(args.server_core, command), env=env)
    try:
        _wait_until_up(port, process)
        url = f"http://127.0.0.1:{port}{PATH}"
        run_wrk(url, script, duration=args.warmup, connections=args.connections, core=args.wrk_core)
        cpu_before = cpu_seconds(process.pid)
        rate, total, non_2xx, errors = run_wrk(
            url, script, duration=args.duration, connections=args.connections, core=args.wrk_core
        )
        cpu_after = cpu_seconds(process.pid)
        cpu = (
            (cpu_after - cpu_before) / total * 1e6
            if cpu_before is not None and cpu_after is not None and total
            else None
        )
        return Result(name, rate, total, cpu, non_2xx, errors)
    finally:
        process.terminate()
        process.wait(timeout=30)


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
    if shutil.which("wrk") is None:
        print(
            "wrk is not installed: it is the load generator of this benchmark.\n"
            "Install it with `apt-get install wrk` (Debian/Ubuntu) or `brew install wrk` "
            "(macOS), then run this again.",
            file=sys.stderr,
        )
        return 2
    head, tail = _body_template().split(TASK_MARK)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        script = tmp / "post.lua"
        script.write_text(_LUA.format(head=head, tail=tail, path=PATH))
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
    body_bytes = len((head + "x-1" + tail).encode())
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
