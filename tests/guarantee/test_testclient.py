"""The guarantee through ``TestClient``: every store, sequential and concurrent, with faults.

Generated traffic (see :mod:`tests.guarantee.traffic`) runs through the app's own pipeline on
a FakeClock; the reference model (:mod:`tests.guarantee.model`) says which effects must
happen. Every expected effect must happen exactly once and nothing else; every delivery ends
acked or dead-lettered, and none is acked before all its effects took place.
"""

from __future__ import annotations

import random
from collections import defaultdict

import anyio
import pytest

from mpsflow.clock import FakeClock
from mpsflow.testing import TestClient
from tests.guarantee.conftest import STORES, StoreFactory, report
from tests.guarantee.faults import FaultyStore
from tests.guarantee.model import Ledger, Verdicts, assert_exactly_once, build_app, expected
from tests.guarantee.traffic import Send, generate, traffic

pytestmark = pytest.mark.slow

TASKS = 16


async def run(
    client: TestClient, sends: list[Send], ledger: Ledger, *, concurrency: int, doomed: bool
) -> Verdicts:
    """Send everything (each batch's sends at the same moment); settle every delivery."""
    verdicts = Verdicts()
    batches: dict[int, list[Send]] = defaultdict(list)
    for send in sends:
        batches[send.batch].append(send)
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(send: Send) -> None:
        result = await client.send(send.body)
        verdicts.settle(send.notice, result.outcome, ledger, doomed_handler=doomed)

    async def batch(group: list[Send]) -> None:
        async with limiter, anyio.create_task_group() as tg:
            for send in group:
                tg.start_soon(one, send)

    async with anyio.create_task_group() as tg:
        for number in sorted(batches):
            if concurrency == 1:
                await batch(batches[number])
            else:
                tg.start_soon(batch, batches[number])
    return verdicts


@pytest.mark.parametrize("concurrency", [1, 8], ids=["sequential", "8-at-a-time"])
@pytest.mark.parametrize("mode", ["plain", "flaky+doomed", "store-faults"])
@pytest.mark.parametrize("kind", STORES)
async def test_every_effect_exactly_once(
    kind: str, mode: str, concurrency: int, make_store: StoreFactory, clock: FakeClock
) -> None:
    seed = STORES.index(kind) * 100 + len(mode) * 10 + concurrency
    rng = random.Random(seed)
    scripts = generate(rng, TASKS)
    sends = traffic(rng, scripts)
    store = make_store(kind, clock)
    faulty = None
    if mode == "store-faults":
        faulty = FaultyStore(store, windows=[(40, 90), (300, 330), (700, 760)], seed=seed)
        store = faulty
    ledger = Ledger()
    app = build_app(store, ledger, flaky=mode == "flaky+doomed", doomed=mode == "flaky+doomed")
    async with TestClient(app, clock=clock, dedup_store="app") as client:  # the store under test
        doomed = mode == "flaky+doomed"
        verdicts = await run(client, sends, ledger, concurrency=concurrency, doomed=doomed)
        dead = client.dead_letters
    want = expected(s.notice for s in sends)
    counts = assert_exactly_once(ledger, want, verdicts, dead)
    if faulty is not None:
        assert faulty.failures["claim:lost"], faulty.failures
        assert faulty.failures["complete:lost"], faulty.failures
        counts.update({f"faults_{k.replace(':', '_')}": v for k, v in faulty.failures.items()})
    report(f"testclient/{kind}/{mode}/{concurrency}", counts)
