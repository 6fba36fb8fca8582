"""Pipeline throughput: in-memory source → decode → dispatch → one no-op handler → ack.

Measured in one run against plain ``mpsflow.decode`` of the same payloads (the issue-3 target:
pipeline ≥ 0.6× decode-only), then with signature checks and dedup on the in-memory, SQLite and
Redis stores, as a ratio to the pipeline without them (issue 4). Payloads are the seed sample
(``01_…``, compact), each with its own TaskId and a fresh signature, so dedup never skips.

    python benchmarks/pipeline.py [--n 20000] [--rounds 3] [--no-redis]

Redis: a throwaway ``redis-server`` is started on a free loopback port (Debian package
``redis-server``; skipped with a message when the binary is missing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._data import SAMPLES_DIR
from benchmarks._process import free_port
from mpsflow import App, Context, Settlement, decode
from mpsflow.dedup.idempotency import Idempotency
from mpsflow.dedup.stores.base import IdempotencyStore
from mpsflow.dedup.stores.memory import MemoryStore
from mpsflow.dedup.stores.sqlite import SQLiteStore
from mpsflow.events import MediaProcessTaskTranscodeResult
from mpsflow.sinks.memory import MemorySink
from mpsflow.sources.memory import MemorySource
from mpsflow.testing import sign_payload

KEY = "bench-notify-key"


def payloads(n: int) -> list[bytes]:
    """``n`` compact seed notifications, distinct TaskIds, signed to expire in an hour."""
    seed: dict[str, Any] = json.loads(
        (SAMPLES_DIR / "01_workflow_task_seed_verbatim.json").read_bytes()
    )
    expires = int(time.time()) + 3600
    out = []
    for i in range(n):
        seed["WorkflowTaskEvent"]["TaskId"] = f"1250000000-WorkflowTask-{i:032x}t0"
        sign_payload(seed, KEY, expires_at=expires)
        out.append(json.dumps(seed, separators=(",", ":"), ensure_ascii=False).encode())
    return out


def bench_decode(data: list[bytes]) -> float:
    started = time.perf_counter()
    for body in data:
        decode(body)
    return len(data) / (time.perf_counter() - started)


def make_app(*, signed: bool, store: IdempotencyStore | None) -> App:
    app = App(
        dead_letters=MemorySink(),
        notify_keys=[KEY] if signed else (),
        idempotency=Idempotency(store) if store is not None else None,
    )

    @app.on("Transcode")
    async def noop(result: MediaProcessTaskTranscodeResult, ctx: Context) -> None:
        return None

    return app


def bench_pipeline(data: list[bytes], app_factory: Callable[[], App]) -> float:
    app = app_factory()
    source = MemorySource(data, max_in_flight=256, keep_report=False)

    async def run() -> float:
        started = time.perf_counter()
        await app.run(source, handle_signals=False)
        return time.perf_counter() - started

    seconds = anyio.run(run)
    acked = source.counts[Settlement.ACK]
    if acked != len(data):
        raise SystemExit(f"only {acked}/{len(data)} deliveries were acked")
    return len(data) / seconds


@contextmanager
def redis_server() -> Iterator[str | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not found: apt-get install redis-server (Redis row skipped)")
        yield None
        return
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="notifications per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis store row")
    args = parser.parse_args()
    data = payloads(args.n)
    tmp = Path(tempfile.mkdtemp(prefix="mpsflow-bench-"))

    def sqlite_store() -> IdempotencyStore:
        path = tmp / f"idem-{time.monotonic_ns()}.db"
        return SQLiteStore(str(path))

    with redis_server() as redis_url:
        variants: list[tuple[str, Callable[[], float]]] = [
            ("decode only", lambda: bench_decode(data)),
            ("pipeline", lambda: bench_pipeline(data, lambda: make_app(signed=False, store=None))),
            (
                "pipeline + signature",
                lambda: bench_pipeline(data, lambda: make_app(signed=True, store=None)),
            ),
            (
                "pipeline + signature + dedup (memory)",
                lambda: bench_pipeline(
                    data, lambda: make_app(signed=True, store=MemoryStore(max_entries=10 * args.n))
                ),
            ),
            (
                "pipeline + signature + dedup (sqlite)",
                lambda: bench_pipeline(data, lambda: make_app(signed=True, store=sqlite_store())),
            ),
        ]
        if redis_url is not None and not args.no_redis:
            from mpsflow.dedup.stores.redis import RedisStore

            variants.append(
                (
                    "pipeline + signature + dedup (redis)",
                    lambda: bench_pipeline(
                        data, lambda: make_app(signed=True, store=RedisStore(redis_url))
                    ),
                )
            )
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, run in variants:  # interleaved, so load changes hit every row alike
                best[name] = max(best.get(name, 0.0), run())
    shutil.rmtree(tmp, ignore_errors=True)

    decode_rate = best["decode only"]
    plain = best["pipeline"]
    print(f"\nseed sample, compact, {args.n} notifications, best of {args.rounds} rounds")
    print(f"{'variant':<42}{'events/s':>12}{'× decode':>10}{'× pipeline':>12}")
    for name, rate in best.items():
        print(f"{name:<42}{rate:>12,.0f}{rate / decode_rate:>10.2f}{rate / plain:>12.2f}")
    ratio = plain / decode_rate
    verdict = "met" if ratio >= 0.6 else f"MISSED by {(0.6 - ratio) / 0.6:.0%}"
    print(f"\ntarget: pipeline ≥ 0.60× decode-only → {ratio:.2f}× ({verdict})")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
