"""CMQ throughput: notifications/s through ``CmqSource`` and the pipeline, against a bare loop.

The local CMQ server (``python -m mpsflow.devservers.cmq``) runs in its own process on loopback,
pinned to CPU 0 with ``taskset`` when there is one; the consumers run in this process, pinned to
CPU 1. Before every timed run the queue is filled with ``--messages`` copies of the seed sample
(the verbatim, pretty file of the MPS documentation, 9,568 bytes), each with its own ``TaskId``,
so dedup never skips one. Rows, alternated ``--rounds`` times, the best run of each kept:

* **bare**: ``BatchReceiveMessage`` (16) then ``BatchDeleteMessage`` with :class:`CmqClient`,
  one loop, nothing done with the messages: the baseline of the target.
* **bare ×P**: ``P`` such loops at once on the same client (``P`` = ``--pollers``).
* **aiohttp**: the same loop on plain aiohttp and ``json`` (``benchmarks/cmq_bare.py``), for
  reference.
* **pipeline**: ``App()`` + ``CmqSource(batch_size=16, pollers=P)`` + one no-op
  ``WorkflowTask`` handler: decode into typed Structs, route, run the handler, metrics, batched
  deletes. Signature checks off, dedup off.
* **pipeline + dedup**: the same with ``idempotency=MemoryStore()`` (claim and complete one
  record per message). Signature checks off (the seed's signature has long expired).

Each run is timed from its start until the messages are deleted (for the source: all but its
last partial delete batch, which waits ``delete_delay`` for company). CPU columns are the
consumer's (this process) and the server's CPU time per message::

    python benchmarks/cmq.py --messages 8000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._data import SAMPLES_DIR
from benchmarks._process import cpu_seconds, pinned
from benchmarks.cmq_bare import bare_consume
from mpsflow import App, Context
from mpsflow.dedup.stores.memory import MemoryStore
from mpsflow.devservers.cmq import MAX_BATCH_BYTES
from mpsflow.events import WorkflowTask
from mpsflow.sinks.memory import MemorySink
from mpsflow.sources.cmq import CmqSource
from mpsflow.tencentcloud.cmq.client import MAX_BATCH, CmqClient
from mpsflow.tencentcloud.cmq.credentials import Credential

__all__ = ["Result", "Stopwatch", "bare_loops", "main", "pipeline_run", "seed_bodies"]

SEED = SAMPLES_DIR / "01_workflow_task_seed_verbatim.json"
CREDENTIAL = Credential("AKIDmpsflowBENCHMARK", "benchmark-secret-key")
QUEUE = "bench"
TARGET = 0.8
_SEED_TASK_ID = "245****654-WorkflowTask-f46dac7fe2436c47******d71946986t0"


@dataclass(frozen=True, slots=True)
class Result:
    """One timed run: messages drained per second, and CPU time per message on each side."""

    name: str
    per_second: float
    consumer_us: float
    server_us: float | None


def seed_bodies(count: int) -> list[str]:
    """``count`` verbatim copies of the seed sample, each with its own TaskId (same length)."""
    text = SEED.read_text()
    if _SEED_TASK_ID not in text:
        raise RuntimeError(f"{SEED.name} does not hold the expected TaskId")
    prefix = _SEED_TASK_ID[: -len("******d71946986t0")]
    return [text.replace(_SEED_TASK_ID, f"{prefix}{n:017d}") for n in range(count)]


def _batches(bodies: Sequence[str]) -> list[list[str]]:
    """Bodies grouped for BatchSendMessage: at most 16 and 64 KB per batch."""
    batches: list[list[str]] = [[]]
    size = 0
    for body in bodies:
        length = len(body.encode())
        if len(batches[-1]) == MAX_BATCH or size + length > MAX_BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(body)
        size += length
    return batches


async def _fill(client: CmqClient, bodies: Sequence[str]) -> None:
    pending = iter(_batches(bodies))

    async def sender() -> None:
        for batch in pending:
            await client.batch_send(QUEUE, batch)

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(sender)


class Stopwatch:
    """Wall-clock and CPU time (this process) of one run; ``stop`` once the work is done."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()
        self.elapsed: float | None = None
        self.cpu = 0.0

    def stop(self) -> None:
        if self.elapsed is None:
            self.elapsed = time.perf_counter() - self.started
            self.cpu = time.process_time() - self.cpu_started


async def bare_loops(client: CmqClient, count: int, loops: int) -> None:
    """Receive and delete until ``count`` messages are gone, with ``loops`` loops at once."""
    done = 0
    finished = anyio.Event()

    async def loop() -> None:
        nonlocal done
        while done < count:
            messages = await client.batch_receive(QUEUE, MAX_BATCH, 1)
            if messages:
                await client.batch_delete(QUEUE, [m.receipt_handle for m in messages])
                done += len(messages)
        finished.set()

    async with anyio.create_task_group() as tg:
        for _ in range(loops):
            tg.start_soon(loop)
        await finished.wait()
        tg.cancel_scope.cancel()  # the others may sit in a long poll of an empty queue


async def pipeline_run(
    client: CmqClient, count: int, pollers: int, *, dedup: bool, watch: Stopwatch | None = None
) -> None:
    """Run an app on a ``CmqSource`` until ``count`` messages were processed and deleted.

    ``watch`` stops once at most one partial batch of deletes is left: that batch waits the
    source's ``delete_delay`` (50 ms) for company, a latency of the last message only, which
    would otherwise weigh on short runs.
    """
    app = App(dead_letters=MemorySink(), idempotency=MemoryStore() if dedup else None)

    @app.on("WorkflowTask")
    async def noop(event: WorkflowTask, ctx: Context) -> None:
        return None

    source = CmqSource(client, QUEUE, batch_size=16, pollers=pollers, wait_seconds=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: app.run(source, handle_signals=False))
        await source.wait_deleted(count - MAX_BATCH + 1)
        if watch is not None:
            watch.stop()
        await source.wait_deleted(count)
        app.stop()


async def _measure(
    name: str,
    run: Callable[[CmqClient, Stopwatch], Awaitable[object]],
    client: CmqClient,
    bodies: Sequence[str],
    server_pid: int,
) -> Result:
    # A long poll cut short by the end of the previous run may still be parked in the server
    # for up to its wait (1 s); it would take messages of this fill and hide them. Let it end.
    await anyio.sleep(1.5)
    await _fill(client, bodies)
    server_before = cpu_seconds(server_pid)
    watch = Stopwatch()
    await run(client, watch)
    watch.stop()
    server_after = cpu_seconds(server_pid)
    assert watch.elapsed is not None
    count = len(bodies)
    server_us = (
        (server_after - server_before) / count * 1e6
        if server_before is not None and server_after is not None
        else None
    )
    return Result(name, count / watch.elapsed, watch.cpu / count * 1e6, server_us)


def _start_server(core: int | None) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "mpsflow.devservers.cmq", "--host", "127.0.0.1", "--port", "0"]
    command += ["--secret-id", CREDENTIAL.secret_id, "--secret-key", CREDENTIAL.secret_key]
    command += ["--queue", QUEUE, "--visibility-timeout", "600", "--log-level", "WARNING"]
    root = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.getenv("PYTHONPATH")])),
    }
    process = subprocess.Popen(pinned(core, command), stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on " not in line:
        process.kill()
        raise RuntimeError(f"the CMQ server did not start: {line!r}")
    return process, line.rsplit("listening on ", 1)[1].strip()


async def _bench(args: argparse.Namespace, url: str, server_pid: int) -> dict[str, Result]:
    bodies = seed_bodies(args.messages)
    count = len(bodies)
    pollers: int = args.pollers
    runs: dict[str, Callable[[CmqClient, Stopwatch], Awaitable[object]]] = {
        "bare": lambda c, w: bare_loops(c, count, 1),
        f"bare x{pollers}": lambda c, w: bare_loops(c, count, pollers),
        "aiohttp": lambda c, w: bare_consume(url, CREDENTIAL, QUEUE, count),
        "pipeline": lambda c, w: pipeline_run(c, count, pollers, dedup=False, watch=w),
        "pipeline + dedup": lambda c, w: pipeline_run(c, count, pollers, dedup=True, watch=w),
    }
    best: dict[str, Result] = {}
    async with CmqClient(url, CREDENTIAL) as client:
        # Warm-up: drain a short queue with the bare loop, then with the pipeline (the first
        # typed decode builds msgspec's decoders for the whole event tree: a one-off cost).
        warm_up = bodies[: min(count, 1000)]
        await _fill(client, warm_up)
        await bare_loops(client, len(warm_up), 1)
        await anyio.sleep(1.5)
        await _fill(client, warm_up)
        await pipeline_run(client, len(warm_up), pollers, dedup=True)
        for round_number in range(1, args.rounds + 1):
            for name, run in runs.items():
                result = await _measure(name, run, client, bodies, server_pid)
                print(
                    f"round {round_number} {name:>17}: {result.per_second:8.0f} msg/s, "
                    f"{result.consumer_us:6.1f} µs consumer CPU/msg",
                    file=sys.stderr,
                )
                if name not in best or result.per_second > best[name].per_second:
                    best[name] = result
    return best


def _report(best: dict[str, Result], args: argparse.Namespace) -> None:
    base = best["bare"].per_second
    print(f"CMQ benchmark, {args.messages} seed notifications per run, best of {args.rounds}")
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs")
    print()
    print("| row | msg/s | x bare | consumer CPU/msg | server CPU/msg |")
    print("|---|---:|---:|---:|---:|")
    for result in best.values():
        server = f"{result.server_us:.1f} µs" if result.server_us is not None else "-"
        print(
            f"| {result.name} | {result.per_second:,.0f} | {result.per_second / base:.2f} "
            f"| {result.consumer_us:.1f} µs | {server} |"
        )
    ratio = best["pipeline"].per_second / base
    verdict = "met" if ratio >= TARGET else f"missed by {(1 - ratio / TARGET) * 100:.0f}%"
    print()
    print(f"target: pipeline >= {TARGET}x bare; measured {ratio:.2f}x ({verdict})")
    dedup = best["pipeline + dedup"].per_second / base
    print(f"pipeline + dedup: {dedup:.2f}x bare")
    matched = best[f"bare x{args.pollers}"]
    pipeline = best["pipeline"]
    print(
        f"at the same concurrency ({args.pollers} polls at once): pipeline / bare "
        f"x{args.pollers} = {pipeline.per_second / matched.per_second:.2f}x; consumer CPU per "
        f"message {pipeline.consumer_us:.1f} µs vs {best['bare'].consumer_us:.1f} µs bare"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Start the server process, run every row ``--rounds`` times, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=8000, help="messages per run (8000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every row (3)")
    parser.add_argument("--pollers", type=int, default=2, help="CmqSource pollers (2)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs 0 and 1")
    args = parser.parse_args(argv)
    pin = not args.no_pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
    server, url = _start_server(0 if pin else None)
    try:
        if pin:
            os.sched_setaffinity(0, {1})
        best = anyio.run(_bench, args, url, server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()
    _report(best, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
