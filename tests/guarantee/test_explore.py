"""Hypothesis explores the orderings the generator's seeds do not reach, and shrinks a failure.

Each example draws a few tasks, then which of their notifications arrive, in what order, how
often, exact or re-signed, and which store calls fail (before or after the store acted). The
checks are the suite's: every expected effect exactly once, nothing else, every delivery
settled and none acked early. ``derandomize`` keeps the run the same on every machine.
"""

from __future__ import annotations

import random

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpsflow.clock import FakeClock
from mpsflow.dedup.stores import MemoryStore
from mpsflow.testing import TestClient
from tests.guarantee.faults import FaultyStore
from tests.guarantee.model import Ledger, Verdicts, assert_exactly_once, build_app, expected
from tests.guarantee.traffic import EXPIRES_AT, Notice, generate, sign

Arrival = tuple[int, int]
"""(which notice, 0 for its exact bytes or n > 0 for a copy re-signed n seconds earlier)."""


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Notice], list[list[Arrival]], list[str]]:
    scripts = generate(random.Random(draw(st.integers(0, 2**32 - 1))), draw(st.integers(1, 3)))
    notices = [notice for script in scripts for notice in script.notices]
    arrival = st.tuples(st.integers(0, len(notices) - 1), st.integers(0, 3))
    # Groups of arrivals sent at the same moment (concurrent duplicates, and disorder).
    groups = draw(st.lists(st.lists(arrival, min_size=1, max_size=3), min_size=1, max_size=12))
    faults = draw(st.lists(st.sampled_from(["", "", "", "down", "lost"]), max_size=40))
    return notices, groups, faults


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_any_order_of_arrivals_and_store_faults(
    scenario: tuple[list[Notice], list[list[Arrival]], list[str]],
) -> None:
    notices, groups, faults = scenario

    async def run() -> None:
        clock = FakeClock()
        store = FaultyStore(MemoryStore(clock=clock))
        store.script = list(faults)
        ledger, verdicts = Ledger(), Verdicts()
        app = build_app(store, ledger)
        sent: list[Notice] = []
        async with TestClient(app, clock=clock, dedup_store="app") as client:  # the faulty store

            async def deliver(index: int, resigned: int) -> None:
                notice = notices[index]
                sent.append(notice)
                result = await client.send(sign(notice.body, EXPIRES_AT - resigned))
                verdicts.settle(notice, result.outcome, ledger, doomed_handler=False)

            for group in groups:
                async with anyio.create_task_group() as tg:
                    for index, resigned in group:
                        tg.start_soon(deliver, index, resigned)
        assert_exactly_once(ledger, expected(sent), verdicts)

    anyio.run(run)
