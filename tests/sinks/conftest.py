"""The ``harness`` fixture: one sink on its real peer, parametrised by ``contract(...)``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.sinks.harness import SinkHarness


@pytest.fixture
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[SinkHarness]:
    """The harness class in ``request.param``, opened for one test and closed after it."""
    kind: type[SinkHarness] = request.param
    async with kind(request) as opened:
        yield opened
