"""Fixtures of the MPS client's tests: the fake API on loopback and clients of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from mpsflow.clock import FakeClock
from mpsflow.tencentcloud.cmq.credentials import Credential
from mpsflow.tencentcloud.mps import MpsApiClient
from tests.tencentcloud.mps.fake_mps import (
    NO_JITTER,
    SECRET_ID,
    SECRET_KEY,
    ClientFactory,
    FakeMps,
)


@pytest.fixture
def clock() -> FakeClock:
    """The clock of the clients ``make_client`` makes."""
    return FakeClock()


@pytest.fixture
async def fake_mps() -> AsyncIterator[FakeMps]:
    """The fake MPS API, serving on a free loopback port."""
    server = FakeMps({SECRET_ID: SECRET_KEY})
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def make_client(fake_mps: FakeMps, clock: FakeClock) -> AsyncIterator[ClientFactory]:
    """Clients of ``fake_mps``; every one is closed at teardown."""
    clients: list[MpsApiClient] = []

    def make(**options: Any) -> MpsApiClient:
        settings: dict[str, Any] = {
            "endpoint": fake_mps.url,
            "clock": clock,
            "retry": NO_JITTER,
            "rate_limit": None,
        }
        settings.update(options)
        credentials = settings.pop("credentials", Credential(SECRET_ID, SECRET_KEY))
        client = MpsApiClient(credentials, **settings)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(make_client: ClientFactory) -> MpsApiClient:
    """A client with the defaults of ``make_client``."""
    return make_client()
